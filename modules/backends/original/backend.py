"""The original backend: A1111 v1.10.1's samplers, noise and model call over the loaded diffusers components.

The loaded UNet, VAE and text encoders are shared with the diffusers backend (nothing is reloaded or changed);
this backend only drives them the way A1111 does (``pipeline.sample_txt2img`` / ``sample_img2img``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from modules.backends.base import (
    BackendError,
    GenerationPlan,
    MaskedContent,
    ProgressReporter,
    RunDetails,
    SamplingSettings,
    request_unet,
)
from modules.backends.hooks import DenoiserEvents, events_for, extra_noise_hook
from modules.backends.original import catalogue
from modules.backends.original.conditioning import BatchConditioning
from modules.backends.original.images import (
    decode_latents,
    encode_images,
    encode_mode,
    image_to_tensor,
    inpaint_blend,
    inpainting_conditioning,
)
from modules.backends.original.pipeline import (
    MULTISTEP_SAMPLERS,
    DiffusionModel,
    Guidance,
    SamplingResult,
    check_switchable,
    img2img_steps,
    sample_img2img,
    sample_txt2img,
    switch_index,
)
from modules.backends.original.rng import ImageRNG, NoiseSource, RandnSource
from modules.backends.original.schedules import (
    SCHEDULE_TYPES,
    DiscreteSigmas,
    ScheduleOptions,
    compute_sigmas,
    ddim_timesteps,
    ldm_alphas_cumprod,
)
from modules.backends.original.unet import (
    DiffusersUNet,
    alphas_cumprod_of,
    is_sdxl,
    prediction_of,
    time_ids_of,
)
from modules.backends.preview import latents_to_preview
from modules.controlnet.residuals import (
    ActiveControl,
    ControlError,
    ControlledUNet,
    activate,
    controls_applied,
    release,
)
from modules.devices import execution_device
from modules.models.manager import LoadedModel, Task
from modules.prompts.conditioning import Emphasis, PromptConditioning, prompt_encoder_of
from modules.samplers import SamplerSupport

logger = logging.getLogger(__name__)

SCHEDULE_LABELS: tuple[str, ...] = tuple(schedule.label for schedule in SCHEDULE_TYPES if schedule.function is not None)


class _SamplingStoppedError(Exception):
    """Raised from the step callback on interrupt or skip; carries the last denoised latents (A1111's
    ``last_latent``, which is what A1111 decodes after an interrupt)."""

    def __init__(self, denoised: torch.Tensor) -> None:
        super().__init__("sampling stopped")
        self.denoised = denoised


def parameters_of(settings: SamplingSettings) -> catalogue.SamplerParameters:
    return catalogue.SamplerParameters(
        eta=settings.eta,
        eta_ancestral=settings.eta_ancestral,
        eta_ddim=settings.eta_ddim,
        s_churn=settings.s_churn,
        s_tmin=settings.s_tmin,
        s_tmax=settings.s_tmax,
        s_noise=settings.s_noise,
        eta_noise_seed_delta=settings.eta_noise_seed_delta,
        sgm_noise_multiplier=settings.sgm_noise_multiplier,
        s_min_uncond=settings.s_min_uncond,
        s_min_uncond_all=settings.s_min_uncond_all,
        skip_early_cond=settings.skip_early_cond,
        uni_pc_variant=settings.uni_pc_variant,
        uni_pc_skip_type=settings.uni_pc_skip_type,
        uni_pc_order=settings.uni_pc_order,
        uni_pc_lower_order_final=settings.uni_pc_lower_order_final,
    )


def schedule_options_of(settings: SamplingSettings, xl: bool = False) -> ScheduleOptions:
    return ScheduleOptions(
        always_discard_next_to_last_sigma=settings.always_discard_next_to_last_sigma,
        use_old_karras_scheduler_sigmas=settings.use_old_karras_scheduler_sigmas,
        sigma_min=settings.sigma_min,
        sigma_max=settings.sigma_max,
        rho=settings.rho,
        beta_dist_alpha=settings.beta_dist_alpha,
        beta_dist_beta=settings.beta_dist_beta,
        is_sdxl=xl,
    )


def sampler_steps(plan: GenerationPlan) -> tuple[int, int | None]:
    """(schedule length, t_enc) of the plan: t_enc is None for txt2img."""
    if plan.task is Task.TXT2IMG:
        return plan.steps, None
    return img2img_steps(plan.steps, plan.denoising_strength, plan.exact_steps)


def switch_steps(plan: GenerationPlan, sampler: catalogue.SamplerInfo) -> int | None:
    """The steps each side of a refiner switch runs (base part with ``denoising_end``, refiner part with
    ``denoising_start``), on SD's default noise schedule; None without a switch."""
    switch_at = plan.denoising_end if plan.denoising_end is not None else plan.denoising_start
    if switch_at is None:
        return None
    total, t_enc = sampler_steps(plan)
    table = DiscreteSigmas(ldm_alphas_cumprod())
    schedule = compute_sigmas(
        total,
        plan.schedule_type,
        table,
        schedule_options_of(plan.sampling),
        sampler_default=sampler.default_schedule,
        sampler_discards_penultimate=sampler.discard_penultimate,
    ).sigmas
    sigmas = schedule if t_enc is None else schedule[total - t_enc - 1 :]
    index = switch_index(sigmas, table, switch_at)
    return index if plan.denoising_end is not None else len(sigmas) - 1 - index


@dataclass
class StepReporter:
    """k-diffusion's callback: progress, previews, and a stop on interrupt or skip."""

    progress: ProgressReporter
    total: int
    xl: bool
    events: DenoiserEvents | None = None
    controlled: ControlledUNet | None = None  # the ControlNet wrapper, told which step comes next

    def __call__(self, state: dict[str, Any]) -> None:
        done = int(state["i"]) + 1
        if self.events is not None:
            self.events.step_finished(int(state["i"]))
        if self.controlled is not None:
            self.controlled.step = done
        every = self.progress.preview_every_n_steps
        preview = None
        if every > 0 and done % every == 0 and done < self.total:
            preview = latents_to_preview(state["denoised"], xl=self.xl)
        self.progress.step_done(done, preview)
        if self.progress.interrupted or self.progress.skipped:
            raise _SamplingStoppedError(state["denoised"])


def controls_of(model: LoadedModel, plan: GenerationPlan) -> list[ActiveControl]:
    """The plan's ControlNet units for this pass (their residuals go through the UNet the denoiser calls)."""
    if not plan.controlnet:
        return []
    try:
        hires_pass = plan.hires_base_steps is not None
        return activate(plan.controlnet, model.pipeline.unet, model.name, plan.width, plan.height, hires_pass)
    except ControlError as error:
        raise BackendError(str(error)) from error


class OriginalBackend:
    """A1111's k-diffusion and timestep samplers, per-image noise and CFG, on the loaded diffusers model."""

    name = "original"

    def sampler_support(self) -> SamplerSupport:
        # A1111 offers every schedule type with every sampler (DPM fast/adaptive and the timestep samplers
        # ignore it, as there).
        return {name: SCHEDULE_LABELS for name in catalogue.sampler_names()}

    def run_details(self, plan: GenerationPlan) -> RunDetails:
        sampler = catalogue.find_sampler(plan.sampler_name)
        _, infotext = parameters_of(plan.sampling).keyword_arguments(sampler)
        infotext.update(NoiseSource(RandnSource(plan.sampling.randn_source)).infotext())
        options = schedule_options_of(plan.sampling)
        if sampler.kind is catalogue.SamplerKind.SIGMAS:
            infotext.update(self._schedule_infotext(plan, sampler, options))
        elif options.always_discard_next_to_last_sigma and sampler.kind is catalogue.SamplerKind.TIMESTEPS:
            infotext["Discard penultimate sigma"] = True
        if plan.sampling.sgm_noise_multiplier and sampler.kind is not catalogue.SamplerKind.TIMESTEPS:
            infotext["SGM noise multiplier"] = True
        notes = []
        if plan.denoising_end is not None:
            notes.extend(self._switch_notes(sampler))
        return RunDetails(infotext=infotext, notes=notes)

    @staticmethod
    def _switch_notes(sampler: catalogue.SamplerInfo) -> list[str]:
        """What differs from A1111's refiner switch, which changes the model inside one sampler call."""
        try:
            check_switchable(sampler)
        except ValueError as error:
            raise BackendError(str(error)) from error
        notes = []
        if sampler.second_order:
            notes.append(f"Refiner: with {sampler.name} the switch is on a step boundary (A1111 may switch mid-step)")
        if sampler.name in MULTISTEP_SAMPLERS:
            notes.append(f"Refiner: {sampler.name} starts its multistep history again at the switch")
        return notes

    @staticmethod
    def _schedule_infotext(
        plan: GenerationPlan, sampler: catalogue.SamplerInfo, options: ScheduleOptions
    ) -> dict[str, object]:
        """The schedule's infotext entries (discard penultimate sigma, old Karras range), from a dummy table."""
        steps, _ = sampler_steps(plan)
        schedule = compute_sigmas(
            steps,
            plan.schedule_type,
            DiscreteSigmas(ldm_alphas_cumprod()),
            options,
            sampler_default=sampler.default_schedule,
            sampler_discards_penultimate=sampler.discard_penultimate,
        )
        # processing writes "Schedule type" itself (A1111's create_infotext rule)
        return {key: value for key, value in schedule.infotext.items() if key != "Schedule type"}

    def steps_run(self, plan: GenerationPlan) -> int:
        """A1111's steps: txt2img ``steps``; img2img t_enc + 1 (exactly ``steps`` with exact steps); A1111's
        timestep samplers make one model call fewer than their timestep count."""
        sampler = catalogue.find_sampler(plan.sampler_name)
        switched = switch_steps(plan, sampler) if sampler.kind is not catalogue.SamplerKind.TIMESTEPS else None
        if switched is not None:
            return switched
        total, t_enc = sampler_steps(plan)
        if sampler.kind is catalogue.SamplerKind.TIMESTEPS:
            count = len(ddim_timesteps(total, plan.sampling.always_discard_next_to_last_sigma))
            return max(1, (count if t_enc is None else t_enc) - 1)
        return total if t_enc is None else t_enc + 1

    def generate(
        self, model: LoadedModel, plan: GenerationPlan, progress: ProgressReporter
    ) -> list[Image.Image] | torch.Tensor:
        xl = is_sdxl(model)
        controls = controls_of(model, plan)
        controlled = (
            ControlledUNet(model.pipeline.unet, controls, self.steps_run(plan), uncond_last=True) if controls else None
        )
        # DeepCache applies here too (its infotext key comes from the model's settings), not with ControlNet units:
        # it skips the UNet blocks their residuals go into.
        unet = controlled or request_unet(model)
        unet_call = DiffusersUNet(unet)
        diffusion = DiffusionModel(
            unet=unet_call,
            alphas_cumprod=alphas_cumprod_of(model),
            prediction=prediction_of(model),
        )
        conditioning = self._conditioning(model, plan, unet_call.device)
        conditioning.time_ids = time_ids_of(model, plan.width, plan.height)
        conditioning.zero_negative = xl and all(prompt == "" for prompt in plan.negative_prompts)
        events = events_for(plan.denoiser_hooks, self.steps_run(plan))
        reporter = StepReporter(progress, self.steps_run(plan), xl, events, controlled)
        with controls_applied(model.pipeline, controlled), torch.inference_mode():
            sample = self._sampler_call(model, plan, diffusion, conditioning, xl, events)
            try:
                result = sample(reporter)
                latents = result.latents
                progress.add_infotext(result.infotext)  # NGMS, Skip Early CFG, Extra noise: known after sampling
            except _SamplingStoppedError as stopped:
                latents = stopped.denoised
            except ValueError as error:  # what the sampling code refuses (AND with image guidance, a switch)
                raise BackendError(str(error)) from error
            finally:
                release(controls)
            if plan.output_latents:
                return latents
            return decode_latents(model.pipeline.vae, latents)

    def decode(self, model: LoadedModel, latents: torch.Tensor) -> list[Image.Image]:
        with torch.inference_mode():
            return decode_latents(model.pipeline.vae, latents)

    def _conditioning(self, model: LoadedModel, plan: GenerationPlan, device: torch.device) -> BatchConditioning:
        """A1111 prompt semantics from Easel's encoder; a hires pass schedules over both passes' steps. The steps
        are A1111's schedule steps (``plan.prompt_steps``: doubled for a second-order sampler)."""
        encoder = prompt_encoder_of(model)
        steps = plan.prompt_steps
        base_steps, hires_steps = (plan.hires_base_steps, steps) if plan.hires_base_steps else (steps, None)
        emphasis = Emphasis(plan.emphasis)

        def encode(prompt: str, split_and: bool) -> PromptConditioning:
            return encoder.encode_conditioning(
                prompt, base_steps, hires_steps, clip_skip=plan.clip_skip, emphasis=emphasis, split_and=split_and
            )

        positives = [encode(prompt, True) for prompt in plan.prompts]
        negatives = [encode(prompt, False) for prompt in plan.negative_prompts]
        return BatchConditioning(positives, negatives, device)

    def _noise(self, model: LoadedModel, plan: GenerationPlan, latent_shape: tuple[int, ...]) -> ImageRNG:
        settings, seeds = plan.sampling, plan.noise
        try:
            source = NoiseSource(RandnSource(settings.randn_source), execution_device(model.pipeline.unet))
        except ValueError as error:
            raise BackendError(f"unknown RNG source {settings.randn_source!r}; use GPU, CPU or NV") from error
        return ImageRNG(
            latent_shape,
            plan.seeds,
            subseeds=list(seeds.subseeds) or None,
            subseed_strength=seeds.subseed_strength,
            seed_resize_from_h=seeds.resize_from_h,
            seed_resize_from_w=seeds.resize_from_w,
            source=source,
            eta_noise_seed_delta=settings.eta_noise_seed_delta,
        )

    def _sampler_call(
        self,
        model: LoadedModel,
        plan: GenerationPlan,
        diffusion: DiffusionModel,
        conditioning: BatchConditioning,
        xl: bool,
        events: DenoiserEvents | None = None,
    ) -> Callable[[Callable[[dict[str, Any]], None]], SamplingResult]:
        """The sampling call for the plan's task, with everything but the callback bound."""
        vae = model.pipeline.vae
        channels = int(vae.config.latent_channels)
        latent_shape = (channels, plan.height // 8, plan.width // 8)
        rng = self._noise(model, plan, latent_shape)
        guidance = Guidance(
            cond=conditioning.cond,
            uncond=conditioning.uncond,
            cond_scale=plan.cfg_scale,
            events=events,
        )
        common: dict[str, Any] = {
            "schedule": plan.schedule_type,
            "schedule_options": schedule_options_of(plan.sampling, xl),
            "parameters": parameters_of(plan.sampling),
        }
        switch = {"denoising_end": plan.denoising_end}
        if plan.task is Task.TXT2IMG:
            if model.is_pix2pix:
                raise BackendError("an instruct-pix2pix checkpoint edits an image: use img2img")
            if model.is_inpainting:
                pixels = torch.zeros(len(plan.seeds), 3, plan.height, plan.width)
                guidance.image_cond = inpainting_conditioning(vae, pixels, None, latent_shape, plan.seeds)
            return lambda callback: sample_txt2img(
                plan.sampler_name, plan.steps, diffusion, guidance, rng, callback=callback, **switch, **common
            )
        init_latent, pixels = self._init_latent(vae, plan, diffusion.alphas_cumprod.device)
        if plan.mask is not None:
            init_latent = self._fill_masked(init_latent, plan, latent_shape)
            guidance.blend = inpaint_blend(init_latent, plan.mask)
        if (model.is_inpainting or model.is_pix2pix) and plan.denoising_start is not None:
            raise BackendError("the refiner must be a plain (4-channel) model, not an inpainting or pix2pix one")
        if (model.is_inpainting or model.is_pix2pix) and pixels is None:
            pixels = 2.0 * torch.cat([image_to_tensor(image) for image in decode_latents(vae, init_latent)]) - 1.0
        if model.is_inpainting and pixels is not None:
            guidance.image_cond = inpainting_conditioning(vae, pixels, plan.mask, init_latent.shape, plan.seeds)
        elif model.is_pix2pix and pixels is not None:
            # A1111's edit model: the source image's latents (posterior mode, unscaled) and the Image CFG scale.
            guidance.image_cond = encode_mode(vae, pixels).to(init_latent.device)
            guidance.image_cfg_scale = plan.image_cfg_scale
        return lambda callback: sample_img2img(
            plan.sampler_name,
            plan.steps,
            diffusion,
            guidance,
            rng,
            init_latent,
            plan.denoising_strength,
            img2img_fix_steps=plan.exact_steps,
            initial_noise_multiplier=plan.noise_multiplier,
            extra_noise=plan.sampling.img2img_extra_noise,
            extra_noise_hook=extra_noise_hook(plan.extra_noise_listeners),
            callback=callback,
            denoising_start=plan.denoising_start,
            **switch,
            **common,
        )

    def _init_latent(
        self, vae: torch.nn.Module, plan: GenerationPlan, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(init latents (B, C, h, w), the init pixels in [-1, 1] or None when latents were given)."""
        init = plan.init_image
        count = len(plan.seeds)
        if isinstance(init, torch.Tensor):  # a latent hires pass: the upscaled first-pass latents
            latents = init.to(device=device, dtype=torch.float32)
            return (latents.expand(count, -1, -1, -1) if latents.shape[0] == 1 else latents), None
        if init is None:
            raise BackendError("img2img needs an init image")
        images = list(init) if isinstance(init, list | tuple) else [init] * count
        if len(images) != count:
            raise BackendError(f"{len(images)} init images for a batch of {count}")
        latents = encode_images(vae, images, plan.seeds).to(device)
        pixels = 2.0 * torch.cat([image_to_tensor(image) for image in images]) - 1.0
        return latents, pixels

    def _fill_masked(
        self, init_latent: torch.Tensor, plan: GenerationPlan, latent_shape: tuple[int, ...]
    ) -> torch.Tensor:
        """A1111's "latent noise" (seeded noise in the masked area) and "latent nothing" (zeros there)."""
        assert plan.mask is not None
        blend = inpaint_blend(init_latent, plan.mask)
        if plan.masked_content is MaskedContent.LATENT_NOISE:
            noise = ImageRNG(latent_shape, plan.seeds, source=NoiseSource(device=init_latent.device)).next()
            return init_latent * blend.mask + noise * blend.nmask
        if plan.masked_content is MaskedContent.LATENT_NOTHING:
            return init_latent * blend.mask
        return init_latent

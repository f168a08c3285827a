"""The diffusers backend: runs a plan through the loaded model's task pipeline."""

from __future__ import annotations

import inspect
import logging
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline
from PIL import Image

from modules.backends.base import (
    BackendError,
    GenerationPlan,
    MaskedContent,
    ProgressReporter,
    RunDetails,
    request_unet,
)
from modules.backends.diffusers_backend.cascade import generate_cascade
from modules.backends.diffusers_backend.composable import ComposableGuidance, ComposableGuidanceUNet
from modules.backends.diffusers_backend.denoiser_callbacks import DenoiserCallbackUNet
from modules.backends.diffusers_backend.flow import generate_flow
from modules.backends.diffusers_backend.schedulers import SUPPORT, build_scheduler
from modules.backends.hooks import DenoiserEvents, events_for
from modules.backends.original.rng import ImageRNG, NoiseSource, RandnSource
from modules.backends.previews import PreviewModels, render_preview
from modules.controlnet.residuals import (
    ActiveControl,
    ControlError,
    ControlledUNet,
    activate,
    controls_applied,
    release,
)
from modules.models.manager import LoadedModel, Task
from modules.models.vae_codec import decode_latents, encode_pixels
from modules.prompts.conditioning import Emphasis, PromptConditioning, prompt_encoder_of
from modules.prompts.step_switching import ScheduledEmbeddings
from modules.samplers import SamplerSupport, find_sampler

logger = logging.getLogger(__name__)

StepHook = ScheduledEmbeddings | ComposableGuidance


class DiffusersBackend:
    """Calls diffusers pipelines; the only hook it uses is ``callback_on_step_end``."""

    name = "diffusers"

    def sampler_support(self) -> SamplerSupport:
        return SUPPORT

    def run_details(self, plan: GenerationPlan) -> RunDetails:
        infotext: dict[str, object] = {"Sampler backend": self.name}
        infotext.update(NoiseSource(RandnSource(plan.sampling.randn_source)).infotext())
        if plan.sampling.eta_noise_seed_delta:
            infotext["ENSD"] = plan.sampling.eta_noise_seed_delta
        notes = noise_notes(plan)
        if plan.edit_model and plan.task is not Task.TXT2IMG and plan.denoising_strength < 1:
            # diffusers' instruct-pix2pix pipeline always denoises from pure noise
            notes.append("instruct-pix2pix: the image is edited from pure noise (denoising strength 1)")
            infotext["Denoising strength"] = 1.0
        return RunDetails(infotext=infotext, notes=notes)

    def steps_run(self, plan: GenerationPlan) -> int:
        return steps_run(plan)

    def generate(
        self, model: LoadedModel, plan: GenerationPlan, progress: ProgressReporter
    ) -> list[Image.Image] | torch.Tensor:
        if model.family.next_stage is not None:
            return generate_cascade(model, plan, progress)
        if not model.family.uses_a1111_prompts:
            output = generate_flow(model, plan, progress, steps_run(plan))
            return output if plan.output_latents or isinstance(output, list) else self.decode(model, output)
        positives, negatives = self._encode_prompts(model, plan)
        # Each request gets its own scheduler, built from the checkpoint's own config, in its own pipeline view.
        components: dict[str, Any] = {
            "scheduler": build_scheduler(
                model.scheduler_config,
                plan.sampler_name,
                plan.schedule_type,
                noise_seed=plan.seeds[0],
                noise_multiplier=plan.noise_multiplier,
            )
        }
        first_call = calls_before_switch(model.scheduler_config, plan)
        controls = self._controls(model, plan)
        unet = ControlledUNet(model.pipeline.unet, controls, steps_run(plan)) if controls else request_unet(model)
        if unet is not model.pipeline.unet:
            components["unet"] = unet
        guidance: StepHook
        if any(conditioning.is_composable for conditioning in positives):
            if plan.cfg_scale <= 1:
                raise BackendError("AND prompts need classifier-free guidance: set CFG scale above 1")
            components["unet"] = ComposableGuidanceUNet(unet, positives, negatives, first_call)
            guidance = ComposableGuidance(components["unet"])
            embeddings = guidance.initial_embeddings()
        else:
            guidance = ScheduledEmbeddings(positives, negatives, first_call)
            embeddings = guidance.at_step(first_call)
        events = events_for(plan.denoiser_hooks, steps_run(plan))
        if events is not None:
            inner = components.get("unet", unet)
            scheduler = components["scheduler"]
            components["unet"] = DenoiserCallbackUNet(inner, events, plan.batch_size, plan.cfg_scale, scheduler)
        pipeline = model.pipeline_view(plan.task, **components)
        arguments = self._common_arguments(pipeline, plan, progress, guidance, preview_models(model, progress), events)
        if controls:
            arguments["callback_on_step_end"].controlled = unet
        arguments.update(embeddings.as_kwargs())
        plain_txt2img = plan.task is Task.TXT2IMG and not (model.is_inpainting or model.is_pix2pix or model.is_refiner)
        if plain_txt2img:
            arguments["latents"], arguments["generator"] = initial_noise(pipeline, plan)
        if model.is_pix2pix:
            arguments.update(pix2pix_arguments(plan, positives, negatives))
            del arguments["width"], arguments["height"]  # the source image gives the size
        elif model.is_refiner and plan.task is Task.TXT2IMG:
            arguments.update(refiner_txt2img_arguments(pipeline, plan))
        elif plan.task is Task.IMG2IMG and not model.is_inpainting:
            arguments.update(image=plan.init_image, **img2img_steps(plan))
        elif plan.task is not Task.TXT2IMG or model.is_inpainting:
            arguments.update(self._inpaint_arguments(pipeline, plan))
        arguments.update(switch_arguments(pipeline, plan))
        try:
            with controls_applied(model.pipeline, unet if controls else None), torch.inference_mode():
                output = pipeline(**arguments)
        finally:
            release(controls)
        # Easel decodes the latents itself, so every decode gets the upcast rule and the NaN check.
        return output.images if plan.output_latents else self.decode(model, output.images)

    @staticmethod
    def _controls(model: LoadedModel, plan: GenerationPlan) -> list[ActiveControl]:
        """The plan's ControlNet units for this pass (DeepCache is not used with them: it skips the UNet blocks
        that the residuals go into)."""
        if not plan.controlnet:
            return []
        try:
            return activate(
                plan.controlnet,
                model.pipeline.unet,
                model.name,
                plan.width,
                plan.height,
                plan.hires_base_steps is not None,
            )
        except ControlError as error:
            raise BackendError(str(error)) from error

    def decode(self, model: LoadedModel, latents: torch.Tensor) -> list[Image.Image]:
        pixels = decode_latents(model.pipeline.vae, latents)
        return model.pipeline.image_processor.postprocess(pixels, output_type="pil")

    def _encode_prompts(
        self, model: LoadedModel, plan: GenerationPlan
    ) -> tuple[list[PromptConditioning], list[PromptConditioning]]:
        """A1111 prompt semantics (weights, unlimited length, BREAK, prompt editing, AND); one entry per image."""
        encoder = prompt_encoder_of(model)
        # A1111: a hires pass reads the schedule with the base steps and its own step count; img2img schedules over
        # the requested steps (``p.steps``), not the int(steps * strength) that run, as the original backend does;
        # a second-order sampler's schedule spans twice the steps (``plan.prompt_steps``). Both parts of a refiner
        # switch read one schedule over all the steps (the refiner's part counts on from the base part's calls).
        steps = plan.prompt_steps
        base_steps, hires_steps = (plan.hires_base_steps, steps) if plan.hires_base_steps else (steps, None)
        emphasis = Emphasis(plan.emphasis)
        positives, negatives = [], []
        for prompt, negative in zip(plan.prompts, plan.negative_prompts, strict=True):
            positive = encoder.encode_conditioning(
                prompt, base_steps, hires_steps, clip_skip=plan.clip_skip, emphasis=emphasis
            )
            negative_conditioning = encoder.encode_conditioning(
                negative, base_steps, hires_steps, clip_skip=plan.clip_skip, emphasis=emphasis, split_and=False
            )
            aligned = encoder.align([positive, negative_conditioning], clip_skip=plan.clip_skip)
            positives.append(aligned[0])
            negatives.append(aligned[1])
        chunk_counts = {item.chunk_count for item in (*positives, *negatives)}
        if len(chunk_counts) > 1:
            aligned = encoder.align([*positives, *negatives], clip_skip=plan.clip_skip)
            positives, negatives = aligned[: len(positives)], aligned[len(positives) :]
        return positives, negatives

    def _common_arguments(
        self,
        pipeline: DiffusionPipeline,
        plan: GenerationPlan,
        progress: ProgressReporter,
        guidance: StepHook,
        previews: PreviewModels | None = None,
        events: DenoiserEvents | None = None,
    ) -> dict[str, Any]:
        device = pipeline._execution_device
        generator_device = "cpu" if device.type == "mps" else device
        generators = [torch.Generator(generator_device).manual_seed(seed) for seed in plan.seeds]
        return {
            "num_inference_steps": plan.steps,
            "guidance_scale": plan.cfg_scale,
            "width": plan.width,
            "height": plan.height,
            "generator": generators,
            # CLIP skip is applied by the prompt encoder (A1111's numbering: 1 is the last layer).
            "callback_on_step_end": StepCallback(
                progress, steps_run(plan), self._is_xl(pipeline), guidance, previews, events
            ),
            "callback_on_step_end_tensor_inputs": ["latents", *guidance.tensor_inputs],
            "output_type": "latent",
        }

    @staticmethod
    def _is_xl(pipeline: DiffusionPipeline) -> bool:
        return getattr(pipeline, "text_encoder_2", None) is not None

    def _inpaint_arguments(self, pipeline: DiffusionPipeline, plan: GenerationPlan) -> dict[str, Any]:
        if plan.task is Task.TXT2IMG:
            # txt2img on an inpainting checkpoint: the whole canvas is masked, as A1111 does.
            blank = Image.new("RGB", (plan.width, plan.height), (127, 127, 127))
            return {"image": blank, "mask_image": Image.new("L", blank.size, 255), "strength": 1.0}
        image: Image.Image | list[Image.Image] | torch.Tensor = plan.init_image
        slots = image if isinstance(image, list) else [image]  # several init images: one per batch slot
        # img2img on an inpainting checkpoint: the whole image is masked (A1111's conditioning mask of ones).
        mask = plan.mask if plan.mask is not None else Image.new("L", slots[0].size, 255)
        arguments: dict[str, Any] = {"mask_image": mask, **img2img_steps(plan)}
        if plan.masked_content in (MaskedContent.LATENT_NOISE, MaskedContent.LATENT_NOTHING):
            latents = encode_image(pipeline, slots)
            image = replace_masked_latents(latents, plan.mask, plan.masked_content, plan.seeds[0])
            # With latents as `image`, diffusers needs the masked-image latents given (the 9-channel
            # conditioning; a 4-channel pipeline computes but does not use them).
            arguments["masked_image_latents"] = encode_image(pipeline, [masked_pixels(slot, mask) for slot in slots])
        arguments["image"] = image
        return arguments


def initial_noise(pipeline: DiffusionPipeline, plan: GenerationPlan) -> tuple[torch.Tensor, list[torch.Generator]]:
    """A1111's initial noise (per-image seeds, variation seed, seed resize, RNG source) for ``latents``, and the
    per-image generators the scheduler continues for its per-step noise (after the first draw, reseeded by ENSD,
    as A1111's generators are)."""
    device = pipeline._execution_device
    unet = pipeline.unet
    channels = int(unet.config.in_channels)
    noise = plan.noise
    rng = ImageRNG(
        (channels, plan.height // pipeline.vae_scale_factor, plan.width // pipeline.vae_scale_factor),
        plan.seeds,
        subseeds=list(noise.subseeds) or None,
        subseed_strength=noise.subseed_strength,
        seed_resize_from_h=noise.resize_from_h,
        seed_resize_from_w=noise.resize_from_w,
        source=NoiseSource(RandnSource(plan.sampling.randn_source), device),
        eta_noise_seed_delta=plan.sampling.eta_noise_seed_delta,
    )
    latents = rng.first().to(unet.dtype)
    generator_device = "cpu" if device.type == "mps" else device
    delta = plan.sampling.eta_noise_seed_delta
    generators = [
        generator
        if isinstance(generator, torch.Generator)
        else torch.Generator(generator_device).manual_seed(seed + delta)  # NV: torch generators for the scheduler
        for generator, seed in zip(rng.generators, plan.seeds, strict=True)
    ]
    return latents, generators


# A1111's settings the diffusers schedulers have no place for, with their "off" values: a request that changes
# one gets a note (the original backend applies them).
UNAPPLIED_DEFAULTS: dict[str, object] = {
    "s_min_uncond": 0.0,
    "skip_early_cond": 0.0,
    "sigma_min": 0.0,
    "sigma_max": 0.0,
    "rho": 0.0,
    "beta_dist_alpha": 0.6,
    "beta_dist_beta": 0.6,
    "uni_pc_variant": "bh1",
    "uni_pc_skip_type": "time_uniform",
    "uni_pc_order": 3,
    "uni_pc_lower_order_final": True,
    "img2img_extra_noise": 0.0,
}


def noise_notes(plan: GenerationPlan) -> list[str]:
    """What the diffusers backend cannot do of A1111's noise and sampler settings, for the request's notes."""
    notes = []
    sampling, info = plan.sampling, find_sampler(plan.sampler_name)
    if plan.task is not Task.TXT2IMG and (plan.noise.subseed_strength or plan.noise.resized):
        notes.append("diffusers backend: variation seed and seed resize apply to txt2img's initial noise only")
    if sampling.randn_source == "NV":
        notes.append("diffusers backend: the scheduler's per-step noise comes from torch generators, not NV's")
    ddim = info.name in ("DDIM", "DDIM CFG++")
    eta = sampling.eta if sampling.eta is not None else (sampling.eta_ddim if ddim else sampling.eta_ancestral)
    values = {
        "eta": (eta, 0.0 if ddim else 1.0),
        "s_churn": (sampling.s_churn, 0.0),
        "s_tmin": (sampling.s_tmin, 0.0),
        "s_tmax": (sampling.s_tmax, 0.0),
        "s_noise": (sampling.s_noise, 1.0),
    }
    changed = [name for name, (value, default) in values.items() if name in info.parameters and value != default]
    flags = ("always_discard_next_to_last_sigma", "sgm_noise_multiplier", "use_old_karras_scheduler_sigmas")
    changed.extend(name for name in flags if getattr(sampling, name))
    changed.extend(name for name, default in UNAPPLIED_DEFAULTS.items() if getattr(sampling, name) != default)
    if changed:
        notes.append(
            f"diffusers backend: {', '.join(changed)} not applied (diffusers' scheduler draws and scales its own "
            "per-step noise; use --backend original or the sd_sampling_backend setting for A1111's samplers)"
        )
    return notes


class StepCallback:
    """Reports progress and previews, and stops the loop on interrupt or skip."""

    def __init__(
        self,
        control: ProgressReporter,
        steps: int,
        xl: bool,
        guidance: StepHook,
        previews: PreviewModels | None = None,
        events: DenoiserEvents | None = None,
    ) -> None:
        self.control = control
        self.previews = previews
        self.steps = steps
        self.xl = xl
        self.guidance = guidance
        self.events = events  # A1111's sampling step for the on_cfg_* listeners
        self.controlled: ControlledUNet | None = None  # the ControlNet wrapper, told which step comes next

    def __call__(self, pipeline: DiffusionPipeline, step: int, timestep: Any, tensors: dict) -> dict:
        done = step + 1
        if self.events is not None:
            self.events.step_finished(step)
        preview = None
        every = self.control.preview_every_n_steps
        if every > 0 and done % every == 0 and done < self.steps and "latents" in tensors:
            method = getattr(self.control, "preview_method", "Approx cheap")
            preview = render_preview(method, tensors["latents"], self.xl, pipeline, self.previews)
        self.control.step_done(done, preview)
        if self.controlled is not None:
            self.controlled.step = done
        if self.control.interrupted or self.control.skipped:
            # diffusers' documented way to stop the denoising loop early; the current latents are decoded.
            pipeline._interrupt = True
        # Prompt editing and alternation: new embeddings for the next step, when the schedule says so.
        return self.guidance(pipeline, step, timestep, tensors)


def preview_models(model: LoadedModel, control: ProgressReporter) -> PreviewModels | None:
    """The model's preview decoders (TAESD, Approx NN), loaded on first use and freed with the model."""
    folder = getattr(control, "preview_dir", None)
    if folder is None:
        return None
    return model.attachments.setdefault(f"{PreviewModels.__module__}:{folder}", PreviewModels(folder))


def steps_run(plan: GenerationPlan) -> int:
    """Denoising steps a pipeline call runs: ``steps`` for txt2img and exact-step img2img (the hires pass),
    else int(steps * strength) as diffusers' img2img does; a refiner switch splits them (about: diffusers cuts
    at a timestep)."""
    if plan.denoising_start is not None:
        return max(1, plan.steps - round(plan.steps * plan.denoising_start))
    if plan.task is Task.TXT2IMG or plan.exact_steps or plan.edit_model:
        total = plan.steps
    else:
        total = max(1, min(int(plan.steps * plan.denoising_strength), plan.steps))
    return total if plan.denoising_end is None else max(1, round(total * plan.denoising_end))


def calls_before_switch(scheduler_config: Any, plan: GenerationPlan) -> int:
    """The refiner's part (``denoising_start``): A1111's count of its first model call, 0 for any other pass.

    A1111's one sampler call counts on across the switch. The refiner's part here starts at index ``t_start`` of the
    scheduler's timesteps (one model call each; a second-order scheduler lists a step's second timestep again),
    found as diffusers' ``get_timesteps`` does: the timesteps below ``round(T - denoising_start * T)``, one more for a
    second-order scheduler when that count is even, taken from the end. An img2img base began ``skip`` timesteps in
    (from its strength), so the refiner's first call is A1111's call ``t_start - skip``; when diffusers cuts a
    second-order step in the middle, the refiner repeats the base part's last call and gets its embedding again.
    Written by hand: diffusers computes ``t_start`` only inside the pipeline call, after its first embeddings."""
    if plan.denoising_start is None:
        return 0
    scheduler = build_scheduler(scheduler_config, plan.sampler_name, plan.schedule_type)
    base = img2img_steps(plan)  # the steps both parts set, and the base's strength (a txt2img base: 1)
    total = int(base["num_inference_steps"])
    scheduler.set_timesteps(total)
    timesteps = scheduler.timesteps
    skip = max(total - min(int(total * base["strength"]), total), 0) * scheduler.order
    train_steps = scheduler.config.num_train_timesteps
    cutoff = round(train_steps - plan.denoising_start * train_steps)
    refined = int((timesteps < cutoff).sum())
    if scheduler.order == 2 and refined % 2 == 0:
        refined += 1
    return max(len(timesteps) - refined - skip, 0)


def img2img_steps(plan: GenerationPlan) -> dict[str, Any]:
    """``num_inference_steps`` and ``strength`` for diffusers' img2img / inpaint pipelines.

    Exact steps (A1111's hires pass, img2img_fix_steps): A1111 makes a schedule of int(steps / strength) levels
    and runs its last ``steps``; diffusers runs int(total * strength) of ``total``, so it is given that total
    and a strength whose product with it truncates to exactly ``steps``."""
    if not plan.exact_steps:
        return {"num_inference_steps": plan.steps, "strength": plan.denoising_strength}
    total = max(plan.steps, int(plan.steps / min(plan.denoising_strength, 0.999)))
    return {"num_inference_steps": total, "strength": min(1.0, (plan.steps + 0.5) / total)}


def switch_arguments(pipeline: DiffusionPipeline, plan: GenerationPlan) -> dict[str, Any]:
    """The refiner switch through diffusers' SDXL ``denoising_end`` / ``denoising_start`` (its "ensemble of
    expert denoisers"): the cut is a fraction of the training timesteps, A1111's switch a fraction of the steps;
    with the usual schedules both fall between the same two steps."""
    wanted = {
        name: value for name in ("denoising_end", "denoising_start") if (value := getattr(plan, name)) is not None
    }
    if not wanted:
        return {}
    accepted = inspect.signature(type(pipeline).__call__).parameters
    if any(name not in accepted for name in wanted):
        raise BackendError(f"the refiner switch needs SDXL models on the diffusers backend ({type(pipeline).__name__})")
    return wanted


def pix2pix_arguments(
    plan: GenerationPlan, positives: list[PromptConditioning], negatives: list[PromptConditioning]
) -> dict[str, Any]:
    """instruct-pix2pix through diffusers' pipeline, whose guidance is A1111's edit-model formula:
    uncond + cfg * (cond - image_cond) + image_cfg * (image_cond - uncond), the image latents unscaled."""
    if plan.task is not Task.IMG2IMG:
        raise BackendError("an instruct-pix2pix checkpoint edits an image: use img2img without a mask")
    if any(not item.is_static or item.is_composable for item in (*positives, *negatives)):
        raise BackendError("instruct-pix2pix: prompt editing, alternation and AND are not supported")
    image_cfg_scale = 1.0 if plan.image_cfg_scale is None else plan.image_cfg_scale
    if image_cfg_scale < 1:
        # diffusers' pipeline turns all guidance off below 1, which A1111 does not: refused, not changed.
        raise BackendError(f"Image CFG scale {image_cfg_scale} is below 1, which the diffusers backend cannot run")
    # diffusers' pix2pix pipeline always denoises from pure noise (A1111 at denoising strength 1).
    return {"image": plan.init_image, "image_guidance_scale": image_cfg_scale, "num_inference_steps": plan.steps}


def refiner_txt2img_arguments(pipeline: DiffusionPipeline, plan: GenerationPlan) -> dict[str, Any]:
    """txt2img with the SDXL refiner as the main model: its img2img pipeline from zero latents at strength 1,
    whose first step adds noise at the largest sigma to zeros, which is txt2img's starting point."""
    vae_scale = 2 ** (len(pipeline.vae.config.block_out_channels) - 1)
    shape = (plan.batch_size, pipeline.unet.config.in_channels, plan.height // vae_scale, plan.width // vae_scale)
    zeros = torch.zeros(shape, device=pipeline._execution_device, dtype=pipeline.unet.dtype)
    return {"image": zeros, "strength": 1.0, "num_inference_steps": plan.steps}


def encode_image(pipeline: DiffusionPipeline, image: Image.Image | list[Image.Image]) -> torch.Tensor:
    """VAE latents of an RGB image or a list of them (distribution mode), scaled for the UNet."""
    return encode_pixels(pipeline.vae, pipeline.image_processor.preprocess(image))


def replace_masked_latents(latents: torch.Tensor, mask: Image.Image, content: MaskedContent, seed: int) -> torch.Tensor:
    """A1111's "latent noise" / "latent nothing": the masked latent cells become noise or zero."""
    height, width = latents.shape[-2:]
    small = np.asarray(mask.convert("L").resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)
    weight = torch.from_numpy(np.round(small / 255.0)).to(latents)[None, None]
    if content is MaskedContent.LATENT_NOISE:
        generator = torch.Generator("cpu").manual_seed(seed)
        fill = torch.randn(latents.shape, generator=generator).to(latents)
    else:
        fill = torch.zeros_like(latents)
    return latents * (1 - weight) + fill * weight


def masked_pixels(image: Image.Image, mask: Image.Image) -> Image.Image:
    """The image with its masked area set to mid-gray, which is 0 after normalisation, as diffusers does."""
    keep = np.asarray(mask.convert("L"), dtype=np.uint8) < 128
    array = np.asarray(image.convert("RGB")).copy()
    array[~keep] = 128
    return Image.fromarray(array)

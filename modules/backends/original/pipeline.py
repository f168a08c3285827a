"""One sampling run as A1111's ``KDiffusionSampler`` / ``CompVisSampler`` / ``LCMSampler`` makes it.

The entry points a backend calls: :func:`sample_txt2img` and :func:`sample_img2img`. They pick the model
wrapper, compute the sigmas or timesteps, scale the initial noise, wire the per-image noise (generators,
Brownian trees), apply A1111's parameter rules and return the latents with the infotext entries A1111
would add. The backend supplies the UNet callable, the conditioning and an :class:`rng.ImageRNG`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from modules.backends.original.catalogue import SamplerInfo, SamplerKind, SamplerParameters, find_sampler
from modules.backends.original.denoiser import (
    CFGDenoiser,
    CompVisDenoiser,
    CondSource,
    GuidanceEvents,
    InpaintBlend,
    LCMDenoiser,
    Prediction,
    TimestepsDenoiser,
    UncondSource,
    UNet,
)
from modules.backends.original.rng import ImageRNG, brownian_noise_sampler
from modules.backends.original.schedules import (
    DiscreteSigmas,
    LCMSigmas,
    ScheduleOptions,
    compute_sigmas,
    ddim_timesteps,
)

# img2img's extra noise hook (noise, x, xi) -> the noise to add (the adapter runs A1111's on_extra_noise in it).
ExtraNoiseHook = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class DiffusionModel:
    """The model as the samplers see it: a UNet callable, its alphas_cumprod (float32, on its device)."""

    unet: UNet
    alphas_cumprod: torch.Tensor
    prediction: Prediction = Prediction.EPSILON


@dataclass
class Guidance:
    """Prompt conditioning and CFG settings for one batch (see :class:`denoiser.CFGDenoiser`)."""

    cond: CondSource
    uncond: UncondSource
    cond_scale: float
    image_cond: torch.Tensor | None = None
    batch_cond_uncond: bool = True
    blend: InpaintBlend | None = None
    image_cfg_scale: float | None = None  # instruct-pix2pix's image guidance (see CFGDenoiser)
    events: GuidanceEvents | None = None  # listeners around each model call (A1111's on_cfg_* callbacks)


@dataclass
class SamplingResult:
    """The sampled latents and the infotext entries A1111 adds for this run."""

    latents: torch.Tensor
    infotext: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Run:
    sampler: SamplerInfo
    model: DiffusionModel
    guidance: Guidance
    rng: ImageRNG
    parameters: SamplerParameters
    callback: Callable[[dict[str, Any]], None] | None
    infotext: dict[str, Any] = field(default_factory=dict)

    def table(self) -> DiscreteSigmas:
        if self.sampler.kind == SamplerKind.LCM:
            return LCMSigmas(self.model.alphas_cumprod)
        return DiscreteSigmas(self.model.alphas_cumprod)

    def timestep_table(self) -> DiscreteSigmas:
        """The 1000 training timesteps' sigmas (A1111's refiner switch reads them, whatever the sampler)."""
        return DiscreteSigmas(self.model.alphas_cumprod)

    def cfg(self, table: DiscreteSigmas | None, steps: int) -> CFGDenoiser:
        if self.sampler.kind == SamplerKind.TIMESTEPS:
            inner: Any = TimestepsDenoiser(self.model.unet, self.model.alphas_cumprod, self.model.prediction)
        elif isinstance(table, LCMSigmas):
            inner = LCMDenoiser(self.model.unet, table)
        else:
            assert table is not None
            inner = CompVisDenoiser(self.model.unet, table, self.model.prediction)
        return CFGDenoiser(
            inner,
            self.guidance.cond,
            self.guidance.uncond,
            self.guidance.cond_scale,
            image_cond=self.guidance.image_cond,
            s_min_uncond=self.parameters.s_min_uncond,
            s_min_uncond_all=self.parameters.s_min_uncond_all,
            skip_early_cond=self.parameters.skip_early_cond,
            total_steps=self.sampler.total_steps(steps),
            batch_cond_uncond=self.guidance.batch_cond_uncond,
            blend=self.guidance.blend,
            mask_before_denoising=self.sampler.kind == SamplerKind.TIMESTEPS,
            image_cfg_scale=self.guidance.image_cfg_scale,
            events=self.guidance.events,
        )

    def kwargs(self, x: torch.Tensor, full_sigmas: torch.Tensor | None) -> dict[str, Any]:
        kwargs, infotext = self.parameters.keyword_arguments(self.sampler)
        self.infotext.update(infotext)
        accepted = inspect.signature(self.sampler.function).parameters
        if "randn_like" in accepted:
            kwargs["randn_like"] = self.rng.randn_like
        if self.sampler.brownian_noise and full_sigmas is not None:
            kwargs["noise_sampler"] = brownian_noise_sampler(x, full_sigmas, self.rng.seeds, self.rng.source)
        if self.sampler.solver_type is not None:
            kwargs["solver_type"] = self.sampler.solver_type
        if self.sampler.kind == SamplerKind.TIMESTEPS and "variant" in accepted:
            kwargs.update(
                variant=self.parameters.uni_pc_variant,
                skip_type=self.parameters.uni_pc_skip_type,
                order=self.parameters.uni_pc_order,
                lower_order_final=self.parameters.uni_pc_lower_order_final,
            )
        return {name: value for name, value in kwargs.items() if name in accepted}

    def finish(self, latents: torch.Tensor, cfg: CFGDenoiser) -> SamplingResult:
        return SamplingResult(latents, {**self.infotext, **cfg.infotext})


# Samplers whose steps read earlier steps' outputs: after a refiner switch their history starts again (A1111
# switches the model inside one sampler call and keeps it).
MULTISTEP_SAMPLERS = frozenset({"LMS", "DPM++ 2M", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 3M SDE"})


def check_switchable(sampler: SamplerInfo) -> None:
    """The refiner switch cuts the sampler's sigma schedule in two; samplers without one (or that remake it) refuse."""
    if sampler.kind not in (SamplerKind.SIGMAS, SamplerKind.LCM) or sampler.name == "Restart":
        raise ValueError(f"the refiner switch on the original backend does not support the {sampler.name} sampler yet")


def switch_index(sigmas: torch.Tensor, table: DiscreteSigmas, switch_at: float) -> int:
    """A1111's ``apply_refiner`` (by model timesteps, its default): the first step whose sigma's nearest training
    timestep ``t`` has ``(999 - t) / 1000 >= switch_at``; ``len(sigmas) - 1`` when none (the refiner runs no step).

    A1111 checks every model call; here the switch falls on a step boundary (the same call for one-call samplers)."""
    model_sigmas = table.sigmas.to(sigmas.device)
    for index, sigma in enumerate(sigmas[:-1]):
        timestep = int(torch.argmin(torch.abs(model_sigmas - sigma)))
        if (999 - timestep) / 1000 >= switch_at:
            return index
    return len(sigmas) - 1


def _replay_noise_draws(run: _Run, x: torch.Tensor, sigmas: torch.Tensor, full_sigmas: torch.Tensor) -> int:
    """Advance each image's generator past the draws the base model's part made, so that the refiner's part
    continues the same noise streams as A1111's single sampler call does. Written by hand: the sampler runs
    once more over the base part's sigmas with a zero denoiser (the draw counts of the switchable samplers
    depend on the sigmas only). Returns the number of model calls (the CFG wrapper's step count)."""
    calls = 0

    def zero_denoiser(latent: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        return torch.zeros_like(latent)

    run.sampler.function(zero_denoiser, torch.zeros_like(x), sigmas, callback=None, **run.kwargs(x, full_sigmas))
    return calls


def img2img_steps(steps: int, denoising_strength: float, img2img_fix_steps: bool = False) -> tuple[int, int]:
    """A1111's ``setup_img2img_steps``: (schedule length, t_enc); the run makes t_enc + 1 steps."""
    if img2img_fix_steps:
        total = int(steps / min(denoising_strength, 0.999)) if denoising_strength > 0 else 0
        return total, steps - 1
    return steps, int(min(denoising_strength, 0.999) * steps)


def sample_txt2img(
    sampler_name: str,
    steps: int,
    model: DiffusionModel,
    guidance: Guidance,
    rng: ImageRNG,
    schedule: str | None = None,
    schedule_options: ScheduleOptions | None = None,
    parameters: SamplerParameters | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    denoising_end: float | None = None,
) -> SamplingResult:
    """txt2img: the initial noise is ``rng.next()``; returns the final latents (B, C, H, W).

    ``denoising_end`` (the refiner switch): the run stops at the switch step and returns the noisy latents there."""
    schedule_options = schedule_options or ScheduleOptions()
    parameters = parameters or SamplerParameters()
    run = _Run(find_sampler(sampler_name), model, guidance, rng, parameters, callback)
    if denoising_end is not None:
        check_switchable(run.sampler)
    if run.sampler.kind == SamplerKind.TIMESTEPS:
        timesteps = _timesteps(run, steps, schedule_options)
        cfg = run.cfg(None, steps)
        x = rng.next()
        latents = run.sampler.function(
            cfg, x, timesteps, model.alphas_cumprod, callback=callback, **run.kwargs(x, None)
        )
        return run.finish(latents, cfg)
    table = run.table()
    sigmas = _sigmas(run, steps, table, schedule, schedule_options)
    cfg = run.cfg(table, steps)
    x = rng.next()
    if parameters.sgm_noise_multiplier:
        run.infotext["SGM noise multiplier"] = True
        x = x * torch.sqrt(1.0 + sigmas[0] ** 2.0)
    else:
        x = x * sigmas[0]
    kwargs = run.kwargs(x, sigmas)
    if run.sampler.kind == SamplerKind.DPM_SOLVER:
        kwargs.update(sigma_min=table.sigmas[0].item(), sigma_max=table.sigmas[-1].item())
        if "n" in inspect.signature(run.sampler.function).parameters:
            kwargs["n"] = steps
        latents = run.sampler.function(cfg, x, callback=callback, **kwargs)
    else:
        if denoising_end is not None:
            sigmas = sigmas[: switch_index(sigmas, run.timestep_table(), denoising_end) + 1]
        latents = run.sampler.function(cfg, x, sigmas, callback=callback, **kwargs)
    return run.finish(latents, cfg)


def sample_img2img(
    sampler_name: str,
    steps: int,
    model: DiffusionModel,
    guidance: Guidance,
    rng: ImageRNG,
    init_latent: torch.Tensor,
    denoising_strength: float,
    img2img_fix_steps: bool = False,
    initial_noise_multiplier: float = 1.0,
    extra_noise: float = 0.0,
    extra_noise_hook: ExtraNoiseHook | None = None,
    schedule: str | None = None,
    schedule_options: ScheduleOptions | None = None,
    parameters: SamplerParameters | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    denoising_end: float | None = None,
    denoising_start: float | None = None,
) -> SamplingResult:
    """img2img / inpaint / hires: noise ``init_latent`` to the step ``t_enc`` level and sample t_enc + 1 steps.

    The refiner switch: ``denoising_end`` stops at the switch step (noisy latents, no final blend);
    ``denoising_start`` continues the same schedule from there on ``init_latent`` (those latents) without new
    noise, each image's generator where the base part left it. A txt2img base is this schedule at strength 1.

    The noise is ``rng.next()`` (its first call: the initial noise with variation seed and resize) times
    ``initial_noise_multiplier`` (A1111's setting, infotext "Noise multiplier"); ``extra_noise`` is A1111's
    ``img2img_extra_noise`` (infotext "Extra noise"); ``extra_noise_hook(noise, x, xi)`` (A1111's on_extra_noise)
    returns the extra noise to add. With an inpainting blend in ``guidance`` the result is
    blended with ``init_latent`` once more at the end, as A1111 does.
    """
    schedule_options = schedule_options or ScheduleOptions()
    parameters = parameters or SamplerParameters()
    run = _Run(find_sampler(sampler_name), model, guidance, rng, parameters, callback)
    if denoising_end is not None or denoising_start is not None:
        check_switchable(run.sampler)
    total, t_enc = img2img_steps(steps, denoising_strength, img2img_fix_steps)
    noise = rng.next()
    if initial_noise_multiplier != 1.0:
        run.infotext["Noise multiplier"] = initial_noise_multiplier
        noise = noise * initial_noise_multiplier
    if extra_noise > 0:
        run.infotext["Extra noise"] = extra_noise
    if run.sampler.kind == SamplerKind.TIMESTEPS:
        timesteps = _timesteps(run, total, schedule_options)
        alpha = model.alphas_cumprod[timesteps[t_enc]]
        xi = init_latent * torch.sqrt(alpha) + noise * torch.sqrt(1 - alpha)
        if extra_noise > 0:
            xi = with_extra_noise(xi, noise, init_latent, extra_noise * torch.sqrt(alpha), extra_noise_hook)
        cfg = run.cfg(None, total)
        kwargs = run.kwargs(xi, None)
        if "is_img2img" in inspect.signature(run.sampler.function).parameters:
            kwargs["is_img2img"] = True
        latents = run.sampler.function(cfg, xi, timesteps[:t_enc], model.alphas_cumprod, callback=callback, **kwargs)
        return run.finish(_final_blend(guidance, latents), cfg)
    table = run.table()
    sigmas = _sigmas(run, total, table, schedule, schedule_options)
    sigma_sched = sigmas[total - t_enc - 1 :]
    if denoising_start is not None:
        return _continue_after_switch(run, table, total, sigmas, sigma_sched, init_latent, denoising_start)
    xi = init_latent + noise * sigma_sched[0]
    if extra_noise > 0:
        xi = with_extra_noise(xi, noise, init_latent, extra_noise, extra_noise_hook)
    if denoising_end is not None:
        cut = sigma_sched[: switch_index(sigma_sched, run.timestep_table(), denoising_end) + 1]
        cfg = run.cfg(table, total)
        latents = run.sampler.function(cfg, xi, cut, callback=callback, **run.kwargs(xi, sigmas))
        return run.finish(latents, cfg)
    cfg = run.cfg(table, total)
    kwargs = run.kwargs(xi, sigmas)
    if run.sampler.kind == SamplerKind.DPM_SOLVER:
        kwargs.update(sigma_min=sigma_sched[-2], sigma_max=sigma_sched[0])
        if "n" in inspect.signature(run.sampler.function).parameters:
            kwargs["n"] = len(sigma_sched) - 1
        latents = run.sampler.function(cfg, xi, callback=callback, **kwargs)
    else:
        latents = run.sampler.function(cfg, xi, sigma_sched, callback=callback, **kwargs)
    return run.finish(_final_blend(guidance, latents), cfg)


def with_extra_noise(
    xi: torch.Tensor,
    noise: torch.Tensor,
    init_latent: torch.Tensor,
    scale: float | torch.Tensor,
    hook: ExtraNoiseHook | None,
) -> torch.Tensor:
    """A1111's extra noise: the hook sees (noise, x, xi) and gives the noise to use, then ``noise * scale`` is added
    to ``xi``."""
    if hook is not None:
        noise = hook(noise, init_latent, xi)
    return xi + noise * scale


def _continue_after_switch(
    run: _Run,
    table: DiscreteSigmas,
    total: int,
    sigmas: torch.Tensor,
    sigma_sched: torch.Tensor,
    latents: torch.Tensor,
    switch_at: float,
) -> SamplingResult:
    """The refiner's part: the schedule from the switch step on, from the base part's noisy latents."""
    index = switch_index(sigma_sched, run.timestep_table(), switch_at)
    cfg = run.cfg(table, total)
    cfg.step = _replay_noise_draws(run, latents, sigma_sched[: index + 1], sigmas)
    result = run.sampler.function(
        cfg, latents, sigma_sched[index:], callback=run.callback, **run.kwargs(latents, sigmas)
    )
    return run.finish(_final_blend(run.guidance, result), cfg)


def _final_blend(guidance: Guidance, latents: torch.Tensor) -> torch.Tensor:
    return latents if guidance.blend is None else guidance.blend(latents)


def _sigmas(
    run: _Run, steps: int, table: DiscreteSigmas, schedule: str | None, options: ScheduleOptions
) -> torch.Tensor:
    plan = compute_sigmas(
        steps,
        schedule,
        table,
        options,
        sampler_default=run.sampler.default_schedule,
        sampler_discards_penultimate=run.sampler.discard_penultimate,
    )
    run.infotext.update(plan.infotext)
    return plan.sigmas


def _timesteps(run: _Run, steps: int, options: ScheduleOptions) -> torch.Tensor:
    discard = options.always_discard_next_to_last_sigma
    if discard:
        run.infotext["Discard penultimate sigma"] = True
    return ddim_timesteps(steps, discard).to(run.model.alphas_cumprod.device)

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
) -> SamplingResult:
    """txt2img: the initial noise is ``rng.next()``; returns the final latents (B, C, H, W)."""
    schedule_options = schedule_options or ScheduleOptions()
    parameters = parameters or SamplerParameters()
    run = _Run(find_sampler(sampler_name), model, guidance, rng, parameters, callback)
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
    schedule: str | None = None,
    schedule_options: ScheduleOptions | None = None,
    parameters: SamplerParameters | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> SamplingResult:
    """img2img / inpaint / hires: noise ``init_latent`` to the step ``t_enc`` level and sample t_enc + 1 steps.

    The noise is ``rng.next()`` (its first call: the initial noise with variation seed and resize) times
    ``initial_noise_multiplier`` (A1111's setting, infotext "Noise multiplier"); ``extra_noise`` is A1111's
    ``img2img_extra_noise`` (infotext "Extra noise"). With an inpainting blend in ``guidance`` the result is
    blended with ``init_latent`` once more at the end, as A1111 does.
    """
    schedule_options = schedule_options or ScheduleOptions()
    parameters = parameters or SamplerParameters()
    run = _Run(find_sampler(sampler_name), model, guidance, rng, parameters, callback)
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
            xi = xi + noise * extra_noise * torch.sqrt(alpha)
        cfg = run.cfg(None, total)
        kwargs = run.kwargs(xi, None)
        if "is_img2img" in inspect.signature(run.sampler.function).parameters:
            kwargs["is_img2img"] = True
        latents = run.sampler.function(cfg, xi, timesteps[:t_enc], model.alphas_cumprod, callback=callback, **kwargs)
        return run.finish(_final_blend(guidance, latents), cfg)
    table = run.table()
    sigmas = _sigmas(run, total, table, schedule, schedule_options)
    sigma_sched = sigmas[total - t_enc - 1 :]
    xi = init_latent + noise * sigma_sched[0]
    if extra_noise > 0:
        xi = xi + noise * extra_noise
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

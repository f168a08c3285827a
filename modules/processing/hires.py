"""A1111's hires fix: first pass at the base size, upscale (latent or image), second pass as img2img.

The passes themselves run in ``processing`` (each in its own model scope); this module plans them."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import torch
from PIL import Image

from modules.backends.base import GenerationPlan
from modules.models.manager import Task
from modules.postprocess.latent_upscale import is_latent_mode, upscale_latents
from modules.processing.requests import Txt2ImgRequest
from modules.samplers import SamplerSupport, infotext_schedule, resolve

logger = logging.getLogger(__name__)

ImageUpscaler = Callable[[Image.Image, str, tuple[int, int]], Image.Image]


@dataclasses.dataclass(frozen=True)
class HiresPass:
    """Everything the second pass needs, resolved once per request."""

    width: int
    height: int
    steps: int
    sampler_name: str
    schedule_type: str
    upscaler: str
    checkpoint: str | None = None  # the second pass's checkpoint (None: the first pass's)

    @property
    def latent(self) -> bool:
        return is_latent_mode(self.upscaler)


def plan_hires(request: Txt2ImgRequest, sampler_name: str, support: SamplerSupport | None = None) -> HiresPass:
    width, height = request.hires_size()
    hires_sampler, hires_schedule = resolve(
        request.hr_sampler_name or sampler_name, request.hr_scheduler or request.scheduler, support
    )
    return HiresPass(
        width=width,
        height=height,
        steps=request.hr_second_pass_steps or request.steps,
        sampler_name=hires_sampler.name,
        schedule_type=hires_schedule,
        upscaler=request.hr_upscaler,
        checkpoint=request.hr_checkpoint_name or request.checkpoint,
    )


def second_pass_plan(
    first_plan: GenerationPlan,
    hires: HiresPass,
    prompts: list[str],
    negative_prompts: list[str],
    denoising_strength: float,
    init: list[Image.Image] | torch.Tensor,
) -> GenerationPlan:
    """A1111's hires pass: img2img of the upscaled first pass that runs exactly ``hires.steps`` steps at the
    denoising strength (its schedule has int(steps / strength) levels), with prompt schedules spanning both: A1111
    reads ``when`` against the first pass's schedule steps and the hires pass's own (each doubled for a
    second-order sampler)."""
    return dataclasses.replace(
        first_plan,
        task=Task.IMG2IMG,
        prompts=prompts,
        negative_prompts=negative_prompts,
        steps=hires.steps,
        width=hires.width,
        height=hires.height,
        sampler_name=hires.sampler_name,
        schedule_type=hires.schedule_type,
        init_image=init,
        denoising_strength=denoising_strength,
        output_latents=False,
        hires_base_steps=first_plan.prompt_steps,
        exact_steps=True,
        noise_multiplier=1.0,
    )


def upscale_first_pass(
    first: list[Image.Image] | torch.Tensor, hires: HiresPass, upscale_image: ImageUpscaler | None
) -> list[Image.Image] | torch.Tensor:
    if hires.latent:
        return upscale_latents(first, hires.upscaler, hires.width, hires.height)
    if upscale_image is None:
        raise ValueError(f"image upscaler {hires.upscaler!r} is not available")
    return [upscale_image(image, hires.upscaler, (hires.width, hires.height)) for image in first]


def hires_infotext(request: Txt2ImgRequest, hires: HiresPass, sampler_name: str) -> dict:
    """A1111's hires keys (Denoising strength is written by the caller)."""
    parameters: dict[str, object] = {}
    if request.hr_resize_x or request.hr_resize_y:
        parameters["Hires resize"] = f"{hires.width}x{hires.height}"
    else:
        parameters["Hires upscale"] = request.hr_scale
    if request.hr_second_pass_steps:
        parameters["Hires steps"] = request.hr_second_pass_steps
    parameters["Hires upscaler"] = request.hr_upscaler
    if hires.sampler_name != sampler_name:
        parameters["Hires sampler"] = hires.sampler_name
    if request.hr_scheduler and request.hr_scheduler != request.scheduler:
        spec, _ = resolve(hires.sampler_name, hires.schedule_type)
        parameters["Hires schedule type"] = infotext_schedule(spec, hires.schedule_type)
    if request.hr_prompt and request.hr_prompt != request.prompt:
        parameters["Hires prompt"] = request.hr_prompt
    if request.hr_negative_prompt and request.hr_negative_prompt != request.negative_prompt:
        parameters["Hires negative prompt"] = request.hr_negative_prompt
    if request.hr_checkpoint_name:
        parameters["Hires checkpoint"] = request.hr_checkpoint_name
    return parameters

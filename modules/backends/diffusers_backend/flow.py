"""Families whose pipelines encode the prompt themselves (FLUX.1, Stable Diffusion 3.5, Kandinsky 2.2) on the
diffusers backend.

They take per-image generators, so seeds, batches, progress, previews and interrupts work as for SD. The
scheduler is the model's own (FLUX / SD 3.5 flow matching) or the catalogue's (Kandinsky's decoder), as the
family says. Latent families are asked for latents that Easel decodes itself (FLUX's packed latents are unpacked
first), so every decode goes through the same VAE code as SD's; the others (Kandinsky's MoVQ) return images.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import torch
from diffusers import DiffusionPipeline
from PIL import Image

from modules.backends.base import BackendError, GenerationPlan, MaskedContent, ProgressReporter
from modules.backends.diffusers_backend.schedulers import build_scheduler
from modules.backends.diffusers_backend.text_encoding import encode_prompts, without_text_encoders
from modules.backends.previews import render_preview
from modules.models.manager import LoadedModel, Task
from modules.prompts.plain import PlainPromptError, plain_prompt

logger = logging.getLogger(__name__)

FULL_PREVIEW = "Full"
PRIOR_STEPS = 25  # diffusers' Kandinsky prior defaults
PRIOR_GUIDANCE = 4.0


def generate_flow(
    model: LoadedModel, plan: GenerationPlan, progress: ProgressReporter, steps: int
) -> torch.Tensor | list[Image.Image]:
    """The plan through the family's task pipeline: unpacked latents (decoded by the backend) for a latent family,
    else the pipeline's images."""
    family = model.family
    if plan.masked_content in (MaskedContent.LATENT_NOISE, MaskedContent.LATENT_NOTHING) and plan.mask is not None:
        raise BackendError(f"{family.display_name}: masked content 'latent noise' / 'latent nothing' is not available")
    if family.own_scheduler:
        scheduler = type(model.pipeline.scheduler).from_config(model.scheduler_config)
    else:
        scheduler = build_scheduler(
            model.scheduler_config, plan.sampler_name, plan.schedule_type, noise_seed=plan.seeds[0]
        )
    task_pipeline = model.pipeline_for(plan.task)
    encodes = bool(family.prompt_embedding_names)
    overrides = without_text_encoders(task_pipeline) if encodes else {}
    pipeline = model.pipeline_view(plan.task, scheduler=scheduler, **overrides)
    arguments = prompt_arguments(model, plan)
    arguments.update(
        num_inference_steps=plan.steps,
        guidance_scale=plan.cfg_scale,
        width=plan.width,
        height=plan.height,
        generator=[torch.Generator("cpu").manual_seed(seed) for seed in plan.seeds],
        callback_on_step_end=FlowStepCallback(progress, steps, plan, previews=family.latent_output),
        callback_on_step_end_tensor_inputs=["latents"],
        output_type="latent" if family.latent_output else "pil",
    )
    arguments.update(task_arguments(plan))
    with torch.inference_mode():
        if encodes:
            prompts, negatives = arguments.pop("prompt"), arguments.pop("negative_prompt", None)
            denoiser = getattr(task_pipeline, family.denoiser)
            arguments.update(encode_prompts(task_pipeline, family, prompts, negatives, model.text_device, denoiser))
        if family.prior_guidance:
            pipeline, arguments = pipeline.decoder_pipe, prior_embeddings(pipeline, arguments, plan)
        accepted = inspect.signature(type(pipeline).__call__).parameters
        output = pipeline(**{name: value for name, value in arguments.items() if name in accepted})
    if not family.latent_output:
        return list(output.images)
    return unpack_latents(pipeline, output.images, plan.height, plan.width)


def prior_embeddings(pipeline: DiffusionPipeline, arguments: dict[str, Any], plan: GenerationPlan) -> dict[str, Any]:
    """Kandinsky: the prior turns each prompt (and negative prompt) into an image embedding for the decoder.

    Called stage by stage rather than through the combined pipeline: the prior runs prompts and negative prompts
    as one batch of twice the size, so each needs its own generator (seeded with the image's seed) for a batch
    image to equal the same seed alone. The prior keeps diffusers' defaults (25 steps, guidance 4)."""
    prompts, negatives = arguments.pop("prompt"), arguments.pop("negative_prompt", None)
    negative_generators = [torch.Generator("cpu").manual_seed(seed) for seed in plan.seeds]
    image_embeds, negative_image_embeds = pipeline.prior_pipe(
        prompt=prompts,
        negative_prompt=negatives,
        num_inference_steps=PRIOR_STEPS,
        guidance_scale=PRIOR_GUIDANCE,
        generator=[*arguments["generator"], *negative_generators],
        output_type="pt",
        return_dict=False,
    )
    return {**arguments, "image_embeds": image_embeds, "negative_image_embeds": negative_image_embeds}


def prompt_arguments(model: LoadedModel, plan: GenerationPlan) -> dict[str, Any]:
    try:
        prompts = [plain_prompt(prompt, plan.steps).text for prompt in plan.prompts]
        negatives = [plain_prompt(prompt, plan.steps).text for prompt in plan.negative_prompts]
    except PlainPromptError as error:
        raise BackendError(f"{model.family.display_name}: {error}") from error
    arguments: dict[str, Any] = {"prompt": prompts}
    if model.family.takes_negative_prompt:
        arguments["negative_prompt"] = negatives
    elif any(negatives):
        raise BackendError(f"{model.family.display_name} takes no negative prompt (distilled guidance)")
    return arguments


def task_arguments(plan: GenerationPlan) -> dict[str, Any]:
    """img2img and inpaint: the init image (and mask) with diffusers' strength (denoising strength)."""
    if plan.task is Task.TXT2IMG:
        return {}
    init = plan.init_image  # one image, or one per batch image (the hires pass)
    # One image per batch image: Kandinsky's decoders do not broadcast one image over a batch.
    images = init if isinstance(init, list) else [init] * plan.batch_size
    if not all(isinstance(image, Image.Image) for image in images):
        raise BackendError("latent input (a latent hires pass) is not available for this family: use an image upscaler")
    arguments: dict[str, Any] = {"image": images, "strength": plan.denoising_strength}
    if plan.exact_steps:
        total = max(plan.steps, int(plan.steps / min(plan.denoising_strength, 0.999)))
        arguments.update(num_inference_steps=total, strength=min(1.0, (plan.steps + 0.5) / total))
    if plan.task is Task.INPAINT:
        mask = plan.mask if plan.mask is not None else Image.new("L", images[0].size, 255)
        arguments["mask_image"] = [mask] * len(images)
    return arguments


def unpack_latents(pipeline: DiffusionPipeline, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """FLUX returns its latents packed as a sequence of 2x2 patches; other families return image latents."""
    if latents.ndim == 3:
        return pipeline._unpack_latents(latents, height, width, pipeline.vae_scale_factor)
    return latents


class FlowStepCallback:
    """Progress, interrupt / skip and previews (a full VAE decode: the approximate previews are SD's 4-channel
    latent space only) for a transformer family's pipeline."""

    def __init__(self, control: ProgressReporter, steps: int, plan: GenerationPlan, previews: bool = True) -> None:
        self.control = control
        self.steps = steps
        self.plan = plan
        self.previews = previews  # False: the latents are not a VAE's (Kandinsky's MoVQ): no live preview

    def __call__(self, pipeline: DiffusionPipeline, step: int, timestep: Any, tensors: dict) -> dict:
        done = step + 1
        preview = None
        every = self.control.preview_every_n_steps
        if self.previews and every > 0 and done % every == 0 and done < self.steps and "latents" in tensors:
            latents = unpack_latents(pipeline, tensors["latents"], self.plan.height, self.plan.width)
            preview = render_preview(FULL_PREVIEW, latents, False, pipeline)
        self.control.step_done(done, preview)
        if self.control.interrupted or self.control.skipped:
            pipeline._interrupt = True  # diffusers' documented early stop; the current latents are decoded
        return {}

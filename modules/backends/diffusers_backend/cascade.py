"""DeepFloyd IF on the diffusers backend: stage I at a quarter (or a sixteenth) of the size, then each later stage
the model loaded with it (stage II: x4), all in pixel space.

img2img and inpaint run every stage with the family's pipeline of that task (``IFImg2ImgPipeline`` then
``IFImg2ImgSuperResolutionPipeline``, ``IFInpaintingPipeline`` then ``IFInpaintingSuperResolutionPipeline``): stage I
denoises the init image shrunk to its size, each later stage gets the init image (and mask) at its own output size
as ``original_image``. Images and masks are handed over as tensors already at each stage's size, because the
pipelines would otherwise resize PIL images to the UNet's training size rather than the requested one.

diffusers' IF pipelines take the old ``callback(step, timestep, latents)`` hook and cannot be stopped inside a
stage: an interrupt or skip takes effect between stages (the images of the last finished stage are kept).
"""

from __future__ import annotations

import inspect
import logging
import math
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline
from PIL import Image

from modules.backends.base import BackendError, GenerationPlan, ProgressReporter
from modules.backends.diffusers_backend.schedulers import build_scheduler
from modules.backends.diffusers_backend.text_encoding import encode_prompts, without_text_encoders
from modules.models.families import ModelFamily
from modules.models.manager import LoadedModel, Task, pipeline_of_class, pipeline_view
from modules.prompts.plain import PlainPromptError, plain_prompt

logger = logging.getLogger(__name__)

LATER_STAGE_GUIDANCE = 4.0  # diffusers' default for IF stage II
OPTIONAL_STAGE_NOISE_LEVEL = 100  # diffusers' IF guide: stage III (the SD x4 upscaler) at noise level 100


def generate_cascade(model: LoadedModel, plan: GenerationPlan, progress: ProgressReporter) -> list[Image.Image]:
    family = model.family
    scale = family.stage_scale ** len(model.stages)
    if plan.width % (8 * scale) or plan.height % (8 * scale):
        raise BackendError(
            f"{family.display_name}: width and height must be multiples of {8 * scale} (stage I makes 1/{scale} of "
            "the size)"
        )
    try:
        prompts = [plain_prompt(text, plan.steps).text for text in plan.prompts]
        negatives = [plain_prompt(text, plan.steps).text for text in plan.negative_prompts]
    except PlainPromptError as error:
        raise BackendError(f"{family.display_name}: {error}") from error
    stages = [model.pipeline_for(plan.task), *(stage_for_task(stage, family, plan.task) for stage in model.stages)]
    with torch.inference_mode():  # once for every IF stage (stage II loads no T5 of its own)
        embeddings = encode_prompts(stages[0], family, prompts, negatives, model.text_device, stages[0].unet)
    images: Any = None
    for index, stage in enumerate(stages):
        if index and (progress.interrupted or progress.skipped):
            break
        last = index == len(stages) - 1
        scheduler = build_scheduler(dict(stage.scheduler.config), plan.sampler_name, plan.schedule_type)
        # diffusers' IF pipelines read ``config.variance_type``, which only DDPM declares; this request's own
        # scheduler predicts no variance, so it says so and the pipeline drops the UNet's variance channels.
        scheduler.register_to_config(variance_type="fixed_small")
        optional = type(stage).__name__ == family.optional_stage  # stage III encodes its prompt with its own CLIP
        view = pipeline_view(stage, scheduler=scheduler, **({} if optional else without_text_encoders(stage)))
        size = scale // family.stage_scale**index
        height, width = plan.height // size, plan.width // size
        text = {"prompt": prompts, "negative_prompt": negatives} if optional else embeddings
        arguments: dict[str, Any] = {
            **text,
            "num_inference_steps": plan.steps,
            "guidance_scale": plan.cfg_scale if index == 0 else LATER_STAGE_GUIDANCE,
            "height": height,
            "width": width,
            "generator": [torch.Generator("cpu").manual_seed(seed + index) for seed in plan.seeds],
            "output_type": "pil" if last else "pt",
            "clean_caption": False,  # needs bs4 and ftfy; Easel's prompts are plain already
            "callback": StageProgress(progress, plan.steps, index, len(stages)),
            "callback_steps": 1,
        }
        if index:
            arguments["image"] = images
        if optional:
            arguments["noise_level"] = OPTIONAL_STAGE_NOISE_LEVEL
        else:
            arguments.update(task_inputs(plan, index, width, height))
        accepted = inspect.signature(type(view).__call__).parameters
        with torch.inference_mode():
            images = view(**{name: value for name, value in arguments.items() if name in accepted}).images
    return images if isinstance(images, list) else to_pil(stages[0], images)


def stage_for_task(stage: DiffusionPipeline, model_family: ModelFamily, task: Task) -> DiffusionPipeline:
    """A later stage's pipeline of ``task`` (``IFSuperResolutionPipeline`` -> its img2img / inpainting variant); the
    optional last stage (the SD x4 upscaler) enlarges the images of every task as they are."""
    if type(stage).__name__ == model_family.optional_stage:
        return stage
    class_name = model_family.next_stage_pipelines.get(task.value)
    if class_name is None:
        raise BackendError(f"{model_family.display_name}: the later stages cannot run {task.value}")
    return pipeline_of_class(stage, class_name)


def task_inputs(plan: GenerationPlan, stage: int, width: int, height: int) -> dict[str, Any]:
    """img2img / inpaint inputs of one stage: the init image (stage I: ``image``; later stages: ``original_image``)
    and the mask, as tensors of the stage's size, one row per batch image."""
    if plan.task is Task.TXT2IMG:
        return {}
    init = plan.init_image if isinstance(plan.init_image, list) else [plan.init_image] * plan.batch_size
    if not all(isinstance(image, Image.Image) for image in init):
        raise BackendError("latent input (a latent hires pass) is not available for DeepFloyd IF: use an upscaler")
    if int(plan.steps * plan.denoising_strength) < 1:
        raise BackendError(
            f"DeepFloyd IF: denoising strength {plan.denoising_strength} of {plan.steps} steps runs no step; "
            "raise the denoising strength or the steps"
        )
    pixels = torch.cat([image_tensor(image, width, height) for image in init])
    inputs: dict[str, Any] = {"strength": plan.denoising_strength, "image" if stage == 0 else "original_image": pixels}
    if plan.task is Task.INPAINT:
        mask = plan.mask if plan.mask is not None else Image.new("L", (width, height), 255)
        inputs["mask_image"] = image_tensor(mask.convert("L"), width, height, signed=False).repeat(len(init), 1, 1, 1)
    return inputs


def image_tensor(image: Image.Image, width: int, height: int, signed: bool = True) -> torch.Tensor:
    """A PIL image at ``width`` x ``height`` as a (1, channels, height, width) tensor in [-1, 1] (or [0, 1])."""
    resized = image if image.size == (width, height) else image.resize((width, height), Image.Resampling.LANCZOS)
    mode = "L" if image.mode == "L" else "RGB"
    array = torch.from_numpy(np.asarray(resized.convert(mode), dtype=np.float32) / 255.0)
    tensor = (array[None] if array.ndim == 2 else array.permute(2, 0, 1))[None]
    return tensor * 2 - 1 if signed else tensor


def to_pil(pipeline: DiffusionPipeline, images: torch.Tensor) -> list[Image.Image]:
    """Stage images ([-1, 1] tensors) kept after an interrupt between stages."""
    array = (images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy()
    return pipeline.numpy_to_pil(array)


class StageProgress:
    """Each stage's steps reported as a share of the job's steps (diffusers' IF pipelines take ``callback``)."""

    def __init__(self, control: ProgressReporter, steps: int, stage: int, stages: int) -> None:
        self.control, self.steps, self.stage, self.stages = control, steps, stage, stages

    def __call__(self, step: int, timestep: Any, latents: torch.Tensor) -> None:
        done = math.ceil((self.stage * self.steps + step + 1) / self.stages)
        self.control.step_done(min(done, self.steps))

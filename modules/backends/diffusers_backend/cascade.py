"""DeepFloyd IF on the diffusers backend: stage I at a quarter (or a sixteenth) of the size, then each later stage
the model loaded with it (stage II: x4), all in pixel space.

diffusers' IF pipelines take the old ``callback(step, timestep, latents)`` hook and cannot be stopped inside a
stage: an interrupt or skip takes effect between stages (the images of the last finished stage are kept).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from diffusers import DiffusionPipeline
from PIL import Image

from modules.backends.base import BackendError, GenerationPlan, ProgressReporter
from modules.backends.diffusers_backend.schedulers import build_scheduler
from modules.models.manager import LoadedModel, Task, pipeline_view
from modules.prompts.plain import PlainPromptError, plain_prompt

logger = logging.getLogger(__name__)

LATER_STAGE_GUIDANCE = 4.0  # diffusers' default for IF stage II


def generate_cascade(model: LoadedModel, plan: GenerationPlan, progress: ProgressReporter) -> list[Image.Image]:
    family = model.family
    if plan.task is not Task.TXT2IMG:
        raise BackendError(f"{family.display_name}: only txt2img is available")
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
    stages = [model.pipeline, *model.stages]
    images: Any = None
    for index, stage in enumerate(stages):
        if index and (progress.interrupted or progress.skipped):
            break
        last = index == len(stages) - 1
        scheduler = build_scheduler(dict(stage.scheduler.config), plan.sampler_name, plan.schedule_type)
        # diffusers' IF pipelines read ``config.variance_type``, which only DDPM declares; this request's own
        # scheduler predicts no variance, so it says so and the pipeline drops the UNet's variance channels.
        scheduler.register_to_config(variance_type="fixed_small")
        view = pipeline_view(stage, scheduler=scheduler)
        size = scale // family.stage_scale**index
        arguments: dict[str, Any] = {
            "prompt": prompts,
            "negative_prompt": negatives,
            "num_inference_steps": plan.steps,
            "guidance_scale": plan.cfg_scale if index == 0 else LATER_STAGE_GUIDANCE,
            "height": plan.height // size,
            "width": plan.width // size,
            "generator": [torch.Generator("cpu").manual_seed(seed + index) for seed in plan.seeds],
            "output_type": "pil" if last else "pt",
            "clean_caption": False,  # needs bs4 and ftfy; Easel's prompts are plain already
            "callback": StageProgress(progress, plan.steps, index, len(stages)),
            "callback_steps": 1,
        }
        if index:
            arguments["image"] = images
        with torch.inference_mode():
            images = view(**arguments).images
    return images if isinstance(images, list) else to_pil(stages[0], images)


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

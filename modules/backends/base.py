"""The backend seam: one protocol that processing calls; `--backend` picks the implementation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from PIL import Image

from modules.models.manager import LoadedModel, Task
from modules.processing.job import JobControl
from modules.processing.requests import MaskedContent


class BackendError(ValueError):
    """A plan the backend cannot run; the message is for the user."""


@dataclass(frozen=True)
class GenerationPlan:
    """One batch for the backend: everything resolved (seeds, sizes, images already prepared)."""

    task: Task
    prompts: list[str]
    negative_prompts: list[str]
    seeds: list[int]
    steps: int
    cfg_scale: float
    width: int
    height: int
    sampler_name: str
    schedule_type: str
    clip_skip: int = 1
    init_image: Image.Image | torch.Tensor | None = None
    mask: Image.Image | None = None
    denoising_strength: float = 1.0
    masked_content: MaskedContent = MaskedContent.ORIGINAL
    output_latents: bool = False
    emphasis: str = "Original"
    hires_base_steps: int | None = None  # set on a hires second pass: prompt schedules span both passes

    @property
    def batch_size(self) -> int:
        return len(self.seeds)


class Backend(Protocol):
    """Turns a plan into images with a loaded model, reporting progress to the job control."""

    name: str

    def generate(
        self, model: LoadedModel, plan: GenerationPlan, control: JobControl
    ) -> list[Image.Image] | torch.Tensor:
        """Images, or the final latents (a batch tensor) when ``plan.output_latents``."""
        ...

    def decode(self, model: LoadedModel, latents: torch.Tensor) -> list[Image.Image]:
        """Decode latents returned by ``generate`` into images."""
        ...

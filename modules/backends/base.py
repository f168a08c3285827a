"""The backend seam: one protocol that processing calls; `--backend` picks the implementation (``registry``).

Nothing here imports processing: a backend gets a plan (everything resolved), the model of the current scope
and something to report progress to.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

import torch
from PIL import Image

from modules.models.manager import LoadedModel, Task
from modules.samplers import SamplerSupport


class BackendError(ValueError):
    """A plan the backend cannot run; the message is for the user."""


class MaskedContent(IntEnum):
    """A1111's ``inpainting_fill`` values."""

    FILL = 0
    ORIGINAL = 1
    LATENT_NOISE = 2
    LATENT_NOTHING = 3


class ProgressReporter(Protocol):
    """What a backend reports to while sampling (processing's JobControl implements it)."""

    preview_every_n_steps: int

    @property
    def interrupted(self) -> bool: ...

    @property
    def skipped(self) -> bool: ...

    def step_done(self, step: int, preview: Image.Image | None = None) -> None: ...


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
    # img2img that runs exactly ``steps`` denoising steps at ``denoising_strength`` (A1111's hires pass and its
    # img2img_fix_steps option); otherwise each backend applies its own img2img step rule.
    exact_steps: bool = False
    noise_multiplier: float = 1.0  # A1111's initial_noise_multiplier (img2img only)
    image_cfg_scale: float | None = None  # instruct-pix2pix's image guidance (None: 1.0, as A1111)
    # The refiner switch: the base pass stops at this fraction of the schedule and returns its noisy latents;
    # the refiner pass (``init_image`` = those latents) starts there without adding noise.
    denoising_end: float | None = None
    denoising_start: float | None = None

    @property
    def batch_size(self) -> int:
        return len(self.seeds)


class Backend(Protocol):
    """Turns a plan into images with a loaded model, reporting progress."""

    name: str

    def sampler_support(self) -> SamplerSupport:
        """The samplers this backend implements, each with its schedule types (for the catalogue's resolve)."""
        ...

    def steps_run(self, plan: GenerationPlan) -> int:
        """How many denoising steps ``generate`` runs for ``plan`` (progress totals and prompt schedules)."""
        ...

    def generate(
        self, model: LoadedModel, plan: GenerationPlan, progress: ProgressReporter
    ) -> list[Image.Image] | torch.Tensor:
        """Images, or the final latents (a batch tensor) when ``plan.output_latents``."""
        ...

    def decode(self, model: LoadedModel, latents: torch.Tensor) -> list[Image.Image]:
        """Decode latents returned by ``generate`` into images."""
        ...

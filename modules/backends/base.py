"""The backend seam: one protocol that processing calls; `--backend` picks the implementation (``registry``).

Nothing here imports processing: a backend gets a plan (everything resolved), the model of the current scope
and something to report progress to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol

import torch
from PIL import Image

from modules.backends.hooks import DenoiserHooks, ExtraNoiseListener
from modules.compute import DeepCacheUNet
from modules.controlnet.residuals import ControlPlan
from modules.models.manager import LoadedModel, Task
from modules.samplers import SamplerSupport, prompt_schedule_steps


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

    def add_infotext(self, entries: Mapping[str, object]) -> None:
        """Infotext entries known only once sampling ran (A1111 adds NGMS, Skip Early CFG ... from inside)."""
        ...


@dataclass(frozen=True)
class SamplingSettings:
    """A1111's sampler and noise settings (its option names), resolved for one request.

    ``eta`` and the ``s_*`` values are the request's (API fields) or else the settings'; ``eta`` None means
    "the sampler's setting" (``eta_ancestral`` or ``eta_ddim``). ``s_tmax`` 0 means infinity, as A1111's setting.
    """

    randn_source: str = "GPU"
    eta_noise_seed_delta: int = 0
    eta: float | None = None
    eta_ancestral: float = 1.0
    eta_ddim: float = 0.0
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = 0.0
    s_noise: float = 1.0
    always_discard_next_to_last_sigma: bool = False
    sgm_noise_multiplier: bool = False
    use_old_karras_scheduler_sigmas: bool = False
    s_min_uncond: float = 0.0
    s_min_uncond_all: bool = False
    skip_early_cond: float = 0.0
    sigma_min: float = 0.0  # 0: the model's (also sigma_max; rho 0: the schedule's default)
    sigma_max: float = 0.0
    rho: float = 0.0
    beta_dist_alpha: float = 0.6
    beta_dist_beta: float = 0.6
    uni_pc_variant: str = "bh1"
    uni_pc_skip_type: str = "time_uniform"
    uni_pc_order: int = 3
    uni_pc_lower_order_final: bool = True
    img2img_extra_noise: float = 0.0


@dataclass(frozen=True)
class NoiseSeeds:
    """A1111's variation seed and "resize seed from" for one batch (0 sizes: no resize)."""

    subseeds: tuple[int, ...] = ()
    subseed_strength: float = 0.0
    resize_from_w: int = 0
    resize_from_h: int = 0

    @property
    def resized(self) -> bool:
        return self.resize_from_w > 0 and self.resize_from_h > 0


@dataclass(frozen=True)
class RunDetails:
    """What a backend adds to a run before it starts: infotext entries (A1111 keys) and notes for the user."""

    infotext: dict[str, object] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


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
    init_image: Image.Image | list[Image.Image] | torch.Tensor | None = None  # a list: one per batch slot
    mask: Image.Image | None = None
    denoising_strength: float = 1.0
    masked_content: MaskedContent = MaskedContent.ORIGINAL
    output_latents: bool = False
    emphasis: str = "Original"
    # Set on a hires second pass: prompt schedules span both passes. A1111's ``firstpass_steps``: the first pass's
    # ``prompt_steps`` (twice its steps for a second-order first-pass sampler).
    hires_base_steps: int | None = None
    # img2img that runs exactly ``steps`` denoising steps at ``denoising_strength`` (A1111's hires pass and its
    # img2img_fix_steps option); otherwise each backend applies its own img2img step rule.
    exact_steps: bool = False
    noise_multiplier: float = 1.0  # A1111's initial_noise_multiplier (img2img only)
    noise: NoiseSeeds = NoiseSeeds()
    sampling: SamplingSettings = SamplingSettings()
    image_cfg_scale: float | None = None  # instruct-pix2pix's image guidance (None: 1.0, as A1111)
    edit_model: bool = False  # an instruct-pix2pix model (A1111's "edit" model): the init image conditions each step
    # The refiner switch: the base pass stops at this fraction of the schedule and returns its noisy latents;
    # the refiner pass (``init_image`` = those latents) starts there without adding noise.
    denoising_end: float | None = None
    denoising_start: float | None = None
    controlnet: tuple[ControlPlan, ...] = ()  # ControlNet units (modules/controlnet), applied by every backend
    # Listeners around each model call of guidance (A1111's on_cfg_denoiser ...); None or empty: none.
    denoiser_hooks: DenoiserHooks | None = field(default=None, compare=False)
    # Listeners of img2img's extra noise (A1111's on_extra_noise; the original backend, which has the setting).
    extra_noise_listeners: tuple[ExtraNoiseListener, ...] = field(default=(), compare=False)

    @property
    def batch_size(self) -> int:
        return len(self.seeds)

    @property
    def prompt_steps(self) -> int:
        """The steps this pass's prompt schedule is built on: A1111's ``total_steps`` of the sampler (``setup_conds``
        and, for the hires pass, ``calculate_hr_conds``), twice ``steps`` for a second-order sampler such as Heun."""
        return prompt_schedule_steps(self.sampler_name, self.steps)


class Backend(Protocol):
    """Turns a plan into images with a loaded model, reporting progress."""

    name: str

    def sampler_support(self) -> SamplerSupport:
        """The samplers this backend implements, each with its schedule types (for the catalogue's resolve)."""
        ...

    def run_details(self, plan: GenerationPlan) -> RunDetails:
        """The infotext entries and notes ``plan`` implies on this backend (sampler parameters, RNG, limits)."""
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


def request_unet(model: LoadedModel) -> torch.nn.Module:
    """The UNet one request calls, on either backend: the model's own, or wrapped for DeepCache (a new cache per
    request) when the DeepCache interval setting is above 1."""
    interval = model.compute.deepcache_interval if model.compute is not None else 1
    return DeepCacheUNet(model.pipeline.unet, interval) if interval > 1 else model.pipeline.unet

"""The diffusers backend's samplers: catalogue names (``modules.samplers``) mapped onto diffusers schedulers.

A sampler is a diffusers scheduler class plus options; a schedule type (A1111's "Schedule type" dropdown)
adds the options that pick the noise levels. ``build_scheduler`` makes a new scheduler for one request;
``SUPPORT`` tells the catalogue which samplers and schedule types this backend implements.

Timestep spacing (why the checkpoint's own scheduler config is not trusted)
---------------------------------------------------------------------------
A checkpoint's scheduler config carries choices that are not properties of the model: SD 1.x ships a
PNDM config with ``steps_offset=1`` and "leading" spacing, SDXL an Euler config with "leading".
A1111's k-diffusion samplers ignore those: "Uniform" is k-diffusion's ``get_sigmas(n)``, n noise
levels at timesteps ``linspace(999, 0, n)`` followed by 0, i.e. the full sigma range. So only the
keys that describe the trained model (``MODEL_CONFIG_KEYS``: betas, ``prediction_type`` so SD 2.x
stays v-prediction, zero-terminal-SNR) are taken from the base config; everything else is the
scheduler class's default plus the options in this file. Measured against A1111's formulas
(SD 1.x betas, 10 steps):

- k-diffusion ports (Euler, Euler a, LMS, Heun, DPM2, DPM2 a, DPM++ SDE): ``timestep_spacing="linspace"``
  is A1111's Uniform exactly (1e-5 relative); Karras/Exponential/Beta use the same full range and match.
  ``"trailing"`` is A1111's SGM Uniform (``linspace(999, 0, n + 1)[:-1]``) up to integer rounding
  (under one training timestep; max 0.6 % relative in sigma).
- DPM-Solver family (DPM++ 2M/2M SDE/2M SDE Heun/3M SDE/2S a, UniPC, DEIS): these classes space n + 1
  points and drop the last, so their "linspace" *is* SGM Uniform (0.17 % relative) and A1111's Uniform
  has no equivalent there; it is not offered (a clear error). UniPC and DEIS offer only "Uniform": A1111's
  UniPC time-uniform steps, which are that very spacing ending at sigma_min (``final_sigmas_type="sigma_min"``).
- DDIM and PLMS: A1111 runs them on its own "uniform" DDIM discretization ``range(0, 1000, 1000 // n) + 1``,
  which is diffusers' "leading" spacing with ``steps_offset=1``.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    DEISMultistepScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSDEScheduler,
    DPMSolverSinglestepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LCMScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from modules.samplers import AUTOMATIC, SCHEDULE_TYPES, SamplerError, SamplerSupport, find_sampler, resolve

logger = logging.getLogger(__name__)

# Keys of a checkpoint's scheduler config that describe the trained model, kept from the base config.
MODEL_CONFIG_KEYS: tuple[str, ...] = (
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "prediction_type",
)
ZERO_SNR_KEY = "rescale_betas_zero_snr"


def _frozen(**options: Any) -> Mapping[str, Any]:
    return MappingProxyType(dict(options))


_K_UNIFORM = _frozen(timestep_spacing="linspace")
# k-diffusion ports: see the module docstring for the measurements behind each spacing.
K_DIFFUSION_SCHEDULES = MappingProxyType(
    {
        "Uniform": _K_UNIFORM,
        "Karras": _frozen(timestep_spacing="linspace", use_karras_sigmas=True),
        "Exponential": _frozen(timestep_spacing="linspace", use_exponential_sigmas=True),
        "SGM Uniform": _frozen(timestep_spacing="trailing"),
        "Beta": _frozen(timestep_spacing="linspace", use_beta_sigmas=True),
    }
)
# EulerAncestralDiscreteScheduler (diffusers 0.42.1) has no use_*_sigmas options.
EULER_ANCESTRAL_SCHEDULES = MappingProxyType({key: K_DIFFUSION_SCHEDULES[key] for key in ("Uniform", "SGM Uniform")})
DPM_SOLVER_SCHEDULES = MappingProxyType(
    {
        "Karras": _frozen(timestep_spacing="linspace", use_karras_sigmas=True),
        "Exponential": _frozen(timestep_spacing="linspace", use_exponential_sigmas=True),
        "SGM Uniform": _frozen(timestep_spacing="linspace"),
        "Beta": _frozen(timestep_spacing="linspace", use_beta_sigmas=True),
    }
)
# DPMSolverSinglestepScheduler has no timestep_spacing option: its fixed spacing is the "linspace" above.
DPM_SINGLESTEP_SCHEDULES = MappingProxyType(
    {
        "Karras": _frozen(use_karras_sigmas=True),
        "Exponential": _frozen(use_exponential_sigmas=True),
        "SGM Uniform": _frozen(),
        "Beta": _frozen(use_beta_sigmas=True),
    }
)
# A1111's UniPC ignores the schedule type: time-uniform steps ending at sigma_min. Only that is offered, and
# it is also the only one diffusers' bh1 variant survives: with a zero final sigma (as Karras, Exponential,
# Beta and SGM Uniform end) bh1 returns NaN (measured on diffusers 0.42.1).
UNIPC_SCHEDULES = MappingProxyType({"Uniform": _frozen(timestep_spacing="linspace", final_sigmas_type="sigma_min")})
DEIS_SCHEDULES = MappingProxyType({"Uniform": _frozen(timestep_spacing="linspace")})
DDIM_SCHEDULES = MappingProxyType({"Uniform": _frozen(timestep_spacing="leading", steps_offset=1)})
LCM_SCHEDULES = MappingProxyType({"Uniform": _frozen()})


@dataclass(frozen=True)
class DiffusersSampler:
    """How this backend runs one catalogue sampler: a diffusers scheduler class, options, schedule options."""

    name: str
    scheduler_class: type
    options: Mapping[str, Any]
    schedule_options: Mapping[str, Mapping[str, Any]]
    note: str = ""

    @property
    def schedules(self) -> tuple[str, ...]:
        """Automatic first, then the schedule types this sampler runs with, in the catalogue's order."""
        return tuple(label for label in SCHEDULE_TYPES if label == AUTOMATIC or label in self.schedule_options)


def _spec(
    name: str,
    aliases: tuple[str, ...],
    scheduler_class: type,
    options: Mapping[str, Any],
    default_schedule: str,
    schedule_options: Mapping[str, Mapping[str, Any]],
    note: str = "",
) -> DiffusersSampler:
    """One row; ``aliases`` and ``default_schedule`` must agree with the catalogue (checked by a test)."""
    info = find_sampler(name)
    if info.aliases != aliases or info.default_schedule != default_schedule:
        raise AssertionError(f"diffusers sampler table disagrees with the catalogue for {name}")
    return DiffusersSampler(
        name=name,
        scheduler_class=scheduler_class,
        options=MappingProxyType(dict(options)),
        schedule_options=schedule_options,
        note=note,
    )


_BROWNIAN_NOTE = (
    "diffusers draws independent Gaussian noise per step where A1111 uses a Brownian tree: same law, other images"
)
_DPM_2M = {"algorithm_type": "dpmsolver++", "solver_order": 2, "solver_type": "midpoint"}
_DPM_SDE = {"algorithm_type": "sde-dpmsolver++", "solver_type": "midpoint"}

_TABLE: tuple[DiffusersSampler, ...] = (
    _spec("DPM++ 2M", ("k_dpmpp_2m",), DPMSolverMultistepScheduler, _DPM_2M, "Karras", DPM_SOLVER_SCHEDULES),
    _spec(
        "DPM++ SDE",
        ("k_dpmpp_sde",),
        DPMSolverSDEScheduler,
        {},
        "Karras",
        K_DIFFUSION_SCHEDULES,
        "port of k-diffusion sample_dpmpp_sde with a torchsde Brownian tree; pass noise_seed for repeatable images",
    ),
    _spec(
        "DPM++ 2M SDE",
        ("k_dpmpp_2m_sde",),
        DPMSolverMultistepScheduler,
        {**_DPM_SDE, "solver_order": 2},
        "Exponential",
        DPM_SOLVER_SCHEDULES,
        _BROWNIAN_NOTE,
    ),
    _spec(
        "DPM++ 2M SDE Heun",
        ("k_dpmpp_2m_sde_heun",),
        DPMSolverMultistepScheduler,
        {**_DPM_SDE, "solver_order": 2, "solver_type": "heun"},
        "Exponential",
        DPM_SOLVER_SCHEDULES,
        _BROWNIAN_NOTE,
    ),
    # DPM-Solver++(2S) singlestep is deterministic in diffusers; A1111's DPM++ 2S a adds ancestral noise (eta 1).
    _spec(
        "DPM++ 2S a",
        ("k_dpmpp_2s_a",),
        DPMSolverSinglestepScheduler,
        {**_DPM_2M, "lower_order_final": True},
        "Karras",
        DPM_SINGLESTEP_SCHEDULES,
        "approximation: diffusers' DPM-Solver++(2S) singlestep has no ancestral noise, unlike A1111's (eta 1)",
    ),
    _spec(
        "DPM++ 3M SDE",
        ("k_dpmpp_3m_sde",),
        DPMSolverMultistepScheduler,
        {**_DPM_SDE, "solver_order": 3},
        "Exponential",
        DPM_SOLVER_SCHEDULES,
        _BROWNIAN_NOTE + "; A1111 also discards the next-to-last sigma, diffusers does not",
    ),
    _spec(
        "Euler a",
        ("k_euler_a", "k_euler_ancestral"),
        EulerAncestralDiscreteScheduler,
        {},
        "Uniform",
        EULER_ANCESTRAL_SCHEDULES,
    ),
    _spec("Euler", ("k_euler",), EulerDiscreteScheduler, {}, "Uniform", K_DIFFUSION_SCHEDULES),
    _spec("LMS", ("k_lms",), LMSDiscreteScheduler, {}, "Uniform", K_DIFFUSION_SCHEDULES),
    _spec("Heun", ("k_heun",), HeunDiscreteScheduler, {}, "Uniform", K_DIFFUSION_SCHEDULES),
    # A1111 runs DPM2 / DPM2 a with one step more and the next-to-last sigma dropped; diffusers cannot.
    _spec(
        "DPM2",
        ("k_dpm_2",),
        KDPM2DiscreteScheduler,
        {},
        "Karras",
        K_DIFFUSION_SCHEDULES,
        "A1111 discards the next-to-last sigma, diffusers does not",
    ),
    _spec(
        "DPM2 a",
        ("k_dpm_2_a",),
        KDPM2AncestralDiscreteScheduler,
        {},
        "Karras",
        K_DIFFUSION_SCHEDULES,
        "A1111 discards the next-to-last sigma, diffusers does not",
    ),
    _spec(
        "DDIM", ("ddim",), DDIMScheduler, {"clip_sample": False, "set_alpha_to_one": False}, "Uniform", DDIM_SCHEDULES
    ),
    # PNDM without the Runge-Kutta warm-up is PLMS; its doubled first step is A1111's 2nd-order bootstrap.
    _spec(
        "PLMS",
        ("plms",),
        PNDMScheduler,
        {"skip_prk_steps": True, "set_alpha_to_one": False},
        "Uniform",
        DDIM_SCHEDULES,
    ),
    # A1111 defaults: UniPC variant bh1, order 3, lower order final, time-uniform steps ending at sigma_min.
    _spec(
        "UniPC",
        ("unipc",),
        UniPCMultistepScheduler,
        {"solver_type": "bh1", "solver_order": 3, "predict_x0": True, "lower_order_final": True},
        "Uniform",
        UNIPC_SCHEDULES,
    ),
    # DEIS keeps its own spacing: its final step ends at sigma_min, so Karras/Exponential/Beta would end with a
    # zero-length step there; only the native spacing (UniPC's "Uniform") is offered.
    _spec(
        "DEIS",
        ("deis",),
        DEISMultistepScheduler,
        {},
        "Uniform",
        DEIS_SCHEDULES,
        "not an A1111 sampler (diffusers' DEIS multistep)",
    ),
    _spec(
        "LCM",
        ("k_lcm", "lcm"),
        LCMScheduler,
        {},
        "Uniform",
        LCM_SCHEDULES,
        "approximation: diffusers' LCMScheduler (50-step LCM grid, boundary conditions); "
        "A1111 runs LCM on k-diffusion sigmas",
    ),
)


SAMPLERS: Mapping[str, DiffusersSampler] = MappingProxyType({sampler.name: sampler for sampler in _TABLE})
# What this backend implements, for the catalogue's ``resolve`` and the UI's dropdowns.
SUPPORT: SamplerSupport = MappingProxyType({sampler.name: sampler.schedules[1:] for sampler in _TABLE})


def _model_config(base_config: Mapping[str, Any], spec: DiffusersSampler) -> dict[str, Any]:
    """The keys of ``base_config`` that describe the trained model (see the module docstring)."""
    config = {key: base_config[key] for key in MODEL_CONFIG_KEYS if key in base_config}
    if base_config.get(ZERO_SNR_KEY):
        if ZERO_SNR_KEY not in inspect.signature(spec.scheduler_class.__init__).parameters:
            raise SamplerError(
                f"Sampler {spec.name!r} cannot sample a zero-terminal-SNR model (rescale_betas_zero_snr); "
                "use Euler, Euler a, DPM++ 2M, DDIM, UniPC or LCM"
            )
        config[ZERO_SNR_KEY] = True
    return config


class ScaledNoise:
    """Scheduler mixin: ``add_noise`` scales the noise by ``noise_multiplier`` (A1111's img2img "Noise multiplier",
    ``initial_noise_multiplier``). A subclass made per scheduler class, not a patch of diffusers."""

    noise_multiplier: float = 1.0

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return super().add_noise(original_samples, noise * self.noise_multiplier, timesteps)  # type: ignore[misc]


@functools.cache
def scaled_noise_class(scheduler_class: type) -> type:
    return type(f"{scheduler_class.__name__}WithNoiseMultiplier", (ScaledNoise, scheduler_class), {})


def build_scheduler(
    base_config: Mapping[str, Any],
    sampler_name: str,
    schedule_type: str = AUTOMATIC,
    *,
    noise_seed: int | None = None,
    noise_multiplier: float = 1.0,
) -> SchedulerMixin:
    """A new scheduler for one request; ``base_config`` (e.g. ``pipeline.scheduler.config``) is not changed.

    ``noise_seed`` seeds the Brownian tree of DPM++ SDE (A1111 uses the image seed); without it diffusers
    draws the tree's seed from torch's global generator and the image is not repeatable. ``noise_multiplier``
    scales the noise img2img adds to the init latents.
    """
    info, effective = resolve(sampler_name, schedule_type, SUPPORT)
    spec = SAMPLERS[info.name]
    options = {**spec.options, **spec.schedule_options[effective]}
    if spec.scheduler_class is DPMSolverSDEScheduler:
        options["noise_sampler_seed"] = noise_seed
    scheduler_class = spec.scheduler_class if noise_multiplier == 1.0 else scaled_noise_class(spec.scheduler_class)
    scheduler = scheduler_class.from_config(_model_config(base_config, spec), **options)
    if noise_multiplier != 1.0:
        scheduler.noise_multiplier = noise_multiplier
    logger.debug(
        "scheduler built sampler=%s schedule=%s class=%s options=%s",
        spec.name,
        effective,
        spec.scheduler_class.__name__,
        options,
    )
    return scheduler

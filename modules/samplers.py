"""The sampler table: A1111's sampler and schedule-type names mapped onto diffusers schedulers.

One table (``SAMPLERS``) names every sampler the UI and the API offer. A sampler is a diffusers
scheduler class plus options; a schedule type (A1111's "Schedule type" dropdown) adds the options
that pick the noise levels. ``build_scheduler`` makes a new scheduler for one request.

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

import inspect
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

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

logger = logging.getLogger(__name__)

AUTOMATIC = "Automatic"

# Schedule types Easel offers, in A1111's order. A1111's Polyexponential, KL Optimal, Align Your Steps,
# Simple, Normal and DDIM have no faithful diffusers option and are refused by name (see below).
SCHEDULE_TYPES: tuple[str, ...] = (AUTOMATIC, "Uniform", "Karras", "Exponential", "SGM Uniform", "Beta")
UNOFFERED_SCHEDULE_TYPES: tuple[str, ...] = (
    "Polyexponential",
    "KL Optimal",
    "Align Your Steps",
    "Simple",
    "Normal",
    "DDIM",
)

# A1111's internal schedule names and aliases (API "scheduler" field, old infotexts) -> label.
SCHEDULE_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "automatic": AUTOMATIC,
        "uniform": "Uniform",
        "karras": "Karras",
        "exponential": "Exponential",
        "sgm_uniform": "SGM Uniform",
        "sgmuniform": "SGM Uniform",
        "beta": "Beta",
    }
)

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


class SamplerError(ValueError):
    """An unknown sampler or schedule type, or one that cannot run with this model."""


@dataclass(frozen=True)
class SamplerSpec:
    """One sampler: the A1111 UI name, the diffusers scheduler class and options, the schedule types."""

    name: str
    aliases: tuple[str, ...]
    scheduler_class: type
    options: Mapping
    default_schedule: str
    schedules: tuple[str, ...]
    note: str = ""
    schedule_options: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))


def _spec(
    name: str,
    aliases: tuple[str, ...],
    scheduler_class: type,
    options: Mapping[str, Any],
    default_schedule: str,
    schedule_options: Mapping[str, Mapping[str, Any]],
    note: str = "",
) -> SamplerSpec:
    schedules = tuple(label for label in SCHEDULE_TYPES if label == AUTOMATIC or label in schedule_options)
    return SamplerSpec(
        name=name,
        aliases=aliases,
        scheduler_class=scheduler_class,
        options=MappingProxyType(dict(options)),
        default_schedule=default_schedule,
        schedules=schedules,
        note=note,
        schedule_options=schedule_options,
    )


_BROWNIAN_NOTE = (
    "diffusers draws independent Gaussian noise per step where A1111 uses a Brownian tree: same law, other images"
)
_DPM_2M = {"algorithm_type": "dpmsolver++", "solver_order": 2, "solver_type": "midpoint"}
_DPM_SDE = {"algorithm_type": "sde-dpmsolver++", "solver_type": "midpoint"}

SAMPLERS: tuple[SamplerSpec, ...] = (
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

# Old A1111 aliases of the combined names ("k_dpmpp_2m_ka" was "DPM++ 2M Karras").
LEGACY_ALIAS_SUFFIXES: Mapping[str, str] = MappingProxyType({"_ka": "Karras", "_exp": "Exponential"})

_SAMPLER_LOOKUP: Mapping[str, SamplerSpec] = MappingProxyType(
    {key.lower(): spec for spec in SAMPLERS for key in (spec.name, *spec.aliases)}
)


def sampler_names() -> list[str]:
    """The UI names, in table order."""
    return [spec.name for spec in SAMPLERS]


def _unknown_sampler(name: str) -> SamplerError:
    return SamplerError(f"Unknown sampler {name!r}; valid samplers: {', '.join(sampler_names())}")


def split_sampler_name(name: str) -> tuple[SamplerSpec, str | None]:
    """A name, alias or legacy combined name ("DPM++ 2M Karras", "k_dpmpp_2m_ka") -> (spec, schedule or None)."""
    key = name.strip().lower()
    if key in _SAMPLER_LOOKUP:
        return _SAMPLER_LOOKUP[key], None
    for label in (*SCHEDULE_TYPES[1:], *UNOFFERED_SCHEDULE_TYPES):
        suffix = " " + label.lower()
        if key.endswith(suffix) and key[: -len(suffix)].strip() in _SAMPLER_LOOKUP:
            return _SAMPLER_LOOKUP[key[: -len(suffix)].strip()], label
    for suffix, label in LEGACY_ALIAS_SUFFIXES.items():
        if key.endswith(suffix) and key[: -len(suffix)] in _SAMPLER_LOOKUP:
            return _SAMPLER_LOOKUP[key[: -len(suffix)]], label
    raise _unknown_sampler(name)


def find_sampler(name: str) -> SamplerSpec:
    """The spec for a UI name, an A1111 alias or a legacy combined name, case-insensitive."""
    return split_sampler_name(name)[0]


def normalize_schedule_type(schedule_type: str) -> str:
    """A schedule label or A1111 internal name ("karras", "sgm_uniform") -> the label; "" means Automatic."""
    key = schedule_type.strip().lower()
    if not key:
        return AUTOMATIC
    for label in SCHEDULE_TYPES:
        if key == label.lower():
            return label
    if key in SCHEDULE_ALIASES:
        return SCHEDULE_ALIASES[key]
    for label in UNOFFERED_SCHEDULE_TYPES:
        if key in (label.lower(), label.lower().replace(" ", "_")):
            raise SamplerError(
                f"Schedule type {label!r} is not offered by Easel (no faithful diffusers equivalent); "
                f"schedule types: {', '.join(SCHEDULE_TYPES)}"
            )
    raise SamplerError(f"Unknown schedule type {schedule_type!r}; schedule types: {', '.join(SCHEDULE_TYPES)}")


def resolve(sampler_name: str, schedule_type: str = AUTOMATIC) -> tuple[SamplerSpec, str]:
    """(spec, the schedule type actually used), Automatic replaced by the sampler's default."""
    spec, legacy_schedule = split_sampler_name(sampler_name)
    requested = normalize_schedule_type(schedule_type)
    if legacy_schedule is not None:
        legacy_schedule = normalize_schedule_type(legacy_schedule)
        if requested not in (AUTOMATIC, legacy_schedule):
            raise SamplerError(
                f"Sampler name {sampler_name!r} implies schedule type {legacy_schedule!r}, "
                f"which conflicts with the requested {requested!r}"
            )
        requested = legacy_schedule
    effective = spec.default_schedule if requested == AUTOMATIC else requested
    if effective not in spec.schedule_options:
        raise SamplerError(
            f"Sampler {spec.name!r} cannot use schedule type {effective!r}; it supports: {', '.join(spec.schedules)}"
        )
    return spec, effective


def infotext_schedule(spec: SamplerSpec, schedule_type: str) -> str:
    """The "Schedule type" value A1111 writes: Automatic when the type is the sampler's default."""
    label = normalize_schedule_type(schedule_type)
    return AUTOMATIC if label in (AUTOMATIC, spec.default_schedule) else label


def schedule_types_for(sampler_name: str) -> list[str]:
    """The schedule types the sampler can use, Automatic first (for the UI dropdown and the API)."""
    return list(find_sampler(sampler_name).schedules)


def _model_config(base_config: Mapping[str, Any], spec: SamplerSpec) -> dict[str, Any]:
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


def build_scheduler(
    base_config: Mapping[str, Any],
    sampler_name: str,
    schedule_type: str = AUTOMATIC,
    *,
    noise_seed: int | None = None,
) -> SchedulerMixin:
    """A new scheduler for one request; ``base_config`` (e.g. ``pipeline.scheduler.config``) is not changed.

    ``noise_seed`` seeds the Brownian tree of DPM++ SDE (A1111 uses the image seed); without it diffusers
    draws the tree's seed from torch's global generator and the image is not repeatable.
    """
    spec, effective = resolve(sampler_name, schedule_type)
    options = {**spec.options, **spec.schedule_options[effective]}
    if spec.scheduler_class is DPMSolverSDEScheduler:
        options["noise_sampler_seed"] = noise_seed
    scheduler = spec.scheduler_class.from_config(_model_config(base_config, spec), **options)
    logger.debug(
        "scheduler built sampler=%s schedule=%s class=%s options=%s",
        spec.name,
        effective,
        spec.scheduler_class.__name__,
        options,
    )
    return scheduler

"""The neutral sampler catalogue: A1111's sampler and schedule-type names, aliases, defaults and parameters.

The UI, the API and the infotext read names from here. How a sampler runs belongs to a backend: each backend
says which samplers and schedule types it implements (``SamplerSupport``), and ``resolve`` checks a request
against that. Nothing here imports a backend or diffusers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

AUTOMATIC = "Automatic"

# A1111 v1.10.1's schedule types, in its order (sd_schedulers.schedulers), with their internal names.
SCHEDULE_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "Uniform": "uniform",
        "Karras": "karras",
        "Exponential": "exponential",
        "Polyexponential": "polyexponential",
        "SGM Uniform": "sgm_uniform",
        "KL Optimal": "kl_optimal",
        "Align Your Steps": "align_your_steps",
        "Simple": "simple",
        "Normal": "normal",
        "DDIM": "ddim",
        "Beta": "beta",
    }
)
SCHEDULE_TYPES: tuple[str, ...] = (AUTOMATIC, *SCHEDULE_NAMES)

# Internal names and aliases (API "scheduler" field, old infotexts) -> label.
SCHEDULE_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "automatic": AUTOMATIC,
        **{internal: label for label, internal in SCHEDULE_NAMES.items()},
        "sgmuniform": "SGM Uniform",
    }
)

# Sampler parameters (request fields and A1111's option names) a sampler may take.
CHURN_PARAMETERS = ("s_churn", "s_tmin", "s_tmax", "s_noise")
ANCESTRAL_PARAMETERS = ("eta", "s_noise")

# Which backend implements which sampler, and with which schedule types (Automatic is always allowed).
SamplerSupport = Mapping[str, tuple[str, ...]]


class SamplerError(ValueError):
    """An unknown sampler or schedule type, or one the active backend cannot run."""


@dataclass(frozen=True)
class SamplerInfo:
    """One sampler as the user sees it: A1111's name, aliases, default schedule and parameters."""

    name: str
    aliases: tuple[str, ...]
    default_schedule: str
    parameters: tuple[str, ...] = ()
    a1111: bool = True  # False for samplers A1111 does not have (named so in the UI's notes)
    # A1111's "second_order" option (sd_samplers_kdiffusion): about two model calls per step, so A1111 builds the
    # prompt schedule on twice the steps (SamplerData.total_steps).
    second_order: bool = False

    def total_steps(self, steps: int) -> int:
        """A1111's ``SamplerData.total_steps``: the steps its prompt schedule is built on (twice ``steps`` for a
        second-order sampler)."""
        return steps * 2 if self.second_order else steps


SAMPLERS: tuple[SamplerInfo, ...] = (
    SamplerInfo("DPM++ 2M", ("k_dpmpp_2m",), "Karras"),
    SamplerInfo("DPM++ SDE", ("k_dpmpp_sde",), "Karras", ANCESTRAL_PARAMETERS, second_order=True),
    SamplerInfo("DPM++ 2M SDE", ("k_dpmpp_2m_sde",), "Exponential", ANCESTRAL_PARAMETERS),
    SamplerInfo("DPM++ 2M SDE Heun", ("k_dpmpp_2m_sde_heun",), "Exponential", ANCESTRAL_PARAMETERS),
    SamplerInfo("DPM++ 2S a", ("k_dpmpp_2s_a",), "Karras", ANCESTRAL_PARAMETERS, second_order=True),
    SamplerInfo("DPM++ 3M SDE", ("k_dpmpp_3m_sde",), "Exponential", ANCESTRAL_PARAMETERS),
    SamplerInfo("Euler a", ("k_euler_a", "k_euler_ancestral"), "Uniform", ANCESTRAL_PARAMETERS),
    SamplerInfo("Euler", ("k_euler",), "Uniform", CHURN_PARAMETERS),
    SamplerInfo("LMS", ("k_lms",), "Uniform"),
    SamplerInfo("Heun", ("k_heun",), "Uniform", CHURN_PARAMETERS, second_order=True),
    SamplerInfo("DPM2", ("k_dpm_2",), "Karras", CHURN_PARAMETERS, second_order=True),
    SamplerInfo("DPM2 a", ("k_dpm_2_a",), "Karras", ANCESTRAL_PARAMETERS, second_order=True),
    SamplerInfo("DPM fast", ("k_dpm_fast",), "Uniform", ANCESTRAL_PARAMETERS),
    SamplerInfo("DPM adaptive", ("k_dpm_ad",), "Uniform", ("eta",)),
    SamplerInfo("Restart", ("restart",), "Karras", second_order=True),
    SamplerInfo("DDIM", ("ddim",), "Uniform", ("eta",)),
    SamplerInfo("DDIM CFG++", ("ddim_cfgpp",), "Uniform", ("eta",)),
    SamplerInfo("PLMS", ("plms",), "Uniform"),
    SamplerInfo("UniPC", ("unipc",), "Uniform"),
    SamplerInfo("LCM", ("k_lcm", "lcm"), "Uniform"),
    SamplerInfo("DEIS", ("deis",), "Uniform", a1111=False),
)

# Old A1111 aliases of the combined names ("k_dpmpp_2m_ka" was "DPM++ 2M Karras").
LEGACY_ALIAS_SUFFIXES: Mapping[str, str] = MappingProxyType({"_ka": "Karras", "_exp": "Exponential"})

_SAMPLER_LOOKUP: Mapping[str, SamplerInfo] = MappingProxyType(
    {key.lower(): info for info in SAMPLERS for key in (info.name, *info.aliases)}
)


def sampler_names(support: SamplerSupport | None = None) -> list[str]:
    """The UI names in catalogue order; with ``support``, only those the backend implements."""
    return [info.name for info in SAMPLERS if support is None or info.name in support]


def _unknown_sampler(name: str, support: SamplerSupport | None) -> SamplerError:
    return SamplerError(f"Unknown sampler {name!r}; valid samplers: {', '.join(sampler_names(support))}")


def split_sampler_name(name: str) -> tuple[SamplerInfo, str | None]:
    """A name, alias or legacy combined name ("DPM++ 2M Karras", "k_dpmpp_2m_ka") -> (info, schedule or None).

    As A1111's ``get_sampler_and_scheduler``: a trailing schedule label is split off."""
    key = name.strip().lower()
    if key in _SAMPLER_LOOKUP:
        return _SAMPLER_LOOKUP[key], None
    for label in SCHEDULE_TYPES[1:]:
        suffix = " " + label.lower()
        if key.endswith(suffix) and key[: -len(suffix)].strip() in _SAMPLER_LOOKUP:
            return _SAMPLER_LOOKUP[key[: -len(suffix)].strip()], label
    for suffix, label in LEGACY_ALIAS_SUFFIXES.items():
        if key.endswith(suffix) and key[: -len(suffix)] in _SAMPLER_LOOKUP:
            return _SAMPLER_LOOKUP[key[: -len(suffix)]], label
    raise _unknown_sampler(name, None)


def prompt_schedule_steps(sampler_name: str, steps: int) -> int:
    """The steps A1111 builds a pass's prompt schedule on (``setup_conds``): the sampler's ``total_steps``, or
    ``steps`` for a name the catalogue does not know (A1111: no sampler config)."""
    try:
        return find_sampler(sampler_name).total_steps(steps)
    except SamplerError:
        return steps


def find_sampler(name: str) -> SamplerInfo:
    """The catalogue entry for a UI name, an A1111 alias or a legacy combined name, case-insensitive."""
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
    raise SamplerError(f"Unknown schedule type {schedule_type!r}; schedule types: {', '.join(SCHEDULE_TYPES)}")


def resolve(
    sampler_name: str, schedule_type: str = AUTOMATIC, support: SamplerSupport | None = None
) -> tuple[SamplerInfo, str]:
    """(info, the schedule type actually used): Automatic becomes the sampler's default.

    With ``support`` (a backend's), a sampler or schedule type that backend does not implement is an error."""
    info, legacy_schedule = split_sampler_name(sampler_name)
    if support is not None and info.name not in support:
        raise _unknown_sampler(sampler_name, support)
    requested = normalize_schedule_type(schedule_type)
    if legacy_schedule is not None:
        legacy_schedule = normalize_schedule_type(legacy_schedule)
        if requested not in (AUTOMATIC, legacy_schedule):
            raise SamplerError(
                f"Sampler name {sampler_name!r} implies schedule type {legacy_schedule!r}, "
                f"which conflicts with the requested {requested!r}"
            )
        requested = legacy_schedule
    effective = info.default_schedule if requested == AUTOMATIC else requested
    if support is not None and effective not in support[info.name]:
        offered = ", ".join(schedule_types_for(info.name, support))
        raise SamplerError(f"Sampler {info.name!r} cannot use schedule type {effective!r}; it supports: {offered}")
    return info, effective


def infotext_schedule(info: SamplerInfo, schedule_type: str) -> str:
    """The "Schedule type" value A1111 writes: Automatic when the type is the sampler's default."""
    label = normalize_schedule_type(schedule_type)
    return AUTOMATIC if label in (AUTOMATIC, info.default_schedule) else label


def schedule_types_for(sampler_name: str, support: SamplerSupport | None = None) -> list[str]:
    """The schedule types the sampler can use, Automatic first (for the UI dropdown and the API)."""
    info = find_sampler(sampler_name)
    if support is None:
        return list(SCHEDULE_TYPES)
    offered = support.get(info.name, ())
    return [label for label in SCHEDULE_TYPES if label == AUTOMATIC or label in offered]

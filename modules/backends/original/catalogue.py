"""A1111's 20 samplers: names, aliases, default schedules, parameters and noise behaviour, in one table.

| A1111 name | function | Automatic schedule | parameters | noise after the first step |
|---|---|---|---|---|
| DPM++ 2M | sample_dpmpp_2m | Karras | - | none |
| DPM++ SDE | sample_dpmpp_sde | Karras | eta, s_noise | Brownian tree (image seeds, no ENSD) |
| DPM++ 2M SDE | sample_dpmpp_2m_sde | Exponential | eta, s_noise | Brownian tree when eta != 0 |
| DPM++ 2M SDE Heun | sample_dpmpp_2m_sde (heun) | Exponential | eta, s_noise | Brownian tree when eta != 0 |
| DPM++ 2S a | sample_dpmpp_2s_ancestral | Karras | eta, s_noise | every step but the last (ENSD) |
| DPM++ 3M SDE | sample_dpmpp_3m_sde | Exponential, discard penult. | eta, s_noise | Brownian tree when eta != 0 |
| Euler a | sample_euler_ancestral | Uniform | eta, s_noise | every step but the last (ENSD) |
| Euler | sample_euler | Uniform | s_churn, s_tmin, s_tmax, s_noise | every step (used with churn) |
| LMS | sample_lms | Uniform | - | none |
| Heun | sample_heun | Uniform | s_churn, s_tmin, s_tmax, s_noise | every step (used with churn) |
| DPM2 | sample_dpm_2 | Karras, discard penult. | s_churn, s_tmin, s_tmax, s_noise | every step (used with churn) |
| DPM2 a | sample_dpm_2_ancestral | Karras, discard penult. | eta, s_noise | each step with sigma_down != 0 (ENSD) |
| DPM fast | sample_dpm_fast | ignored (model range) | eta, s_noise | every solver segment, even at eta 0 (ENSD) |
| DPM adaptive | sample_dpm_adaptive | ignored (model range) | eta | every accepted step, even at eta 0 (ENSD) |
| Restart | sample_restart | Karras | - | one per restart jump (from 20 steps) |
| DDIM | sample_ddim | own timesteps | eta (eta_ddim) | every step (times 0 at eta 0) |
| DDIM CFG++ | sample_ddim_cfgpp | own timesteps | eta (eta_ddim) | every step (times 0 at eta 0) |
| PLMS | sample_plms | own timesteps | - | none |
| UniPC | sample_unipc | own timesteps | uni_pc_* options | none |
| LCM | sample_lcm | LCM's own Uniform | - | every step but the last |

"Noise after the first step" is what ENSD (``eta_noise_seed_delta``) can change: the draws from each image's
generator after the initial noise. Euler a, DPM2 a, DPM++ 2S a, DPM fast and DPM adaptive write ``ENSD``
into the infotext (A1111's ``uses_ensd``) when eta != 0.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modules.backends.original import dpm_solver, sampling, timesteps
from modules.backends.original.schedules import SCHEDULE_TYPES, find_schedule_type


class SamplerKind(enum.Enum):
    """How a sampler is driven (which model wrapper and which arguments)."""

    SIGMAS = "sigmas"  # k-diffusion style: x0 denoiser, a sigma schedule
    DPM_SOLVER = "dpm_solver"  # DPM fast / adaptive: the model's sigma range
    TIMESTEPS = "timesteps"  # DDIM, DDIM CFG++, PLMS, UniPC: eps model, A1111's timesteps
    LCM = "lcm"  # x0 denoiser over LCM's 50-step table


class NoiseDraws(enum.Enum):
    """Whether a sampler consumes the per-image generators after the initial noise."""

    NONE = "none"
    EVERY_STEP = "every step"
    BROWNIAN = "brownian tree"


ETA_PARAMETER = "eta"
CHURN_PARAMETERS = ("s_churn", "s_tmin", "s_tmax", "s_noise")


@dataclass(frozen=True)
class SamplerInfo:
    """One A1111 sampler."""

    name: str
    function: Callable[..., Any]
    aliases: tuple[str, ...] = ()
    kind: SamplerKind = SamplerKind.SIGMAS
    default_schedule: str | None = None
    discard_penultimate: bool = False
    brownian_noise: bool = False
    second_order: bool = False
    uses_ensd: bool = False
    solver_type: str | None = None
    parameters: tuple[str, ...] = ()
    noise_draws: NoiseDraws = NoiseDraws.NONE

    @property
    def eta_option(self) -> str | None:
        """A1111's setting that gives eta when the request has none (None: the sampler has no eta)."""
        if ETA_PARAMETER not in self.parameters:
            return None
        return "eta_ddim" if self.kind == SamplerKind.TIMESTEPS else "eta_ancestral"

    @property
    def eta_default(self) -> float:
        """The eta A1111 leaves out of the infotext (``Eta`` 1.0, ``Eta DDIM`` 0.0)."""
        return 0.0 if self.kind == SamplerKind.TIMESTEPS else 1.0

    @property
    def eta_infotext_key(self) -> str:
        return "Eta DDIM" if self.kind == SamplerKind.TIMESTEPS else "Eta"

    def total_steps(self, steps: int) -> int:
        """The model-call estimate A1111 gives its CFG wrapper (second-order samplers count double)."""
        return steps * 2 if self.second_order else steps


_NOISE = ("s_noise",)
_ETA_NOISE = (ETA_PARAMETER, "s_noise")

SAMPLERS: tuple[SamplerInfo, ...] = (
    SamplerInfo("DPM++ 2M", sampling.sample_dpmpp_2m, ("k_dpmpp_2m",), default_schedule="karras"),
    SamplerInfo(
        "DPM++ SDE",
        sampling.sample_dpmpp_sde,
        ("k_dpmpp_sde",),
        default_schedule="karras",
        second_order=True,
        brownian_noise=True,
        parameters=_ETA_NOISE,
        noise_draws=NoiseDraws.BROWNIAN,
    ),
    SamplerInfo(
        "DPM++ 2M SDE",
        sampling.sample_dpmpp_2m_sde,
        ("k_dpmpp_2m_sde",),
        default_schedule="exponential",
        brownian_noise=True,
        parameters=_ETA_NOISE,
        noise_draws=NoiseDraws.BROWNIAN,
    ),
    SamplerInfo(
        "DPM++ 2M SDE Heun",
        sampling.sample_dpmpp_2m_sde,
        ("k_dpmpp_2m_sde_heun",),
        default_schedule="exponential",
        brownian_noise=True,
        solver_type="heun",
        parameters=_ETA_NOISE,
        noise_draws=NoiseDraws.BROWNIAN,
    ),
    SamplerInfo(
        "DPM++ 2S a",
        sampling.sample_dpmpp_2s_ancestral,
        ("k_dpmpp_2s_a",),
        default_schedule="karras",
        uses_ensd=True,
        second_order=True,
        parameters=_ETA_NOISE,
        noise_draws=NoiseDraws.EVERY_STEP,
    ),
    SamplerInfo(
        "DPM++ 3M SDE",
        sampling.sample_dpmpp_3m_sde,
        ("k_dpmpp_3m_sde",),
        default_schedule="exponential",
        discard_penultimate=True,
        brownian_noise=True,
        parameters=_ETA_NOISE,
        noise_draws=NoiseDraws.BROWNIAN,
    ),
    SamplerInfo(
        "Euler a",
        sampling.sample_euler_ancestral,
        ("k_euler_a", "k_euler_ancestral"),
        uses_ensd=True,
        parameters=_ETA_NOISE,
        noise_draws=NoiseDraws.EVERY_STEP,
    ),
    SamplerInfo(
        "Euler", sampling.sample_euler, ("k_euler",), parameters=CHURN_PARAMETERS, noise_draws=NoiseDraws.EVERY_STEP
    ),
    SamplerInfo("LMS", sampling.sample_lms, ("k_lms",)),
    SamplerInfo(
        "Heun",
        sampling.sample_heun,
        ("k_heun",),
        second_order=True,
        parameters=CHURN_PARAMETERS,
        noise_draws=NoiseDraws.EVERY_STEP,
    ),
    SamplerInfo(
        "DPM2",
        sampling.sample_dpm_2,
        ("k_dpm_2",),
        default_schedule="karras",
        discard_penultimate=True,
        second_order=True,
        parameters=CHURN_PARAMETERS,
        noise_draws=NoiseDraws.EVERY_STEP,
    ),
    SamplerInfo(
        "DPM2 a",
        sampling.sample_dpm_2_ancestral,
        ("k_dpm_2_a",),
        default_schedule="karras",
        discard_penultimate=True,
        uses_ensd=True,
        second_order=True,
        parameters=_ETA_NOISE,
        noise_draws=NoiseDraws.EVERY_STEP,
    ),
    SamplerInfo(
        "DPM fast",
        dpm_solver.sample_dpm_fast,
        ("k_dpm_fast",),
        kind=SamplerKind.DPM_SOLVER,
        uses_ensd=True,
        parameters=_ETA_NOISE,
        noise_draws=NoiseDraws.EVERY_STEP,
    ),
    SamplerInfo(
        "DPM adaptive",
        dpm_solver.sample_dpm_adaptive,
        ("k_dpm_ad",),
        kind=SamplerKind.DPM_SOLVER,
        uses_ensd=True,
        parameters=(ETA_PARAMETER,),
        noise_draws=NoiseDraws.EVERY_STEP,
    ),
    SamplerInfo(
        "Restart",
        sampling.sample_restart,
        ("restart",),
        default_schedule="karras",
        second_order=True,
        noise_draws=NoiseDraws.EVERY_STEP,
    ),
    SamplerInfo(
        "DDIM",
        timesteps.sample_ddim,
        ("ddim",),
        kind=SamplerKind.TIMESTEPS,
        parameters=(ETA_PARAMETER,),
        noise_draws=NoiseDraws.EVERY_STEP,
    ),
    SamplerInfo(
        "DDIM CFG++",
        timesteps.sample_ddim_cfgpp,
        ("ddim_cfgpp",),
        kind=SamplerKind.TIMESTEPS,
        parameters=(ETA_PARAMETER,),
        noise_draws=NoiseDraws.EVERY_STEP,
    ),
    SamplerInfo("PLMS", timesteps.sample_plms, ("plms",), kind=SamplerKind.TIMESTEPS),
    SamplerInfo("UniPC", timesteps.sample_unipc, ("unipc",), kind=SamplerKind.TIMESTEPS),
    SamplerInfo("LCM", sampling.sample_lcm, ("k_lcm",), kind=SamplerKind.LCM, noise_draws=NoiseDraws.EVERY_STEP),
)


def find_sampler(name: str) -> SamplerInfo:
    """The sampler by A1111 name or alias (case-insensitive); a ValueError names the known ones."""
    wanted = name.strip().lower()
    for sampler in SAMPLERS:
        if wanted == sampler.name.lower() or wanted in (alias.lower() for alias in sampler.aliases):
            return sampler
    known = ", ".join(sampler.name for sampler in SAMPLERS)
    raise ValueError(f"unknown sampler {name!r}; the original backend has: {known}")


def sampler_names() -> list[str]:
    return [sampler.name for sampler in SAMPLERS]


@dataclass(frozen=True)
class SamplerParameters:
    """A1111's sampler settings (option names) and the request's ``eta`` (None: from the option).

    ``s_tmax`` 0 means infinity, as A1111's setting.
    """

    eta: float | None = None
    eta_ancestral: float = 1.0
    eta_ddim: float = 0.0
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = 0.0
    s_noise: float = 1.0
    s_min_uncond: float = 0.0
    s_min_uncond_all: bool = False
    skip_early_cond: float = 0.0
    eta_noise_seed_delta: int = 0
    sgm_noise_multiplier: bool = False
    uni_pc_variant: str = "bh1"
    uni_pc_skip_type: str = "time_uniform"
    uni_pc_order: int = 3
    uni_pc_lower_order_final: bool = True

    def resolved_eta(self, sampler: SamplerInfo) -> float | None:
        """The eta the sampler runs with (None when it has no eta)."""
        if sampler.eta_option is None:
            return None
        if self.eta is not None:
            return self.eta
        return self.eta_ddim if sampler.eta_option == "eta_ddim" else self.eta_ancestral

    def keyword_arguments(self, sampler: SamplerInfo) -> tuple[dict[str, Any], dict[str, Any]]:
        """(keyword arguments for the sampler function, infotext entries) as A1111's ``Sampler.initialize``."""
        kwargs: dict[str, Any] = {}
        infotext: dict[str, Any] = {}
        eta = self.resolved_eta(sampler)
        if eta is not None:
            kwargs["eta"] = eta
            if eta != sampler.eta_default:
                infotext[sampler.eta_infotext_key] = eta
        values = {"s_churn": self.s_churn, "s_tmin": self.s_tmin, "s_tmax": self.s_tmax or float("inf")}
        values["s_noise"] = self.s_noise
        defaults = {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": float("inf"), "s_noise": 1.0}
        labels = {"s_churn": "Sigma churn", "s_tmin": "Sigma tmin", "s_tmax": "Sigma tmax", "s_noise": "Sigma noise"}
        for name in CHURN_PARAMETERS:
            if name in sampler.parameters and values[name] != defaults[name]:
                kwargs[name] = values[name]
                infotext[labels[name]] = values[name]
        if sampler.uses_ensd and eta and self.eta_noise_seed_delta:
            infotext["ENSD"] = self.eta_noise_seed_delta
        return kwargs, infotext


def parse_sampler_and_schedule(sampler_label: str | None, schedule_label: str | None) -> tuple[str, str]:
    """A1111's ``get_sampler_and_scheduler``: a legacy name like "DPM++ 2M Karras" -> ("DPM++ 2M", "Karras").

    Trailing schedule labels, names or aliases are split off in A1111's table order (so a legacy
    "X SGM Uniform" parses as X + "Uniform"); an unknown schedule is "Automatic", and the sampler's own
    default schedule becomes "Automatic". Unlike A1111 (which falls back to its first sampler) an unknown
    sampler name is a ValueError.
    """
    name = sampler_label or SAMPLERS[0].name
    found = find_schedule_type(schedule_label) or SCHEDULE_TYPES[0]
    for candidate in SCHEDULE_TYPES:
        for suffix in (candidate.label, candidate.name, *candidate.aliases):
            if name.endswith(" " + suffix):
                found = candidate
                name = name[: -(len(suffix) + 1)]
                break
    sampler = find_sampler(name)
    if sampler.default_schedule == found.name:
        found = SCHEDULE_TYPES[0]
    return sampler.name, found.label

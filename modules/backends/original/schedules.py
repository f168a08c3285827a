"""A1111's noise schedules: the model's sigma table and the 12 schedule types, computed as A1111 does.

Written by hand (no library has A1111 v1.10.1's ``sd_schedulers.py`` and ``KDiffusionSampler.get_sigmas``
semantics); facts from ``../shared/A1111-SAMPLING.md`` sections 3 and 4. The dtype and device of every
step follow A1111 so the sigmas are bit-equal: Karras / Exponential / Polyexponential / KL Optimal in
float32 torch on the CPU, Align Your Steps and Beta through numpy float64, the table-based ones (Uniform,
SGM Uniform, Normal, Simple, DDIM) on the model table's device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from scipy import stats

AUTOMATIC = "Automatic"

# Align Your Steps (NVIDIA's published 10-step lists), as A1111 uses them.
AYS_SD1 = (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)
AYS_SDXL = (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029)


def append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    """``sigmas`` followed by a final 0."""
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def ldm_alphas_cumprod(
    linear_start: float = 0.00085,
    linear_end: float = 0.012,
    timesteps: int = 1000,
    zero_terminal_snr: bool = False,
    downcast: bool = False,
) -> torch.Tensor:
    """The model's alphas_cumprod as ldm/sgm make it (SD1, SD2, SDXL): float64 maths, stored float32.

    ``zero_terminal_snr`` is A1111's ``sd_noise_schedule = "Zero Terminal SNR"``; ``downcast`` its
    ``use_downcasted_alpha_bar`` (a float16 table).
    """
    betas = np.linspace(linear_start**0.5, linear_end**0.5, timesteps, dtype=np.float64) ** 2
    alphas_cumprod = torch.tensor(np.cumprod(1.0 - betas, axis=0), dtype=torch.float32)
    if downcast:
        alphas_cumprod = alphas_cumprod.half()
    if zero_terminal_snr:
        alphas_cumprod = rescale_zero_terminal_snr(alphas_cumprod)
    return alphas_cumprod


def rescale_zero_terminal_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """A1111's zero-terminal-SNR rescale of alphas_cumprod (the last entry pinned to 4.8973451890853435e-08)."""
    root = alphas_cumprod.sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * (first / (first - last))
    rescaled = root**2
    rescaled[-1] = 4.8973451890853435e-08
    return rescaled


class ModelSigmas(Protocol):
    """The model's discrete noise levels (k-diffusion's ``DiscreteSchedule`` interface)."""

    sigmas: torch.Tensor
    log_sigmas: torch.Tensor

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor: ...

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor: ...

    def get_sigmas(self, n: int) -> torch.Tensor: ...


class DiscreteSigmas:
    """The CompVis sigma table ``((1 - ac) / ac) ** 0.5`` with log-sigma interpolation between timesteps."""

    def __init__(self, alphas_cumprod: torch.Tensor, quantize: bool = False) -> None:
        self.alphas_cumprod = alphas_cumprod
        self.sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.log_sigmas = self.sigmas.log()
        self.quantize = quantize

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Fractional timestep of ``sigma``: linear in log-sigma between the two neighbouring entries."""
        log_sigma = sigma.log()
        dists = log_sigma - self.log_sigmas[:, None]
        if self.quantize:
            return dists.abs().argmin(dim=0).view(sigma.shape)
        low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=self.log_sigmas.shape[0] - 2)
        high_idx = low_idx + 1
        low, high = self.log_sigmas[low_idx], self.log_sigmas[high_idx]
        weight = ((low - log_sigma) / (low - high)).clamp(0, 1)
        return ((1 - weight) * low_idx + weight * high_idx).view(sigma.shape)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Sigma at fractional timestep ``t`` (log-sigma interpolation)."""
        t = t.float()
        low_idx, high_idx, frac = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - frac) * self.log_sigmas[low_idx] + frac * self.log_sigmas[high_idx]).exp()

    def get_sigmas(self, n: int) -> torch.Tensor:
        """k-diffusion's ``get_sigmas(n)``: ``n`` levels at ``linspace(T - 1, 0, n)`` then 0 (A1111's Uniform)."""
        t = torch.linspace(len(self.sigmas) - 1, 0, n, device=self.sigmas.device)
        return append_zero(self.t_to_sigma(t))


class LCMSigmas(DiscreteSigmas):
    """A1111's LCM table: the 50 "original" timesteps 19, 39, ..., 999 with integer timesteps."""

    def __init__(self, alphas_cumprod: torch.Tensor, original_timesteps: int = 50) -> None:
        total = len(alphas_cumprod)
        self.skip_steps = total // original_timesteps
        valid = torch.zeros(original_timesteps, dtype=torch.float32, device=alphas_cumprod.device)
        for index in range(original_timesteps):
            valid[original_timesteps - 1 - index] = alphas_cumprod[total - 1 - index * self.skip_steps]
        super().__init__(valid)
        self.full_alphas_cumprod = alphas_cumprod

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """The nearest original timestep (an integer tensor)."""
        dists = sigma.log() - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape) * self.skip_steps + (self.skip_steps - 1)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        index = torch.clamp(((t - (self.skip_steps - 1)) / self.skip_steps).float(), min=0, max=len(self.sigmas) - 1)
        return super().t_to_sigma(index)

    def get_sigmas(self, n: int) -> torch.Tensor:
        start, end = self.sigma_to_t(self.sigma_max), self.sigma_to_t(self.sigma_min)
        return append_zero(self.t_to_sigma(torch.linspace(start, end, n, device=self.sigmas.device)))


# ---------------------------------------------------------------------------------------------------
# The schedule functions. All take keyword arguments n, sigma_min, sigma_max (python floats) and, where
# they need it, rho, model (the table) and options; they return n + 1 sigmas (KL Optimal ends at sigma_min).


def uniform(n: int, model: ModelSigmas, **_: Any) -> torch.Tensor:
    return model.get_sigmas(n)


def karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, **_: Any) -> torch.Tensor:
    """Karras et al. (2022) in float32 torch, as k-diffusion's ``get_sigmas_karras``."""
    ramp = torch.linspace(0, 1, n)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    return append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def exponential(n: int, sigma_min: float, sigma_max: float, **_: Any) -> torch.Tensor:
    return append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp())


def polyexponential(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0, **_: Any) -> torch.Tensor:
    ramp = torch.linspace(1, 0, n) ** rho
    log_min = math.log(sigma_min)
    return append_zero(torch.exp(ramp * (math.log(sigma_max) - log_min) + log_min))


def _table_sigmas(model: ModelSigmas, timesteps: torch.Tensor) -> torch.Tensor:
    values = [float(model.t_to_sigma(t)) for t in timesteps] + [0.0]
    return torch.tensor(values, dtype=torch.float32)


def sgm_uniform(n: int, sigma_min: float, sigma_max: float, model: ModelSigmas, **_: Any) -> torch.Tensor:
    start, end = model.sigma_to_t(torch.tensor(sigma_max)), model.sigma_to_t(torch.tensor(sigma_min))
    return _table_sigmas(model, torch.linspace(start, end, n + 1)[:-1])


def normal(n: int, sigma_min: float, sigma_max: float, model: ModelSigmas, **_: Any) -> torch.Tensor:
    start, end = model.sigma_to_t(torch.tensor(sigma_max)), model.sigma_to_t(torch.tensor(sigma_min))
    return _table_sigmas(model, torch.linspace(start, end, n))


def kl_optimal(n: int, sigma_min: float, sigma_max: float, **_: Any) -> torch.Tensor:
    """KL Optimal: the last step goes to sigma_min, not to 0 (A1111 behaviour)."""
    alpha_min = torch.arctan(torch.tensor(sigma_min))
    alpha_max = torch.arctan(torch.tensor(sigma_max))
    step = torch.arange(n + 1)
    return torch.tan(step / n * alpha_min + (1.0 - step / n) * alpha_max)


def align_your_steps(n: int, is_sdxl: bool = False, **_: Any) -> torch.Tensor:
    """NVIDIA's lists, log-linearly interpolated to ``n`` levels when n != 11; ignores sigma_min/max."""
    levels = list(AYS_SDXL if is_sdxl else AYS_SD1)
    if n != len(levels):
        xs = np.linspace(0, 1, len(levels))
        ys = np.log(levels[::-1])
        interpolated = np.exp(np.interp(np.linspace(0, 1, n), xs, ys))[::-1]
        return torch.tensor(np.append(interpolated, [0.0]), dtype=torch.float32)
    return torch.tensor([*levels, 0.0], dtype=torch.float32)


def simple(n: int, model: ModelSigmas, **_: Any) -> torch.Tensor:
    stride = len(model.sigmas) / n
    values = [float(model.sigmas[-(1 + int(step * stride))]) for step in range(n)] + [0.0]
    return torch.tensor(values, dtype=torch.float32)


def ddim_uniform(n: int, model: ModelSigmas, **_: Any) -> torch.Tensor:
    """Every ``T // n``-th table entry from index 1 upwards, reversed (can hold more than n levels)."""
    stride = max(len(model.sigmas) // n, 1)
    levels = [float(model.sigmas[index]) for index in range(1, len(model.sigmas), stride)]
    values = [*levels[::-1], 0.0]
    return torch.tensor(values, dtype=torch.float32)


def beta(
    n: int, sigma_min: float, sigma_max: float, beta_dist_alpha: float = 0.6, beta_dist_beta: float = 0.6, **_: Any
) -> torch.Tensor:
    """Beta schedule (Lee et al. 2024): beta-distribution quantiles, linear in sigma."""
    quantiles = [stats.beta.ppf(x, beta_dist_alpha, beta_dist_beta) for x in 1 - np.linspace(0, 1, n)]
    values = [sigma_min + (q * (sigma_max - sigma_min)) for q in quantiles] + [0.0]
    return torch.tensor(values, dtype=torch.float32)


@dataclass(frozen=True)
class ScheduleType:
    """One entry of A1111's "Schedule type" list."""

    name: str
    label: str
    function: Callable[..., torch.Tensor] | None
    default_rho: float = -1
    aliases: tuple[str, ...] = ()


SCHEDULE_TYPES: tuple[ScheduleType, ...] = (
    ScheduleType("automatic", AUTOMATIC, None),
    ScheduleType("uniform", "Uniform", uniform),
    ScheduleType("karras", "Karras", karras, default_rho=7.0),
    ScheduleType("exponential", "Exponential", exponential),
    ScheduleType("polyexponential", "Polyexponential", polyexponential, default_rho=1.0),
    ScheduleType("sgm_uniform", "SGM Uniform", sgm_uniform, aliases=("SGMUniform",)),
    ScheduleType("kl_optimal", "KL Optimal", kl_optimal),
    ScheduleType("align_your_steps", "Align Your Steps", align_your_steps),
    ScheduleType("simple", "Simple", simple),
    ScheduleType("normal", "Normal", normal),
    ScheduleType("ddim", "DDIM", ddim_uniform),
    ScheduleType("beta", "Beta", beta),
)


def find_schedule_type(name: str | None) -> ScheduleType | None:
    """The schedule type by label, name or alias (None for an unknown name or None)."""
    for schedule in SCHEDULE_TYPES:
        if name in (schedule.label, schedule.name, *schedule.aliases):
            return schedule
    return None


@dataclass(frozen=True)
class ScheduleOptions:
    """A1111's settings that shape the sigmas (0 means "model default" for sigma_min / sigma_max / rho)."""

    always_discard_next_to_last_sigma: bool = False
    use_old_karras_scheduler_sigmas: bool = False
    sigma_min: float = 0.0
    sigma_max: float = 0.0
    rho: float = 0.0
    beta_dist_alpha: float = 0.6
    beta_dist_beta: float = 0.6
    is_sdxl: bool = False


@dataclass
class SigmaSchedule:
    """The sigmas one sampling run uses (on the CPU, float32) and the infotext entries they imply."""

    sigmas: torch.Tensor
    infotext: dict[str, Any] = field(default_factory=dict)
    discarded_penultimate: bool = False


def compute_sigmas(
    steps: int,
    schedule: str | None,
    model: ModelSigmas,
    options: ScheduleOptions = ScheduleOptions(),
    sampler_default: str | None = None,
    sampler_discards_penultimate: bool = False,
) -> SigmaSchedule:
    """A1111's ``KDiffusionSampler.get_sigmas``: the schedule for ``steps`` steps.

    ``schedule`` is the request's schedule type (``Automatic`` picks ``sampler_default``, and no default
    means the model's own ``get_sigmas``, i.e. Uniform). With discard-penultimate (the sampler's option or
    ``always_discard_next_to_last_sigma``) one more level is computed and the next-to-last one dropped.
    """
    infotext: dict[str, Any] = {}
    discard = sampler_discards_penultimate or options.always_discard_next_to_last_sigma
    if options.always_discard_next_to_last_sigma and not sampler_discards_penultimate:
        infotext["Discard penultimate sigma"] = True
    steps += 1 if discard else 0

    schedule_name = schedule or AUTOMATIC
    if schedule_name == AUTOMATIC:
        schedule_name = sampler_default
    schedule_type = find_schedule_type(schedule_name)
    if schedule_type is None or schedule_type.function is None:
        sigmas = model.get_sigmas(steps)
    else:
        sigmas = _typed_sigmas(steps, schedule_type, model, options, infotext)
    if discard:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return SigmaSchedule(sigmas.cpu(), infotext, discard)


def _typed_sigmas(
    steps: int, schedule_type: ScheduleType, model: ModelSigmas, options: ScheduleOptions, infotext: dict[str, Any]
) -> torch.Tensor:
    model_min, model_max = model.sigmas[0].item(), model.sigmas[-1].item()
    sigma_min, sigma_max = (0.1, 10.0) if options.use_old_karras_scheduler_sigmas else (model_min, model_max)
    kwargs: dict[str, Any] = {"sigma_min": sigma_min, "sigma_max": sigma_max}
    if schedule_type.label != AUTOMATIC:
        infotext["Schedule type"] = schedule_type.label
    if options.sigma_min != 0 and options.sigma_min != model_min:
        kwargs["sigma_min"] = options.sigma_min
        infotext["Schedule min sigma"] = options.sigma_min
    if options.sigma_max != 0 and options.sigma_max != model_max:
        kwargs["sigma_max"] = options.sigma_max
        infotext["Schedule max sigma"] = options.sigma_max
    if schedule_type.default_rho != -1 and options.rho != 0 and options.rho != schedule_type.default_rho:
        kwargs["rho"] = options.rho
        infotext["Schedule rho"] = options.rho
    if schedule_type.label == "Beta":
        infotext["Beta schedule alpha"] = options.beta_dist_alpha
        infotext["Beta schedule beta"] = options.beta_dist_beta
    kwargs.update(
        model=model,
        beta_dist_alpha=options.beta_dist_alpha,
        beta_dist_beta=options.beta_dist_beta,
        is_sdxl=options.is_sdxl,
    )
    return schedule_type.function(n=steps, **kwargs)


def ddim_timesteps(steps: int, discard_penultimate: bool = False, total: int = 1000) -> torch.Tensor:
    """A1111's timesteps for DDIM / DDIM CFG++ / PLMS / UniPC: ``range(0, T, T // steps) + 1`` clipped.

    The list can hold more than ``steps`` values (30 steps -> 31); the samplers make ``len - 1`` model calls.
    """
    steps += 1 if discard_penultimate else 0
    return torch.clip(torch.asarray(list(range(0, total, total // steps))) + 1, 0, total - 1)

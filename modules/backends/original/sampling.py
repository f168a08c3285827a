"""The k-diffusion samplers A1111 runs (and its Restart and LCM), written for Easel.

Each function reproduces the numerics of k-diffusion 0.0.16 ``sampling.py`` (the version A1111 v1.10.1 pins;
its file equals k-diffusion 0.1.1.post1 on PyPI) as A1111 drives it: the same float operations in the same
order, ``to_d = (x - denoised) / sigma``, and every ``torch.randn_like`` replaced by ``randn_like`` (A1111:
each image's own generator, see :meth:`rng.ImageRNG.randn_like`), including the draws some samplers make
and never use (the churn noise of Euler / Heun / DPM2 at ``s_churn`` 0, DPM fast's noise at eta 0).
Written by hand because k-diffusion cannot be a runtime dependency (its package import pulls wandb,
clean-fid ...); tests compare every function with k-diffusion's own results (``tests/data``).

Conventions: ``model(x, sigma_batch) -> denoised`` (a :class:`denoiser.CFGDenoiser` over a
:class:`denoiser.CompVisDenoiser`); ``sigmas`` a float32 tensor ending in 0 (except KL Optimal);
``callback`` gets k-diffusion's dict ``{x, i, sigma, sigma_hat, denoised}``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import torch
from scipy import integrate

from modules.backends.original.schedules import karras

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
RandnLike = Callable[[torch.Tensor], torch.Tensor]
NoiseSampler = Callable[[Any, Any], torch.Tensor]
Callback = Callable[[dict[str, Any]], None] | None


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """The Karras ODE derivative (A1111's replacement: no append_dims, same values)."""
    return (x - denoised) / sigma


def ancestral_step(sigma_from: Any, sigma_to: Any, eta: float = 1.0) -> tuple[Any, Any]:
    """(sigma_down, sigma_up) of an ancestral step; eta 0 gives (sigma_to, 0)."""
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def _report(callback: Callback, x: torch.Tensor, i: int, sigma: Any, sigma_hat: Any, denoised: torch.Tensor) -> None:
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma_hat, "denoised": denoised})


def _default_noise(x: torch.Tensor, randn_like: RandnLike) -> NoiseSampler:
    return lambda sigma, sigma_next: randn_like(x)


def _churn(
    x: torch.Tensor,
    sigmas: torch.Tensor,
    i: int,
    randn_like: RandnLike,
    s_churn: float,
    s_tmin: float,
    s_tmax: float,
    s_noise: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Karras' churn of Euler / Heun / DPM2: the noise is drawn every step, used only when gamma > 0."""
    gamma = min(s_churn / (len(sigmas) - 1), 2**0.5 - 1) if s_tmin <= sigmas[i] <= s_tmax else 0.0
    eps = randn_like(x) * s_noise
    sigma_hat = sigmas[i] * (gamma + 1)
    if gamma > 0:
        x = x + eps * (sigma_hat**2 - sigmas[i] ** 2) ** 0.5
    return x, sigma_hat


@torch.no_grad()
def sample_euler(
    model: Denoise,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callback = None,
    randn_like: RandnLike = torch.randn_like,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> torch.Tensor:
    """Euler (Karras et al. 2022, Algorithm 2 with Euler steps)."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, randn_like, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat * s_in)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        x = x + d * (sigmas[i + 1] - sigma_hat)
    return x


@torch.no_grad()
def sample_euler_ancestral(
    model: Denoise,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callback = None,
    randn_like: RandnLike = torch.randn_like,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """Euler a: Euler to sigma_down, then noise up to sigma_next (not after the last step)."""
    noise_sampler = noise_sampler or _default_noise(x, randn_like)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        d = to_d(x, sigmas[i], denoised)
        x = x + d * (sigma_down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_heun(
    model: Denoise,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callback = None,
    randn_like: RandnLike = torch.randn_like,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> torch.Tensor:
    """Heun (Karras et al. 2022, Algorithm 2); the step to sigma 0 is an Euler step."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, randn_like, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat * s_in)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            denoised_2 = model(x_2, sigmas[i + 1] * s_in)
            d_2 = to_d(x_2, sigmas[i + 1], denoised_2)
            x = x + (d + d_2) / 2 * dt
    return x


@torch.no_grad()
def sample_dpm_2(
    model: Denoise,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callback = None,
    randn_like: RandnLike = torch.randn_like,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> torch.Tensor:
    """DPM2: a midpoint (in log sigma) second-order step; Euler to sigma 0."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, randn_like, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat * s_in)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigma_hat)
        else:
            sigma_mid = sigma_hat.log().lerp(sigmas[i + 1].log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigma_hat)
            denoised_2 = model(x_2, sigma_mid * s_in)
            d_2 = to_d(x_2, sigma_mid, denoised_2)
            x = x + d_2 * (sigmas[i + 1] - sigma_hat)
    return x


@torch.no_grad()
def sample_dpm_2_ancestral(
    model: Denoise,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callback = None,
    randn_like: RandnLike = torch.randn_like,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """DPM2 a: a DPM2 step to sigma_down plus noise (noise whenever sigma_down != 0)."""
    noise_sampler = noise_sampler or _default_noise(x, randn_like)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        d = to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigma_down.log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            denoised_2 = model(x_2, sigma_mid * s_in)
            d_2 = to_d(x_2, sigma_mid, denoised_2)
            x = x + d_2 * (sigma_down - sigmas[i])
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


def lms_coefficient(order: int, sigmas: list[float], i: int, j: int) -> float:
    """The j-th linear multistep coefficient at step i: the Lagrange basis integrated over [t_i, t_(i+1)].

    ``sigmas`` are python floats (float64), as A1111's numpy 1.26 computes k-diffusion's numpy float32
    values against quad's float64 abscissae.
    """
    if order - 1 > i:
        raise ValueError(f"Order {order} too high for step {i}")

    def basis(tau: float) -> float:
        product = 1.0
        for k in range(order):
            if j != k:
                product *= (tau - sigmas[i - k]) / (sigmas[i - j] - sigmas[i - k])
        return product

    return integrate.quad(basis, sigmas[i], sigmas[i + 1], epsrel=1e-4)[0]


@torch.no_grad()
def sample_lms(
    model: Denoise, x: torch.Tensor, sigmas: torch.Tensor, callback: Callback = None, order: int = 4
) -> torch.Tensor:
    """LMS: linear multistep of order up to 4 over the derivatives of the previous steps."""
    s_in = x.new_ones([x.shape[0]])
    sigma_values = [float(value) for value in sigmas.detach().cpu().numpy()]
    derivatives: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        derivatives.append(to_d(x, sigmas[i], denoised))
        if len(derivatives) > order:
            derivatives.pop(0)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        current_order = min(i + 1, order)
        coefficients = [lms_coefficient(current_order, sigma_values, i, j) for j in range(current_order)]
        x = x + sum(c * d for c, d in zip(coefficients, reversed(derivatives), strict=False))
    return x


def _sigma_fn(t: torch.Tensor) -> torch.Tensor:
    return t.neg().exp()


def _t_fn(sigma: torch.Tensor) -> torch.Tensor:
    return sigma.log().neg()


@torch.no_grad()
def sample_dpmpp_2s_ancestral(
    model: Denoise,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callback = None,
    randn_like: RandnLike = torch.randn_like,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """DPM++ 2S a: a DPM-Solver++(2S) step to sigma_down, then noise (every step but the last)."""
    noise_sampler = noise_sampler or _default_noise(x, randn_like)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigma_down == 0:
            d = to_d(x, sigmas[i], denoised)
            x = x + d * (sigma_down - sigmas[i])
        else:
            t, t_next = _t_fn(sigmas[i]), _t_fn(sigma_down)
            h = t_next - t
            s = t + 0.5 * h
            x_2 = (_sigma_fn(s) / _sigma_fn(t)) * x - (-h * 0.5).expm1() * denoised
            denoised_2 = model(x_2, _sigma_fn(s) * s_in)
            x = (_sigma_fn(t_next) / _sigma_fn(t)) * x - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_dpmpp_sde(
    model: Denoise,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    noise_sampler: NoiseSampler,
    callback: Callback = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    r: float = 1 / 2,
) -> torch.Tensor:
    """DPM++ SDE (stochastic DPM-Solver++, two model calls per step); noise from a Brownian tree."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            d = to_d(x, sigmas[i], denoised)
            x = x + d * (sigmas[i + 1] - sigmas[i])
            continue
        t, t_next = _t_fn(sigmas[i]), _t_fn(sigmas[i + 1])
        h = t_next - t
        s = t + h * r
        fac = 1 / (2 * r)
        sd, su = ancestral_step(_sigma_fn(t), _sigma_fn(s), eta)
        s_ = _t_fn(sd)
        x_2 = (_sigma_fn(s_) / _sigma_fn(t)) * x - (t - s_).expm1() * denoised
        x_2 = x_2 + noise_sampler(_sigma_fn(t), _sigma_fn(s)) * s_noise * su
        denoised_2 = model(x_2, _sigma_fn(s) * s_in)
        sd, su = ancestral_step(_sigma_fn(t), _sigma_fn(t_next), eta)
        t_next_ = _t_fn(sd)
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = (_sigma_fn(t_next_) / _sigma_fn(t)) * x - (t - t_next_).expm1() * denoised_d
        x = x + noise_sampler(_sigma_fn(t), _sigma_fn(t_next)) * s_noise * su
    return x


@torch.no_grad()
def sample_dpmpp_2m(model: Denoise, x: torch.Tensor, sigmas: torch.Tensor, callback: Callback = None) -> torch.Tensor:
    """DPM++ 2M: second-order multistep DPM-Solver++ (first and last steps first order)."""
    s_in = x.new_ones([x.shape[0]])
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        t, t_next = _t_fn(sigmas[i]), _t_fn(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (_sigma_fn(t_next) / _sigma_fn(t)) * x - (-h).expm1() * denoised
        else:
            r = (t - _t_fn(sigmas[i - 1])) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (_sigma_fn(t_next) / _sigma_fn(t)) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(
    model: Denoise,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    noise_sampler: NoiseSampler,
    callback: Callback = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    solver_type: str = "midpoint",
) -> torch.Tensor:
    """DPM++ 2M SDE (``solver_type`` "midpoint"; "heun" is A1111's DPM++ 2M SDE Heun)."""
    if solver_type not in {"heun", "midpoint"}:
        raise ValueError("solver_type must be 'heun' or 'midpoint'")
    s_in = x.new_ones([x.shape[0]])
    old_denoised, h_last, h = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            eta_h = eta * h
            x = sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * x + (-h - eta_h).expm1().neg() * denoised
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    factor = (-h - eta_h).expm1().neg() / (-h - eta_h) + 1
                    x = x + factor * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * (-h - eta_h).expm1().neg() * (1 / r) * (denoised - old_denoised)
            if eta:
                noise = noise_sampler(sigmas[i], sigmas[i + 1])
                x = x + noise * sigmas[i + 1] * (-2 * eta_h).expm1().neg().sqrt() * s_noise
        old_denoised = denoised
        h_last = h
    return x


@torch.no_grad()
def sample_dpmpp_3m_sde(
    model: Denoise,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    noise_sampler: NoiseSampler,
    callback: Callback = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """DPM++ 3M SDE: third-order multistep with Brownian-tree noise."""
    s_in = x.new_ones([x.shape[0]])
    denoised_1, denoised_2 = None, None
    h, h_1, h_2 = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            h_eta = h * (eta + 1)
            x = torch.exp(-h_eta) * x + (-h_eta).expm1().neg() * denoised
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:
                d = (denoised - denoised_1) / (h_1 / h)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                x = x + phi_2 * d
            if eta:
                noise = noise_sampler(sigmas[i], sigmas[i + 1])
                x = x + noise * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


@torch.no_grad()
def sample_lcm(
    model: Denoise,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callback = None,
    randn_like: RandnLike = torch.randn_like,
    noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """LCM: jump to the denoised image, then renoise to the next sigma (not after the last step)."""
    noise_sampler = noise_sampler or _default_noise(x, randn_like)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        x = denoised
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * noise_sampler(sigmas[i], sigmas[i + 1])
    return x


def restart_plan(sigmas: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A1111's Restart step list: (sigma, next sigma) pairs including the restart segments.

    Under 20 steps the plain schedule; from 20 steps the schedule is remade as Karras(steps - R * K) between
    sigmas[-2] and sigmas[0] and, at the level nearest 0.1, K restarts back up to the level nearest 2 run
    R Karras steps each (R = 9, K = 1; from 36 steps R = steps // 4, K = 2).
    """
    steps = sigmas.shape[0] - 1
    restarts: dict[float, tuple[int, int, float]] = {}
    if steps >= 20:
        restart_steps, restart_times = (steps // 4, 2) if steps >= 36 else (9, 1)
        sigmas = karras(steps - restart_steps * restart_times, sigmas[-2].item(), sigmas[0].item()).to(sigmas.device)
        restarts = {0.1: (restart_steps + 1, restart_times, 2.0)}
    by_index = {int(torch.argmin(abs(sigmas - key), dim=0)): value for key, value in restarts.items()}
    plan: list[tuple[torch.Tensor, torch.Tensor]] = []
    for i in range(len(sigmas) - 1):
        plan.append((sigmas[i], sigmas[i + 1]))
        if i + 1 not in by_index:
            continue
        restart_steps, restart_times, restart_max = by_index[i + 1]
        min_idx, max_idx = i + 1, int(torch.argmin(abs(sigmas - restart_max), dim=0))
        if max_idx < min_idx:
            levels = karras(restart_steps, sigmas[min_idx].item(), sigmas[max_idx].item()).to(sigmas.device)[:-1]
            for _ in range(restart_times):
                plan.extend(itertools.pairwise(levels))
    return plan


@torch.no_grad()
def sample_restart(
    model: Denoise,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callback = None,
    randn_like: RandnLike = torch.randn_like,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """Restart sampling (Xu et al. 2023) as A1111's ``restart_sampler``: Heun steps, noise at each restart."""
    s_in = x.new_ones([x.shape[0]])
    last_sigma = None
    for step, (old_sigma, new_sigma) in enumerate(restart_plan(sigmas)):
        if last_sigma is None:
            last_sigma = old_sigma
        elif last_sigma < old_sigma:
            x = x + randn_like(x) * s_noise * (old_sigma**2 - last_sigma**2) ** 0.5
        denoised = model(x, old_sigma * s_in)
        d = to_d(x, old_sigma, denoised)
        _report(callback, x, step, new_sigma, old_sigma, denoised)
        dt = new_sigma - old_sigma
        if new_sigma == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            denoised_2 = model(x_2, new_sigma * s_in)
            d_2 = to_d(x_2, new_sigma, denoised_2)
            x = x + (d + d_2) / 2 * dt
        last_sigma = new_sigma
    return x


# ---------------------------------------------------------------------------------------------------
# DPM-Solver fast / adaptive (Lu et al. 2022) in k-diffusion's formulation: t = -log sigma.


class _StepSizeController:
    """k-diffusion's PID step-size controller for DPM adaptive."""

    def __init__(self, h: float, pcoeff: float, icoeff: float, dcoeff: float, order: float, accept_safety: float):
        self.h = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.accept_safety = accept_safety
        self.errs: list[float] = []

    def propose_step(self, error: torch.Tensor) -> bool:
        inv_error = 1 / (float(error) + 1e-8)
        if not self.errs:
            self.errs = [inv_error, inv_error, inv_error]
        self.errs[0] = inv_error
        factor = self.errs[0] ** self.b1 * self.errs[1] ** self.b2 * self.errs[2] ** self.b3
        factor = 1 + math.atan(factor - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.errs[2] = self.errs[1]
            self.errs[1] = self.errs[0]
        self.h *= factor
        return accept


class _DPMSolver:
    def __init__(self, model: Denoise, callback: Callback) -> None:
        self.model = model
        self.callback = callback

    def eps(self, cache: dict[str, torch.Tensor], key: str, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if key not in cache:
            sigma = _sigma_fn(t) * x.new_ones([x.shape[0]])
            cache[key] = (x - self.model(x, sigma)) / _sigma_fn(t)
        return cache[key]

    def step_1(self, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, cache: dict) -> torch.Tensor:
        h = t_next - t
        return x - _sigma_fn(t_next) * h.expm1() * self.eps(cache, "eps", x, t)

    def step_2(self, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, cache: dict, r1: float = 1 / 2):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - _sigma_fn(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        return x - _sigma_fn(t_next) * h.expm1() * eps - _sigma_fn(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)

    def step_3(self, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, cache: dict) -> torch.Tensor:
        r1, r2 = 1 / 3, 2 / 3
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        u1 = x - _sigma_fn(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        u2 = (
            x
            - _sigma_fn(s2) * (r2 * h).expm1() * eps
            - _sigma_fn(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps)
        )
        eps_r2 = self.eps(cache, "eps_r2", u2, s2)
        return x - _sigma_fn(t_next) * h.expm1() * eps - _sigma_fn(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)

    def ancestral_target(self, t: torch.Tensor, t_next: torch.Tensor, t_end: torch.Tensor, eta: float):
        """(t to step to, noise amount) of an ancestral step from t towards t_next, capped at t_end."""
        if not eta:
            return t_next, 0.0
        sd, _ = ancestral_step(_sigma_fn(t), _sigma_fn(t_next), eta)
        target = torch.minimum(t_end, _t_fn(sd))
        return target, (_sigma_fn(t_next) ** 2 - _sigma_fn(target) ** 2) ** 0.5

    def report(self, x: torch.Tensor, i: int, t: torch.Tensor, cache: dict) -> None:
        if self.callback is not None:
            sigma = _sigma_fn(t)
            self.callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": x - sigma * cache["eps"]})


@torch.no_grad()
def sample_dpm_fast(
    model: Denoise,
    x: torch.Tensor,
    sigma_min: float | torch.Tensor,
    sigma_max: float | torch.Tensor,
    n: int,
    callback: Callback = None,
    randn_like: RandnLike = torch.randn_like,
    eta: float = 0.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """DPM fast: fixed steps of orders 3, ..., 2/1 using ``n`` model calls; one noise draw per segment
    (always drawn, multiplied by 0 at eta 0). A1111 passes eta 1 (``eta_ancestral``)."""
    if sigma_min <= 0 or sigma_max <= 0:
        raise ValueError("sigma_min and sigma_max must not be 0")
    noise_sampler = noise_sampler or _default_noise(x, randn_like)
    solver = _DPMSolver(model, callback)
    t_start, t_end = _t_fn(torch.as_tensor(sigma_max)), _t_fn(torch.as_tensor(sigma_min))
    segments = math.floor(n / 3) + 1
    ts = torch.linspace(t_start, t_end, segments + 1, device=x.device)
    orders = [3] * (segments - 2) + [2, 1] if n % 3 == 0 else [3] * (segments - 1) + [n % 3]
    steppers = {1: solver.step_1, 2: solver.step_2, 3: solver.step_3}
    for i, order in enumerate(orders):
        cache: dict[str, torch.Tensor] = {}
        t, t_next = ts[i], ts[i + 1]
        target, noise_amount = solver.ancestral_target(t, t_next, t_end, eta)
        solver.eps(cache, "eps", x, t)
        solver.report(x, i, t, cache)
        x = steppers[order](x, t, target, cache)
        x = x + noise_amount * s_noise * noise_sampler(_sigma_fn(t), _sigma_fn(t_next))
    return x


@torch.no_grad()
def sample_dpm_adaptive(
    model: Denoise,
    x: torch.Tensor,
    sigma_min: float | torch.Tensor,
    sigma_max: float | torch.Tensor,
    callback: Callback = None,
    randn_like: RandnLike = torch.randn_like,
    order: int = 3,
    rtol: float = 0.05,
    atol: float = 0.0078,
    h_init: float = 0.05,
    pcoeff: float = 0.0,
    icoeff: float = 1.0,
    dcoeff: float = 0.0,
    accept_safety: float = 0.81,
    eta: float = 0.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """DPM adaptive: embedded DPM-Solver-2/3 pairs with PID step control; one noise draw per accepted step."""
    if sigma_min <= 0 or sigma_max <= 0:
        raise ValueError("sigma_min and sigma_max must not be 0")
    if order not in {2, 3}:
        raise ValueError("order should be 2 or 3")
    noise_sampler = noise_sampler or _default_noise(x, randn_like)
    solver = _DPMSolver(model, callback)
    t_start, t_end = _t_fn(torch.as_tensor(sigma_max)), _t_fn(torch.as_tensor(sigma_min))
    atol_t, rtol_t = torch.tensor(atol), torch.tensor(rtol)
    s, x_prev = t_start, x
    controller = _StepSizeController(abs(h_init), pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
    steps = 0
    while s < t_end - 1e-5:
        cache: dict[str, torch.Tensor] = {}
        t = torch.minimum(t_end, s + controller.h)
        target, noise_amount = solver.ancestral_target(s, t, t_end, eta)
        eps = solver.eps(cache, "eps", x, s)
        denoised = x - _sigma_fn(s) * eps
        if order == 2:
            x_low = solver.step_1(x, s, target, cache)
            x_high = solver.step_2(x, s, target, cache)
        else:
            x_low = solver.step_2(x, s, target, cache, r1=1 / 3)
            x_high = solver.step_3(x, s, target, cache)
        delta = torch.maximum(atol_t, rtol_t * torch.maximum(x_low.abs(), x_prev.abs()))
        error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
        if controller.propose_step(error):
            x_prev = x_low
            x = x_high + noise_amount * s_noise * noise_sampler(_sigma_fn(s), _sigma_fn(t))
            s = t
        steps += 1
        if callback is not None:
            sigma = _sigma_fn(s)
            callback({"x": x, "i": steps - 1, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised, "error": error})
    return x

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


def default_noise_sampler(x: torch.Tensor, randn_like: RandnLike) -> NoiseSampler:
    """k-diffusion's default noise sampler: ``randn_like(x)`` whatever the interval."""
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
    noise_sampler = noise_sampler or default_noise_sampler(x, randn_like)
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
    noise_sampler = noise_sampler or default_noise_sampler(x, randn_like)
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


def sigma_from_t(t: torch.Tensor) -> torch.Tensor:
    """DPM-Solver's time to sigma: exp(-t)."""
    return t.neg().exp()


def t_from_sigma(sigma: torch.Tensor) -> torch.Tensor:
    """Sigma to DPM-Solver's time: -log(sigma)."""
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
    noise_sampler = noise_sampler or default_noise_sampler(x, randn_like)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigma_down == 0:
            d = to_d(x, sigmas[i], denoised)
            x = x + d * (sigma_down - sigmas[i])
        else:
            t, t_next = t_from_sigma(sigmas[i]), t_from_sigma(sigma_down)
            h = t_next - t
            s = t + 0.5 * h
            x_2 = (sigma_from_t(s) / sigma_from_t(t)) * x - (-h * 0.5).expm1() * denoised
            denoised_2 = model(x_2, sigma_from_t(s) * s_in)
            x = (sigma_from_t(t_next) / sigma_from_t(t)) * x - (-h).expm1() * denoised_2
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
        t, t_next = t_from_sigma(sigmas[i]), t_from_sigma(sigmas[i + 1])
        h = t_next - t
        s = t + h * r
        fac = 1 / (2 * r)
        sd, su = ancestral_step(sigma_from_t(t), sigma_from_t(s), eta)
        s_ = t_from_sigma(sd)
        x_2 = (sigma_from_t(s_) / sigma_from_t(t)) * x - (t - s_).expm1() * denoised
        x_2 = x_2 + noise_sampler(sigma_from_t(t), sigma_from_t(s)) * s_noise * su
        denoised_2 = model(x_2, sigma_from_t(s) * s_in)
        sd, su = ancestral_step(sigma_from_t(t), sigma_from_t(t_next), eta)
        t_next_ = t_from_sigma(sd)
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = (sigma_from_t(t_next_) / sigma_from_t(t)) * x - (t - t_next_).expm1() * denoised_d
        x = x + noise_sampler(sigma_from_t(t), sigma_from_t(t_next)) * s_noise * su
    return x


@torch.no_grad()
def sample_dpmpp_2m(model: Denoise, x: torch.Tensor, sigmas: torch.Tensor, callback: Callback = None) -> torch.Tensor:
    """DPM++ 2M: second-order multistep DPM-Solver++ (first and last steps first order)."""
    s_in = x.new_ones([x.shape[0]])
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        t, t_next = t_from_sigma(sigmas[i]), t_from_sigma(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (sigma_from_t(t_next) / sigma_from_t(t)) * x - (-h).expm1() * denoised
        else:
            r = (t - t_from_sigma(sigmas[i - 1])) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigma_from_t(t_next) / sigma_from_t(t)) * x - (-h).expm1() * denoised_d
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
    noise_sampler = noise_sampler or default_noise_sampler(x, randn_like)
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

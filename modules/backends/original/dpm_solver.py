"""DPM fast and DPM adaptive (Lu et al. 2022) as k-diffusion writes them (t = -log sigma), for A1111.

Split from :mod:`sampling` for size; same conventions (see its docstring). Both draw one noise per solver
segment / accepted step even at eta 0 (multiplied by 0), so ENSD reaches them.
"""

from __future__ import annotations

import math

import torch

from modules.backends.original.sampling import (
    Callback,
    Denoise,
    NoiseSampler,
    RandnLike,
    ancestral_step,
    default_noise_sampler,
    sigma_from_t,
    t_from_sigma,
)


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
            sigma = sigma_from_t(t) * x.new_ones([x.shape[0]])
            cache[key] = (x - self.model(x, sigma)) / sigma_from_t(t)
        return cache[key]

    def step_1(self, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, cache: dict) -> torch.Tensor:
        h = t_next - t
        return x - sigma_from_t(t_next) * h.expm1() * self.eps(cache, "eps", x, t)

    def step_2(self, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, cache: dict, r1: float = 1 / 2):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - sigma_from_t(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        return x - sigma_from_t(t_next) * h.expm1() * eps - sigma_from_t(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)

    def step_3(self, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, cache: dict) -> torch.Tensor:
        r1, r2 = 1 / 3, 2 / 3
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        u1 = x - sigma_from_t(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        u2 = (
            x
            - sigma_from_t(s2) * (r2 * h).expm1() * eps
            - sigma_from_t(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps)
        )
        eps_r2 = self.eps(cache, "eps_r2", u2, s2)
        sigma_next = sigma_from_t(t_next)
        return x - sigma_next * h.expm1() * eps - sigma_next / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)

    def ancestral_target(self, t: torch.Tensor, t_next: torch.Tensor, t_end: torch.Tensor, eta: float):
        """(t to step to, noise amount) of an ancestral step from t towards t_next, capped at t_end."""
        if not eta:
            return t_next, 0.0
        sd, _ = ancestral_step(sigma_from_t(t), sigma_from_t(t_next), eta)
        target = torch.minimum(t_end, t_from_sigma(sd))
        return target, (sigma_from_t(t_next) ** 2 - sigma_from_t(target) ** 2) ** 0.5

    def report(self, x: torch.Tensor, i: int, t: torch.Tensor, cache: dict) -> None:
        if self.callback is not None:
            sigma = sigma_from_t(t)
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
    noise_sampler = noise_sampler or default_noise_sampler(x, randn_like)
    solver = _DPMSolver(model, callback)
    t_start, t_end = t_from_sigma(torch.as_tensor(sigma_max)), t_from_sigma(torch.as_tensor(sigma_min))
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
        x = x + noise_amount * s_noise * noise_sampler(sigma_from_t(t), sigma_from_t(t_next))
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
    noise_sampler = noise_sampler or default_noise_sampler(x, randn_like)
    solver = _DPMSolver(model, callback)
    t_start, t_end = t_from_sigma(torch.as_tensor(sigma_max)), t_from_sigma(torch.as_tensor(sigma_min))
    atol_t, rtol_t = torch.tensor(atol), torch.tensor(rtol)
    s, x_prev = t_start, x
    controller = _StepSizeController(abs(h_init), pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
    steps = 0
    while s < t_end - 1e-5:
        cache: dict[str, torch.Tensor] = {}
        t = torch.minimum(t_end, s + controller.h)
        target, noise_amount = solver.ancestral_target(s, t, t_end, eta)
        eps = solver.eps(cache, "eps", x, s)
        denoised = x - sigma_from_t(s) * eps
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
            x = x_high + noise_amount * s_noise * noise_sampler(sigma_from_t(s), sigma_from_t(t))
            s = t
        steps += 1
        if callback is not None:
            sigma = sigma_from_t(s)
            callback({"x": x, "i": steps - 1, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised, "error": error})
    return x

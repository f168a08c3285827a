"""A1111's own timestep samplers: DDIM, DDIM CFG++, PLMS and UniPC (``sd_samplers_timesteps_impl.py``).

Written by hand from the facts in ``../shared/A1111-SAMPLING.md`` section 2 and A1111's source (read, not
copied). These samplers work on integer timesteps from :func:`schedules.ddim_timesteps` (the schedule type
is ignored), get eps from the model (``model(x, t_batch) -> eps``, a :class:`denoiser.CFGDenoiser` over a
:class:`denoiser.TimestepsDenoiser`) and start from the unscaled initial noise. They make
``len(timesteps) - 1`` model calls (PLMS one more, UniPC ``len(timesteps)`` steps): 20 steps -> 19 DDIM
calls from t=951 down to t=51, ending at ``alphas_cumprod[1]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch

from modules.backends.original.sampling import Callback, RandnLike

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class GuidedEpsModel(Protocol):
    """What DDIM CFG++ needs from the CFG wrapper (A1111 sets these attributes on its CFG denoiser)."""

    cond_scale_multiplier: float
    need_last_noise_uncond: bool
    last_noise_uncond: torch.Tensor | None

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...


def _float64_for(x: torch.Tensor) -> torch.dtype:
    """A1111's ``torch_utils.float64``: mps and xpu have no float64."""
    return torch.float32 if x.device.type in ("mps", "xpu") else torch.float64


def _ddim_tables(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, x: torch.Tensor, eta: float):
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(_float64_for(x))
    sqrt_one_minus_alphas = torch.sqrt(1 - alphas)
    # A1111 divides a numpy float64 array by a float32 tensor: torch evaluates ``array / tensor`` as
    # ``tensor.reciprocal() * array``, the reciprocal in float32; the rest is float64.
    prev = alphas_prev.cpu().to(torch.float64)
    inverse = (1 - alphas.cpu()).reciprocal().to(torch.float64)
    current = alphas.cpu().to(torch.float64)
    sigmas = eta * np.sqrt((inverse * (1 - prev) * (1 - current / prev)).numpy())
    return alphas, alphas_prev, sqrt_one_minus_alphas, sigmas


def _ddim_loop(
    model: EpsModel,
    x: torch.Tensor,
    timesteps: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    eta: float,
    callback: Callback,
    randn_like: RandnLike,
    direction: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    alphas, alphas_prev, sqrt_one_minus_alphas, sigmas = _ddim_tables(alphas_cumprod, timesteps, x, eta)
    s_in = x.new_ones(x.shape[0])
    s_x = x.new_ones((x.shape[0], 1, 1, 1))
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = model(x, timesteps[index].item() * s_in)
        a_t = alphas[index].item() * s_x
        a_prev = alphas_prev[index].item() * s_x
        sigma_t = sigmas[index].item() * s_x
        sqrt_one_minus_at = sqrt_one_minus_alphas[index].item() * s_x
        pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
        dir_xt = (1.0 - a_prev - sigma_t**2).sqrt() * direction(e_t)
        noise = sigma_t * randn_like(x)
        x = a_prev.sqrt() * pred_x0 + dir_xt + noise
        if callback is not None:
            callback({"x": x, "i": i, "sigma": 0, "sigma_hat": 0, "denoised": pred_x0})
    return x


@torch.no_grad()
def sample_ddim(
    model: EpsModel,
    x: torch.Tensor,
    timesteps: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    callback: Callback = None,
    randn_like: RandnLike = torch.randn_like,
    eta: float = 0.0,
) -> torch.Tensor:
    """A1111's DDIM (``eta_ddim``, default 0); draws one noise per step even at eta 0 (times sigma_t = 0)."""
    return _ddim_loop(model, x, timesteps, alphas_cumprod, eta, callback, randn_like, lambda e_t: e_t)


@torch.no_grad()
def sample_ddim_cfgpp(
    model: GuidedEpsModel,
    x: torch.Tensor,
    timesteps: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    callback: Callback = None,
    randn_like: RandnLike = torch.randn_like,
    eta: float = 0.0,
) -> torch.Tensor:
    """DDIM CFG++ (Chung et al. 2024): guidance scale / 12.5, and the direction uses the uncond eps.

    Like A1111 this sets ``cond_scale_multiplier`` and ``need_last_noise_uncond`` on the CFG wrapper.
    """
    model.cond_scale_multiplier = 1 / 12.5
    model.need_last_noise_uncond = True

    def uncond_direction(e_t: torch.Tensor) -> torch.Tensor:
        del e_t
        assert model.last_noise_uncond is not None
        return model.last_noise_uncond

    return _ddim_loop(model, x, timesteps, alphas_cumprod, eta, callback, randn_like, uncond_direction)


@torch.no_grad()
def sample_plms(
    model: EpsModel,
    x: torch.Tensor,
    timesteps: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    callback: Callback = None,
) -> torch.Tensor:
    """A1111's PLMS: a pseudo improved-Euler first step (2 calls), then Adams-Bashforth of order 2, 3, 4."""
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(_float64_for(x))
    sqrt_one_minus_alphas = torch.sqrt(1 - alphas)
    s_in = x.new_ones([x.shape[0]])
    s_x = x.new_ones((x.shape[0], 1, 1, 1))
    old_eps: list[torch.Tensor] = []

    def step(x: torch.Tensor, e_t: torch.Tensor, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        a_t = alphas[index].item() * s_x
        a_prev = alphas_prev[index].item() * s_x
        sqrt_one_minus_at = sqrt_one_minus_alphas[index].item() * s_x
        pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
        return a_prev.sqrt() * pred_x0 + (1.0 - a_prev).sqrt() * e_t, pred_x0

    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = model(x, timesteps[index].item() * s_in)
        if not old_eps:
            x_prev, _ = step(x, e_t, index)
            e_t_next = model(x_prev, timesteps[max(index - 1, 0)].item() * s_in)
            e_t_prime = (e_t + e_t_next) / 2
        elif len(old_eps) == 1:
            e_t_prime = (3 * e_t - old_eps[-1]) / 2
        elif len(old_eps) == 2:
            e_t_prime = (23 * e_t - 16 * old_eps[-1] + 5 * old_eps[-2]) / 12
        else:
            e_t_prime = (55 * e_t - 59 * old_eps[-1] + 37 * old_eps[-2] - 9 * old_eps[-3]) / 24
        x, pred_x0 = step(x, e_t_prime, index)
        old_eps.append(e_t)
        if len(old_eps) >= 4:
            old_eps.pop(0)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": 0, "sigma_hat": 0, "denoised": pred_x0})
    return x


# ---------------------------------------------------------------------------------------------------
# UniPC (Zhao et al. 2023) as A1111 runs it: multistep, data prediction, discrete VP schedule.


def _interpolate(x: torch.Tensor, xp: torch.Tensor, yp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear f(x) through (xp, yp) (increasing xp), extended linearly beyond both ends.

    Matches UniPC's ``interpolate_fn``: a query equal to a keypoint uses the segment that keypoint starts.
    """
    segment = (torch.searchsorted(xp.contiguous(), x.contiguous()) - 1).clamp(0, xp.shape[0] - 2)
    start_x, end_x = xp[segment], xp[segment + 1]
    start_y, end_y = yp[segment], yp[segment + 1]
    return start_y + (x - start_x) * (end_y - start_y) / (end_x - start_x)


class DiscreteVPSchedule:
    """The discrete-time VP noise schedule of UniPC: t_n = (n + 1) / N, log alpha_t piecewise linear."""

    def __init__(self, alphas_cumprod: torch.Tensor) -> None:
        self.log_alphas = 0.5 * torch.log(alphas_cumprod)
        self.total_n = len(self.log_alphas)
        self.t_array = torch.linspace(0.0, 1.0, self.total_n + 1)[1:]

    def log_mean_coeff(self, t: torch.Tensor) -> torch.Tensor:
        return _interpolate(t.reshape(-1), self.t_array.to(t.device), self.log_alphas.to(t.device))

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.log_mean_coeff(t))

    def std(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(1.0 - torch.exp(2.0 * self.log_mean_coeff(t)))

    def lambda_(self, t: torch.Tensor) -> torch.Tensor:
        log_mean = self.log_mean_coeff(t)
        return log_mean - 0.5 * torch.log(1.0 - torch.exp(2.0 * log_mean))

    def inverse_lambda(self, lamb: torch.Tensor) -> torch.Tensor:
        log_alpha = -0.5 * torch.logaddexp(torch.zeros((1,)).to(lamb.device), -2.0 * lamb)
        flipped_alpha = torch.flip(self.log_alphas.to(lamb.device), [0])
        flipped_t = torch.flip(self.t_array.to(lamb.device), [0])
        return _interpolate(log_alpha.reshape(-1), flipped_alpha, flipped_t)

    def time_steps(self, skip_type: str, t_start: Any, t_end: float, n: int, device: torch.device) -> torch.Tensor:
        if skip_type == "logSNR":
            lambda_start = self.lambda_(torch.tensor(t_start).to(device))
            lambda_end = self.lambda_(torch.tensor(t_end).to(device))
            lambdas = torch.linspace(lambda_start.cpu().item(), lambda_end.cpu().item(), n + 1).to(device)
            return self.inverse_lambda(lambdas)
        if skip_type == "time_uniform":
            return torch.linspace(t_start, t_end, n + 1).to(device)
        if skip_type == "time_quadratic":
            return torch.linspace(t_start**0.5, t_end**0.5, n + 1).pow(2).to(device)
        raise ValueError(f"unsupported UniPC skip type {skip_type!r}: logSNR, time_uniform or time_quadratic")


def _expand(value: torch.Tensor, ndim: int) -> torch.Tensor:
    return value[(...,) + (None,) * (ndim - 1)]


class _UniPC:
    def __init__(self, model: EpsModel, schedule: DiscreteVPSchedule, variant: str) -> None:
        if variant not in ("bh1", "bh2", "vary_coeff"):
            raise ValueError(f"unsupported UniPC variant {variant!r}: bh1, bh2 or vary_coeff")
        self.model = model
        self.schedule = schedule
        self.variant = variant

    def data_prediction(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x0 from the model's eps at continuous time t (model time ``(t - 1/N) * 1000``)."""
        noise = self.model(x, (t - 1.0 / self.schedule.total_n) * 1000.0)
        alpha_t, sigma_t = self.schedule.alpha(t), self.schedule.std(t)
        return (x - _expand(sigma_t, x.dim()) * noise) / _expand(alpha_t, x.dim())

    def update(self, x, model_prev_list, t_prev_list, t, order, use_corrector):
        if len(t.shape) == 0:
            t = t.view(-1)
        if self.variant == "vary_coeff":
            return self.update_vary(x, model_prev_list, t_prev_list, t, order, use_corrector)
        return self.update_bh(x, model_prev_list, t_prev_list, t, order, use_corrector)

    def _differences(self, model_prev_list, t_prev_list, order, h, lambda_prev_0):
        model_prev_0 = model_prev_list[-1]
        rks, d1s = [], []
        for i in range(1, order):
            lambda_prev_i = self.schedule.lambda_(t_prev_list[-(i + 1)])
            rk = ((lambda_prev_i - lambda_prev_0) / h)[0]
            rks.append(rk)
            d1s.append((model_prev_list[-(i + 1)] - model_prev_0) / rk)
        rks.append(1.0)
        return rks, d1s

    def update_bh(self, x, model_prev_list, t_prev_list, t, order, use_corrector):
        schedule, dims = self.schedule, x.dim()
        t_prev_0, model_prev_0 = t_prev_list[-1], model_prev_list[-1]
        lambda_prev_0, lambda_t = schedule.lambda_(t_prev_0), schedule.lambda_(t)
        sigma_prev_0, sigma_t = schedule.std(t_prev_0), schedule.std(t)
        alpha_t = torch.exp(schedule.log_mean_coeff(t))
        h = lambda_t - lambda_prev_0
        rks_list, d1s_list = self._differences(model_prev_list, t_prev_list, order, h, lambda_prev_0)
        rks = torch.tensor(rks_list, device=x.device)
        hh = -h[0]
        h_phi_1 = torch.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        factorial_i = 1
        b_h = hh if self.variant == "bh1" else torch.expm1(hh)
        r_rows, b_list = [], []
        for i in range(1, order + 1):
            r_rows.append(torch.pow(rks, i - 1))
            b_list.append(h_phi_k * factorial_i / b_h)
            factorial_i *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial_i
        r_matrix = torch.stack(r_rows)
        b = torch.tensor(b_list, device=x.device)
        d1s = torch.stack(d1s_list, dim=1) if d1s_list else None
        if d1s is not None:
            if order == 2:
                rhos_p = torch.tensor([0.5], device=b.device)
            else:
                rhos_p = torch.linalg.solve(r_matrix[:-1, :-1], b[:-1])
        if use_corrector:
            rhos_c = torch.tensor([0.5], device=b.device) if order == 1 else torch.linalg.solve(r_matrix, b)
        x_t_ = _expand(sigma_t / sigma_prev_0, dims) * x - _expand(alpha_t * h_phi_1, dims) * model_prev_0
        pred_res = torch.einsum("k,bkchw->bchw", rhos_p, d1s) if d1s is not None else 0
        x_t = x_t_ - _expand(alpha_t * b_h, dims) * pred_res
        model_t = None
        if use_corrector:
            model_t = self.data_prediction(x_t, t)
            corr_res = torch.einsum("k,bkchw->bchw", rhos_c[:-1], d1s) if d1s is not None else 0
            d1_t = model_t - model_prev_0
            x_t = x_t_ - _expand(alpha_t * b_h, dims) * (corr_res + rhos_c[-1] * d1_t)
        return x_t, model_t

    def update_vary(self, x, model_prev_list, t_prev_list, t, order, use_corrector):
        schedule, dims = self.schedule, x.dim()
        t_prev_0, model_prev_0 = t_prev_list[-1], model_prev_list[-1]
        lambda_prev_0, lambda_t = schedule.lambda_(t_prev_0), schedule.lambda_(t)
        sigma_prev_0, sigma_t = schedule.std(t_prev_0), schedule.std(t)
        alpha_t = torch.exp(schedule.log_mean_coeff(t))
        h = lambda_t - lambda_prev_0
        rks_list, d1s_list = self._differences(model_prev_list, t_prev_list, order, h, lambda_prev_0)
        rks = torch.tensor(rks_list, device=x.device)
        k_total = len(rks)
        columns, column = [], torch.ones_like(rks)
        for k in range(1, k_total + 1):
            columns.append(column)
            column = column * rks / (k + 1)
        c_matrix = torch.stack(columns, dim=1)
        d1s = torch.stack(d1s_list, dim=1) if d1s_list else None
        if d1s is not None:
            a_p = torch.linalg.inv(c_matrix[:-1, :-1])
        if use_corrector:
            a_c = torch.linalg.inv(c_matrix)
        hh = -h
        h_phi_1 = torch.expm1(hh)
        h_phi_ks, factorial_k, h_phi_k = [], 1, h_phi_1
        for k in range(1, k_total + 2):
            h_phi_ks.append(h_phi_k)
            h_phi_k = h_phi_k / hh - 1 / factorial_k
            factorial_k *= k + 1
        alpha = _expand(alpha_t, dims)
        x_t_ = _expand(sigma_t / sigma_prev_0, dims) * x - alpha * _expand(h_phi_1, dims) * model_prev_0
        x_t = x_t_
        if d1s is not None:
            for k in range(k_total - 1):
                x_t = x_t - alpha * _expand(h_phi_ks[k + 1], dims) * torch.einsum("bkchw,k->bchw", d1s, a_p[k])
        model_t = None
        if use_corrector:
            model_t = self.data_prediction(x_t, t)
            d1_t = model_t - model_prev_0
            x_t, last = x_t_, 0
            for k in range(k_total - 1):
                last = k
                x_t = x_t - alpha * _expand(h_phi_ks[k + 1], dims) * torch.einsum("bkchw,k->bchw", d1s, a_c[k][:-1])
            x_t = x_t - alpha * _expand(h_phi_ks[k_total], dims) * (d1_t * a_c[last][-1])
        return x_t, model_t


@torch.no_grad()
def sample_unipc(
    model: EpsModel,
    x: torch.Tensor,
    timesteps: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    callback: Callback = None,
    is_img2img: bool = False,
    variant: str = "bh1",
    skip_type: str = "time_uniform",
    order: int = 3,
    lower_order_final: bool = True,
) -> torch.Tensor:
    """A1111's UniPC: ``len(timesteps)`` multistep UniPC steps from t = 1 (img2img: from the last timestep).

    Options as A1111's settings ``uni_pc_variant``, ``uni_pc_skip_type``, ``uni_pc_order``,
    ``uni_pc_lower_order_final``. The order must not exceed the number of steps.
    """
    schedule = DiscreteVPSchedule(alphas_cumprod)
    solver = _UniPC(model, schedule, variant)
    steps = len(timesteps)
    if steps < order:
        raise ValueError("UniPC order must be < sampling steps")
    t_end = 1.0 / schedule.total_n
    t_start = timesteps[-1] / 1000 + 1 / 1000 if is_img2img else 1.0
    times = schedule.time_steps(skip_type, t_start, t_end, steps, x.device)
    vec_t = times[0].expand(x.shape[0])
    model_prev_list, t_prev_list = [solver.data_prediction(x, vec_t)], [vec_t]
    for index, step in enumerate(range(1, steps + 1)):
        vec_t = times[step].expand(x.shape[0])
        if step < order:
            step_order, use_corrector = step, True
        else:
            step_order = min(order, steps + 1 - step) if lower_order_final else order
            use_corrector = step != steps
        x, model_x = solver.update(x, model_prev_list, t_prev_list, vec_t, step_order, use_corrector)
        if callback is not None:
            callback({"x": x, "i": index, "sigma": 0, "sigma_hat": 0, "denoised": model_x})
        if step < order:
            if model_x is None:
                model_x = solver.data_prediction(x, vec_t)
            model_prev_list.append(model_x)
            t_prev_list.append(vec_t)
            continue
        for i in range(order - 1):
            t_prev_list[i] = t_prev_list[i + 1]
            model_prev_list[i] = model_prev_list[i + 1]
        t_prev_list[-1] = vec_t
        if step < steps:
            if model_x is None:
                model_x = solver.data_prediction(x, vec_t)
            model_prev_list[-1] = model_x
    return x

"""The deterministic toy model and the cases shared by the original-backend tests and their golden script.

Nothing here imports Easel: ``tests/data/make_original_goldens.py`` runs the same cases through
k-diffusion's and A1111's own code, and ``tests/test_original_core.py`` through Easel's.
"""

from __future__ import annotations

import numpy as np
import torch

LATENT_SHAPE = (4, 4, 4)
SEEDS = (1234, 1235)
CFG_SCALE = 1.5
STEPS = 7


def toy_output(x: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """A small fixed nonlinear "UNet": 1x1 channel mix, a text bias and a timestep term, through tanh."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(4, 4, generator=generator) * 0.3
    bias = torch.randn(4, generator=generator) * 0.1
    mixed = torch.einsum("oc,bchw->bohw", weight, x) + bias[None, :, None, None]
    mixed = mixed + text.mean(1)[:, :, None, None]
    mixed = mixed + torch.cos(t.float() / 150.0)[:, None, None, None] * 0.2
    return torch.tanh(mixed)


def toy_conditioning(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(cond, uncond) text rows (batch, 3 tokens, 4 channels), fixed values."""
    generator = torch.Generator().manual_seed(1)
    cond = torch.randn(batch, 3, 4, generator=generator) * 0.5
    uncond = torch.randn(1, 3, 4, generator=generator).expand(batch, 3, 4) * 0.5
    return cond, uncond.contiguous()


def toy_init_latent(batch: int) -> torch.Tensor:
    """The img2img cases' init latent (batch, 4, 4, 4), fixed values."""
    return torch.randn(batch, *LATENT_SHAPE, generator=torch.Generator().manual_seed(2)) * 0.8


def ldm_alphas_cumprod() -> torch.Tensor:
    """SD's alphas_cumprod, computed independently of Easel (float64 numpy, stored float32)."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    return torch.tensor(np.cumprod(1.0 - betas, axis=0), dtype=torch.float32)


# (golden key, A1111 sampler name, schedule label or None for Automatic, prediction, extra options)
SAMPLER_CASES: tuple[tuple[str, str, str | None, str, dict], ...] = (
    ("euler", "Euler", None, "eps", {}),
    ("euler_karras", "Euler", "Karras", "eps", {}),
    ("euler_churn", "Euler", None, "eps", {"s_churn": 1.0, "s_noise": 1.003}),
    ("euler_a", "Euler a", None, "eps", {}),
    ("euler_a_v", "Euler a", "Karras", "v", {}),
    ("heun", "Heun", None, "eps", {}),
    ("heun_churn_exp", "Heun", "Exponential", "eps", {"s_churn": 0.5, "s_tmin": 0.5, "s_tmax": 5.0}),
    ("lms", "LMS", None, "eps", {}),
    ("lms_karras", "LMS", "Karras", "eps", {}),
    ("dpm2", "DPM2", None, "eps", {}),
    ("dpm2_churn", "DPM2", "Uniform", "eps", {"s_churn": 1.0}),
    ("dpm2_a", "DPM2 a", None, "eps", {}),
    ("dpmpp_2s_a", "DPM++ 2S a", None, "eps", {}),
    ("dpmpp_2s_a_eta", "DPM++ 2S a", "Exponential", "eps", {"eta": 0.5, "s_noise": 0.9}),
    ("dpmpp_2m", "DPM++ 2M", None, "eps", {}),
    ("dpmpp_2m_uniform", "DPM++ 2M", "Uniform", "eps", {}),
    ("dpmpp_2m_v", "DPM++ 2M", "SGM Uniform", "v", {}),
    ("dpmpp_sde", "DPM++ SDE", None, "eps", {}),
    ("dpmpp_sde_uniform", "DPM++ SDE", "Uniform", "eps", {"eta": 0.7}),
    ("dpmpp_2m_sde", "DPM++ 2M SDE", None, "eps", {}),
    ("dpmpp_2m_sde_karras", "DPM++ 2M SDE", "Karras", "eps", {}),
    ("dpmpp_2m_sde_heun", "DPM++ 2M SDE Heun", None, "eps", {}),
    ("dpmpp_3m_sde", "DPM++ 3M SDE", None, "eps", {}),
    ("dpmpp_3m_sde_karras", "DPM++ 3M SDE", "Karras", "eps", {}),
    ("dpm_fast", "DPM fast", None, "eps", {}),
    ("dpm_adaptive", "DPM adaptive", None, "eps", {}),
    ("restart", "Restart", None, "eps", {}),
    ("restart_20", "Restart", None, "eps", {"steps": 20}),
    ("restart_40", "Restart", None, "eps", {"steps": 40}),
    ("lcm", "LCM", None, "eps", {}),
    ("lcm_karras", "LCM", "Karras", "eps", {}),
    ("ddim", "DDIM", None, "eps", {}),
    ("ddim_eta", "DDIM", None, "v", {"eta": 0.6}),
    ("ddim_cfgpp", "DDIM CFG++", None, "eps", {}),
    ("plms", "PLMS", None, "eps", {}),
    ("unipc", "UniPC", None, "eps", {}),
    ("unipc_bh2_logsnr", "UniPC", None, "eps", {"uni_pc_variant": "bh2", "uni_pc_skip_type": "logSNR"}),
    ("unipc_vary", "UniPC", None, "v", {"uni_pc_variant": "vary_coeff", "uni_pc_skip_type": "time_quadratic"}),
    # img2img (denoising strength 0.6 of 7 steps: t_enc 4)
    ("i2i_euler_a", "Euler a", None, "eps", {"denoise": 0.6}),
    ("i2i_dpm2", "DPM2", None, "eps", {"denoise": 0.6}),
    ("i2i_dpmpp_2m_sde", "DPM++ 2M SDE", None, "eps", {"denoise": 0.6}),
    ("i2i_dpm_fast", "DPM fast", None, "eps", {"denoise": 0.6}),
    ("i2i_dpm_adaptive", "DPM adaptive", None, "eps", {"denoise": 0.6}),
    ("i2i_lcm", "LCM", None, "eps", {"denoise": 0.6}),
    ("i2i_ddim", "DDIM", None, "eps", {"denoise": 0.6}),
    ("i2i_plms", "PLMS", None, "eps", {"denoise": 0.6}),
    ("i2i_unipc", "UniPC", None, "eps", {"denoise": 0.6}),
)

# Samplers run with a batch of one image (A1111's UniPC "vary_coeff" variant only handles one image).
SINGLE_IMAGE_CASES = frozenset({"unipc_vary"})

ENSD = 31337

# ImageRNG keyword arguments of the noise cases (3 draws each: the initial noise and two sampler draws).
NOISE_VARIANTS: dict[str, dict] = {
    "plain": {},
    "subseed": {"subseeds": [77, 78], "subseed_strength": 0.3},
    "resize_wide": {"seed_resize_from_h": 24, "seed_resize_from_w": 48},
    "resize_small": {"seed_resize_from_h": 16, "seed_resize_from_w": 16},
    "resize_subseed": {"seed_resize_from_h": 40, "seed_resize_from_w": 24, "subseeds": [5], "subseed_strength": 0.8},
}

SCHEDULE_LABELS = (
    "Uniform",
    "Karras",
    "Exponential",
    "Polyexponential",
    "SGM Uniform",
    "KL Optimal",
    "Align Your Steps",
    "Simple",
    "Normal",
    "DDIM",
    "Beta",
)

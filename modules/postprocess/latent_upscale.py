"""Latent upscale modes for hires fix (A1111's ``shared.latent_upscale_modes``), via torch interpolate."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

import torch
import torch.nn.functional as F

LATENT_SCALE_FACTOR = 8  # pixels per latent cell of the SD 1.x / 2.x / XL VAEs


@dataclass(frozen=True)
class LatentUpscaleMode:
    """An interpolation mode and whether it is antialiased."""

    mode: str
    antialias: bool


LATENT_UPSCALE_MODES: MappingProxyType[str, LatentUpscaleMode] = MappingProxyType(
    {
        "Latent": LatentUpscaleMode("bilinear", antialias=False),
        "Latent (antialiased)": LatentUpscaleMode("bilinear", antialias=True),
        "Latent (bicubic)": LatentUpscaleMode("bicubic", antialias=False),
        "Latent (bicubic antialiased)": LatentUpscaleMode("bicubic", antialias=True),
        "Latent (nearest)": LatentUpscaleMode("nearest", antialias=False),
        "Latent (nearest-exact)": LatentUpscaleMode("nearest-exact", antialias=False),
    }
)


def is_latent_mode(name: str) -> bool:
    return name in LATENT_UPSCALE_MODES


def upscale_latents(
    latents: torch.Tensor,
    mode: str,
    width_px: int,
    height_px: int,
    latent_scale_factor: int = LATENT_SCALE_FACTOR,
) -> torch.Tensor:
    """Resize (B, C, h, w) latents to the latent size of a ``width_px`` x ``height_px`` image."""
    if mode not in LATENT_UPSCALE_MODES:
        raise ValueError(f"unknown latent upscale mode {mode!r}; choose one of {', '.join(LATENT_UPSCALE_MODES)}")
    if latents.ndim != 4:
        raise ValueError(f"latents must be (batch, channels, height, width), got shape {tuple(latents.shape)}")
    size = (height_px // latent_scale_factor, width_px // latent_scale_factor)
    if min(size) < 1:
        raise ValueError(
            f"target size {width_px}x{height_px} is smaller than one latent cell ({latent_scale_factor}px)"
        )
    settings = LATENT_UPSCALE_MODES[mode]
    if settings.mode in {"bilinear", "bicubic"}:
        return F.interpolate(latents, size=size, mode=settings.mode, antialias=settings.antialias, align_corners=False)
    return F.interpolate(latents, size=size, mode=settings.mode)

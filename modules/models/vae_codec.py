"""Every VAE encode and decode Easel runs itself: half-precision upcast and A1111's NaN check.

SDXL's VAE overflows in float16 (black or NaN images). diffusers' SDXL pipelines upcast a float16 VAE whose
config says ``force_upcast`` to float32 for the decode; Easel does the same for its own encodes and decodes
(backend decodes, latent upscalers, latent-noise inpainting). After a decode that still yields NaN in half
precision, the call is retried in float32 and logged with A1111's advice (``--no-half-vae``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

logger = logging.getLogger(__name__)

NAN_ADVICE = "A tensor with NaNs was produced in VAE; retried in float32. Start with --no-half-vae to avoid this."


def needs_upcast(vae: torch.nn.Module) -> bool:
    """diffusers' rule: a float16 VAE whose config sets ``force_upcast`` runs in float32."""
    return vae.dtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False))


@contextmanager
def vae_in_float32(vae: torch.nn.Module, active: bool = True) -> Iterator[None]:
    """The VAE in float32 for the block, back to its dtype after (the caller holds the model's scope)."""
    original = vae.dtype
    if not active or original == torch.float32:
        yield
        return
    vae.to(dtype=torch.float32)
    try:
        yield
    finally:
        vae.to(dtype=original)


def run_checked(vae: torch.nn.Module, call: Callable[[torch.dtype], torch.Tensor], what: str) -> torch.Tensor:
    """``call(dtype)`` with the upcast rule; NaN in a half-precision result retries it in float32."""
    with vae_in_float32(vae, needs_upcast(vae)):
        result = call(vae.dtype)
    if vae.dtype != torch.float32 and torch.isnan(result).any():
        logger.warning("vae nan=%s dtype=%s advice=%r", what, vae.dtype, NAN_ADVICE)
        with vae_in_float32(vae):
            result = call(torch.float32)
    return result


def decode_latents(vae: torch.nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """Latents scaled for the UNet -> pixels in [-1, 1] (float)."""
    shift = getattr(vae.config, "shift_factor", None) or 0.0

    def decode(dtype: torch.dtype) -> torch.Tensor:
        scaled = latents.to(device=vae.device, dtype=dtype) / vae.config.scaling_factor + shift
        with torch.inference_mode():
            return vae.decode(scaled, return_dict=False)[0]

    return run_checked(vae, decode, "decode")


def encode_pixels(vae: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Pixels in [-1, 1] -> latents scaled for the UNet (distribution mode)."""
    shift = getattr(vae.config, "shift_factor", None) or 0.0

    def encode(dtype: torch.dtype) -> torch.Tensor:
        with torch.inference_mode():
            latents = vae.encode(pixels.to(device=vae.device, dtype=dtype)).latent_dist.mode()
        return (latents - shift) * vae.config.scaling_factor

    return run_checked(vae, encode, "encode")

"""Pixels <-> latents and inpainting masks as A1111 makes them (``processing.py``, ``sd_samplers_common.py``).

Written by hand from the facts in ``../shared/A1111-SAMPLING.md`` sections 4-5:

- encode: each image ``2 * x - 1`` through the VAE, a *sample* of the posterior times the scale factor (A1111
  samples with the unseeded global RNG; Easel draws that sample from a generator seeded with the image's seed);
- decode: one image at a time, ``vae.decode(1. / scale * z)``, ``clamp((x + 1) / 2)``, ``255. * x`` truncated
  to uint8 (A1111 does not round);
- the latent mask: the mask resized to the latent size (Pillow's default bicubic), rounded, 1 = repaint;
- a 9-channel inpainting model's image conditioning: [rounded mask, latents of the image with the masked
  area set to 0 (mid-gray)];
- an instruct-pix2pix model's image conditioning: the posterior *mode* of the source image, not scaled
  (A1111's ``edit_image_conditioning``).

Every VAE call goes through ``modules.models.vae_codec.run_checked``: a float16 VAE whose config says
``force_upcast`` (SDXL) runs in float32, and a half-precision result with NaN is computed again in float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from modules.backends.original.denoiser import InpaintBlend
from modules.models.vae_codec import run_checked


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB image as A1111's batch tensor in [0, 1], (1, 3, H, W) float32."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(array, 2, 0)))[None]


def encode_sample(vae: torch.nn.Module, pixels: torch.Tensor, seed: int) -> torch.Tensor:
    """``scale * posterior.sample()`` of pixels in [-1, 1] (B, 3, H, W); the sample's noise from ``seed``."""

    def encode(dtype: torch.dtype) -> torch.Tensor:
        posterior = vae.encode(pixels.to(device=vae.device, dtype=dtype)).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=torch.Generator("cpu").manual_seed(int(seed)))
        latents = posterior.mean + posterior.std * noise.to(posterior.mean)
        return (latents * vae.config.scaling_factor).float()

    return run_checked(vae, encode, "encode")


def encode_mode(vae: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """The posterior mode of pixels in [-1, 1] (B, 3, H, W), unscaled: instruct-pix2pix's image conditioning."""

    def encode(dtype: torch.dtype) -> torch.Tensor:
        return vae.encode(pixels.to(device=vae.device, dtype=dtype)).latent_dist.mode().float()

    return run_checked(vae, encode, "encode")


def encode_images(vae: torch.nn.Module, images: Sequence[Image.Image], seeds: Sequence[int]) -> torch.Tensor:
    """A1111's ``images_tensor_to_samples``: each image encoded on its own (here with its seed)."""
    pairs = zip(images, seeds, strict=True)
    return torch.cat([encode_sample(vae, 2.0 * image_to_tensor(image) - 1.0, seed) for image, seed in pairs])


def decode_latents(vae: torch.nn.Module, latents: torch.Tensor) -> list[Image.Image]:
    """A1111's ``decode_latent_batch`` and ``sample_to_image``: one image at a time, truncated to uint8."""
    images = []
    for latent in latents:

        def decode(dtype: torch.dtype, latent: torch.Tensor = latent) -> torch.Tensor:
            scaled = (1.0 / vae.config.scaling_factor) * latent[None].to(device=vae.device, dtype=dtype)
            return vae.decode(scaled, return_dict=False)[0].float()

        decoded = torch.clamp((run_checked(vae, decode, "decode") + 1.0) / 2.0, min=0.0, max=1.0)[0]
        array = 255.0 * np.moveaxis(decoded.cpu().numpy(), 0, 2)
        images.append(Image.fromarray(array.astype(np.uint8)))
    return images


def latent_mask(mask: Image.Image, latents: torch.Tensor) -> torch.Tensor:
    """A1111's ``latmask``: (C, h, w) with 1 where the model repaints, on the latents' device."""
    height, width = latents.shape[-2:]
    small = mask.convert("RGB").resize((width, height))
    array = np.around(np.moveaxis(np.asarray(small, dtype=np.float32), 2, 0) / 255)[0]
    tiled = np.tile(array[None], (latents.shape[1], 1, 1))
    return torch.asarray(tiled).to(latents)


def inpaint_blend(init_latent: torch.Tensor, mask: Image.Image) -> InpaintBlend:
    """The blend A1111's CFG wrapper and sampler end apply: ``x * nmask + init_latent * mask``."""
    repaint = latent_mask(mask, init_latent)
    return InpaintBlend(init_latent=init_latent, mask=1.0 - repaint, nmask=repaint)


def inpainting_conditioning(
    vae: torch.nn.Module, pixels: torch.Tensor, mask: Image.Image | None, latent_shape: torch.Size, seeds: Sequence[int]
) -> torch.Tensor:
    """A1111's ``inpainting_image_conditioning`` for 9-channel models: (B, 1 + C, h, w).

    ``pixels`` (B, 3, H, W) in [-1, 1]; no mask means the whole image is repainted (txt2img and plain img2img on an
    inpainting model)."""
    if mask is None:
        repaint = torch.ones(1, 1, *pixels.shape[-2:])
    else:
        repaint = torch.round(torch.from_numpy(np.asarray(mask.convert("L"), dtype=np.float32) / 255.0)[None, None])
    masked = pixels * (1.0 - repaint)
    latents = torch.cat([encode_sample(vae, masked[index : index + 1], seed) for index, seed in enumerate(seeds)])
    small = torch.nn.functional.interpolate(repaint, size=latent_shape[-2:]).to(latents)
    return torch.cat([small.expand(latents.shape[0], -1, -1, -1), latents], dim=1)

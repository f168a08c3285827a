"""Cheap live previews: latents to RGB with a fixed linear map (A1111's "Approx cheap")."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

# Linear latent->RGB factors for the SD 1.x/2.x VAE latent space, as used by A1111's "Approx cheap" preview.
SD_LATENT_RGB_FACTORS = (
    (0.298, 0.207, 0.208),
    (0.187, 0.286, 0.173),
    (-0.158, 0.189, 0.264),
    (-0.184, -0.271, -0.473),
)
# The same for the SDXL latent space.
SDXL_LATENT_RGB_FACTORS = (
    (0.3920, 0.4054, 0.4549),
    (-0.2634, -0.0196, 0.0653),
    (0.0568, 0.1687, -0.0755),
    (-0.3112, -0.2359, -0.2076),
)


def latents_to_preview(latents: torch.Tensor, xl: bool = False) -> Image.Image:
    """First latent of a batch as a small RGB image (one pixel per latent cell)."""
    factors = torch.tensor(SDXL_LATENT_RGB_FACTORS if xl else SD_LATENT_RGB_FACTORS, dtype=torch.float32)
    sample = latents[0].detach().to("cpu", torch.float32)
    if sample.shape[0] != factors.shape[0]:
        sample = sample[: factors.shape[0]]
    rgb = torch.einsum("chw,cr->hwr", sample, factors)
    array = ((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    return Image.fromarray(np.ascontiguousarray(array), mode="RGB")

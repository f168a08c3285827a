"""Live preview methods, as A1111's ``show_progress_type``: Approx cheap, Approx NN, TAESD and Full.

Approx NN reads A1111's small latent-to-RGB convolution net (``models/VAE-approx/model.pt``, SDXL:
``vaeapprox-sdxl.pt``; a state dict loaded with ``weights_only``); the network below is written for that file
layout. TAESD is diffusers' AutoencoderTiny with madebyollin's weights in ``models/VAE-approx/taesd`` (SDXL:
``taesdxl``), downloaded from the Hugging Face Hub on first use where a network exists. A method whose weights are
missing falls back to Approx cheap with one log line saying why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderTiny
from PIL import Image

from modules.backends.preview import latents_to_preview
from modules.models.vae_codec import decode_latents

logger = logging.getLogger(__name__)

TAESD_REPOSITORIES = {False: "madebyollin/taesd", True: "madebyollin/taesdxl"}
TAESD_FOLDERS = {False: "taesd", True: "taesdxl"}
APPROX_NN_FILES = {False: "model.pt", True: "vaeapprox-sdxl.pt"}


class PreviewMethod(StrEnum):
    FULL = "Full"
    APPROX_NN = "Approx NN"
    APPROX_CHEAP = "Approx cheap"
    TAESD = "TAESD"


class ApproxDecoder(torch.nn.Module):
    """The layout of A1111's VAE-approx files: latents upsampled 2x, padded by 11, then eight unpadded
    convolutions (kernels 7, 5, 3 ...) each followed by leaky ReLU(0.1); the output is RGB in about [-1, 1]."""

    CHANNELS = (8, 16, 32, 64, 32, 16, 8, 3)
    KERNELS = (7, 5, 3, 3, 3, 3, 3, 3)

    def __init__(self, latent_channels: int = 4) -> None:
        super().__init__()
        inputs = (latent_channels, *self.CHANNELS[:-1])
        for index, (source, target, kernel) in enumerate(zip(inputs, self.CHANNELS, self.KERNELS, strict=True), 1):
            self.add_module(f"conv{index}", torch.nn.Conv2d(source, target, kernel))

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        hidden = torch.nn.functional.interpolate(latents, (latents.shape[2] * 2, latents.shape[3] * 2))
        hidden = torch.nn.functional.pad(hidden, (11, 11, 11, 11))
        for index in range(1, len(self.CHANNELS) + 1):
            hidden = torch.nn.functional.leaky_relu(getattr(self, f"conv{index}")(hidden), 0.1)
        return hidden


@dataclass
class PreviewModels:
    """The preview decoders of one loaded model (kept in its attachments, freed with it)."""

    approx_dir: Path
    download: bool = True
    _taesd: dict[bool, AutoencoderTiny | None] = field(default_factory=dict)
    _approx: dict[bool, ApproxDecoder | None] = field(default_factory=dict)

    def taesd(self, xl: bool) -> AutoencoderTiny | None:
        if xl not in self._taesd:
            self._taesd[xl] = self._load_taesd(xl)
        return self._taesd[xl]

    def approx_nn(self, xl: bool) -> ApproxDecoder | None:
        if xl not in self._approx:
            self._approx[xl] = self._load_approx(xl)
        return self._approx[xl]

    def _load_taesd(self, xl: bool) -> AutoencoderTiny | None:
        folder = self.approx_dir / TAESD_FOLDERS[xl]
        if not (folder / "config.json").is_file() and self.download:
            download_taesd(folder, TAESD_REPOSITORIES[xl])
        if not (folder / "config.json").is_file():
            logger.warning("TAESD weights missing folder=%s; live previews use Approx cheap", folder)
            return None
        return AutoencoderTiny.from_pretrained(folder, local_files_only=True).eval()

    def _load_approx(self, xl: bool) -> ApproxDecoder | None:
        path = self.approx_dir / APPROX_NN_FILES[xl]
        if not path.is_file():
            logger.warning("Approx NN weights missing path=%s; live previews use Approx cheap", path)
            return None
        decoder = ApproxDecoder()
        decoder.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return decoder.eval()


def download_taesd(folder: Path, repository: str) -> None:
    """Fetch TAESD's config and weights (about 10 MB) with huggingface_hub's progress bars; offline, say so."""
    from huggingface_hub import snapshot_download

    logger.info("downloading TAESD repo=%s folder=%s", repository, folder)
    try:
        snapshot_download(
            repository, local_dir=folder, allow_patterns=["config.json", "diffusion_pytorch_model.safetensors"]
        )
    except Exception as error:  # any network or hub failure: previews fall back, generation goes on
        logger.warning("TAESD download failed repo=%s error=%s; put the files into %s", repository, error, folder)


def render_preview(
    method: str, latents: torch.Tensor, xl: bool, pipeline: Any = None, models: PreviewModels | None = None
) -> Image.Image:
    """The preview of the first latent of a batch with ``method`` (Approx cheap when its weights are missing)."""
    first = latents[:1].detach()
    with torch.inference_mode():
        if method == PreviewMethod.FULL and pipeline is not None:
            # through vae_codec: a float16 SDXL VAE is upcast (force_upcast) and a NaN decode is retried in float32
            decoded = decode_latents(pipeline.vae, first)
            return pipeline.image_processor.postprocess(decoded, output_type="pil")[0]
        if method == PreviewMethod.TAESD and models is not None and (taesd := models.taesd(xl)) is not None:
            taesd.to(first.device)
            return to_image(taesd.decode(first.to(taesd.dtype)).sample)
        if method == PreviewMethod.APPROX_NN and models is not None and (approx := models.approx_nn(xl)) is not None:
            approx.to(first.device)
            return to_image(approx(first.to(torch.float32)))
    return latents_to_preview(latents, xl=xl)


def to_image(pixels: torch.Tensor) -> Image.Image:
    """A [-1, 1] RGB batch's first image."""
    array = ((pixels[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(array), mode="RGB")

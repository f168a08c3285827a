"""IP-Adapter units: the adapter file (``models/ControlNet``, the extension's place), the CLIP vision encoder
(``models/clip_vision``) and the scope that gives the loaded UNet the adapter's attention layers for one pass.

diffusers' ``load_ip_adapter`` replaces the UNet's attention processors and sets its image projection; the UNet is
the loaded model's, shared by every request, so ``ip_adapters_applied`` is a context manager that puts back the
processors, the projection and the pipeline's feature extractor afterwards (the one place that changes the shared
UNet, as ARCHITECTURE.md allows for an unavoidable patch). The image embeddings are computed once per job by the
ControlNet script and reach the UNet through ``added_cond_kwargs["image_embeds"]`` (the wrapper in residuals.py).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

from modules.models.safe_load import is_safetensors, load_safetensors, read_safetensors_shapes

logger = logging.getLogger(__name__)

IMAGE_PROJ = "image_proj"
IP_LAYERS = "ip_adapter"


class IPAdapterError(ValueError):
    """An IP-Adapter or CLIP vision model that cannot be found or read; the message is for the user."""


class IPAdapterWeights(torch.nn.Module):
    """An IP-Adapter file's two state dicts (image projection, attention layers), kept as they are for diffusers'
    ``load_ip_adapter``; ``image_dim`` is the CLIP image embedding width it reads, ``cross_attention_dim`` the
    UNet context width it was trained for."""

    def __init__(self, image_proj: dict[str, torch.Tensor], ip_layers: dict[str, torch.Tensor]) -> None:
        super().__init__()
        if "proj.weight" not in image_proj:
            raise IPAdapterError("only the plain IP-Adapter (image_proj.proj) is supported, not Plus / FaceID")
        self.image_proj = image_proj
        self.ip_layers = ip_layers
        self.image_dim = int(image_proj["proj.weight"].shape[-1])
        first_key = next(key for key in ip_layers if key.endswith("to_k_ip.weight"))
        self.cross_attention_dim = int(ip_layers[first_key].shape[-1])

    def state(self) -> dict[str, dict[str, torch.Tensor]]:
        return {IMAGE_PROJ: self.image_proj, IP_LAYERS: self.ip_layers}


def is_ip_adapter_keys(keys: Sequence[str]) -> bool:
    return any(key.startswith(f"{IMAGE_PROJ}.") for key in keys) or IMAGE_PROJ in keys


def is_ip_adapter_file(path: Path) -> bool:
    """An IP-Adapter file (by its keys; a pickle is read weights-only)."""
    if is_safetensors(path):
        return is_ip_adapter_keys(list(read_safetensors_shapes(path)))
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception:  # not a weights-only pickle: not an IP-Adapter (the ControlNet loader says why)
        return False
    return isinstance(loaded, dict) and IMAGE_PROJ in loaded and IP_LAYERS in loaded


def load_ip_adapter(path: Path) -> IPAdapterWeights:
    """``.safetensors`` (flat ``image_proj.*`` / ``ip_adapter.*`` keys) or ``.bin`` / ``.pth`` (two nested dicts,
    read with weights-only torch.load)."""
    if is_safetensors(path):
        flat = load_safetensors(path)
        parts: dict[str, dict[str, torch.Tensor]] = {IMAGE_PROJ: {}, IP_LAYERS: {}}
        for key, value in flat.items():
            prefix, _, rest = key.partition(".")
            if prefix in parts:
                parts[prefix][rest] = value
    else:
        parts = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(parts, dict) or not parts.get(IMAGE_PROJ) or not parts.get(IP_LAYERS):
        raise IPAdapterError(f"{path.name} is not an IP-Adapter (no image_proj / ip_adapter weights)")
    return IPAdapterWeights(dict(parts[IMAGE_PROJ]), dict(parts[IP_LAYERS]))


@dataclass
class ClipVisionEncoder:
    model: CLIPVisionModelWithProjection
    processor: CLIPImageProcessor

    def embed(self, image: Image.Image) -> torch.Tensor:
        """(1, D) image embeddings, as diffusers' ``encode_image`` makes them for the plain IP-Adapter."""
        pixels = self.processor(images=image.convert("RGB"), return_tensors="pt").pixel_values
        with torch.inference_mode():
            return self.model(pixels.to(self.model.device, self.model.dtype)).image_embeds.float().cpu()


class ClipVisionLibrary:
    """CLIP vision encoders in ``models/clip_vision`` (transformers folders); the one whose projection width is the
    adapter's image width is used; the last one used stays loaded."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._loaded: tuple[Path, ClipVisionEncoder] | None = None
        self._lock = threading.Lock()

    def folders(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(path for path in self.folder.iterdir() if (path / "config.json").is_file())

    def encoder_for(self, image_dim: int) -> ClipVisionEncoder:
        with self._lock:
            for path in self.folders():
                if projection_dim(path) != image_dim:
                    continue
                if self._loaded is None or self._loaded[0] != path:
                    logger.info("loading clip vision path=%s", path)
                    model = CLIPVisionModelWithProjection.from_pretrained(path, local_files_only=True).eval()
                    self._loaded = (path, ClipVisionEncoder(model, CLIPImageProcessor.from_pretrained(path)))
                return self._loaded[1]
        raise IPAdapterError(
            f"no CLIP vision encoder with image embeddings of width {image_dim} in {self.folder} (put the "
            "transformers folder of the adapter's image encoder there, e.g. the ViT-H one for ip-adapter_sd15)"
        )


def projection_dim(path: Path) -> int | None:
    import json

    try:
        config: dict[str, Any] = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config.get("projection_dim") or config.get("vision_config", {}).get("projection_dim")


@contextlib.contextmanager
def ip_adapters_applied(pipeline: Any, adapters: Sequence[IPAdapterWeights]) -> Iterator[list[Any]]:
    """The pipeline's UNet with the adapters' attention layers (diffusers' ``load_ip_adapter``) for the block;
    yields the IP attention processors (their ``scale`` per adapter); everything is put back afterwards."""
    if not adapters:
        yield []
        return
    unet = pipeline.unet
    processors = dict(unet.attn_processors)
    projection, hid_type = unet.encoder_hid_proj, unet.config.encoder_hid_dim_type
    feature_extractor = getattr(pipeline, "feature_extractor", None)
    count = len(adapters)
    try:
        pipeline.load_ip_adapter(
            [adapter.state() for adapter in adapters],
            subfolder=[""] * count,
            weight_name=[""] * count,
            image_encoder_folder=None,
        )
        yield [processor for processor in unet.attn_processors.values() if hasattr(processor, "scale")]
    finally:
        pipeline.unload_ip_adapter()
        unet.set_attn_processor(processors)
        unet.encoder_hid_proj = projection
        unet.config.encoder_hid_dim_type = hid_type  # as diffusers' own unload does
        if hasattr(pipeline, "feature_extractor"):
            pipeline.register_modules(feature_extractor=feature_extractor)

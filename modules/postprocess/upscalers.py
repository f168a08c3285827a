"""Image upscalers: built-in resamplers and model upscalers (any file spandrel recognises) found in folders."""

from __future__ import annotations

import logging
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch
from PIL import Image
from spandrel import ModelDescriptor

from modules.postprocess.downloads import KNOWN_UPSCALERS, KnownModel, ensure_model_file
from modules.postprocess.model_files import (
    WEIGHT_SUFFIXES,
    ArchitectureMatch,
    build_arch_registry,
    detect_architecture,
    load_descriptor,
)
from modules.postprocess.tiling import DEFAULT_TILE_OVERLAP, DEFAULT_TILE_SIZE, run_tiled

logger = logging.getLogger(__name__)

BUILTIN_RESAMPLERS: MappingProxyType[str, Image.Resampling | None] = MappingProxyType(
    {"None": None, "Lanczos": Image.Resampling.LANCZOS, "Nearest": Image.Resampling.NEAREST}
)
MAX_MODEL_PASSES = 3  # as A1111: at most three runs of the model for one "upscale by"
LOADED_MODELS_KEPT = 2
_SCALE_IN_NAME = re.compile(r"(?<![a-z0-9])(?:x(\d{1,2})|(\d{1,2})x)")


class UpscalerNotFoundError(KeyError):
    """No upscaler of that name is listed."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


class UpscalerUnsupportedError(ValueError):
    """The chosen upscaler file is listed but cannot be used."""


@dataclass
class UpscalerInfo:
    """One entry of the upscaler list. ``kind``: "builtin", "model" (a file on disk) or "download" (known, absent)."""

    name: str
    path: Path | None
    kind: str
    scale: int | None
    supported: bool
    reason: str
    architecture: str = ""


def scale_from_file_name(path: Path) -> int | None:
    """A scale hint such as x4 / 4x in a file name (the exact scale is known once the model is loaded)."""
    match = _SCALE_IN_NAME.search(path.stem.lower())
    return int(match.group(1) or match.group(2)) if match else None


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def tensor_to_pil(tensor: torch.Tensor, in_place: bool = False) -> Image.Image:
    """A (1, 3, H, W) tensor in [0, 1] as an RGB image; ``in_place`` reuses a float32 CPU tensor (saves a copy)."""
    values = tensor.squeeze(0).to("cpu", torch.float32, copy=not in_place).clamp_(0, 1).mul_(255).round_()
    array = values.to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array, mode="RGB")


def resize_image(image: Image.Image, size: tuple[int, int], resample: Image.Resampling) -> Image.Image:
    return image if image.size == size else image.resize(size, resample=resample)


def target_size_for(image: Image.Image, scale: float | None, target_size: tuple[int, int] | None) -> tuple[int, int]:
    """The output size for "upscale by" ``scale`` or "upscale to" ``target_size`` (width, height)."""
    if target_size is not None:
        width, height = target_size
    else:
        factor = 1.0 if scale is None else scale
        width, height = round(image.width * factor), round(image.height * factor)
    if width < 1 or height < 1:
        raise ValueError(f"upscale target {width}x{height} is empty")
    return int(width), int(height)


class UpscalerRegistry:
    """The upscalers of the given folders (models/ESRGAN, models/RealESRGAN, ...), built-ins first.

    Listing reads only file names and key/shape headers (cached by size and mtime); weights are read when an
    upscaler is used, and the last few loaded models are kept.
    """

    def __init__(self, folders: Sequence[Path]) -> None:
        self.folders = tuple(Path(folder) for folder in folders)
        self._entries: dict[str, UpscalerInfo] = {}
        self._detections: dict[tuple[Path, int, int], ArchitectureMatch] = {}
        self._loaded: OrderedDict[tuple[Path, str], ModelDescriptor] = OrderedDict()
        self._lock = threading.RLock()
        self._arch_registry = build_arch_registry()
        self._scanned = False

    def refresh(self) -> None:
        """Rescan the folders (files added or removed since the last scan)."""
        with self._lock:
            entries = {name: UpscalerInfo(name, None, "builtin", None, True, "") for name in BUILTIN_RESAMPLERS}
            for path in self._weight_files():
                info = self._describe_file(path)
                if info.name in entries:
                    logger.warning("upscaler=%r file=%s skipped=duplicate-name", info.name, path)
                    continue
                entries[info.name] = info
            for known in KNOWN_UPSCALERS:
                folder = self._folder_named(known.folder)
                if known.name not in entries and folder is not None:
                    reason = f"not downloaded yet: {known.url} -> {folder / known.file_name}"
                    entries[known.name] = UpscalerInfo(known.name, None, "download", known.scale, True, reason)
            self._entries = entries
            self._scanned = True
            logger.info("upscalers=%d folders=%s", len(entries), [str(folder) for folder in self.folders])

    def upscalers(self) -> list[UpscalerInfo]:
        """Every upscaler, built-ins first, then files (supported or not, with the reason), then known downloads."""
        with self._lock:
            if not self._scanned:
                self.refresh()
            return [replace(info) for info in self._entries.values()]

    def find(self, name: str) -> UpscalerInfo:
        """The upscaler called ``name`` (also accepts a file name or stem); raises UpscalerNotFoundError."""
        entries = {info.name: info for info in self.upscalers()}
        if name in entries:
            return entries[name]
        for info in entries.values():
            if info.path is not None and name in {info.path.name, info.path.stem}:
                return info
        raise UpscalerNotFoundError(f"no upscaler named {name!r}; available: {', '.join(entries)}")

    def upscale(
        self,
        image: Image.Image,
        name: str,
        scale: float | None = None,
        target_size: tuple[int, int] | None = None,
        tile_size: int = DEFAULT_TILE_SIZE,
        tile_overlap: int = DEFAULT_TILE_OVERLAP,
        device: torch.device | str | None = None,
    ) -> Image.Image:
        """Upscale "by" ``scale`` or "to" ``target_size`` (width, height); neither means one model pass.

        A model runs again while the image is smaller than the target (at most three passes), then the result
        is resized to the exact size with Lanczos. "None" only resizes when a size change is asked (as A1111).
        """
        info = self.find(name)
        if info.kind == "builtin":
            resample = BUILTIN_RESAMPLERS[info.name]
            resample = Image.Resampling.LANCZOS if resample is None else resample  # NEAREST is 0: no "or"
            return resize_image(image, target_size_for(image, scale, target_size), resample)
        descriptor = self.load_model(info, device)
        if scale is None and target_size is None:
            scale = descriptor.scale
        size = target_size_for(image, scale, target_size)
        upscaled = self._run_model_passes(image.convert("RGB"), descriptor, size, tile_size, tile_overlap)
        result = resize_image(upscaled, size, Image.Resampling.LANCZOS)
        if image.mode in {"RGBA", "LA"}:
            result.putalpha(image.getchannel("A").resize(size, resample=Image.Resampling.LANCZOS))
        return result

    def load_model(self, info: UpscalerInfo, device: torch.device | str | None = None) -> ModelDescriptor:
        """The loaded model of an upscaler entry (downloaded first if it is a known, absent file)."""
        if not info.supported:
            raise UpscalerUnsupportedError(f"upscaler {info.name!r} ({info.path}) cannot be used: {info.reason}")
        path = info.path if info.path is not None else self._download(info.name)
        target_device = torch.device(device) if device is not None else torch.device("cpu")
        key = (path, str(target_device))
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            descriptor = load_descriptor(path, target_device, self._arch_registry)
            self._loaded[key] = descriptor
            while len(self._loaded) > LOADED_MODELS_KEPT:
                evicted, _ = self._loaded.popitem(last=False)
                logger.info("upscaler_unloaded=%s device=%s", evicted[0].name, evicted[1])
            if info.name in self._entries:
                self._entries[info.name].scale = descriptor.scale
            return descriptor

    def _run_model_passes(
        self,
        image: Image.Image,
        descriptor: ModelDescriptor,
        size: tuple[int, int],
        tile_size: int,
        tile_overlap: int,
    ) -> Image.Image:
        factor = max(size[0] / image.width, size[1] / image.height)
        passes = 1 if descriptor.scale <= 1 else max(1, math.ceil(math.log(factor) / math.log(descriptor.scale) - 1e-9))
        passes = min(passes, MAX_MODEL_PASSES)
        tensor = pil_to_tensor(image)
        with torch.inference_mode():
            for index in range(passes):
                tensor = tensor.to(descriptor.device, descriptor.dtype)
                tensor = run_tiled(tensor, descriptor, tile_size, tile_overlap).clamp_(0, 1)
                logger.debug("pass=%d/%d size=%dx%d", index + 1, passes, tensor.shape[-1], tensor.shape[-2])
            return tensor_to_pil(tensor, in_place=True)  # the output is the largest tensor of an upscale

    def _weight_files(self) -> list[Path]:
        files: list[Path] = []
        for folder in self.folders:
            if folder.is_dir():
                files.extend(
                    sorted(
                        path for path in folder.iterdir() if path.is_file() and path.suffix.lower() in WEIGHT_SUFFIXES
                    )
                )
        return files

    def _describe_file(self, path: Path) -> UpscalerInfo:
        stat = path.stat()
        key = (path, stat.st_size, stat.st_mtime_ns)
        if key not in self._detections:
            self._detections[key] = detect_architecture(path, self._arch_registry)
        match = self._detections[key]
        known = _known_by_file_name(path.name)
        name = known.name if known else path.stem
        scale = known.scale if known else scale_from_file_name(path)
        return UpscalerInfo(name, path, "model", scale, match.supported, match.reason, match.architecture)

    def _folder_named(self, folder_name: str) -> Path | None:
        return next((folder for folder in self.folders if folder.name == folder_name), None)

    def _download(self, name: str) -> Path:
        known = next(model for model in KNOWN_UPSCALERS if model.name == name)
        folder = self._folder_named(known.folder)
        assert folder is not None, "a known model is listed only when its folder is given"
        path = ensure_model_file(known, folder.parent)
        self.refresh()
        return path


def _known_by_file_name(file_name: str) -> KnownModel | None:
    return next((model for model in KNOWN_UPSCALERS if model.file_name == file_name), None)

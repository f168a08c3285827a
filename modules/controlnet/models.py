"""ControlNet model files: ``models/ControlNet`` (and ``--controlnet-dir``), listed as "name [hash]" like the
extension does, loaded offline and kept in a small LRU cache.

Two layouts load: diffusers folders (``config.json`` + weights) and single files in lllyasviel's original
layout (``control_model.*`` keys, ``.safetensors``, or ``.pth`` read with weights-only ``torch.load``). A single
file takes its config from a sidecar folder ``<name>.config/config.json`` when there is one, else from the
bundled checkpoint configs (``configs/sd15``, ``configs/sd2``, ``configs/sdxl``) chosen by the file's
cross-attention width; diffusers' ``convert_controlnet_checkpoint`` renames the keys.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import ControlNetModel, T2IAdapter
from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

from modules.controlnet.annotators import AnnotatorRunner
from modules.controlnet.ip_adapter import ClipVisionLibrary, IPAdapterError, is_ip_adapter_file, load_ip_adapter
from modules.hub.client import HubClient
from modules.models.errors import ModelError
from modules.models.hashing import HashCache
from modules.models.safe_load import CHECKPOINT_SUFFIXES, load_state_dict, read_shapes

logger = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".config"
MODEL_SUFFIXES = frozenset({".safetensors", ".pth", ".pt", ".ckpt", ".bin"}) & CHECKPOINT_SUFFIXES
ANNOTATORS_FOLDER = "annotators"
LDM_PREFIX = "control_model."
# Cross-attention width -> the family it belongs to, and the bundled config folder a single file borrows.
FAMILIES = {768: ("SD 1.x", "sd15"), 1024: ("SD 2.x", "sd2"), 2048: ("SDXL", "sdxl")}
# ControlNetModel.from_unet's selection of a UNet's config, for single files without a config of their own.
UNET_FIELDS = (
    "in_channels",
    "flip_sin_to_cos",
    "freq_shift",
    "down_block_types",
    "only_cross_attention",
    "block_out_channels",
    "layers_per_block",
    "downsample_padding",
    "mid_block_scale_factor",
    "act_fn",
    "norm_num_groups",
    "norm_eps",
    "cross_attention_dim",
    "transformer_layers_per_block",
    "encoder_hid_dim",
    "encoder_hid_dim_type",
    "attention_head_dim",
    "num_attention_heads",
    "use_linear_projection",
    "class_embed_type",
    "addition_embed_type",
    "addition_time_embed_dim",
    "num_class_embeds",
    "upcast_attention",
    "resnet_time_scale_shift",
    "projection_class_embeddings_input_dim",
)


class ControlNetError(ModelError):
    """A ControlNet model that cannot be found, read or used; the message is for the user."""


def family_name(cross_attention_dim: int) -> str:
    """ "SD 1.x", "SD 2.x", "SDXL", or the width itself for other (test) sizes."""
    known = FAMILIES.get(int(cross_attention_dim))
    return known[0] if known else f"context width {cross_attention_dim}"


@dataclass(frozen=True)
class ControlNetInfo:
    """One model file or folder; ``name`` is its path relative to the folder, without extension."""

    path: Path
    name: str
    sha256: str | None = None

    @property
    def short_hash(self) -> str | None:
        """The extension shows the first 8 hex digits of the sha256."""
        return self.sha256[:8] if self.sha256 else None

    @property
    def title(self) -> str:
        return f"{self.name} [{self.short_hash}]" if self.sha256 else self.name


DIFFUSERS_CLASSES = {"ControlNetModel": ControlNetModel, "T2IAdapter": T2IAdapter}


def is_diffusers_controlnet(path: Path) -> bool:
    """A diffusers folder of a ControlNet or a T2I-Adapter."""
    config = path / "config.json"
    return path.is_dir() and config.is_file() and read_json(config).get("_class_name") in DIFFUSERS_CLASSES


def scan(root: Path) -> Iterator[ControlNetInfo]:
    """Model files and diffusers folders under ``root`` (the annotators folder and sidecar configs skipped)."""
    if not root.is_dir():
        return
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if relative.parts[0] == ANNOTATORS_FOLDER or any(part.endswith(SIDECAR_SUFFIX) for part in relative.parts):
            continue
        if path.is_file() and path.suffix.lower() in MODEL_SUFFIXES and path.parent == root / relative.parent:
            if not any(parent_is_model(root, parent) for parent in relative.parents):
                yield ControlNetInfo(path, relative.with_suffix("").as_posix())
        elif is_diffusers_controlnet(path):
            yield ControlNetInfo(path, relative.as_posix())


def parent_is_model(root: Path, relative: Path) -> bool:
    return str(relative) != "." and is_diffusers_controlnet(root / relative)


def weights_path(info: ControlNetInfo) -> Path:
    """The file whose sha256 names the model (a folder's weights file)."""
    if info.path.is_file():
        return info.path
    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
        if (info.path / name).is_file():
            return info.path / name
    raise ControlNetError(f"ControlNet folder {info.path} holds no weights file")


class ControlNetLibrary:
    """The ControlNet folders' models and an LRU cache of loaded ones (``cache_size`` models kept)."""

    def __init__(
        self,
        folders: Iterable[Path],
        hashes: HashCache,
        configs_dir: Path,
        cache_size: int = 2,
        clip_vision_dir: Path | None = None,
    ) -> None:
        self.folders = tuple(Path(folder) for folder in folders)
        self.hashes = hashes
        self.configs_dir = Path(configs_dir)
        self.cache_size = max(1, cache_size)
        self._models: list[ControlNetInfo] = []
        self._loaded: OrderedDict[Path, torch.nn.Module] = OrderedDict()
        self._lock = threading.Lock()
        self.annotators = AnnotatorRunner(self.annotators_dir, HubClient())  # model-based preprocessors' weights
        # IP-Adapters' image encoders (models/clip_vision beside models/ControlNet unless given)
        self.clip_vision = ClipVisionLibrary(clip_vision_dir or self.folders[0].parent / "clip_vision")

    @property
    def annotators_dir(self) -> Path:
        return self.folders[0] / ANNOTATORS_FOLDER

    def refresh(self) -> list[ControlNetInfo]:
        found = [info for folder in self.folders for info in scan(folder)]
        self._models = [
            ControlNetInfo(info.path, info.name, self.hashes.sha256(weights_path(info), "controlnet")) for info in found
        ]
        logger.info("controlnet models found count=%d", len(self._models))
        return list(self._models)

    def models(self) -> list[ControlNetInfo]:
        return list(self._models)

    def titles(self) -> list[str]:
        return [info.title for info in self._models]

    def find(self, wanted: str) -> ControlNetInfo:
        """By title ("name [hash]"), name, or a name with a stale hash (the extension's rule)."""
        wanted = wanted.strip()
        name = wanted.rsplit(" [", 1)[0] if wanted.endswith("]") else wanted
        for info in self._models:
            if wanted in (info.title, info.name) or name == info.name:
                return info
        for info in self._models:
            if info.path.name == name or info.path.stem == name:
                return info
        raise ControlNetError(f"ControlNet model not found: {wanted!r} (looked in {', '.join(map(str, self.folders))})")

    def load(self, wanted: str) -> tuple[ControlNetInfo, torch.nn.Module]:
        """The model, from the cache or read from disk (the least recently used one leaves the cache)."""
        info = self.find(wanted)
        with self._lock:
            model = self._loaded.pop(info.path, None)
            if model is None:
                logger.info("loading controlnet name=%s path=%s", info.name, info.path)
                model = load_controlnet(info.path, self.configs_dir)
            self._loaded[info.path] = model
            while len(self._loaded) > self.cache_size:
                evicted, _ = self._loaded.popitem(last=False)
                logger.info("controlnet unloaded path=%s", evicted)
        return info, model

    def loaded_paths(self) -> list[Path]:
        return list(self._loaded)


def load_controlnet(path: Path, configs_dir: Path) -> torch.nn.Module:
    """A ControlNetModel (or a T2I-Adapter from a diffusers folder) in float32 on the CPU, offline."""
    try:
        if path.is_file() and is_ip_adapter_file(path):
            return load_ip_adapter(path).eval()
        if path.is_dir():
            model_class = DIFFUSERS_CLASSES[read_json(path / "config.json").get("_class_name", "ControlNetModel")]
            model = model_class.from_pretrained(path, local_files_only=True)
        else:
            model = load_single_file(path, configs_dir)
    except ControlNetError:
        raise
    except IPAdapterError as error:
        raise ControlNetError(f"cannot load {path.name}: {error}") from error
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        raise ControlNetError(f"cannot load ControlNet {path.name}: {error}") from error
    return model.eval().requires_grad_(False)


def load_single_file(path: Path, configs_dir: Path) -> ControlNetModel:
    state_dict = load_state_dict(path)
    config = single_file_config(path, state_dict, configs_dir)
    converted = convert_controlnet_checkpoint(state_dict, config)
    missing = [key for key, value in converted.items() if value is None]
    if missing:
        raise ControlNetError(f"{path.name} is not a ControlNet in the original layout (no {missing[0]})")
    model = ControlNetModel.from_config(config)
    model.load_state_dict(converted, strict=True)
    return model


def single_file_config(path: Path, state_dict: Mapping[str, torch.Tensor], configs_dir: Path) -> dict[str, Any]:
    """The sidecar ``<name>.config/config.json``, else the bundled family config picked by the context width."""
    sidecar = path.with_name(path.stem + SIDECAR_SUFFIX) / "config.json"
    if sidecar.is_file():
        return read_json(sidecar)
    width = context_width({key: tuple(value.shape) for key, value in state_dict.items()})
    if width not in FAMILIES:
        raise ControlNetError(
            f"{path.name}: unknown ControlNet family (cross-attention width {width}); put its diffusers config in "
            f"{sidecar}"
        )
    unet_config = read_json(configs_dir / FAMILIES[width][1] / "unet" / "config.json")
    return controlnet_config_from_unet(unet_config)


def controlnet_config_from_unet(unet_config: Mapping[str, Any]) -> dict[str, Any]:
    config = {key: unet_config[key] for key in UNET_FIELDS if key in unet_config}
    config["in_channels"] = 4  # an inpainting UNet's 9 channels are not the ControlNet's
    return config


def context_width(shapes: Mapping[str, tuple[int, ...]]) -> int | None:
    """The cross-attention width: the second dimension of any attn2.to_k weight (either layout)."""
    for key, shape in shapes.items():
        if key.endswith("attn2.to_k.weight") and len(shape) == 2:
            return int(shape[1])
    return None


def file_context_width(path: Path) -> int | None:
    return context_width(read_shapes(path))


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ControlNetError(f"cannot read {path}: {error}") from error

"""What the Models tab lists about each checkpoint: name, kind, size, hash (when known), architecture."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from modules.models.detection import ModelArchitecture, detect_architecture, detect_layout, read_key_shapes
from modules.models.errors import ModelError
from modules.models.families import ModelFamily
from modules.models.flux_single_file import describe_flux_file
from modules.models.loader import architecture_from_unet_config, folder_family, read_json
from modules.models.prediction import CACHE_SECTION
from modules.models.registry import CheckpointInfo, CheckpointRegistry, sidecar_config_dir

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckpointRow:
    name: str
    kind: str
    size_bytes: int
    short_hash: str
    architecture: str


def describe_architecture(info: CheckpointInfo, prediction: str | None = None) -> str:
    """Read from the safetensors header or the UNet config only; nothing is loaded. An SD 2.x file says epsilon
    or v once its probe answer (``prediction``, from cache.json) is known."""
    try:
        if info.kind == "diffusers":
            folder = folder_family(info.path)
            if not folder.uses_a1111_prompts:
                return folder.display_name
            architecture = architecture_from_unet_config(read_json(info.path / "unet" / "config.json"))
            return architecture.display_name if architecture else "custom size (diffusers config)"
        if sidecar_config_dir(info.path).is_dir():
            return "sidecar config"
        if info.path.suffix.lower() != ".safetensors":
            return "known once loaded (pickle file)"
        shapes = read_key_shapes(info.path)
        architecture = detect_architecture(shapes)
        if architecture is ModelArchitecture.FLUX:
            return describe_flux_file(shapes)
        if architecture is ModelArchitecture.SD2_V and prediction != "v_prediction":
            return ModelArchitecture.SD2.display_name if prediction == "epsilon" else "SD 2.x (epsilon or v: on load)"
        return architecture.display_name
    except ModelError as error:
        return f"unsupported: {error}"


def checkpoint_family(info: CheckpointInfo) -> ModelFamily | None:
    """The checkpoint's family from its model_index.json / UNet config or its key layout (nothing is loaded);
    None when it cannot be told without loading (a pickle, a sidecar config of another size, an unknown file)."""
    try:
        if info.kind == "diffusers":
            folder = folder_family(info.path)
            if not folder.uses_a1111_prompts:
                return folder
            architecture = architecture_from_unet_config(read_json(info.path / "unet" / "config.json"))
            return architecture.family if architecture else folder
        if info.path.suffix.lower() != ".safetensors":
            return None
        return detect_architecture(read_key_shapes(info.path)).family
    except ModelError as error:
        logger.debug("family unknown path=%s error=%s", info.path, error)
        return None


def is_edit_model(info: CheckpointInfo) -> bool:
    """An instruct-pix2pix checkpoint (8-channel UNet), from its header or UNet config only; False when unknown."""
    try:
        if info.kind == "diffusers":
            return int(read_json(info.path / "unet" / "config.json").get("in_channels", 4)) == 8
        if info.path.suffix.lower() != ".safetensors" or sidecar_config_dir(info.path).is_dir():
            return False
        return detect_layout(read_key_shapes(info.path)) is ModelArchitecture.SD1_PIX2PIX
    except (ModelError, OSError, ValueError):
        return False


def checkpoint_rows(registry: CheckpointRegistry) -> list[CheckpointRow]:
    """One row per listed checkpoint; hashes only where already computed (they are computed on load)."""
    rows = []
    predictions = registry.hash_cache.read_section(CACHE_SECTION)
    for info in registry.checkpoints():
        sha256 = registry.hash_cache.cached_sha256(info.path)
        rows.append(
            CheckpointRow(
                name=info.name,
                kind=info.kind,
                size_bytes=info.size_bytes,
                short_hash=sha256[:10] if sha256 else "",
                architecture=describe_architecture(info, predictions.get(sha256) if sha256 else None),
            )
        )
    return rows

"""Tell a checkpoint's architecture from its key names and tensor shapes (no tensor data is read).

Supported: SD 1.x, SD 1.x inpainting (9-channel UNet), SD 2.x (loaded as 768-v: the keys do not say
whether a 2.x model predicts v or epsilon) and SDXL base. Everything else raises UnsupportedModelError;
diffusers' ``infer_diffusers_model_type`` is asked only to name what a foreign checkpoint is.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

from diffusers.loaders.single_file_utils import infer_diffusers_model_type

from modules.models.errors import UnsupportedModelError
from modules.models.safe_load import read_shapes

logger = logging.getLogger(__name__)

UNET_INPUT_KEY = "model.diffusion_model.input_blocks.0.0.weight"
SDXL_OPEN_CLIP_KEY = "conditioner.embedders.1.model.positional_embedding"
SDXL_REFINER_KEY = "conditioner.embedders.0.model.positional_embedding"
SDXL_ADM_KEY = "model.diffusion_model.label_emb.0.0.weight"
SD2_OPEN_CLIP_KEY = "cond_stage_model.model.token_embedding.weight"
SD1_CLIP_PREFIX = "cond_stage_model.transformer."
SUPPORTED_TEXT = "supported are SD 1.x, SD 1.x inpainting, SD 2.x (768-v) and SDXL base"


class ModelArchitecture(StrEnum):
    SD1 = "sd1"
    SD1_INPAINT = "sd1-inpaint"
    SD2_V = "sd2-v"
    SDXL = "sdxl"

    @property
    def config_name(self) -> str:
        """Name of the diffusers config folder under configs/."""
        return CONFIG_NAMES[self]

    @property
    def display_name(self) -> str:
        return DISPLAY_NAMES[self]


CONFIG_NAMES = MappingProxyType(
    {
        ModelArchitecture.SD1: "sd15",
        ModelArchitecture.SD1_INPAINT: "sd15-inpainting",
        ModelArchitecture.SD2_V: "sd2-v",
        ModelArchitecture.SDXL: "sdxl",
    }
)
DISPLAY_NAMES = MappingProxyType(
    {
        ModelArchitecture.SD1: "SD 1.x",
        ModelArchitecture.SD1_INPAINT: "SD 1.x inpainting",
        ModelArchitecture.SD2_V: "SD 2.x (v-prediction)",
        ModelArchitecture.SDXL: "SDXL base",
    }
)
# Cross-attention width of each family's UNet (the text encoder's hidden size).
CONTEXT_WIDTHS = MappingProxyType(
    {ModelArchitecture.SD1: 768, ModelArchitecture.SD2_V: 1024, ModelArchitecture.SDXL: 2048}
)


class ShapeOnly(NamedTuple):
    """Stands in for a tensor where diffusers' detection only looks at ``.shape``."""

    shape: tuple[int, ...]


def read_key_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a single-file checkpoint (safetensors: header only)."""
    return read_shapes(path)


def detect_architecture(shapes: Mapping[str, tuple[int, ...]]) -> ModelArchitecture:
    """The architecture of an LDM-layout checkpoint, or UnsupportedModelError saying what it is instead."""
    unet_input = shapes.get(UNET_INPUT_KEY)
    if unet_input is None:
        raise UnsupportedModelError(
            f"not a Stable Diffusion UNet checkpoint ({describe_foreign(shapes)}); {SUPPORTED_TEXT}"
        )
    family = detect_family(shapes)
    context_width = cross_attention_width(shapes)
    if context_width != CONTEXT_WIDTHS[family]:
        raise UnsupportedModelError(
            f"{family.display_name} layout with cross-attention width {context_width} "
            f"(expected {CONTEXT_WIDTHS[family]}); a model of non-standard size needs a <name>.config folder beside it"
        )
    return apply_input_channels(family, int(unet_input[1]))


def detect_family(shapes: Mapping[str, tuple[int, ...]]) -> ModelArchitecture:
    """SD 1.x, 2.x or SDXL from the text encoder layout."""
    if SDXL_OPEN_CLIP_KEY in shapes:
        if SDXL_ADM_KEY not in shapes:
            raise UnsupportedModelError(f"SDXL text encoders without SDXL's size conditioning; {SUPPORTED_TEXT}")
        return ModelArchitecture.SDXL
    if SDXL_REFINER_KEY in shapes:
        raise UnsupportedModelError(f"this is an SDXL refiner checkpoint; {SUPPORTED_TEXT}")
    if SD2_OPEN_CLIP_KEY in shapes:
        return ModelArchitecture.SD2_V
    if any(key.startswith(SD1_CLIP_PREFIX) for key in shapes):
        return ModelArchitecture.SD1
    raise UnsupportedModelError(f"the checkpoint has a UNet but no known text encoder; {SUPPORTED_TEXT}")


def cross_attention_width(shapes: Mapping[str, tuple[int, ...]]) -> int | None:
    for key, shape in shapes.items():
        if key.startswith("model.diffusion_model.") and key.endswith("attn2.to_k.weight"):
            return int(shape[-1])
    return None


def apply_input_channels(family: ModelArchitecture, channels: int) -> ModelArchitecture:
    if channels == 4:
        return family
    if channels == 9 and family is ModelArchitecture.SD1:
        return ModelArchitecture.SD1_INPAINT
    if channels == 9:
        raise UnsupportedModelError(f"{family.display_name} inpainting models are not supported; {SUPPORTED_TEXT}")
    if channels == 8:
        raise UnsupportedModelError(f"an 8-channel UNet (instruct-pix2pix) is not supported; {SUPPORTED_TEXT}")
    raise UnsupportedModelError(f"a UNet with {channels} input channels is not supported; {SUPPORTED_TEXT}")


def describe_foreign(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """diffusers' name for a checkpoint type (flux, sd3, ...); it answers "v1" when it knows none."""
    proxies = {key: ShapeOnly(tuple(shape)) for key, shape in shapes.items()}
    try:
        model_type = infer_diffusers_model_type(proxies)
    except (KeyError, ValueError, TypeError, AttributeError, IndexError, RuntimeError) as error:
        logger.debug("foreign checkpoint type unknown error=%s", error)
        return "unknown layout"
    return "unknown layout" if model_type == "v1" else f"looks like {model_type}"

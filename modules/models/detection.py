"""Tell a checkpoint's architecture from its key names and tensor shapes (no tensor data is read).

Supported: SD 1.x, SD 1.x inpainting (9-channel UNet), instruct-pix2pix (8-channel SD 1.x UNet), SD 2.x
(the keys do not say whether a 2.x model predicts v or epsilon: it is detected as 768-v here and the loader
decides with one tiny UNet forward pass, see ``prediction``), SD 2.x inpainting, SDXL base, SDXL inpainting
and the SDXL refiner (OpenCLIP-G as its only text encoder), Stable Diffusion 3.5 and FLUX.1 (BFL / ComfyUI
layouts, with or without the VAE and text encoders). Everything else raises UnsupportedModelError;
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
from modules.models.families import ModelFamily, family
from modules.models.safe_load import read_shapes

logger = logging.getLogger(__name__)

UNET_INPUT_KEY = "model.diffusion_model.input_blocks.0.0.weight"
SDXL_OPEN_CLIP_KEY = "conditioner.embedders.1.model.positional_embedding"
SDXL_REFINER_KEY = "conditioner.embedders.0.model.positional_embedding"
SDXL_ADM_KEY = "model.diffusion_model.label_emb.0.0.weight"
SD2_OPEN_CLIP_KEY = "cond_stage_model.model.token_embedding.weight"
SD1_CLIP_PREFIX = "cond_stage_model.transformer."
SD3_BLOCK_KEY = "model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight"
FLUX_BLOCK_KEYS = ("model.diffusion_model.double_blocks.0.img_attn.qkv.weight", "double_blocks.0.img_attn.qkv.weight")
SUPPORTED_TEXT = (
    "supported are SD 1.x (and its inpainting and instruct-pix2pix models), SD 2.x (and inpainting), "
    "SDXL base, SDXL inpainting, the SDXL refiner, Stable Diffusion 3.5 and FLUX.1 (dev / schnell)"
)


class ModelArchitecture(StrEnum):
    SD1 = "sd1"
    SD1_INPAINT = "sd1-inpaint"
    SD1_PIX2PIX = "sd1-pix2pix"
    SD2 = "sd2"
    SD2_V = "sd2-v"
    SD2_INPAINT = "sd2-inpaint"
    SDXL = "sdxl"
    SDXL_INPAINT = "sdxl-inpaint"
    SDXL_REFINER = "sdxl-refiner"
    SD3 = "sd3"
    FLUX = "flux"
    KANDINSKY22 = "kandinsky22"
    KANDINSKY22_INPAINT = "kandinsky22-inpaint"
    DEEPFLOYD_IF = "deepfloyd-if"
    DEEPFLOYD_IF_II = "deepfloyd-if-ii"
    DEEPFLOYD_IF_III = "deepfloyd-if-iii"

    @property
    def family(self) -> ModelFamily:
        """The family description (pipelines, encoders, latent space, guidance) the architecture belongs to."""
        return family(FAMILY_KEYS[self])

    @property
    def config_name(self) -> str:
        """Name of the diffusers config folder under configs/."""
        return CONFIG_NAMES[self]

    @property
    def display_name(self) -> str:
        return DISPLAY_NAMES[self]

    @property
    def is_sdxl(self) -> bool:
        return self in (ModelArchitecture.SDXL, ModelArchitecture.SDXL_INPAINT, ModelArchitecture.SDXL_REFINER)


CONFIG_NAMES = MappingProxyType(
    {
        ModelArchitecture.SD1: "sd15",
        ModelArchitecture.SD1_INPAINT: "sd15-inpainting",
        ModelArchitecture.SD1_PIX2PIX: "sd15-pix2pix",
        ModelArchitecture.SD2: "sd2",
        ModelArchitecture.SD2_V: "sd2-v",
        ModelArchitecture.SD2_INPAINT: "sd2-inpainting",
        ModelArchitecture.SDXL: "sdxl",
        ModelArchitecture.SDXL_INPAINT: "sdxl-inpainting",
        ModelArchitecture.SDXL_REFINER: "sdxl-refiner",
        ModelArchitecture.SD3: "sd35-medium",
        ModelArchitecture.FLUX: "flux1-dev",
        ModelArchitecture.KANDINSKY22: "kandinsky22",
        ModelArchitecture.KANDINSKY22_INPAINT: "kandinsky22-inpaint",
        ModelArchitecture.DEEPFLOYD_IF: "deepfloyd-if",
        ModelArchitecture.DEEPFLOYD_IF_II: "deepfloyd-if-ii",
        ModelArchitecture.DEEPFLOYD_IF_III: "deepfloyd-if-iii",
    }
)
FAMILY_KEYS = MappingProxyType(
    {
        ModelArchitecture.SD1: "sd1",
        ModelArchitecture.SD1_INPAINT: "sd1",
        ModelArchitecture.SD1_PIX2PIX: "sd1",
        ModelArchitecture.SD2: "sd2",
        ModelArchitecture.SD2_V: "sd2",
        ModelArchitecture.SD2_INPAINT: "sd2",
        ModelArchitecture.SDXL: "sdxl",
        ModelArchitecture.SDXL_INPAINT: "sdxl",
        ModelArchitecture.SDXL_REFINER: "sdxl-refiner",
        ModelArchitecture.SD3: "sd3",
        ModelArchitecture.FLUX: "flux",
        ModelArchitecture.KANDINSKY22: "kandinsky22",
        ModelArchitecture.KANDINSKY22_INPAINT: "kandinsky22-inpaint",
        ModelArchitecture.DEEPFLOYD_IF: "deepfloyd-if",
        ModelArchitecture.DEEPFLOYD_IF_II: "deepfloyd-if-ii",
        ModelArchitecture.DEEPFLOYD_IF_III: "deepfloyd-if-iii",
    }
)
DISPLAY_NAMES = MappingProxyType(
    {
        ModelArchitecture.SD1: "SD 1.x",
        ModelArchitecture.SD1_INPAINT: "SD 1.x inpainting",
        ModelArchitecture.SD1_PIX2PIX: "instruct-pix2pix (SD 1.x)",
        ModelArchitecture.SD2: "SD 2.x (epsilon)",
        ModelArchitecture.SD2_V: "SD 2.x (v-prediction)",
        ModelArchitecture.SD2_INPAINT: "SD 2.x inpainting",
        ModelArchitecture.SDXL: "SDXL base",
        ModelArchitecture.SDXL_INPAINT: "SDXL inpainting",
        ModelArchitecture.SDXL_REFINER: "SDXL refiner",
        ModelArchitecture.SD3: "Stable Diffusion 3.5",
        ModelArchitecture.FLUX: "FLUX.1",
        ModelArchitecture.KANDINSKY22: "Kandinsky 2.2",
        ModelArchitecture.KANDINSKY22_INPAINT: "Kandinsky 2.2 inpainting decoder",
        ModelArchitecture.DEEPFLOYD_IF: "DeepFloyd IF",
        ModelArchitecture.DEEPFLOYD_IF_II: "DeepFloyd IF stage II",
        ModelArchitecture.DEEPFLOYD_IF_III: "DeepFloyd IF stage III (SD x4 upscaler)",
    }
)
# Cross-attention width of each family's UNet (the text encoder's hidden size) at the standard sizes.
CONTEXT_WIDTHS = MappingProxyType(
    {
        ModelArchitecture.SD1: 768,
        ModelArchitecture.SD2_V: 1024,
        ModelArchitecture.SDXL: 2048,
        ModelArchitecture.SDXL_REFINER: 1280,
    }
)
# (family, UNet input channels) -> architecture; a family is what detect_family answers.
CHANNEL_VARIANTS = MappingProxyType(
    {
        (ModelArchitecture.SD1, 4): ModelArchitecture.SD1,
        (ModelArchitecture.SD1, 9): ModelArchitecture.SD1_INPAINT,
        (ModelArchitecture.SD1, 8): ModelArchitecture.SD1_PIX2PIX,
        (ModelArchitecture.SD2_V, 4): ModelArchitecture.SD2_V,
        (ModelArchitecture.SD2_V, 9): ModelArchitecture.SD2_INPAINT,
        (ModelArchitecture.SDXL, 4): ModelArchitecture.SDXL,
        (ModelArchitecture.SDXL, 9): ModelArchitecture.SDXL_INPAINT,
        (ModelArchitecture.SDXL_REFINER, 4): ModelArchitecture.SDXL_REFINER,
    }
)


class ShapeOnly(NamedTuple):
    """Stands in for a tensor where diffusers' detection only looks at ``.shape``."""

    shape: tuple[int, ...]


def read_key_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a single-file checkpoint (safetensors: header only)."""
    return read_shapes(path)


def detect_architecture(shapes: Mapping[str, tuple[int, ...]]) -> ModelArchitecture:
    """The architecture of a standard-size LDM checkpoint, or UnsupportedModelError saying what it is instead."""
    architecture = detect_layout(shapes)
    if not architecture.family.uses_a1111_prompts:
        return architecture  # SD 3.5: its config folder decides the sizes (from_single_file checks every weight)
    family = detect_family(shapes)
    check_context_width(shapes, architecture, CONTEXT_WIDTHS[family])
    return architecture


def detect_layout(shapes: Mapping[str, tuple[int, ...]]) -> ModelArchitecture:
    """The architecture from the key layout and the UNet input channels alone, whatever the model's size."""
    unet_input = shapes.get(UNET_INPUT_KEY)
    if SD3_BLOCK_KEY in shapes:
        return ModelArchitecture.SD3
    if any(key in shapes for key in FLUX_BLOCK_KEYS):
        return ModelArchitecture.FLUX  # dev or schnell: the loader picks the config folder (loader.config_name_for)
    if unet_input is None:
        raise UnsupportedModelError(
            f"not a Stable Diffusion UNet checkpoint ({describe_foreign(shapes)}); {SUPPORTED_TEXT}"
        )
    return apply_input_channels(detect_family(shapes), int(unet_input[1]))


def check_context_width(
    shapes: Mapping[str, tuple[int, ...]], architecture: ModelArchitecture, expected: int | None
) -> None:
    """A UNet whose cross-attention width differs from the config it would be loaded with cannot load."""
    context_width = cross_attention_width(shapes)
    if context_width != expected:
        raise UnsupportedModelError(
            f"{architecture.display_name} layout with cross-attention width {context_width} "
            f"(expected {expected}); a model of non-standard size needs a <name>.config folder beside it"
        )


def detect_family(shapes: Mapping[str, tuple[int, ...]]) -> ModelArchitecture:
    """SD 1.x, 2.x, SDXL or the SDXL refiner from the text encoder layout."""
    if SDXL_OPEN_CLIP_KEY in shapes:
        if SDXL_ADM_KEY not in shapes:
            raise UnsupportedModelError(f"SDXL text encoders without SDXL's size conditioning; {SUPPORTED_TEXT}")
        return ModelArchitecture.SDXL
    if SDXL_REFINER_KEY in shapes:
        if SDXL_ADM_KEY not in shapes:
            raise UnsupportedModelError(f"an SDXL refiner text encoder without size conditioning; {SUPPORTED_TEXT}")
        return ModelArchitecture.SDXL_REFINER
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
    architecture = CHANNEL_VARIANTS.get((family, channels))
    if architecture is not None:
        return architecture
    if channels == 8:
        raise UnsupportedModelError(
            f"an 8-channel (instruct-pix2pix) {family.display_name} UNet is not supported; {SUPPORTED_TEXT}"
        )
    if channels == 9:
        raise UnsupportedModelError(f"{family.display_name} inpainting models are not supported; {SUPPORTED_TEXT}")
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

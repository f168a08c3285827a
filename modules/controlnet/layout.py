"""A diffusers ControlNetModel's weights in lllyasviel's original single-file layout (``control_model.*``).

diffusers reads that layout (``convert_controlnet_checkpoint``) but does not write it; this is the reverse map,
written by hand on top of the UNet map in ``modules.models.ldm_keys`` (a ControlNet is a UNet's encoder plus the
hint block and the zero convolutions). Used to save tiny test models in the original layout and by benchmarks.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers import ControlNetModel
from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING
from safetensors.torch import save_file

from modules.models.ldm_keys import unet_block_prefixes, unet_key_to_ldm

PREFIX = "control_model."


def encoder_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ControlNet config with the up blocks its UNet would have (the UNet map walks both halves)."""
    up_types = [kind.replace("Down", "Up") for kind in reversed(config["down_block_types"])]
    return {**config, "up_block_types": up_types}


def hint_block_names(block_count: int) -> dict[str, str]:
    """The conditioning embedding: conv_in -> input_hint_block.0, blocks j -> 2 (j + 1), conv_out -> the last."""
    names = {"controlnet_cond_embedding.conv_in.": "input_hint_block.0."}
    for index in range(block_count):
        names[f"controlnet_cond_embedding.blocks.{index}."] = f"input_hint_block.{2 * (index + 1)}."
    names["controlnet_cond_embedding.conv_out."] = f"input_hint_block.{2 * (block_count + 1)}."
    return names


def controlnet_to_ldm(model: ControlNetModel) -> dict[str, torch.Tensor]:
    config = dict(model.config)
    fixed = {
        **{key: value for key, value in DIFFUSERS_TO_LDM_MAPPING["controlnet"]["layers"].items()},
        **DIFFUSERS_TO_LDM_MAPPING["unet"]["addition_embed_type"],
    }
    prefixes = unet_block_prefixes(encoder_config(config))
    hint_names = hint_block_names(len(model.controlnet_cond_embedding.blocks))
    converted: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        converted[PREFIX + ldm_name(key, fixed, prefixes, hint_names)] = value.detach().clone().contiguous()
    return converted


def ldm_name(key: str, fixed: Mapping[str, str], prefixes: list, hint_names: Mapping[str, str]) -> str:
    if key in fixed:
        return fixed[key]
    for diffusers_prefix, ldm_prefix in hint_names.items():
        if key.startswith(diffusers_prefix):
            return ldm_prefix + key[len(diffusers_prefix) :]
    if key.startswith("controlnet_down_blocks."):
        index, rest = key[len("controlnet_down_blocks.") :].split(".", 1)
        return f"zero_convs.{index}.0.{rest}"
    if key.startswith("controlnet_mid_block."):
        return "middle_block_out.0." + key[len("controlnet_mid_block.") :]
    return unet_key_to_ldm(key, fixed, prefixes)


def save_original_layout(model: ControlNetModel, out: Path, with_config: bool = True) -> Path:
    """``out`` (.safetensors) in the original layout; ``with_config``: its config in the sidecar folder
    ``<name>.config/config.json`` (for sizes the bundled family configs do not describe)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(controlnet_to_ldm(model), str(out))
    if with_config:
        model.save_config(out.with_name(out.stem + ".config"))
    return out

"""Diffusers -> original LDM (A1111 single-file) key names for the UNet, VAE and text encoders.

diffusers ships the opposite direction (``single_file_utils``) but no library converts diffusers weights
back to the LDM layout, so this map is written by hand. It follows the logic of diffusers'
``scripts/convert_diffusers_to_original_stable_diffusion.py`` and ``convert_diffusers_to_original_sdxl.py``,
generalised to any number of blocks and layers read from the model config (so tiny test models convert
too), and reuses ``DIFFUSERS_TO_LDM_MAPPING`` for the fixed top-level names. Values pass through
unchanged except the VAE attention weights (linear -> 1x1 conv) and the OpenCLIP q/k/v projections
(three matrices -> one ``in_proj``); meta tensors work, so key layouts can be produced without weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_CLIP_PREFIX = "cond_stage_model.transformer."
SD2_OPEN_CLIP_PREFIX = "cond_stage_model.model."
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer."
SDXL_OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."
SDXL_REFINER_OPEN_CLIP_PREFIX = "conditioner.embedders.0.model."

TextEncoderLayout = Literal["clip", "openclip"]

# (diffusers, LDM) names inside one ResNet block.
UNET_RESNET_NAMES = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
)
VAE_RESNET_NAMES = (("conv_shortcut", "nin_shortcut"),)
VAE_ATTENTION_NAMES = (
    ("group_norm.", "norm."),
    ("to_q.", "q."),
    ("to_k.", "k."),
    ("to_v.", "v."),
    ("to_out.0.", "proj_out."),
)
OPEN_CLIP_LAYER_NAMES = (
    ("layer_norm1", "ln_1"),
    ("layer_norm2", "ln_2"),
    ("mlp.fc1", "mlp.c_fc"),
    ("mlp.fc2", "mlp.c_proj"),
    ("self_attn.out_proj", "attn.out_proj"),
)
QKV_NAMES = ("q_proj", "k_proj", "v_proj")


def unet_block_prefixes(config: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """(diffusers prefix, LDM prefix, is_resnet) for every block of a UNet2DConditionModel config."""
    levels = len(config["block_out_channels"])
    layers = int(config["layers_per_block"])
    pairs: list[tuple[str, str, bool]] = []
    for level in range(levels):
        down_attention = "CrossAttn" in config["down_block_types"][level]
        for layer in range(layers):
            ldm_index = level * (layers + 1) + layer + 1
            pairs.append((f"down_blocks.{level}.resnets.{layer}.", f"input_blocks.{ldm_index}.0.", True))
            if down_attention:
                pairs.append((f"down_blocks.{level}.attentions.{layer}.", f"input_blocks.{ldm_index}.1.", False))
        if level < levels - 1:
            ldm_index = (level + 1) * (layers + 1)
            pairs.append((f"down_blocks.{level}.downsamplers.0.conv.", f"input_blocks.{ldm_index}.0.op.", False))
        up_attention = "CrossAttn" in config["up_block_types"][level]
        for layer in range(layers + 1):
            ldm_index = level * (layers + 1) + layer
            pairs.append((f"up_blocks.{level}.resnets.{layer}.", f"output_blocks.{ldm_index}.0.", True))
            if up_attention:
                pairs.append((f"up_blocks.{level}.attentions.{layer}.", f"output_blocks.{ldm_index}.1.", False))
        if level < levels - 1:
            ldm_index = level * (layers + 1) + layers
            slot = 2 if up_attention else 1
            pairs.append((f"up_blocks.{level}.upsamplers.0.", f"output_blocks.{ldm_index}.{slot}.", False))
    pairs.append(("mid_block.resnets.0.", "middle_block.0.", True))
    pairs.append(("mid_block.attentions.0.", "middle_block.1.", False))
    pairs.append(("mid_block.resnets.1.", "middle_block.2.", True))
    return pairs


def rename_inside(rest: str, names: tuple[tuple[str, str], ...]) -> str:
    for diffusers_name, ldm_name in names:
        if rest.startswith(diffusers_name):
            return ldm_name + rest[len(diffusers_name) :]
    return rest


def convert_unet(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """UNet2DConditionModel weights -> ``model.diffusion_model.*`` (SD 1.x/2.x and SDXL layouts)."""
    fixed = {
        **DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"],
        **DIFFUSERS_TO_LDM_MAPPING["unet"]["addition_embed_type"],
    }
    prefixes = unet_block_prefixes(config)
    converted: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        converted[UNET_PREFIX + unet_key_to_ldm(key, fixed, prefixes)] = value
    return converted


def unet_key_to_ldm(key: str, fixed: Mapping[str, str], prefixes: list[tuple[str, str, bool]]) -> str:
    if key in fixed:
        return fixed[key]
    for diffusers_prefix, ldm_prefix, is_resnet in prefixes:
        if key.startswith(diffusers_prefix):
            rest = key[len(diffusers_prefix) :]
            return ldm_prefix + (rename_inside(rest, UNET_RESNET_NAMES) if is_resnet else rest)
    raise KeyError(f"no LDM name for UNet weight {key!r}")


def vae_block_prefixes(config: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(diffusers prefix, LDM prefix, kind) with kind 'resnet', 'attention' or 'sampler'."""
    levels = len(config["block_out_channels"])
    layers = int(config["layers_per_block"])
    pairs: list[tuple[str, str, str]] = []
    for level in range(levels):
        up_level = levels - 1 - level
        for layer in range(layers):
            pairs.append(
                (f"encoder.down_blocks.{level}.resnets.{layer}.", f"encoder.down.{level}.block.{layer}.", "resnet")
            )
        for layer in range(layers + 1):
            pairs.append(
                (f"decoder.up_blocks.{level}.resnets.{layer}.", f"decoder.up.{up_level}.block.{layer}.", "resnet")
            )
        if level < levels - 1:
            pairs.append(
                (f"encoder.down_blocks.{level}.downsamplers.0.", f"encoder.down.{level}.downsample.", "sampler")
            )
            pairs.append((f"decoder.up_blocks.{level}.upsamplers.0.", f"decoder.up.{up_level}.upsample.", "sampler"))
    for part in ("encoder", "decoder"):
        pairs.append((f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1.", "resnet"))
        pairs.append((f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2.", "resnet"))
        pairs.append((f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.", "attention"))
    return pairs


def convert_vae(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """AutoencoderKL weights -> ``first_stage_model.*``; attention projections become 1x1 convolutions."""
    fixed = DIFFUSERS_TO_LDM_MAPPING["vae"]
    prefixes = vae_block_prefixes(config)
    converted: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        ldm_key, is_attention = vae_key_to_ldm(key, fixed, prefixes)
        if is_attention and value.ndim == 2:
            value = value.reshape(*value.shape, 1, 1)
        converted[VAE_PREFIX + ldm_key] = value
    return converted


def vae_key_to_ldm(key: str, fixed: Mapping[str, str], prefixes: list[tuple[str, str, str]]) -> tuple[str, bool]:
    if key in fixed:
        return fixed[key], False
    for diffusers_prefix, ldm_prefix, kind in prefixes:
        if key.startswith(diffusers_prefix):
            rest = key[len(diffusers_prefix) :]
            if kind == "resnet":
                return ldm_prefix + rename_inside(rest, VAE_RESNET_NAMES), False
            if kind == "attention":
                return ldm_prefix + rename_inside(rest, VAE_ATTENTION_NAMES), True
            return ldm_prefix + rest, False
    raise KeyError(f"no LDM name for VAE weight {key!r}")


def with_text_model_prefix(key: str) -> str:
    """transformers >= 5.6 flattened CLIPTextModel (no ``text_model.``); the LDM layout keeps it."""
    if key.startswith(("text_model.", "text_projection")):
        return key
    return "text_model." + key


def convert_clip(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """OpenAI CLIP text encoder (SD 1.x, SDXL's first encoder): the transformers names under ``prefix``."""
    return {prefix + with_text_model_prefix(key): value for key, value in state_dict.items()}


def convert_open_clip(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """OpenCLIP text encoder (SD 2.x, SDXL's second encoder): resblocks with fused q/k/v ``in_proj``."""
    fixed = DIFFUSERS_TO_LDM_MAPPING["openclip"]["layers"]
    converted: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for raw_key, value in state_dict.items():
        key = with_text_model_prefix(raw_key)
        if key in fixed:
            is_projection = fixed[key] == "text_projection"
            converted[prefix + fixed[key]] = value.T.contiguous() if is_projection else value
            continue
        if not key.startswith("text_model.encoder.layers."):
            continue  # position_ids buffers and the like have no LDM counterpart
        layer, rest = key.removeprefix("text_model.encoder.layers.").split(".", 1)
        block = f"{prefix}transformer.resblocks.{layer}."
        projection = next((name for name in QKV_NAMES if rest.startswith(f"self_attn.{name}.")), None)
        if projection is not None:
            kind = rest.rsplit(".", 1)[1]  # weight or bias
            fused.setdefault(f"{block}attn.in_proj_{kind}", {})[projection] = value
            continue
        converted[block + rename_inside(rest, OPEN_CLIP_LAYER_NAMES)] = value
    for ldm_key, parts in fused.items():
        converted[ldm_key] = torch.cat([parts[name] for name in QKV_NAMES], dim=0)
    return converted


def text_encoder_layout(config: Any) -> TextEncoderLayout:
    """OpenCLIP encoders use GELU, OpenAI CLIP encoders quick-GELU; that is how SD 1.x and 2.x configs differ."""
    return "openclip" if getattr(config, "hidden_act", "quick_gelu") == "gelu" else "clip"


def convert_components(
    unet: torch.nn.Module,
    vae: torch.nn.Module,
    text_encoder: torch.nn.Module | None,
    text_encoder_2: torch.nn.Module | None = None,
) -> dict[str, torch.Tensor]:
    """A whole SD 1.x / 2.x / SDXL checkpoint in the LDM layout from the diffusers components (the SDXL
    refiner has no first text encoder: its OpenCLIP-G sits at ``conditioner.embedders.0``)."""
    converted = convert_unet(unet.state_dict(), unet.config)
    converted.update(convert_vae(vae.state_dict(), vae.config))
    if text_encoder is None and text_encoder_2 is not None:
        converted.update(convert_open_clip(text_encoder_2.state_dict(), SDXL_REFINER_OPEN_CLIP_PREFIX))
    elif text_encoder is None:
        raise ValueError("a checkpoint needs at least one text encoder")
    elif text_encoder_2 is not None:
        converted.update(convert_clip(text_encoder.state_dict(), SDXL_CLIP_PREFIX))
        converted.update(convert_open_clip(text_encoder_2.state_dict(), SDXL_OPEN_CLIP_PREFIX))
    elif text_encoder_layout(text_encoder.config) == "openclip":
        converted.update(convert_open_clip(text_encoder.state_dict(), SD2_OPEN_CLIP_PREFIX))
    else:
        converted.update(convert_clip(text_encoder.state_dict(), SD1_CLIP_PREFIX))
    return converted

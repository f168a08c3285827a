"""Tests only: write a diffusers FLUX.1 pipeline as the single files people share: BFL's transformer-only layout
(``double_blocks.*``, ``single_blocks.*``, no prefix, as ``flux1-dev.safetensors``) or ComfyUI's all-in-one
checkpoint (``model.diffusion_model.*`` + ``vae.*`` + ``text_encoders.{clip_l,t5xxl}.transformer.*``). The
inverse of the loader's converter, so that it is tested with the key names real files have."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from safetensors.torch import save_file

from modules.models.flux_keys import (
    DOUBLE_LINEARS,
    DOUBLE_NORMS,
    DOUBLE_QKV,
    EMBEDDER_LAYERS,
    EMBEDDERS,
    LINEARS,
    PARAMETERS,
    SINGLE_FUSED,
    SINGLE_LINEARS,
    SINGLE_NORMS,
    swap_scale_shift,
)
from modules.models.ldm_keys import convert_vae, with_text_model_prefix

COMFY_PREFIX = "model.diffusion_model."


def transformer_to_bfl(state: dict[str, torch.Tensor], layers: int, single_layers: int) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, target in EMBEDDERS.items():
        for layer, diffusers_layer in EMBEDDER_LAYERS.items():
            for kind in PARAMETERS:
                key = f"{target}.{diffusers_layer}.{kind}"
                if key in state:
                    out[f"{name}.{layer}.{kind}"] = state[key]
    for kind in PARAMETERS:
        for name, target in LINEARS.items():
            out[f"{name}.{kind}"] = state[f"{target}.{kind}"]
        # swapping the halves twice gives them back
        out[f"final_layer.adaLN_modulation.1.{kind}"] = swap_scale_shift(state[f"norm_out.linear.{kind}"])
    for index in range(layers):
        source, target = f"transformer_blocks.{index}.", f"double_blocks.{index}."
        for name, diffusers_name in DOUBLE_LINEARS.items():
            for kind in PARAMETERS:
                out[f"{target}{name}.{kind}"] = state[f"{source}{diffusers_name}.{kind}"]
        for name, diffusers_name in DOUBLE_NORMS.items():
            out[f"{target}{name}"] = state[f"{source}{diffusers_name}"]
        for name, projections in DOUBLE_QKV.items():
            for kind in PARAMETERS:
                out[f"{target}{name}.{kind}"] = torch.cat([state[f"{source}{item}.{kind}"] for item in projections])
    for index in range(single_layers):
        source, target = f"single_transformer_blocks.{index}.", f"single_blocks.{index}."
        for name, diffusers_name in SINGLE_LINEARS.items():
            for kind in PARAMETERS:
                out[f"{target}{name}.{kind}"] = state[f"{source}{diffusers_name}.{kind}"]
        for name, diffusers_name in SINGLE_NORMS.items():
            out[f"{target}{name}"] = state[f"{source}{diffusers_name}"]
        for kind in PARAMETERS:
            out[f"{target}linear1.{kind}"] = torch.cat([state[f"{source}{item}.{kind}"] for item in SINGLE_FUSED])
    return out


def bfl_transformer(transformer: FluxTransformer2DModel) -> dict[str, torch.Tensor]:
    config = transformer.config
    return transformer_to_bfl(transformer.state_dict(), config.num_layers, config.num_single_layers)


def save(tensors: dict[str, torch.Tensor], out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: value.detach().clone().contiguous() for key, value in tensors.items()}, str(out))
    return out


def write_flux_transformer_file(pipeline: FluxPipeline, out: Path, prefix: str = "") -> Path:
    """BFL's release layout (``prefix=""``) or ComfyUI's diffusion-model file (``prefix="model.diffusion_model."``)."""
    return save({prefix + key: value for key, value in bfl_transformer(pipeline.transformer).items()}, out)


def write_flux_checkpoint(
    pipeline: FluxPipeline, out: Path, vae_prefix: str = "vae.", encoders: tuple[str, ...] = ("clip_l", "t5xxl")
) -> Path:
    """ComfyUI's all-in-one checkpoint: the transformer, the VAE and the text ``encoders`` (both) in one file."""
    tensors = {COMFY_PREFIX + key: value for key, value in bfl_transformer(pipeline.transformer).items()}
    vae = convert_vae(pipeline.vae.state_dict(), dict(pipeline.vae.config))
    tensors.update({vae_prefix + key.removeprefix("first_stage_model."): value for key, value in vae.items()})
    for name, encoder in {"clip_l": pipeline.text_encoder, "t5xxl": pipeline.text_encoder_2}.items():
        if name not in encoders:
            continue
        for key, value in encoder.state_dict().items():
            key = with_text_model_prefix(key) if name == "clip_l" else key
            tensors[f"text_encoders.{name}.transformer.{key}"] = value
    return save(tensors, out)


def tiny_schnell(pipeline: FluxPipeline) -> FluxPipeline:
    """The tiny dev pipeline as FLUX.1 schnell: no guidance embedder, schnell's schedule (shift 1, no dynamic shift)."""
    transformer = FluxTransformer2DModel.from_config({**pipeline.transformer.config, "guidance_embeds": False})
    state = pipeline.transformer.state_dict()
    transformer.load_state_dict({key: value for key, value in state.items() if "guidance_embedder" not in key})
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)
    schnell = FluxPipeline(**{**pipeline.components, "transformer": transformer, "scheduler": scheduler})
    schnell.set_progress_bar_config(disable=True)
    return schnell

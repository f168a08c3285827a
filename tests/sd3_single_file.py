"""Tests only: write a diffusers SD 3.5 pipeline as one file in the layout Stability AI / ComfyUI ship
(``model.diffusion_model.joint_blocks.*``, ``first_stage_model.*``, ``text_encoders.{clip_l,clip_g,t5xxl}
.transformer.*``): the inverse of diffusers' ``convert_sd3_transformer_checkpoint_to_diffusers``, so that the
loader is tested with the key names real files have."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from modules.models.ldm_keys import convert_vae

TRANSFORMER_PREFIX = "model.diffusion_model."
FIXED = {
    "pos_embed.pos_embed": "pos_embed",
    "pos_embed.proj.weight": "x_embedder.proj.weight",
    "pos_embed.proj.bias": "x_embedder.proj.bias",
    "time_text_embed.timestep_embedder.linear_1.weight": "t_embedder.mlp.0.weight",
    "time_text_embed.timestep_embedder.linear_1.bias": "t_embedder.mlp.0.bias",
    "time_text_embed.timestep_embedder.linear_2.weight": "t_embedder.mlp.2.weight",
    "time_text_embed.timestep_embedder.linear_2.bias": "t_embedder.mlp.2.bias",
    "context_embedder.weight": "context_embedder.weight",
    "context_embedder.bias": "context_embedder.bias",
    "time_text_embed.text_embedder.linear_1.weight": "y_embedder.mlp.0.weight",
    "time_text_embed.text_embedder.linear_1.bias": "y_embedder.mlp.0.bias",
    "time_text_embed.text_embedder.linear_2.weight": "y_embedder.mlp.2.weight",
    "time_text_embed.text_embedder.linear_2.bias": "y_embedder.mlp.2.bias",
    "proj_out.weight": "final_layer.linear.weight",
    "proj_out.bias": "final_layer.linear.bias",
}
BLOCK_RENAMES = {
    "attn.to_out.0": "x_block.attn.proj",
    "attn.to_add_out": "context_block.attn.proj",
    "norm1.linear": "x_block.adaLN_modulation.1",
    "norm1_context.linear": "context_block.adaLN_modulation.1",
    "ff.net.0.proj": "x_block.mlp.fc1",
    "ff.net.2": "x_block.mlp.fc2",
    "ff_context.net.0.proj": "context_block.mlp.fc1",
    "ff_context.net.2": "context_block.mlp.fc2",
}


def swap_halves(tensor: torch.Tensor) -> torch.Tensor:
    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def transformer_to_original(state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    out = {original: state[key] for key, original in FIXED.items()}
    out["final_layer.adaLN_modulation.1.weight"] = swap_halves(state["norm_out.linear.weight"])
    out["final_layer.adaLN_modulation.1.bias"] = swap_halves(state["norm_out.linear.bias"])
    for index in range(num_layers):
        block, target = f"transformer_blocks.{index}.", f"joint_blocks.{index}."
        for kind in ("weight", "bias"):
            qkv = [state[f"{block}attn.to_{name}.{kind}"] for name in "qkv"]
            out[f"{target}x_block.attn.qkv.{kind}"] = torch.cat(qkv)
            added = [state[f"{block}attn.add_{name}_proj.{kind}"] for name in "qkv"]
            out[f"{target}context_block.attn.qkv.{kind}"] = torch.cat(added)
            for name, original in BLOCK_RENAMES.items():
                key = f"{block}{name}.{kind}"
                if key in state:
                    value = state[key]
                    if name == "norm1_context.linear" and index == num_layers - 1:
                        value = swap_halves(value)  # the last block's context norm is diffusers' AdaLayerNormContinuous
                    out[f"{target}{original}.{kind}"] = value
    return {TRANSFORMER_PREFIX + key: value for key, value in out.items()}


def write_sd3_single_file(pipeline, out: Path, with_t5: bool = True) -> Path:
    tensors = transformer_to_original(pipeline.transformer.state_dict(), pipeline.transformer.config.num_layers)
    tensors.update(convert_vae(pipeline.vae.state_dict(), dict(pipeline.vae.config)))
    encoders = {"clip_l": pipeline.text_encoder, "clip_g": pipeline.text_encoder_2}
    if with_t5:
        encoders["t5xxl"] = pipeline.text_encoder_3
    for name, encoder in encoders.items():
        for key, value in encoder.state_dict().items():
            tensors[f"text_encoders.{name}.transformer.{key}"] = value
    save_file({key: value.detach().clone().contiguous() for key, value in tensors.items()}, str(out))
    return out

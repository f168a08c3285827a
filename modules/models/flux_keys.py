"""FLUX.1 transformer keys: Black Forest Labs' (and ComfyUI's) layout -> diffusers' ``FluxTransformer2DModel``.

Written by hand because diffusers' own converter (``convert_flux_transformer_checkpoint_to_diffusers`` in
``diffusers.loaders.single_file_utils``, 0.42.1) fixes the transformer's width at 3072: it splits each single
block's fused ``linear1`` (q, k, v and the MLP input) with that constant, so only full-size models convert. Here
the width comes from the caller (the config's ``num_attention_heads * attention_head_dim``) or else from the
checkpoint (``img_in``'s output width); everything else is the same renaming as diffusers', and
tests/test_flux_single_file.py proves the result equal to diffusers' converter at width 3072, tensor for tensor.

BFL layout: ``img_in``, ``txt_in``, ``time_in``, ``vector_in``, ``guidance_in`` (FLUX.1 dev only),
``double_blocks.N.*``, ``single_blocks.N.*``, ``final_layer.*``; ComfyUI adds the ``model.diffusion_model.``
prefix (and its checkpoints hold the VAE and the text encoders under other prefixes, left alone here).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

import torch

logger = logging.getLogger(__name__)

COMFY_PREFIX = "model.diffusion_model."
TOP_LEVEL_NAMES = frozenset(
    ("img_in", "txt_in", "time_in", "vector_in", "guidance_in", "double_blocks", "single_blocks", "final_layer")
)
GUIDANCE_KEY = "guidance_in.in_layer.weight"
WIDTH_KEY = "img_in.weight"
# The MLP embedders (in_layer, SiLU, out_layer) -> diffusers' TimestepEmbedding (linear_1, linear_2).
EMBEDDERS = {
    "time_in": "time_text_embed.timestep_embedder",
    "vector_in": "time_text_embed.text_embedder",
    "guidance_in": "time_text_embed.guidance_embedder",
}
EMBEDDER_LAYERS = {"in_layer": "linear_1", "out_layer": "linear_2"}
LINEARS = {"txt_in": "context_embedder", "img_in": "x_embedder", "final_layer.linear": "proj_out"}
DOUBLE_LINEARS = {
    "img_mod.lin": "norm1.linear",
    "txt_mod.lin": "norm1_context.linear",
    "img_mlp.0": "ff.net.0.proj",
    "img_mlp.2": "ff.net.2",
    "txt_mlp.0": "ff_context.net.0.proj",
    "txt_mlp.2": "ff_context.net.2",
    "img_attn.proj": "attn.to_out.0",
    "txt_attn.proj": "attn.to_add_out",
}
DOUBLE_NORMS = {
    "img_attn.norm.query_norm.scale": "attn.norm_q.weight",
    "img_attn.norm.key_norm.scale": "attn.norm_k.weight",
    "txt_attn.norm.query_norm.scale": "attn.norm_added_q.weight",
    "txt_attn.norm.key_norm.scale": "attn.norm_added_k.weight",
}
# A fused q/k/v projection -> three diffusers projections (equal thirds).
DOUBLE_QKV = {
    "img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
}
SINGLE_LINEARS = {"modulation.lin": "norm.linear", "linear2": "proj_out"}
SINGLE_NORMS = {"norm.query_norm.scale": "attn.norm_q.weight", "norm.key_norm.scale": "attn.norm_k.weight"}
SINGLE_FUSED = ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")  # linear1: q, k, v (width each), then the MLP
PARAMETERS = ("weight", "bias")


def transformer_keys(keys: Iterable[str]) -> dict[str, str]:
    """File key -> BFL key of the transformer's tensors: the ``model.diffusion_model.`` ones when the file has that
    prefix (a ComfyUI checkpoint also holds the VAE and text encoders), else the keys under BFL's top-level names."""
    keys = list(keys)
    if any(key.startswith(COMFY_PREFIX) for key in keys):
        return {key: key.removeprefix(COMFY_PREFIX) for key in keys if key.startswith(COMFY_PREFIX)}
    return {key: key for key in keys if key.split(".", 1)[0] in TOP_LEVEL_NAMES}


def has_guidance(keys: Iterable[str]) -> bool:
    """FLUX.1 dev (guidance-distilled) has a guidance embedder; schnell has none."""
    return any(key.removeprefix(COMFY_PREFIX) == GUIDANCE_KEY for key in keys)


def block_count(keys: Iterable[str], kind: str) -> int:
    indices = {int(key.split(".", 2)[1]) for key in keys if key.startswith(f"{kind}.")}
    return max(indices) + 1 if indices else 0


def transformer_width(checkpoint: Mapping[str, torch.Tensor]) -> int:
    """The transformer's width (its inner dimension): the output width of the image input projection."""
    return int(checkpoint[WIDTH_KEY].shape[0])


def swap_scale_shift(tensor: torch.Tensor) -> torch.Tensor:
    """BFL's final adaLN projection gives (shift, scale); diffusers' AdaLayerNormContinuous reads (scale, shift)."""
    shift, scale = tensor.chunk(2, dim=0)
    return torch.cat([scale, shift], dim=0)


def convert_flux_transformer(
    checkpoint: Mapping[str, torch.Tensor], inner_dim: int | None = None
) -> dict[str, torch.Tensor]:
    """BFL / ComfyUI transformer keys (with or without the ``model.diffusion_model.`` prefix) -> diffusers keys.

    ``inner_dim``: the width that splits each single block's ``linear1`` into q, k, v (``inner_dim`` rows each) and
    the MLP input (the rest); None reads it from the checkpoint. A missing key raises KeyError; keys outside the
    layout are left out (and logged)."""
    source = {bfl: checkpoint[key] for key, bfl in transformer_keys(checkpoint).items()}
    width = transformer_width(source) if inner_dim is None else inner_dim
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        used.add(key)
        return source[key]

    out: dict[str, torch.Tensor] = {}
    for name, target in EMBEDDERS.items():
        if name == "guidance_in" and GUIDANCE_KEY not in source:
            continue
        for layer, diffusers_layer in EMBEDDER_LAYERS.items():
            for kind in PARAMETERS:
                out[f"{target}.{diffusers_layer}.{kind}"] = take(f"{name}.{layer}.{kind}")
    for name, target in LINEARS.items():
        for kind in PARAMETERS:
            out[f"{target}.{kind}"] = take(f"{name}.{kind}")
    for kind in PARAMETERS:
        out[f"norm_out.linear.{kind}"] = swap_scale_shift(take(f"final_layer.adaLN_modulation.1.{kind}"))
    for index in range(block_count(source, "double_blocks")):
        out.update(convert_double_block(take, index))
    for index in range(block_count(source, "single_blocks")):
        out.update(convert_single_block(take, index, width))
    left_out = sorted(set(source) - used)
    if left_out:
        logger.warning("flux transformer keys left out count=%d first=%s", len(left_out), left_out[0])
    return out


def renamed(
    take: Callable[[str], torch.Tensor],
    source: str,
    target: str,
    linears: Mapping[str, str],
    norms: Mapping[str, str],
) -> dict[str, torch.Tensor]:
    """A block's linear layers (weight and bias) and norm scales under their diffusers names."""
    out = {
        f"{target}{diffusers_name}.{kind}": take(f"{source}{name}.{kind}")
        for name, diffusers_name in linears.items()
        for kind in PARAMETERS
    }
    out.update({f"{target}{diffusers_name}": take(f"{source}{name}") for name, diffusers_name in norms.items()})
    return out


def convert_double_block(take: Callable[[str], torch.Tensor], index: int) -> dict[str, torch.Tensor]:
    """One double-stream block (separate image and text streams): renames and the q/k/v thirds (copied)."""
    source, target = f"double_blocks.{index}.", f"transformer_blocks.{index}."
    out = renamed(take, source, target, DOUBLE_LINEARS, DOUBLE_NORMS)
    for name, projections in DOUBLE_QKV.items():
        for kind in PARAMETERS:
            for projection, part in zip(projections, take(f"{source}{name}.{kind}").chunk(3, dim=0), strict=True):
                out[f"{target}{projection}.{kind}"] = part.clone()  # own storage, as diffusers' torch.cat gives
    return out


def convert_single_block(take: Callable[[str], torch.Tensor], index: int, width: int) -> dict[str, torch.Tensor]:
    """One single-stream block: ``linear1`` fuses q, k, v (``width`` rows each) and the MLP input (the rest)."""
    source, target = f"single_blocks.{index}.", f"single_transformer_blocks.{index}."
    out = renamed(take, source, target, SINGLE_LINEARS, SINGLE_NORMS)
    for kind in PARAMETERS:
        fused = take(f"{source}linear1.{kind}")
        mlp_rows = fused.shape[0] - 3 * width
        if mlp_rows <= 0:
            raise ValueError(f"{source}linear1.{kind} has {fused.shape[0]} rows, too few for width {width}")
        parts = fused.split((width, width, width, mlp_rows), dim=0)
        for projection, part in zip(SINGLE_FUSED, parts, strict=True):
            # A view at an offset into the fused tensor can take another (differently rounding) kernel path than
            # the aligned copy diffusers' converter makes; a copy gives the same numbers as diffusers' loads.
            out[f"{target}{projection}.{kind}"] = part.clone()
    return out

"""A tiny random-weight SD 1.x-shaped model for offline tests and benchmarks.

``python -m modules.tiny_model --out PATH [--format single-file|diffusers] [--inpainting]``

Sizes follow diffusers' own pipeline tests (UNet block_out_channels (32, 64), a 5-layer CLIP text
encoder of width 32); the tokenizer is the real CLIP tokenizer kept in configs/.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    PNDMScheduler,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from modules.paths import INSTALL_DIR

logger = logging.getLogger(__name__)

TINY_CROSS_ATTENTION_DIM = 32


def build_tiny_pipeline(
    inpainting: bool = False, seed: int = 0, configs_dir: Path = INSTALL_DIR / "configs"
) -> StableDiffusionPipeline:
    """Build the tiny pipeline in memory, with weights drawn from ``seed``."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=9 if inpainting else 4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TINY_CROSS_ATTENTION_DIM,
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 32, 64, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        sample_size=256,
    )
    text_config = CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=2,
        hidden_size=TINY_CROSS_ATTENTION_DIM,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=5,
        pad_token_id=1,
        vocab_size=49408,
        projection_dim=TINY_CROSS_ATTENTION_DIM,
    )
    text_encoder = CLIPTextModel(text_config)
    # A zero final LayerNorm bias (transformers' init) makes every embedding mean-zero, and A1111's "Original"
    # emphasis then divides 0 by 0: give the tiny model non-zero values there, as a trained CLIP has.
    with torch.no_grad():
        getattr(text_encoder, "text_model", text_encoder).final_layer_norm.bias.uniform_(-0.5, 0.5)
    tokenizer = CLIPTokenizer.from_pretrained(configs_dir / "sd15" / "tokenizer", local_files_only=True)
    scheduler = PNDMScheduler.from_pretrained(configs_dir / "sd15", subfolder="scheduler", local_files_only=True)
    pipeline_class = StableDiffusionInpaintPipeline if inpainting else StableDiffusionPipeline
    pipeline = pipeline_class(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def write_diffusers(pipeline: StableDiffusionPipeline, out: Path) -> Path:
    """Save as a diffusers folder (safetensors)."""
    pipeline.save_pretrained(out, safe_serialization=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modules.tiny_model", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="file (single-file) or folder (diffusers)")
    parser.add_argument("--format", choices=("single-file", "diffusers"), default="single-file")
    parser.add_argument("--inpainting", action="store_true", help="9-channel inpainting UNet")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    pipeline = build_tiny_pipeline(inpainting=args.inpainting, seed=args.seed)
    if args.format == "diffusers":
        write_diffusers(pipeline, args.out)
    else:
        from modules.models.checkpoint_writer import write_single_file

        write_single_file(pipeline, args.out)
    logger.info("tiny model written path=%s format=%s", args.out, args.format)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Tiny random-weight models of every supported kind, for offline tests and benchmarks.

``python -m modules.tiny_model --out PATH [--format single-file|diffusers] [--kind sd1|sd1-inpaint|...]``

Sizes follow diffusers' own pipeline tests (UNet block_out_channels (32, 64), 5-layer CLIP text encoders of
width 32; the SDXL ones use diffusers' SDXL test sizes); the tokenizers are the real CLIP tokenizers kept in
configs/. ``write_config_folders`` writes the matching tiny config folders, so a tiny single file written
without a sidecar loads through detection alone when the loader is given those folders.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    DDIMScheduler,
    DiffusionPipeline,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionInpaintPipeline,
    StableDiffusionInstructPix2PixPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from modules.models.detection import ModelArchitecture
from modules.paths import INSTALL_DIR
from modules.tiny_families import build_tiny_family

logger = logging.getLogger(__name__)

TINY_CROSS_ATTENTION_DIM = 32
TINY_TIME_EMBED_DIM = 8
# SDXL's second (OpenCLIP) encoder must differ in width from the first: diffusers' single-file loader tells
# them apart by the position embedding's width, as the real 768 / 1280 widths differ.
TINY_XL_SECOND_WIDTH = 48
SD1_CLASSES = {
    ModelArchitecture.SD1: StableDiffusionPipeline,
    ModelArchitecture.SD1_INPAINT: StableDiffusionInpaintPipeline,
    ModelArchitecture.SD1_PIX2PIX: StableDiffusionInstructPix2PixPipeline,
    ModelArchitecture.SD2: StableDiffusionPipeline,
    ModelArchitecture.SD2_V: StableDiffusionPipeline,
    ModelArchitecture.SD2_INPAINT: StableDiffusionInpaintPipeline,
}
INPUT_CHANNELS = {
    ModelArchitecture.SD1_INPAINT: 9,
    ModelArchitecture.SD2_INPAINT: 9,
    ModelArchitecture.SDXL_INPAINT: 9,
    ModelArchitecture.SD1_PIX2PIX: 8,
}
SD2_FAMILY = (ModelArchitecture.SD2, ModelArchitecture.SD2_V, ModelArchitecture.SD2_INPAINT)


def build_tiny_pipeline(
    inpainting: bool = False,
    seed: int = 0,
    configs_dir: Path = INSTALL_DIR / "configs",
    architecture: ModelArchitecture | None = None,
) -> DiffusionPipeline:
    """Build a tiny pipeline in memory, with weights drawn from ``seed`` (SD 1.x unless ``architecture``)."""
    if architecture is None:
        architecture = ModelArchitecture.SD1_INPAINT if inpainting else ModelArchitecture.SD1
    if not architecture.family.uses_a1111_prompts:
        return build_tiny_family(configs_dir, architecture.family, seed)
    torch.manual_seed(seed)
    if architecture.is_sdxl:
        pipeline = build_tiny_xl(architecture, configs_dir)
    else:
        pipeline = build_tiny_sd(architecture, configs_dir)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def build_tiny_sd(architecture: ModelArchitecture, configs_dir: Path) -> DiffusionPipeline:
    """SD 1.x / 2.x kinds: one text encoder (OpenAI CLIP for 1.x, OpenCLIP's GELU layout for 2.x)."""
    sd2 = architecture in SD2_FAMILY
    unet_options = {"attention_head_dim": (2, 4), "use_linear_projection": True} if sd2 else {}
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=INPUT_CHANNELS.get(architecture, 4),
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TINY_CROSS_ATTENTION_DIM,
        **unet_options,
    )
    vae = tiny_vae()
    text_encoder = CLIPTextModel(tiny_text_config(hidden_act="gelu" if sd2 else "quick_gelu"))
    # A zero final LayerNorm bias (transformers' init) makes every embedding mean-zero, and A1111's "Original"
    # emphasis then divides 0 by 0: give the tiny model non-zero values there, as a trained CLIP has.
    with torch.no_grad():
        getattr(text_encoder, "text_model", text_encoder).final_layer_norm.bias.uniform_(-0.5, 0.5)
    config_folder = configs_dir / (architecture.config_name if sd2 else "sd15")
    tokenizer = CLIPTokenizer.from_pretrained(config_folder / "tokenizer", local_files_only=True)
    scheduler_class = DDIMScheduler if sd2 else PNDMScheduler
    scheduler = scheduler_class.from_pretrained(config_folder, subfolder="scheduler", local_files_only=True)
    return SD1_CLASSES[architecture](
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_tiny_xl(architecture: ModelArchitecture, configs_dir: Path) -> DiffusionPipeline:
    """SDXL base / inpainting (two encoders, context 32 + 48) and the refiner (the OpenCLIP one only, aesthetic
    score instead of the target size)."""
    refiner = architecture is ModelArchitecture.SDXL_REFINER
    encoders = 1 if refiner else 2
    time_ids = 5 if refiner else 6  # the refiner conditions on an aesthetic score instead of the target size
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=INPUT_CHANNELS.get(architecture, 4),
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TINY_TIME_EMBED_DIM,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=TINY_TIME_EMBED_DIM * time_ids + TINY_XL_SECOND_WIDTH,
        cross_attention_dim=TINY_XL_SECOND_WIDTH + TINY_CROSS_ATTENTION_DIM * (encoders - 1),
    )
    vae = tiny_vae()
    config_folder = configs_dir / "sdxl"
    scheduler = EulerDiscreteScheduler.from_pretrained(config_folder, subfolder="scheduler", local_files_only=True)
    text_encoder_2 = CLIPTextModelWithProjection(tiny_text_config(hidden_act="gelu", width=TINY_XL_SECOND_WIDTH))
    tokenizer_2 = CLIPTokenizer.from_pretrained(config_folder / "tokenizer_2", local_files_only=True)
    if refiner:
        return StableDiffusionXLImg2ImgPipeline(
            vae=vae,
            text_encoder=None,
            text_encoder_2=text_encoder_2,
            tokenizer=None,
            tokenizer_2=tokenizer_2,
            unet=unet,
            scheduler=scheduler,
            requires_aesthetics_score=True,
            force_zeros_for_empty_prompt=False,
            add_watermarker=False,
        )
    pipeline_class = StableDiffusionXLInpaintPipeline if architecture is ModelArchitecture.SDXL_INPAINT else None
    return (pipeline_class or StableDiffusionXLPipeline)(
        vae=vae,
        text_encoder=CLIPTextModel(tiny_text_config(hidden_act="quick_gelu")),
        text_encoder_2=text_encoder_2,
        tokenizer=CLIPTokenizer.from_pretrained(config_folder / "tokenizer", local_files_only=True),
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
        add_watermarker=False,
    )


def tiny_vae() -> AutoencoderKL:
    return AutoencoderKL(
        block_out_channels=(32, 32, 64, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        sample_size=256,
    )


def tiny_text_config(hidden_act: str, width: int = TINY_CROSS_ATTENTION_DIM) -> CLIPTextConfig:
    return CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=2,
        hidden_size=width,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=5,
        pad_token_id=1,
        vocab_size=49408,
        projection_dim=width,
        hidden_act=hidden_act,
    )


def write_diffusers(pipeline: DiffusionPipeline, out: Path) -> Path:
    """Save as a diffusers folder (safetensors)."""
    pipeline.save_pretrained(out, safe_serialization=True)
    return out


def write_config_folders(configs_dir: Path, seed: int = 0) -> Path:
    """configs/-style folders (one per architecture, named as configs/ names them) for the tiny sizes."""
    from modules.models.checkpoint_writer import write_config_folder

    for architecture in (item for item in ModelArchitecture if item.family.single_file):
        pipeline = build_tiny_pipeline(architecture=architecture, seed=seed)
        write_config_folder(pipeline, configs_dir / architecture.config_name)
    return configs_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modules.tiny_model", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="file (single-file) or folder (diffusers)")
    parser.add_argument("--format", choices=("single-file", "diffusers"), default="single-file")
    parser.add_argument("--inpainting", action="store_true", help="9-channel SD 1.x inpainting UNet")
    parser.add_argument("--kind", choices=[item.value for item in ModelArchitecture], help="model kind")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    architecture = ModelArchitecture(args.kind) if args.kind else None
    pipeline = build_tiny_pipeline(inpainting=args.inpainting, seed=args.seed, architecture=architecture)
    if args.format == "diffusers":
        write_diffusers(pipeline, args.out)
    else:
        from modules.models.checkpoint_writer import write_single_file

        write_single_file(pipeline, args.out)
    logger.info("tiny model written path=%s format=%s", args.out, args.format)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def build_tiny_controlnet(unet: UNet2DConditionModel, seed: int = 0) -> ControlNetModel:
    """A ControlNet with the tiny UNet's encoder (``ControlNetModel.from_unet``) and random weights everywhere,
    the zero convolutions included (at their trained-from-zero start a ControlNet changes nothing)."""
    controlnet = ControlNetModel.from_unet(unet)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in controlnet.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding")):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return controlnet.eval()

"""Random-weight SD 1.5-shaped and SDXL-shaped checkpoints for the GPU benchmarks (speed needs no trained weights).

Built from the offline configs in configs/ (weights created on the target device, stored in half precision as a
diffusers folder), or the tiny test model with ``shape="tiny"``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from modules.paths import INSTALL_DIR
from modules.tiny_model import build_tiny_pipeline

CONFIGS = INSTALL_DIR / "configs"
SHAPES = ("sd15", "sdxl", "tiny")
NATIVE_SIZE = {"sd15": 512, "sdxl": 1024, "tiny": 256}


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))


def build_random_pipeline(shape: str, device: str, seed: int = 0):
    """A pipeline of ``shape`` with random weights (float16 on CUDA, float32 on the CPU)."""
    if shape == "tiny":
        return build_tiny_pipeline(seed=seed)
    torch.manual_seed(seed)
    root = CONFIGS / shape
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(_config(root / "unet"))
        vae = AutoencoderKL.from_config(_config(root / "vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(root / "text_encoder"))
        components = {
            "unet": unet.to(dtype),
            "vae": vae.to(dtype),
            "text_encoder": text_encoder.to(dtype),
            "tokenizer": CLIPTokenizer.from_pretrained(root / "tokenizer"),
            "scheduler": EulerDiscreteScheduler.from_pretrained(root / "scheduler"),
        }
        if shape == "sdxl":
            encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(root / "text_encoder_2"))
            components["text_encoder_2"] = encoder_2.to(dtype)
            components["tokenizer_2"] = CLIPTokenizer.from_pretrained(root / "tokenizer_2")
            return StableDiffusionXLPipeline(**components)
    return StableDiffusionPipeline(**components, safety_checker=None, feature_extractor=None)


def write_random_checkpoint(shape: str, folder: Path, device: str) -> Path:
    """Write the random pipeline as a diffusers folder (Easel and plain diffusers both load it from there)."""
    pipeline = build_random_pipeline(shape, device)
    pipeline.save_pretrained(folder, safe_serialization=True)
    del pipeline
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return folder

"""Helpers shared by the tests (not a test module): tiny requests, pixel access, model managers, ports."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from modules.devices import MemoryPolicy
from modules.models.hashing import HashCache
from modules.models.manager import ModelManager
from modules.models.registry import CheckpointRegistry
from modules.paths import DataPaths
from modules.processing.job import JobControl
from modules.processing.requests import Img2ImgRequest, Txt2ImgRequest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_TESTDATA = REPO_ROOT.parent / "shared" / "testdata"

TINY_REQUEST = {
    "prompt": "a red fox",
    "negative_prompt": "blurry",
    "steps": 3,
    "width": 64,
    "height": 64,
    "seed": 1234,
    "sampler_name": "Euler",
    "save_images": False,
}


def tiny_request(**fields) -> Txt2ImgRequest:
    """A small txt2img request for the tiny model (64x64, 3 Euler steps, fixed seed, not saved)."""
    return Txt2ImgRequest(**{**TINY_REQUEST, **fields})


def tiny_img2img(**fields) -> Img2ImgRequest:
    """A small img2img request: a fixed random 64x64 init image, 4 Euler steps at strength 0.5."""
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    base = {**TINY_REQUEST, "init_image": image, "steps": 4, "denoising_strength": 0.5}
    return Img2ImgRequest(**{**base, **fields})


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def make_manager(paths: DataPaths, cache_size: int = 1) -> ModelManager:
    """A CPU model manager over the checkpoints of ``paths`` (registry refreshed)."""
    registry = CheckpointRegistry(paths.checkpoint_dirs, HashCache(paths.cache_file))
    registry.refresh()
    return ModelManager(registry, MemoryPolicy.cpu(), paths.configs_dir, cache_size=cache_size)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class StopAtStep(JobControl):
    """A real job control whose interrupt (or skip) fires from the step callback at a chosen step."""

    def __init__(self, step: int, action: str = "interrupt") -> None:
        super().__init__(preview_every_n_steps=0)
        self.stop_step = step
        self.action = action
        self.steps_seen: list[int] = []
        self.fired = False

    def step_done(self, step, preview=None) -> None:
        super().step_done(step, preview)
        self.steps_seen.append(step)
        if step == self.stop_step and not self.fired:
            self.fired = True
            getattr(self, self.action)()


# LoRA files for the tiny model (module names and shapes of modules/tiny_model.py).
UNET_LINEAR = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"  # weight (64, 32)
UNET_CONV = "down_blocks.0.resnets.0.conv1"  # weight (32, 32, 3, 3)
TE_LINEAR = "encoder.layers.0.self_attn.q_proj"  # weight (32, 32)
RANK = 4


def kohya(name: str) -> str:
    return "lora_unet_" + name.replace(".", "_")


def random(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 0.5


def kohya_lora(seed: int = 0) -> dict[str, torch.Tensor]:
    te = "lora_te_text_model_" + TE_LINEAR.replace(".", "_")
    return {
        f"{kohya(UNET_LINEAR)}.lora_down.weight": random(RANK, 32, seed=seed),
        f"{kohya(UNET_LINEAR)}.lora_up.weight": random(64, RANK, seed=seed + 1),
        f"{kohya(UNET_LINEAR)}.alpha": torch.tensor(2.0),
        f"{te}.lora_down.weight": random(RANK, 32, seed=seed + 2),
        f"{te}.lora_up.weight": random(32, RANK, seed=seed + 3),
        f"{te}.alpha": torch.tensor(4.0),
    }

"""Save a loaded pipeline as the other format: a diffusers folder, or one A1111-style .safetensors file.

The single file goes through checkpoint_writer (LDM keys plus the ``<stem>.config/`` sidecar); the folder
through diffusers' ``save_pretrained``. Both are written under a temporary name and renamed, so a crash or a
full disk leaves nothing half-written under the final name. ``fp16`` halves the file size without changing
the loaded model (the cast happens on the written tensors, one file at a time).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from safetensors.torch import load_file, save_file

from modules.models.checkpoint_writer import pipeline_to_ldm, save_safetensors_atomic, write_config_folder
from modules.models.errors import ModelError
from modules.models.registry import sidecar_config_dir

logger = logging.getLogger(__name__)


class ConvertError(ModelError):
    """The target exists or cannot be written."""


def save_as(pipeline: DiffusionPipeline, out: Path, fp16: bool = False) -> Path:
    """``out`` ending in .safetensors: one single file (and its sidecar); anything else: a diffusers folder."""
    out = Path(out)
    if out.exists() or (out.suffix.lower() == ".safetensors" and sidecar_config_dir(out).exists()):
        raise ConvertError(f"{out} already exists; choose another name")
    if out.suffix.lower() == ".safetensors":
        return save_single_file(pipeline, out, fp16)
    if out.suffix:
        raise ConvertError(f"save as {out.name}: use a .safetensors name for a single file or no suffix for a folder")
    return save_diffusers_folder(pipeline, out, fp16)


def save_single_file(pipeline: DiffusionPipeline, out: Path, fp16: bool) -> Path:
    tensors = pipeline_to_ldm(pipeline)
    if fp16:
        tensors = {key: half_if_float(value) for key, value in tensors.items()}
    save_safetensors_atomic(tensors, out)
    write_config_folder(pipeline, sidecar_config_dir(out))
    logger.info("saved as single file path=%s tensors=%d fp16=%s", out, len(tensors), fp16)
    return out


def save_diffusers_folder(pipeline: DiffusionPipeline, out: Path, fp16: bool) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        pipeline.save_pretrained(temporary, safe_serialization=True)
        if fp16:
            for weights in temporary.rglob("*.safetensors"):
                halve_file(weights)
        os.replace(temporary, out)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    logger.info("saved as diffusers folder path=%s fp16=%s", out, fp16)
    return out


def half_if_float(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.half() if tensor.is_floating_point() else tensor


def halve_file(path: Path) -> None:
    """Rewrite one safetensors file with float16 tensors (diffusers and transformers read the dtype from it)."""
    tensors = {key: half_if_float(value).contiguous() for key, value in load_file(path).items()}
    save_file(tensors, path, metadata={"format": "pt"})

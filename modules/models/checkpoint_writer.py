"""Write a diffusers pipeline as one A1111-style (LDM-keyed) ``.safetensors`` file.

Beside ``<stem>.safetensors`` it writes the sidecar ``<stem>.config/``: the pipeline's configs and
tokenizers without weights. The loader prefers that folder over key detection, so models of
non-standard sizes (the tiny test model) load back exactly.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from safetensors.torch import save_file

from modules.models.ldm_keys import convert_components
from modules.models.registry import sidecar_config_dir

logger = logging.getLogger(__name__)


def pipeline_to_ldm(pipeline: DiffusionPipeline) -> dict[str, torch.Tensor]:
    return convert_components(
        unet=pipeline.unet,
        vae=pipeline.vae,
        text_encoder=pipeline.text_encoder,
        text_encoder_2=getattr(pipeline, "text_encoder_2", None),
    )


def save_safetensors_atomic(tensors: dict[str, torch.Tensor], out: Path) -> None:
    """Write through a temporary file in the same folder and rename, so a crash leaves no half file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(handle)
    try:
        contiguous = {key: value.detach().contiguous() for key, value in tensors.items()}
        save_file(contiguous, temp_name, metadata={"format": "pt"})
        os.replace(temp_name, out)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_config_folder(pipeline: DiffusionPipeline, folder: Path) -> Path:
    """model_index.json plus every component's config or tokenizer files; no weights."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    pipeline.save_config(folder)
    for name, component in pipeline.components.items():
        if component is None:
            continue
        target = folder / name
        if hasattr(component, "save_pretrained") and not isinstance(component, torch.nn.Module):
            component.save_pretrained(target)  # tokenizers
        elif hasattr(component, "save_config"):
            component.save_config(target)  # diffusers models and schedulers
        elif hasattr(component, "config") and hasattr(component.config, "save_pretrained"):
            component.config.save_pretrained(target)  # transformers models
        else:
            raise TypeError(f"cannot write the config of component {name!r} ({type(component).__name__})")
    return folder


def write_single_file(pipeline: DiffusionPipeline, out: Path, with_config: bool = True) -> Path:
    """Write ``out`` (LDM keys) and, unless ``with_config`` is False, the ``<stem>.config/`` sidecar."""
    out = Path(out)
    if out.suffix.lower() != ".safetensors":
        raise ValueError(f"single-file checkpoints are written as .safetensors, got {out}")
    tensors = pipeline_to_ldm(pipeline)
    save_safetensors_atomic(tensors, out)
    if with_config:
        write_config_folder(pipeline, sidecar_config_dir(out))
    logger.info("single-file checkpoint written path=%s tensors=%d sidecar=%s", out, len(tensors), with_config)
    return out

"""The ``/sdapi/v1`` listings with A1111's item shapes, built from Easel's registries.

LoRA, embeddings and VAE come from ``application.networks``; styles from styles.csv; upscalers, Real-ESRGAN
models and face restorers from the postprocessor's folders; latent upscale modes from hires fix's table.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from modules.api.models import (
    EmbeddingItem,
    EmbeddingsResponse,
    FaceRestorerItem,
    LatentUpscaleModeItem,
    LoraItem,
    PromptStyleItem,
    RealesrganItem,
    UpscalerItem,
    VaeItem,
)
from modules.application import Application
from modules.networks.embeddings import Embedding, EmbeddingError, read_embedding
from modules.networks.registry import NetworkEntry, read_safetensors_metadata
from modules.networks.service import Networks
from modules.postprocess.downloads import KNOWN_FACE_RESTORERS, KNOWN_UPSCALERS
from modules.postprocess.latent_upscale import LATENT_UPSCALE_MODES
from modules.postprocess.service import FACE_RESTORERS
from modules.postprocess.upscalers import UpscalerInfo
from modules.prompts.styles import StyleDatabase

logger = logging.getLogger(__name__)

REALESRGAN_FOLDER = "RealESRGAN"
BUILTIN_SCALE = 4.0  # A1111's UpscalerData default for the resamplers


def require_networks(application: Application) -> Networks:
    if application.networks is None:
        raise RuntimeError("the application has no extra networks service")
    return application.networks


# --- LoRA, embeddings, VAE ---------------------------------------------------------------------------------------


def decoded_metadata(path: Path) -> dict[str, Any]:
    """A safetensors ``__metadata__``, JSON-looking values decoded (as A1111 reads ``ss_tag_frequency``)."""
    if path.suffix.lower() != ".safetensors":
        return {}
    metadata: dict[str, Any] = {}
    for key, value in read_safetensors_metadata(path).items():
        if value.startswith(("{", "[")):
            try:
                metadata[key] = json.loads(value)
                continue
            except ValueError:
                pass
        metadata[key] = value
    return metadata


def lora_item(networks: Networks, entry: NetworkEntry) -> LoraItem:
    alias = networks.registry.metadata(entry).alias or entry.name
    return LoraItem(name=entry.name, alias=alias, path=str(entry.path), metadata=decoded_metadata(entry.path))


def loras(application: Application) -> list[LoraItem]:
    networks = require_networks(application)
    return [lora_item(networks, entry) for entry in networks.registry.entries("lora")]


def vaes(application: Application) -> list[VaeItem]:
    """A1111 lists VAE files by file name (the ``sd_vae`` value) with their full path."""
    entries = require_networks(application).registry.entries("vae")
    return [VaeItem(model_name=entry.file_name, filename=str(entry.path)) for entry in entries]


def embedding_item(embedding: Embedding | None) -> EmbeddingItem:
    if embedding is None:  # unreadable file: nothing is known of its vectors
        return EmbeddingItem(shape=0, vectors=0)
    return EmbeddingItem(shape=sum(embedding.dims), vectors=embedding.vector_count)


def read_or_none(path: Path) -> Embedding | None:
    try:
        return read_embedding(path)
    except (EmbeddingError, ValueError, OSError):
        return None


def embeddings(application: Application) -> EmbeddingsResponse:
    """Loaded and skipped embeddings for the loaded model (empty when no model is loaded, as nothing was checked).

    Runs as a queue task: checking an embedding registers it with the model's text encoder, which must not
    happen while a job uses the model."""
    networks = require_networks(application)
    model = application.models.current
    if model is None:
        return EmbeddingsResponse()
    loaded, skipped = application.service.run_task(lambda: networks.embeddings_status(model), kind="embeddings")
    paths = {entry.name: entry.path for entry in networks.registry.entries("embedding")}
    return EmbeddingsResponse(
        loaded={name: embedding_item(embedding) for name, embedding in loaded.items()},
        skipped={name: embedding_item(read_or_none(paths[name]) if name in paths else None) for name in skipped},
    )


# --- styles, upscalers, face restorers ----------------------------------------------------------------------------


def prompt_styles(application: Application) -> list[PromptStyleItem]:
    database = StyleDatabase.load(application.paths.styles_file)
    items = []
    for name in database.names():
        style = database.get(name)
        items.append(PromptStyleItem(name=style.name, prompt=style.prompt, negative_prompt=style.negative_prompt))
    return items


def upscaler_folder(info: UpscalerInfo) -> str | None:
    """The models/ folder an upscaler belongs to (ESRGAN, RealESRGAN, ...); None for the built-ins."""
    if info.path is not None:
        return info.path.parent.name
    known = next((model for model in KNOWN_UPSCALERS if model.name == info.name), None)
    return known.folder if known is not None else None


def upscaler_location(info: UpscalerInfo) -> str | None:
    """The file, or for a known model not downloaded yet its URL (A1111's ``data_path``)."""
    if info.path is not None:
        return str(info.path)
    known = next((model for model in KNOWN_UPSCALERS if model.name == info.name), None)
    return known.url if known is not None else None


def upscalers(application: Application) -> list[UpscalerItem]:
    items = []
    for info in application.postprocessor.upscalers.upscalers():
        builtin = info.kind == "builtin"
        items.append(
            UpscalerItem(
                name=info.name,
                model_name=None if builtin else upscaler_folder(info),
                model_path=None if builtin else upscaler_location(info),
                model_url=None,
                scale=BUILTIN_SCALE if builtin else info.scale,
            )
        )
    return items


def realesrgan_models(application: Application) -> list[RealesrganItem]:
    return [
        RealesrganItem(name=info.name, path=upscaler_location(info), scale=info.scale)
        for info in application.postprocessor.upscalers.upscalers()
        if info.kind != "builtin" and upscaler_folder(info) == REALESRGAN_FOLDER
    ]


def face_restorers(application: Application) -> list[FaceRestorerItem]:
    """CodeFormer and GFPGAN with the folder their weights live in (A1111's ``cmd_dir``)."""
    models_dir = application.postprocessor.models_dir
    folders = {model.name: model.folder for model in KNOWN_FACE_RESTORERS}
    return [FaceRestorerItem(name=name, cmd_dir=str(models_dir / folders[name])) for name in FACE_RESTORERS]


def latent_upscale_modes() -> list[LatentUpscaleModeItem]:
    return [LatentUpscaleModeItem(name=name) for name in LATENT_UPSCALE_MODES]

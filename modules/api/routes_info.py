"""The ``/sdapi/v1`` listing, refresh and model routes, and the extras (upscale) routes.

Features Easel has not built yet (VAE choice, LoRA, embeddings, styles, face restore in generation,
hires fix, scripts, extensions) answer with A1111's shapes and the truthful content: empty lists.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
from typing import Any

import psutil
import torch
from fastapi import APIRouter, Depends
from PIL import Image

from modules.api.auth import BasicAuth
from modules.api.errors import BadInputError
from modules.api.images import ImageLimits, decode_image, encode_png
from modules.api.models import (
    CheckpointItem,
    EmbeddingsResponse,
    ExtensionItem,
    ExtrasBatchImagesBody,
    ExtrasBatchImagesResponse,
    ExtrasBody,
    ExtrasSingleImageBody,
    ExtrasSingleImageResponse,
    FaceRestorerItem,
    LatentUpscaleModeItem,
    PromptStyleItem,
    RealesrganItem,
    SamplerItem,
    SchedulerItem,
    ScriptsList,
    UpscalerItem,
    VaeItem,
)
from modules.application import Application
from modules.models.registry import CheckpointInfo
from modules.samplers import SAMPLERS, SCHEDULE_ALIASES, SCHEDULE_TYPES

logger = logging.getLogger(__name__)

SECRET_FLAGS = frozenset({"api_auth", "gradio_auth"})
# The upscalers that need no model file (A1111 always lists these); PIL does the work.
BUILTIN_UPSCALERS = {"None": None, "Lanczos": Image.Resampling.LANCZOS, "Nearest": Image.Resampling.NEAREST}
MAX_UPSCALE_SIDE = 8192


def command_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The flags as A1111 lists them, with logins hidden."""
    flags: dict[str, Any] = {}
    for key, value in vars(args).items():
        if key in SECRET_FLAGS and value:
            flags[key] = "<hidden>"
        elif isinstance(value, Path):
            flags[key] = str(value)
        elif isinstance(value, list | tuple):
            flags[key] = [str(item) if isinstance(item, Path) else item for item in value]
        else:
            flags[key] = value
    return flags


def checkpoint_item(info: CheckpointInfo) -> CheckpointItem:
    return CheckpointItem(
        title=info.title,
        model_name=info.name.replace("/", "_"),
        hash=info.short_hash,
        sha256=info.sha256,
        filename=str(info.path),
        config=None,
    )


def schedulers() -> list[SchedulerItem]:
    aliases: dict[str, list[str]] = {}
    for alias, label in SCHEDULE_ALIASES.items():
        aliases.setdefault(label, []).append(alias)
    return [
        SchedulerItem(name=label.lower().replace(" ", "_"), label=label, aliases=aliases.get(label))
        for label in SCHEDULE_TYPES
    ]


def memory() -> dict[str, Any]:
    ram = psutil.virtual_memory()
    result: dict[str, Any] = {"ram": {"free": ram.available, "used": ram.total - ram.available, "total": ram.total}}
    if not torch.cuda.is_available():
        result["cuda"] = {"error": "CUDA is not available"}
        return result
    free, total = torch.cuda.mem_get_info()
    stats = torch.cuda.memory_stats()
    result["cuda"] = {
        "system": {"free": free, "used": total - free, "total": total},
        "active": {"current": stats.get("active_bytes.all.current", 0), "peak": stats.get("active_bytes.all.peak", 0)},
        "allocated": {
            "current": stats.get("allocated_bytes.all.current", 0),
            "peak": stats.get("allocated_bytes.all.peak", 0),
        },
        "reserved": {
            "current": stats.get("reserved_bytes.all.current", 0),
            "peak": stats.get("reserved_bytes.all.peak", 0),
        },
        "inactive": {
            "current": stats.get("inactive_split_bytes.all.current", 0),
            "peak": stats.get("inactive_split_bytes.all.peak", 0),
        },
        "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)},
    }
    return result


def upscale_target(image: Image.Image, body: ExtrasBody) -> tuple[int, int]:
    if body.resize_mode == 1:
        size = (body.upscaling_resize_w, body.upscaling_resize_h)
    elif body.resize_mode == 0:
        size = (round(image.width * body.upscaling_resize), round(image.height * body.upscaling_resize))
    else:
        raise BadInputError(f"resize_mode: must be 0 (scale by) or 1 (scale to) (got {body.resize_mode})")
    if not (1 <= size[0] <= MAX_UPSCALE_SIDE and 1 <= size[1] <= MAX_UPSCALE_SIDE):
        raise BadInputError(f"upscaled size {size[0]}x{size[1]} is outside 1..{MAX_UPSCALE_SIDE} pixels per side")
    return size


def upscale(image: Image.Image, body: ExtrasBody) -> tuple[Image.Image, list[str]]:
    """A1111's extras upscale with the built-in upscalers; the features not built are reported, not faked."""
    for name in (body.upscaler_1, body.upscaler_2):
        if name not in BUILTIN_UPSCALERS:
            raise BadInputError(f"upscaler {name!r} not found; available: {', '.join(BUILTIN_UPSCALERS)}")
    notes = []
    if body.gfpgan_visibility > 0 or body.codeformer_visibility > 0:
        notes.append("face restoration in extras is not supported yet (gfpgan/codeformer_visibility ignored)")
    if body.upscaler_2 != "None" and body.extras_upscaler_2_visibility > 0:
        notes.append("a second upscaler is not supported yet (upscaler_2 ignored)")
    resample = BUILTIN_UPSCALERS[body.upscaler_1]
    if resample is None:
        return image, notes
    width, height = upscale_target(image, body)
    if body.resize_mode == 1 and body.upscaling_crop:
        scale = max(width / image.width, height / image.height)
        scaled = image.resize((round(image.width * scale), round(image.height * scale)), resample)
        left, top = (scaled.width - width) // 2, (scaled.height - height) // 2
        return scaled.crop((left, top, left + width, top + height)), notes
    return image.resize((width, height), resample), notes


def extras_single(body: ExtrasSingleImageBody, limits: ImageLimits) -> ExtrasSingleImageResponse:
    image = decode_image(body.image, limits, "image")
    result, notes = upscale(image.convert("RGB"), body)
    return ExtrasSingleImageResponse(html_info="<br>".join(notes), image=encode_png(result))


def extras_batch(body: ExtrasBatchImagesBody, limits: ImageLimits) -> ExtrasBatchImagesResponse:
    images, all_notes = [], []
    for index, item in enumerate(body.imageList):
        result, notes = upscale(decode_image(item.data, limits, f"imageList[{index}]").convert("RGB"), body)
        images.append(encode_png(result))
        all_notes.extend(note for note in notes if note not in all_notes)
    return ExtrasBatchImagesResponse(html_info="<br>".join(all_notes), images=images)


def info_router(application: Application, auth: BasicAuth, limits: ImageLimits) -> APIRouter:
    router = APIRouter(prefix="/sdapi/v1", tags=["sdapi"], dependencies=[Depends(auth)])
    service, manager, registry = application.service, application.model_manager, application.registry

    @router.get("/cmd-flags")
    def cmd_flags() -> dict[str, Any]:
        return command_flags(application.args)

    @router.get("/samplers", response_model=list[SamplerItem])
    def samplers() -> list[SamplerItem]:
        return [SamplerItem(name=spec.name, aliases=list(spec.aliases), options={}) for spec in SAMPLERS]

    @router.get("/schedulers", response_model=list[SchedulerItem])
    def get_schedulers() -> list[SchedulerItem]:
        return schedulers()

    @router.get("/upscalers", response_model=list[UpscalerItem])
    def upscalers() -> list[UpscalerItem]:
        return [UpscalerItem(name=name, scale=4 if name == "None" else 2) for name in BUILTIN_UPSCALERS]

    @router.get("/sd-models", response_model=list[CheckpointItem])
    def sd_models() -> list[CheckpointItem]:
        return [checkpoint_item(info) for info in registry.checkpoints()]

    empty_lists: dict[str, type] = {
        "/latent-upscale-modes": LatentUpscaleModeItem,
        "/sd-vae": VaeItem,
        "/hypernetworks": dict,
        "/face-restorers": FaceRestorerItem,
        "/realesrgan-models": RealesrganItem,
        "/prompt-styles": PromptStyleItem,
        "/loras": dict,
        "/script-info": dict,
        "/extensions": ExtensionItem,
    }
    for path, item in empty_lists.items():
        router.add_api_route(path, lambda: [], methods=["GET"], response_model=list[item], name=path.strip("/"))

    @router.get("/embeddings", response_model=EmbeddingsResponse)
    def embeddings() -> EmbeddingsResponse:
        return EmbeddingsResponse()

    @router.get("/scripts", response_model=ScriptsList)
    def scripts() -> ScriptsList:
        return ScriptsList()

    @router.get("/memory")
    def get_memory() -> dict[str, Any]:
        return memory()

    @router.post("/refresh-checkpoints")
    def refresh_checkpoints() -> None:
        registry.refresh()

    for path in ("/refresh-loras", "/refresh-embeddings", "/refresh-vae"):
        router.add_api_route(path, lambda: None, methods=["POST"], name=path.strip("/"))

    @router.post("/unload-checkpoint")
    async def unload_checkpoint() -> None:
        await asyncio.wrap_future(service.submit_task(manager.unload, kind="unload-checkpoint").future)

    @router.post("/reload-checkpoint")
    async def reload_checkpoint() -> None:
        wanted = manager.current.info if manager.current is not None else application.initial_checkpoint()
        if wanted is None:
            raise BadInputError("no checkpoint to load: put one into models/Stable-diffusion")
        await asyncio.wrap_future(service.submit_task(lambda: manager.load(wanted), kind="load-checkpoint").future)

    @router.post("/extra-single-image", response_model=ExtrasSingleImageResponse)
    def extra_single_image(body: ExtrasSingleImageBody) -> ExtrasSingleImageResponse:
        return extras_single(body, limits)

    @router.post("/extra-batch-images", response_model=ExtrasBatchImagesResponse)
    def extra_batch_images(body: ExtrasBatchImagesBody) -> ExtrasBatchImagesResponse:
        return extras_batch(body, limits)

    return router

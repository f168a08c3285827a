"""The ``/sdapi/v1`` listing, refresh and model routes, and the extras (upscale, face restore) routes.

Lists come from Easel's registries (modules/api/lists.py). Features Easel has not built yet (hypernetworks,
scripts, extensions) answer with A1111's shapes and the truthful content: empty lists.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends

from modules.api import lists
from modules.api.auth import BasicAuth
from modules.api.errors import BadInputError
from modules.api.extras import ExtrasRoutes
from modules.api.images import ImageLimits
from modules.api.models import (
    CheckpointItem,
    EmbeddingsResponse,
    ExtensionItem,
    ExtrasBatchImagesBody,
    ExtrasBatchImagesResponse,
    ExtrasSingleImageBody,
    ExtrasSingleImageResponse,
    FaceRestorerItem,
    LatentUpscaleModeItem,
    LoraItem,
    PromptStyleItem,
    RealesrganItem,
    SamplerItem,
    SchedulerItem,
    ScriptInfo,
    ScriptsList,
    UpscalerItem,
    VaeItem,
)
from modules.api.scripts import script_info, script_names
from modules.application import Application
from modules.models.inventory import checkpoint_family
from modules.models.registry import CheckpointInfo
from modules.samplers import SCHEDULE_ALIASES, SCHEDULE_TYPES, find_sampler, sampler_names
from modules.system_info import memory_figures

logger = logging.getLogger(__name__)

SECRET_FLAGS = frozenset({"api_auth", "gradio_auth", "gradio_auth_path", "admin_user"})
ImageLimitsSource = Callable[[], ImageLimits]  # the limits for this request (they follow the settings)


def command_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The flags as A1111 lists them, with logins (and the admin's name, and the logins file) hidden."""
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
    model_family = checkpoint_family(info)
    return CheckpointItem(
        family=model_family.key if model_family else None,
        family_name=model_family.display_name if model_family else None,
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
    return memory_figures()


def info_router(application: Application, auth: BasicAuth, limits: ImageLimitsSource) -> APIRouter:
    router = APIRouter(prefix="/sdapi/v1", tags=["sdapi"], dependencies=[Depends(auth)])
    service, models, registry = application.service, application.models, application.registry
    add_list_routes(router, application)
    add_refresh_routes(router, application)

    @router.get("/cmd-flags")
    def cmd_flags() -> dict[str, Any]:
        return command_flags(application.args)

    @router.get("/samplers", response_model=list[SamplerItem])
    def samplers() -> list[SamplerItem]:
        support = application.active_backend().sampler_support()
        infos = [find_sampler(name) for name in sampler_names(support)]
        return [SamplerItem(name=info.name, aliases=list(info.aliases), options={}) for info in infos]

    @router.get("/schedulers", response_model=list[SchedulerItem])
    def get_schedulers() -> list[SchedulerItem]:
        return schedulers()

    @router.get("/sd-models", response_model=list[CheckpointItem])
    def sd_models() -> list[CheckpointItem]:
        return [checkpoint_item(info) for info in registry.checkpoints()]

    @router.get("/memory")
    def get_memory() -> dict[str, Any]:
        figures = memory()
        if application.workers is not None:  # Easel: each Ray worker (node, device, loaded checkpoint, memory)
            figures["workers"] = [dataclasses.asdict(info) for info in application.workers()]
        return figures

    @router.post("/unload-checkpoint")
    async def unload_checkpoint() -> None:
        await asyncio.wrap_future(service.submit_task(models.unload, kind="unload-checkpoint").future)

    @router.post("/reload-checkpoint")
    async def reload_checkpoint() -> None:
        if models.current is not None:
            await asyncio.wrap_future(service.submit_task(models.reload, kind="reload-checkpoint").future)
            return
        wanted = application.initial_checkpoint()
        if wanted is None:
            raise BadInputError("no checkpoint to load: put one into models/Stable-diffusion")
        job = service.submit_task(lambda: models.ensure_loaded(wanted), kind="load-checkpoint")
        await asyncio.wrap_future(job.future)

    extras = ExtrasRoutes(application)

    @router.post("/extra-single-image", response_model=ExtrasSingleImageResponse)
    def extra_single_image(body: ExtrasSingleImageBody) -> ExtrasSingleImageResponse:
        return extras.single(body, limits())

    @router.post("/extra-batch-images", response_model=ExtrasBatchImagesResponse)
    def extra_batch_images(body: ExtrasBatchImagesBody) -> ExtrasBatchImagesResponse:
        return extras.batch(body, limits())

    return router


def add_list_routes(router: APIRouter, application: Application) -> None:
    """The GET listings: real content from the registries; empty lists for what Easel does not have."""

    @router.get("/upscalers", response_model=list[UpscalerItem])
    def upscalers() -> list[UpscalerItem]:
        return lists.upscalers(application)

    @router.get("/realesrgan-models", response_model=list[RealesrganItem])
    def realesrgan_models() -> list[RealesrganItem]:
        return lists.realesrgan_models(application)

    @router.get("/latent-upscale-modes", response_model=list[LatentUpscaleModeItem])
    def latent_upscale_modes() -> list[LatentUpscaleModeItem]:
        return lists.latent_upscale_modes()

    @router.get("/face-restorers", response_model=list[FaceRestorerItem])
    def face_restorers() -> list[FaceRestorerItem]:
        return lists.face_restorers(application)

    @router.get("/prompt-styles", response_model=list[PromptStyleItem])
    def prompt_styles() -> list[PromptStyleItem]:
        return lists.prompt_styles(application)

    @router.get("/loras", response_model=list[LoraItem])
    def loras() -> list[LoraItem]:
        return lists.loras(application)

    @router.get("/sd-vae", response_model=list[VaeItem])
    def sd_vae() -> list[VaeItem]:
        return lists.vaes(application)

    @router.get("/embeddings", response_model=EmbeddingsResponse)
    def embeddings() -> EmbeddingsResponse:
        return lists.embeddings(application)

    @router.get("/scripts", response_model=ScriptsList)
    def scripts() -> ScriptsList:
        return ScriptsList(**script_names(application.scripts))

    @router.get("/script-info", response_model=list[ScriptInfo])
    def get_script_info() -> list[dict[str, Any]]:
        return script_info(application.scripts)

    @router.get("/extensions", response_model=list[ExtensionItem])
    def extensions() -> list[ExtensionItem]:
        """A1111: only git clones with a remote are listed (built-in ones and plain folders are left out)."""
        return [
            ExtensionItem(
                name=extension.name,
                remote=extension.git.remote,
                branch=extension.git.branch,
                commit_hash=extension.git.commit_hash,
                version=extension.git.version,
                commit_date=str(extension.git.commit_date),
                enabled=extension.enabled,
            )
            for extension in application.extensions
            if extension.git.remote
        ]

    empty_lists: dict[str, type] = {"/hypernetworks": dict}
    for path, item in empty_lists.items():
        router.add_api_route(path, lambda: [], methods=["GET"], response_model=list[item], name=path.strip("/"))


def add_refresh_routes(router: APIRouter, application: Application) -> None:
    """Rescan the folders (A1111 answers null)."""

    @router.post("/refresh-checkpoints")
    def refresh_checkpoints() -> None:
        application.registry.refresh()

    @router.post("/refresh-loras")
    def refresh_loras() -> None:
        lists.require_networks(application).registry.refresh(["lora"])

    @router.post("/refresh-embeddings")
    def refresh_embeddings() -> None:
        lists.require_networks(application).registry.refresh(["embedding"])

    @router.post("/refresh-vae")
    def refresh_vae() -> None:
        lists.require_networks(application).registry.refresh(["vae"])

    @router.post("/refresh-upscalers")
    def refresh_upscalers() -> None:
        application.postprocessor.upscalers.refresh()

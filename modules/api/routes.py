"""The ``/sdapi/v1`` generation, progress, control and options routes, and ``/internal`` progress.

Every generation goes through ``application.service`` (the queue the UI uses too), owned by the caller.
"""

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from modules import system_info
from modules.api import progress as progress_module
from modules.api.auth import BasicAuth, Caller
from modules.api.errors import ApiError
from modules.api.images import ImageLimits, decode_image, limits_with_options
from modules.api.models import (
    GenerationBody,
    GenerationResponse,
    Img2ImgBody,
    InternalProgressBody,
    InternalProgressResponse,
    PendingTasksResponse,
    PngInfoBody,
    PngInfoResponse,
    ProgressResponse,
    Txt2ImgBody,
)
from modules.api.queue import Disconnected, wait_for_job
from modules.api.results import build_response
from modules.api.scripts import bind_scripts
from modules.api.translate import Translation, TranslationContext, translate_img2img, translate_txt2img
from modules.application import Application
from modules.processing.infotext import parse_infotext, read_infotext
from modules.settings_policy import SettingsRefusedError, settings_policy
from modules.system_info import BenchmarkHistory

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApiConfig:
    """API policy built from the flags: logins, admin, image limits."""

    logins: tuple[tuple[str, str], ...] = ()
    admin_user: str | None = None
    limits: ImageLimits = field(default_factory=ImageLimits)


def png_info(
    image_text: str, limits: ImageLimits, listeners: Sequence[Callable[[str, dict[str, Any]], None]] = ()
) -> PngInfoResponse:
    """A1111's /png-info: the infotext, the other text items, and the parsed parameters after the infotext-pasted
    listeners (extensions' on_infotext_pasted) had their say."""
    if not image_text.strip():
        return PngInfoResponse(info="")
    image = decode_image(image_text, limits, "image")
    text = read_infotext(image) or ""
    items = {key: value for key, value in image.info.items() if isinstance(value, str | int | float)}
    items.pop("parameters", None)
    parameters: dict[str, Any] = parse_infotext(text) if text else {}
    for listener in listeners:
        try:
            listener(text, parameters)
        except Exception:  # an extension's callback: logged, the answer goes out
            logger.exception("infotext pasted listener failed")
    return PngInfoResponse(info=text, items=items, parameters=parameters)


class GenerationRoutes:
    """txt2img, img2img, png-info, progress, interrupt, skip, options; and /internal progress."""

    def __init__(self, application: Application, config: ApiConfig, auth: BasicAuth) -> None:
        self.application = application
        self.config = config
        self.auth = auth

    def limits(self) -> ImageLimits:
        """The image limits of this request (URL fetching follows the ``api_enable_requests`` setting)."""
        return limits_with_options(self.config.limits, self.application.options)

    def translation_context(self) -> TranslationContext:
        application = self.application
        return TranslationContext(
            application.options,
            application.registry,
            self.limits(),
            application.initial_checkpoint(),
            application.active_backend().sampler_support(),
            {name: backend.sampler_support() for name, backend in application.backends.items()},
            application.extension_settings,
            application.checkpoint_family,
        )

    async def run_generation(
        self, body: GenerationBody, translation: Translation, caller: Caller, disconnected: Disconnected | None = None
    ) -> GenerationResponse:
        service = self.application.service
        job_id = body.force_task_id or None
        existing = service.job(job_id) if job_id else None
        if existing is not None and existing.owner != caller.user:
            # another login's id: answered as any new id would be (nothing confirms it exists), never taken over
            logger.info("api force_task_id of another login not used; the job gets its own id owner=%s", caller.user)
            job_id = None
        elif existing is not None and not existing.done:
            raise ApiError(f"force_task_id {job_id!r} is already queued or running", status_code=409)
        moment = datetime.now()
        tab = self.application.scripts.tab(isinstance(body, Img2ImgBody))
        limits = self.limits()
        scripts = bind_scripts(body, tab, lambda text, name: decode_image(text, limits, f"alwayson_scripts.{name}"))
        job = service.submit(translation.request, owner=caller.user, job_id=job_id, scripts=scripts)
        logger.info("api job submitted id=%s owner=%s", job.id, caller.user or "-")
        result = await wait_for_job(service, job, disconnected)  # a client gone before its job starts cancels it
        return_grid = self.application.options.return_grid
        return await run_in_threadpool(build_response, body, translation, result, moment, return_grid)

    async def txt2img(
        self, body: Txt2ImgBody, caller: Caller, disconnected: Disconnected | None = None
    ) -> GenerationResponse:
        translation = await run_in_threadpool(translate_txt2img, body, self.translation_context())
        return await self.run_generation(body, translation, caller, disconnected)

    async def img2img(
        self, body: Img2ImgBody, caller: Caller, disconnected: Disconnected | None = None
    ) -> GenerationResponse:
        translation = await run_in_threadpool(translate_img2img, body, self.translation_context())
        return await self.run_generation(body, translation, caller, disconnected)

    def set_options(self, changes: dict[str, Any], caller: Caller) -> None:
        """POST options: known keys are checked (who and what, settings_policy), validated and saved; a checkpoint
        change loads it through the queue."""
        application = self.application
        known = {key: value for key, value in changes.items() if key in type(application.options).model_fields}
        extension = {key: value for key, value in changes.items() if key in application.extension_settings}
        ignored = sorted(set(changes) - set(known) - set(extension))
        if ignored:
            logger.info("api options ignored keys=%s", ",".join(ignored))
        try:
            settings_policy(application).check({**known, **extension}, caller.user)
            extension = application.extension_settings.converted(extension)
        except SettingsRefusedError as error:
            raise ApiError(str(error), status_code=error.status_code) from error
        except ValueError as error:
            raise ApiError(f"settings not changed: {error}", status_code=422) from error
        checkpoint = known.get("sd_model_checkpoint")
        if checkpoint and application.workers is not None:  # Ray workers load it with the jobs that need it
            known["sd_model_checkpoint"] = application.registry.find(str(checkpoint)).title
        elif checkpoint:
            info = application.registry.find(str(checkpoint))
            models = application.models
            loaded = application.service.run_task(lambda: models.load(info.title), kind="load-checkpoint")
            known["sd_model_checkpoint"] = loaded.info.title if loaded.info.sha256 else info.title
        application.update_options(**known)
        if extension:
            application.extension_settings.update(extension)

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/sdapi/v1", tags=["sdapi"], dependencies=[Depends(self.auth)])
        CallerDep = Annotated[Caller, Depends(self.auth)]
        service = self.application.service

        @router.post("/txt2img", response_model=GenerationResponse)
        async def txt2img(body: Txt2ImgBody, caller: CallerDep, request: Request) -> GenerationResponse:
            return await self.txt2img(body, caller, request.is_disconnected)

        @router.post("/img2img", response_model=GenerationResponse)
        async def img2img(body: Img2ImgBody, caller: CallerDep, request: Request) -> GenerationResponse:
            return await self.img2img(body, caller, request.is_disconnected)

        @router.post("/png-info", response_model=PngInfoResponse)
        def post_png_info(body: PngInfoBody) -> PngInfoResponse:
            return png_info(body.image, self.limits(), self.application.infotext_pasted)

        @router.get("/progress", response_model=ProgressResponse)
        def get_progress(caller: CallerDep, skip_current_image: Annotated[bool, Query()] = False) -> ProgressResponse:
            return progress_module.progress_of(service, caller, include_image=not skip_current_image)

        @router.post("/interrupt")
        def interrupt(caller: CallerDep) -> dict:
            service.interrupt(caller.user, admin=caller.admin)
            return {}

        @router.post("/skip")
        def skip(caller: CallerDep) -> dict:
            service.skip(caller.user, admin=caller.admin)
            return {}

        @router.get("/options")
        def get_options() -> dict[str, Any]:
            # A1111 answers opts.data: its own settings and those extensions added
            return {**self.application.extension_settings.data(), **self.application.options.model_dump()}

        @router.post("/options")
        def post_options(changes: dict[str, Any], caller: CallerDep) -> None:
            self.set_options(changes, caller)

        return router

    def internal_router(self, auth: BasicAuth) -> APIRouter:
        router = APIRouter(prefix="/internal", tags=["internal"], dependencies=[Depends(auth)])
        service = self.application.service
        CallerDep = Annotated[Caller, Depends(auth)]

        @router.post("/progress", response_model=InternalProgressResponse)
        def post_progress(body: InternalProgressBody, caller: CallerDep) -> InternalProgressResponse:
            return progress_module.internal_progress(
                service, caller, body.id_task, body.id_live_preview, body.live_preview
            )

        @router.get("/sysinfo")
        def sysinfo() -> dict[str, Any]:
            """Versions, device, memory, flags, loaded models, compute settings and past benchmarks."""
            history = BenchmarkHistory(self.application.paths.data_dir / "benchmarks.json").rows()
            return system_info.collect(service.context.models, self.application.args, history)

        @router.get("/pending-tasks", response_model=PendingTasksResponse)
        def pending_tasks(caller: CallerDep) -> PendingTasksResponse:
            visible = [job.id for job in service.pending() if progress_module.may_see(job, caller)]
            return PendingTasksResponse(size=len(visible), tasks=visible)

        return router

"""One FastAPI app for everything: the API (``/sdapi/v1``, ``/internal``), the Gradio UI, CORS, limits, TLS.

The UI is mounted by a callback from ``modules.ui`` (this module never imports gradio); uvicorn serves it.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import uvicorn
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from modules.api.auth import BasicAuth
from modules.api.controlnet import controlnet_router
from modules.api.errors import InternalErrorResponse, install_error_handlers
from modules.api.images import ImageLimits
from modules.api.limits import ApiLog, BodySizeLimit
from modules.api.queue import install_queue_errors, queue_router
from modules.api.routes import ApiConfig, GenerationRoutes
from modules.api.routes_info import info_router
from modules.application import Application

logger = logging.getLogger(__name__)

UI_PORT = 7860
API_ONLY_PORT = 7861
MEGABYTE = 1024 * 1024
Logins = tuple[tuple[str, str], ...]


class MountUi(Protocol):
    """Adds the UI to the app at ``path`` (given by modules.ui.app, which owns gradio), with the exposure
    warnings to show and the upload size limit."""

    def __call__(
        self, app: FastAPI, path: str, *, warnings: Sequence[str] = (), max_file_size: int | None = None
    ) -> None: ...


class ServerConfigError(ValueError):
    """Inconsistent serving flags (e.g. a TLS key without its certificate)."""


@dataclass(frozen=True)
class ServerOptions:
    """How to serve: address, what to serve, who may use it, and the limits."""

    host: str = "127.0.0.1"
    port: int = UI_PORT
    subpath: str = ""
    api: bool = True
    ui: bool = False
    gradio_logins: Logins = ()
    api_logins: Logins = ()
    admin_user: str | None = None
    cors_origins: tuple[str, ...] = ()
    cors_origin_regex: str | None = None
    tls_keyfile: Path | None = None
    tls_certfile: Path | None = None
    api_log: bool = False
    max_body_bytes: int | None = None  # None: the api_max_body_mb setting, read per request
    image_limits: ImageLimits = field(default_factory=ImageLimits)

    @property
    def scheme(self) -> str:
        return "https" if self.tls_certfile else "http"


def normalize_subpath(subpath: str | None) -> str:
    """ "easel", "/easel/" -> "/easel"; "" or "/" -> ""."""
    cleaned = (subpath or "").strip().strip("/")
    return f"/{cleaned}" if cleaned else ""


def server_options_from_args(
    args: argparse.Namespace, gradio_logins: Logins, api_logins: Logins, image_limits: ImageLimits | None = None
) -> ServerOptions:
    if bool(args.tls_keyfile) != bool(args.tls_certfile):
        raise ServerConfigError("--tls-keyfile and --tls-certfile go together: give both or neither")
    for path in (args.tls_keyfile, args.tls_certfile):
        if path is not None and not Path(path).is_file():
            raise ServerConfigError(f"TLS file not found: {path}")
    origins = tuple(item.strip() for item in (args.cors_allow_origins or "").split(",") if item.strip())
    return ServerOptions(
        host=args.server_name or ("0.0.0.0" if args.listen else "127.0.0.1"),
        port=args.port or (API_ONLY_PORT if args.nowebui else UI_PORT),
        subpath=normalize_subpath(args.subpath),
        api=args.api or args.nowebui,
        ui=not args.nowebui,
        gradio_logins=gradio_logins,
        api_logins=api_logins,
        admin_user=args.admin_user,
        cors_origins=origins,
        cors_origin_regex=args.cors_allow_origins_regex,
        tls_keyfile=args.tls_keyfile,
        tls_certfile=args.tls_certfile,
        api_log=args.api_log,
        image_limits=image_limits or ImageLimits(),
    )


def exposure_warnings(options: ServerOptions) -> list[str]:
    """Warnings for serving beyond this machine without logins (not logged; the UI shows them)."""
    if options.host in ("127.0.0.1", "localhost", "::1"):
        return []
    warnings = []
    if options.ui and not options.gradio_logins:
        warnings.append("serving the UI on the network without --gradio-auth: anyone on your LAN can use it")
    if options.api and not options.api_logins:
        warnings.append("serving the API on the network without --api-auth: anyone on your LAN can use it")
    return warnings


def warn_about_exposure(options: ServerOptions) -> list[str]:
    """Warnings for serving beyond this machine without logins; logged, and returned for the UI."""
    warnings = exposure_warnings(options)
    for warning in warnings:
        logger.warning("%s host=%s", warning, options.host)
    return warnings


def body_limit(application: Application, options: ServerOptions) -> Callable[[], int]:
    """The request body limit in bytes: the flag-given one, else the ``api_max_body_mb`` setting (live)."""
    if options.max_body_bytes is not None:
        fixed = options.max_body_bytes
        return lambda: fixed
    return lambda: application.options.api_max_body_mb * MEGABYTE


def create_app(application: Application, options: ServerOptions, mount_ui: MountUi | None = None) -> FastAPI:
    """The app: API routers (under the subpath), the UI at the subpath, error handlers and middleware."""
    prefix = options.subpath
    logins = options.api_logins + options.gradio_logins
    app = FastAPI(
        title="Easel",
        description="AUTOMATIC1111-compatible API",
        docs_url=None if logins else f"{prefix}/docs",
        redoc_url=None if logins else f"{prefix}/redoc",
        openapi_url=None if logins else f"{prefix}/openapi.json",
    )
    install_error_handlers(app)
    if logins:
        add_docs_routes(app, prefix, BasicAuth(logins=logins, admin_user=options.admin_user))
    api_auth = BasicAuth(logins=options.api_logins, admin_user=options.admin_user)
    config = ApiConfig(logins=options.api_logins, admin_user=options.admin_user, limits=options.image_limits)
    generation = GenerationRoutes(application, config, api_auth)
    if options.api:
        app.include_router(generation.router(), prefix=prefix)
        app.include_router(info_router(application, api_auth, generation.limits), prefix=prefix)
        app.include_router(controlnet_router(application, api_auth, generation.limits), prefix=prefix)
    internal_auth = BasicAuth(logins=options.api_logins + options.gradio_logins, admin_user=options.admin_user)
    app.include_router(generation.internal_router(internal_auth), prefix=prefix)
    app.include_router(queue_router(application.service, internal_auth), prefix=prefix)
    install_queue_errors(app)
    limit = body_limit(application, options)
    if mount_ui is not None and options.ui:
        mount_ui(app, prefix or "/", warnings=exposure_warnings(options), max_file_size=limit())
    add_middleware(app, options, limit)
    return app


def add_docs_routes(app: FastAPI, prefix: str, auth: BasicAuth) -> None:
    """``/openapi.json``, ``/docs`` and ``/redoc`` behind the logins (FastAPI serves its own ones to anyone)."""
    guarded = [Depends(auth)]
    openapi_url = f"{prefix}/openapi.json"

    @app.get(openapi_url, include_in_schema=False, dependencies=guarded)
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get(f"{prefix}/docs", include_in_schema=False, dependencies=guarded)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=openapi_url, title=f"{app.title} - Swagger UI")

    @app.get(f"{prefix}/redoc", include_in_schema=False, dependencies=guarded)
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=openapi_url, title=f"{app.title} - ReDoc")


def add_middleware(app: FastAPI, options: ServerOptions, limit: Callable[[], int]) -> None:
    app.add_middleware(InternalErrorResponse)  # innermost: a 500 keeps the keep-alive connection
    # every route, the UI's included (Gradio reads whole bodies into memory, logged in or not)
    app.add_middleware(BodySizeLimit, max_bytes=limit, prefixes=(options.subpath or "/",))
    prefixes = (f"{options.subpath}/sdapi/", f"{options.subpath}/internal/")
    if options.api_log:
        app.add_middleware(ApiLog, prefixes=prefixes)
    if options.cors_origins or options.cors_origin_regex:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(options.cors_origins),
            allow_origin_regex=options.cors_origin_regex,
            allow_methods=["*"],
            allow_headers=["*"],
            allow_credentials=True,
        )


def uvicorn_config(app: FastAPI, options: ServerOptions) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        ssl_keyfile=str(options.tls_keyfile) if options.tls_keyfile else None,
        ssl_certfile=str(options.tls_certfile) if options.tls_certfile else None,
        log_level="warning",
        timeout_graceful_shutdown=5,
        limit_concurrency=None,
    )


def serve(app: FastAPI, options: ServerOptions) -> None:
    """Serve until Ctrl+C (blocks)."""
    logger.info(
        "serving url=%s://%s:%d%s/ api=%s ui=%s api_auth=%s ui_auth=%s",
        options.scheme,
        options.host,
        options.port,
        options.subpath,
        options.api,
        options.ui,
        bool(options.api_logins),
        bool(options.gradio_logins),
    )
    uvicorn.Server(uvicorn_config(app, options)).run()

"""API errors and their A1111-shaped JSON bodies: ``{error, detail, body, errors}``; input faults are 4xx."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from modules.models.errors import CheckpointNotFoundError, ModelError
from modules.postprocess.face_detection import FaceModelMissingError
from modules.postprocess.model_files import ModelFileError
from modules.postprocess.retinaface import RetinaFaceWeightsError
from modules.processing.infotext import InfotextTooLongError
from modules.processing.processing import ProcessingError
from modules.processing.saving import ImageSaveError
from modules.samplers import SamplerError

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with an HTTP status and a message meant for the API client."""

    status_code = 400

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        if status_code is not None:
            self.status_code = status_code


class BadInputError(ApiError):
    """Malformed or out-of-range input (400)."""


class PayloadTooLargeError(ApiError):
    """A body or an image over the configured limits (413)."""

    status_code = 413


# Upscaler, face restoration and face detection files that are damaged or hold more than weights (refused unread)
MODEL_FILE_ERRORS = (ModelFileError, RetinaFaceWeightsError)


def validation_text(error: ValidationError | RequestValidationError) -> str:
    """ "steps: Input should be greater than or equal to 1 (got -3)", one problem per line."""
    lines = []
    for item in error.errors():
        location = [str(part) for part in item.get("loc", ()) if part != "body"]
        field = ".".join(location) or "body"
        message = str(item.get("msg", "invalid value")).removeprefix("Value error, ")
        got = item.get("input")
        suffix = f" (got {got!r})" if isinstance(got, int | float | str) and len(repr(got)) < 80 else ""
        lines.append(f"{field}: {message}{suffix}" if location else message)
    return "\n".join(lines)


def error_body(error: str, detail: Any, errors: str, body: Any = "") -> dict[str, Any]:
    return {"error": error, "detail": detail, "body": body, "errors": errors}


def status_for(error: Exception) -> int:
    """The HTTP status of an error raised while handling a request."""
    if isinstance(error, ApiError):
        return error.status_code
    if isinstance(error, CheckpointNotFoundError):
        return 404
    if isinstance(error, InfotextTooLongError):
        return 413
    if isinstance(error, FaceModelMissingError):
        return 404
    if isinstance(error, MODEL_FILE_ERRORS):
        return 400
    if isinstance(error, ImageSaveError) and error.disk_full:
        return 507
    if isinstance(error, ValidationError | SamplerError | ProcessingError | ModelError):
        return 400
    return 500


def message_for(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return validation_text(error)
    if isinstance(error, ApiError | ProcessingError | ModelError | SamplerError | ImageSaveError):
        return str(error)
    if isinstance(error, (InfotextTooLongError, FaceModelMissingError, *MODEL_FILE_ERRORS)):
        return str(error)
    return f"{type(error).__name__}: {error}"


def install_error_handlers(app: FastAPI) -> None:
    """JSON error bodies for every route of ``app`` (A1111 shape; ``detail`` keeps FastAPI's list on 422)."""

    @app.exception_handler(RequestValidationError)
    async def on_validation(_request: Request, error: RequestValidationError) -> JSONResponse:
        detail = [{key: item.get(key) for key in ("loc", "msg", "type")} for item in error.errors()]
        text = validation_text(error)
        return JSONResponse(error_body("RequestValidationError", detail, text), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        body = error_body("HTTPException", error.detail, str(error.detail))
        return JSONResponse(body, status_code=error.status_code, headers=getattr(error, "headers", None))

    async def on_error(request: Request, error: Exception) -> JSONResponse:
        status = status_for(error)
        if status >= 500:
            logger.error("api error path=%s error=%s", request.url.path, message_for(error), exc_info=error)
        message = message_for(error)
        return JSONResponse(error_body(type(error).__name__, message, message), status_code=status)

    # Known errors get their own handlers (handled inside the app); Exception is the last resort (a 500,
    # which Starlette's ServerErrorMiddleware also logs and re-raises).
    known_errors = (ApiError, ValidationError, ModelError, SamplerError, ProcessingError, ImageSaveError)
    for known in (*known_errors, InfotextTooLongError, FaceModelMissingError, *MODEL_FILE_ERRORS, Exception):
        app.add_exception_handler(known, on_error)


class InternalErrorResponse:
    """Answers an unexpected error with the JSON 500 body, as plain ASGI middleware inside Starlette's own.

    Starlette's ServerErrorMiddleware answers 500 and then re-raises, and uvicorn closes the connection on an
    exception: a keep-alive client lost its connection with every 500. Caught here, the connection stays open."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as error:
            if started:
                raise
            message = message_for(error)
            logger.error("api error path=%s error=%s", scope.get("path"), message, exc_info=error)
            response = JSONResponse(error_body(type(error).__name__, message, message), status_code=status_for(error))
            await response(scope, receive, send)

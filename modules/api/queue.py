"""The queue over HTTP: ``GET /internal/queue`` (the caller's jobs; the admin's: everyone's), ``POST
/internal/queue/cancel`` (a waiting job, by id), waiting for a job while watching the client, and the statuses of
queue refusals (429 over the per-login limit, 409 for an id in use or a cancelled job).

Cancel lives under ``/internal`` beside ``/internal/progress`` (same ``id_task`` naming, same logins: the API's and
the UI's): A1111 has no such route, and ``/sdapi/v1`` keeps only A1111's routes.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from modules.api.auth import BasicAuth, Caller
from modules.api.errors import error_body
from modules.generation import GenerationService, Job, JobCancelledError, JobIdInUseError, JobState, QueueFullError

logger = logging.getLogger(__name__)

Disconnected = Callable[[], Awaitable[bool]]
POLL_SECONDS = 0.25
QUEUE_STATUSES: dict[type[Exception], int] = {QueueFullError: 429, JobIdInUseError: 409, JobCancelledError: 409}


class CancelBody(BaseModel):
    id_task: str


class CancelResponse(BaseModel):
    cancelled: bool


class QueueItem(BaseModel):
    id: str
    owner: str
    state: str
    position: int
    prompt: str
    queued_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    result_paths: list[str] = []


class QueueResponse(BaseModel):
    items: list[QueueItem]


def queue_items(service: GenerationService, owner: str | None) -> list[QueueItem]:
    """Running and waiting jobs in start order (with their place), then the latest finished ones."""
    waiting = service.store.waiting_ids()
    places = {job_id: index + 1 for index, job_id in enumerate(waiting)}
    return [
        QueueItem(
            id=record.id,
            owner=record.owner,
            state=str(record.state),
            position=places.get(record.id, 0),
            prompt=record.prompt,
            queued_at=record.queued_at,
            started_at=record.started_at,
            finished_at=record.finished_at,
            error=record.error,
            result_paths=list(record.result_paths),
        )
        for record in service.store.list(owner)
    ]


async def wait_for_job(service: GenerationService, job: Job, disconnected: Disconnected | None) -> Any:
    """The job's result. While it waits in the queue, a client that went away cancels it; once it runs it finishes
    (the images are saved) whoever listens."""
    future = asyncio.wrap_future(job.future)
    while True:
        done, _ = await asyncio.wait({future}, timeout=POLL_SECONDS)
        if done:
            return future.result()
        if disconnected is None or job.state is not JobState.QUEUED:
            continue
        if await disconnected() and service.cancel(job.id, job.owner, reason="the client disconnected"):
            logger.info("api job cancelled id=%s reason=client-disconnected", job.id)


def install_queue_errors(app: FastAPI) -> None:
    async def on_queue_error(_request: Request, error: Exception) -> JSONResponse:
        message = str(error)
        status = next(code for kind, code in QUEUE_STATUSES.items() if isinstance(error, kind))
        return JSONResponse(error_body(type(error).__name__, message, message), status_code=status)

    for kind in QUEUE_STATUSES:
        app.add_exception_handler(kind, on_queue_error)


def queue_router(service: GenerationService, auth: BasicAuth) -> APIRouter:
    router = APIRouter(prefix="/internal/queue", tags=["internal"], dependencies=[Depends(auth)])
    CallerDep = Annotated[Caller, Depends(auth)]

    @router.get("", response_model=QueueResponse)
    def list_queue(caller: CallerDep) -> QueueResponse:
        return QueueResponse(items=queue_items(service, None if caller.admin else caller.user))

    @router.post("/cancel", response_model=CancelResponse)
    def cancel(body: CancelBody, caller: CallerDep) -> JSONResponse:
        if service.cancel(body.id_task, caller.user, admin=caller.admin, reason="cancelled by request"):
            return JSONResponse({"cancelled": True})
        # unknown, finished, running, or another login's: one answer, so nothing confirms another's job exists
        message = "no waiting job of yours has this id (a running job stops with /sdapi/v1/interrupt)"
        return JSONResponse(error_body("NotFound", message, message), status_code=404)

    return router

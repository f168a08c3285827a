"""Progress answers: ``GET /sdapi/v1/progress`` (the caller's job) and ``POST /internal/progress`` (by id)."""

from __future__ import annotations

from modules.api.auth import Caller
from modules.api.images import encode_png
from modules.api.models import InternalProgressResponse, ProgressResponse, ProgressState
from modules.generation import GenerationService, Job, JobState


def may_see(job: Job, caller: Caller) -> bool:
    return caller.admin or job.owner == caller.user


def caller_job(service: GenerationService, caller: Caller) -> Job | None:
    """The caller's running job, else their first queued one (an admin sees the running job, whoever owns it)."""
    running = service.running()  # several with Ray workers: the caller's own first
    own = next((job for job in running if job.owner == caller.user), None)
    own = own or next((job for job in running if may_see(job, caller)), None)
    if own is not None:
        return own
    return next((job for job in service.pending() if may_see(job, caller)), None)


def progress_of(service: GenerationService, caller: Caller, include_image: bool) -> ProgressResponse:
    job = caller_job(service, caller)
    if job is None:
        return ProgressResponse(progress=0.0, eta_relative=0.0, state=ProgressState(), textinfo=None)
    snapshot = job.control.snapshot()
    state = ProgressState(
        skipped=job.control.skipped,
        interrupted=job.control.interrupted,
        job=job.id,
        job_count=snapshot.job_count,
        job_timestamp=str(int(job.queued_at)),
        job_no=snapshot.job_no,
        sampling_step=snapshot.sampling_step,
        sampling_steps=snapshot.sampling_steps,
    )
    position = service.position(job)
    textinfo = f"In queue: position {position}" if position else (snapshot.textinfo or "Starting...")
    image = encode_png(snapshot.preview) if include_image and snapshot.preview is not None else None
    return ProgressResponse(
        progress=snapshot.progress if job.state is JobState.RUNNING else 0.0,
        eta_relative=snapshot.eta_seconds or 0.0,
        state=state,
        current_image=image,
        textinfo=textinfo,
        current_task=job.id,
    )


def preview_id(job: Job) -> int:
    snapshot = job.control.snapshot()
    return snapshot.job_no * 10_000 + snapshot.sampling_step


def internal_progress(
    service: GenerationService, caller: Caller, job_id: str | None, last_preview_id: int, live_preview: bool
) -> InternalProgressResponse:
    """A1111's task progress: queued / active / completed, with the queue position and a new preview only."""
    job = service.job(job_id) if job_id else None
    if job is None or not may_see(job, caller):
        return InternalProgressResponse(
            active=False, queued=False, completed=False, id_live_preview=-1, textinfo="Waiting..."
        )
    if job.done:
        return InternalProgressResponse(active=False, queued=False, completed=True, progress=1.0, id_live_preview=-1)
    queue_total = len(service.pending())
    if job.state is JobState.QUEUED:
        position = service.position(job)
        return InternalProgressResponse(
            active=False,
            queued=True,
            completed=False,
            id_live_preview=-1,
            textinfo=f"In queue: position {position} of {queue_total}",
            queue_position=position,
            queue_total=queue_total,
        )
    snapshot = job.control.snapshot()
    current_id = preview_id(job)
    preview = None
    if live_preview and snapshot.preview is not None and current_id > last_preview_id:
        preview = "data:image/png;base64," + encode_png(snapshot.preview)
    return InternalProgressResponse(
        active=True,
        queued=False,
        completed=False,
        progress=snapshot.progress,
        eta=snapshot.eta_seconds,
        live_preview=preview,
        id_live_preview=current_id if preview else last_preview_id,
        textinfo=snapshot.textinfo or "Starting...",
        queue_position=0,
        queue_total=queue_total,
    )

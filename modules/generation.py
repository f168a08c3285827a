"""The generation service: one queue for the UI and the API; jobs run one at a time in arrival order."""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from modules.models.errors import ModelError
from modules.processing.job import JobControl
from modules.processing.processing import ProcessingContext, ProcessingError, process
from modules.processing.requests import Img2ImgRequest, Txt2ImgRequest

logger = logging.getLogger(__name__)

# Errors that answer a bad request or a missing file: reported to the caller, logged without a traceback.
USER_ERRORS = (ProcessingError, ModelError, ValidationError)


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass
class Job:
    id: str
    owner: str
    kind: str
    control: JobControl
    future: Future = field(repr=False)
    state: JobState = JobState.QUEUED
    queued_at: float = field(default_factory=time.time)
    number: int = 0

    @property
    def done(self) -> bool:
        return self.future.done()


class GenerationService:
    """Validates nothing itself (requests are typed); queues, runs, and signals jobs."""

    def __init__(self, context: ProcessingContext) -> None:
        self.context = context
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="easel-job")
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._counter = itertools.count(1)

    def submit(self, request: Txt2ImgRequest | Img2ImgRequest, owner: str = "", job_id: str | None = None) -> Job:
        control = JobControl(
            preview_every_n_steps=self.context.options.show_progress_every_n_steps
            if self.context.options.live_previews_enable
            else 0,
            preview_method=self.context.options.show_progress_type,
            preview_dir=self.context.paths.vae_approx_dir,
        )
        return self._submit(lambda: process(request, self.context, control, owner), owner, "generate", control, job_id)

    def submit_task(self, function: Callable[[], Any], owner: str = "", kind: str = "task") -> Job:
        """Queue work that must not overlap generation (model switching, refresh)."""
        return self._submit(function, owner, kind, JobControl(), None)

    def run_task(self, function: Callable[[], Any], owner: str = "", kind: str = "task") -> Any:
        return self.submit_task(function, owner, kind).future.result()

    def _submit(
        self, function: Callable[[], Any], owner: str, kind: str, control: JobControl, job_id: str | None
    ) -> Job:
        job = Job(
            id=job_id or uuid.uuid4().hex,
            owner=owner,
            kind=kind,
            control=control,
            future=Future(),
            number=next(self._counter),
        )
        with self._lock:
            self._jobs[job.id] = job
        job.future = self._executor.submit(self._run, job, function)
        return job

    def _run(self, job: Job, function: Callable[[], Any]) -> Any:
        job.state = JobState.RUNNING
        job.control.started_at = time.monotonic()
        try:
            result = function()
        except USER_ERRORS as error:
            job.state = JobState.FAILED
            logger.warning("job refused id=%s kind=%s owner=%s reason=%s", job.id, job.kind, job.owner or "-", error)
            raise
        except Exception:
            job.state = JobState.FAILED
            logger.exception("job failed id=%s kind=%s owner=%s", job.id, job.kind, job.owner or "-")
            raise
        finally:
            self._forget_old()
        job.state = JobState.DONE
        return result

    def _forget_old(self, keep: int = 256) -> None:
        with self._lock:
            finished = [job for job in self._jobs.values() if job.future.done()]
            for job in finished[:-keep] if len(finished) > keep else []:
                self._jobs.pop(job.id, None)

    def job(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def current(self) -> Job | None:
        with self._lock:
            return next((job for job in self._jobs.values() if job.state is JobState.RUNNING), None)

    def pending(self) -> list[Job]:
        with self._lock:
            return sorted(
                (job for job in self._jobs.values() if job.state is JobState.QUEUED), key=lambda job: job.number
            )

    def position(self, job: Job) -> int:
        """0 when running, else how many queued jobs are ahead (1-based)."""
        if job.state is not JobState.QUEUED:
            return 0
        return 1 + sum(1 for other in self.pending() if other.number < job.number)

    def interrupt(self, owner: str = "", job_id: str | None = None, admin: bool = False) -> bool:
        return self._signal("interrupt", owner, job_id, admin)

    def skip(self, owner: str = "", job_id: str | None = None, admin: bool = False) -> bool:
        return self._signal("skip", owner, job_id, admin)

    def _signal(self, action: str, owner: str, job_id: str | None, admin: bool) -> bool:
        """Interrupt/skip act on the caller's own running job (an admin's on any), or on the job named by id."""
        with self._lock:
            if job_id is not None:
                candidates = [self._jobs[job_id]] if job_id in self._jobs else []
            else:
                candidates = [job for job in self._jobs.values() if job.state is JobState.RUNNING]
        for job in candidates:
            if job.future.done() or not (admin or job.owner == owner):
                continue
            getattr(job.control, action)()
            logger.info("job signal action=%s id=%s by=%s", action, job.id, owner or "-")
            return True
        return False

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

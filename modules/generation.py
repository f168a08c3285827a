"""The generation service: one queue for the UI and the API.

Generation jobs are rows of the SQLite queue (modules/jobs/store.py): they start in fair order between logins
(round-robin, the rule is in that module), survive a restart, and may be cancelled while they wait. Internal tasks
(model loads, saves: Python callables) stay in memory, are never persisted, and run before waiting generation jobs.
One worker thread runs one job at a time; with a ``JobRunner`` (Ray workers, modules/cluster) one thread per runner
slot takes the next job when a worker is free, and the runner runs it remotely.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from modules.jobs.codec import decode_value, encode_value
from modules.jobs.database import Database
from modules.jobs.history import ImageHistory
from modules.jobs.store import (
    FINISHED_STATES,
    JobCancelledError,
    JobIdInUseError,
    JobRecord,
    JobState,
    JobStore,
    QueueError,
    QueueFullError,
)
from modules.models.errors import ModelError
from modules.processing.job import JobControl
from modules.processing.processing import ProcessingContext, ProcessingError, ProcessingResult, process
from modules.processing.requests import GenerationRequest
from modules.scripts.runner import BoundScripts, ScriptCatalogue, ScriptNotFoundError

__all__ = [
    "GenerationService",
    "Job",
    "JobCancelledError",
    "JobIdInUseError",
    "JobState",
    "QueueError",
    "QueueFullError",
]

logger = logging.getLogger(__name__)

# Errors that answer a bad request or a missing file: reported to the caller, logged without a traceback.
USER_ERRORS = (ProcessingError, ModelError, ValidationError)
GENERATE = "generate"
FINISHED_KEPT_IN_MEMORY = 256


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
    request: GenerationRequest | None = field(default=None, repr=False)  # set when a generation starts

    @property
    def done(self) -> bool:
        return self.future.done()


class JobRunner(Protocol):
    """Runs generation jobs somewhere else (modules/cluster/pool.py): ``slots`` service threads each ``hold`` a
    free worker (None: none is alive now) before taking the next job, then ``run`` it there or ``release`` it."""

    slots: int

    def hold(self) -> object | None: ...

    def release(self, slot: object | None) -> None: ...

    def run(self, job: Job, request: GenerationRequest, slot: object | None) -> ProcessingResult: ...

    def close(self) -> None: ...


def finished_job(record: JobRecord) -> Job:
    """A job known only from its row (finished, or from before a restart): its future is already resolved."""
    future: Future = Future()
    future.set_result(None)
    return Job(record.id, record.owner, GENERATE, JobControl(), future, record.state, record.queued_at, record.number)


class GenerationService:
    """Queues, runs, and signals jobs; requests are typed and validated before they get here."""

    def __init__(
        self,
        context: ProcessingContext,
        store: JobStore | None = None,
        history: ImageHistory | None = None,
        hold: bool = False,
        runner: JobRunner | None = None,
    ) -> None:
        self.context = context
        self.runner = runner
        self.store = store or JobStore(Database())
        self.history = history
        self._jobs: dict[str, Job] = {}
        self._scripts: dict[str, BoundScripts] = {}  # each waiting job's scripts (not persisted)
        self._tasks: deque[tuple[Job, Callable[[], Any]]] = deque()
        self._running: dict[str, Job] = {}  # by id, in the order they started
        self._slots: dict[str, object | None] = {}  # the runner slot each claimed generation holds (Ray workers)
        self._stopping = False
        self._wake = threading.Condition()
        self._task_numbers = itertools.count(1)
        # The application's scripts (set once they are loaded), which restores a resumed job's scripts; while
        # ``held`` (extensions still loading) only internal tasks run.
        self.script_catalogue: ScriptCatalogue | None = None
        self.held = hold
        for job_id in self.store.recover():
            record = self.store.record(job_id)
            if record is not None:
                self._jobs[job_id] = self._new_job(record, self._control())
        if self._jobs:
            logger.info("queue resumed jobs=%d", len(self._jobs))
        slots = runner.slots if runner is not None else 1
        self._workers = [
            threading.Thread(target=self._work, name=f"easel-job-{number}", daemon=True) for number in range(slots)
        ]
        for worker in self._workers:
            worker.start()

    # --- submitting -------------------------------------------------------------------------------------------

    def _control(self) -> JobControl:
        options = self.context.options
        every = options.show_progress_every_n_steps if options.live_previews_enable else 0
        return JobControl(
            preview_every_n_steps=every,
            preview_method=options.show_progress_type,
            preview_dir=self.context.paths.vae_approx_dir,
        )

    @staticmethod
    def _new_job(record: JobRecord, control: JobControl) -> Job:
        return Job(
            record.id, record.owner, GENERATE, control, Future(), JobState.QUEUED, record.queued_at, record.number
        )

    def submit(
        self,
        request: GenerationRequest,
        owner: str = "",
        job_id: str | None = None,
        scripts: BoundScripts | None = None,
    ) -> Job:
        """Queue a generation (a row of the queue) with its scripts (the selected and always-on ones with their
        arguments: in memory, and in the row for a restart); QueueFullError over the per-login limit,
        JobIdInUseError for the id of an unfinished job."""
        limit = self.context.options.queue_max_jobs_per_user
        stored = stored_scripts(scripts)
        with self._wake:
            record = self.store.add(job_id or uuid.uuid4().hex, owner, request, limit=limit, scripts=stored)
            job = self._new_job(record, self._control())
            self._jobs[job.id] = job
            if scripts is not None:
                self._scripts[job.id] = scripts
            self._wake.notify()
        return job

    def release(self) -> None:
        """Start running queued generations (after the scripts and extensions are loaded)."""
        with self._wake:
            self.held = False
            self._wake.notify_all()

    def submit_task(self, function: Callable[[], Any], owner: str = "", kind: str = "task") -> Job:
        """Queue work that must not overlap generation (model switching, refresh): in memory, ahead of generations."""
        job = Job(uuid.uuid4().hex, owner, kind, JobControl(), Future(), number=-next(self._task_numbers))
        with self._wake:
            self._jobs[job.id] = job
            self._tasks.append((job, function))
            self._wake.notify()
        return job

    def run_task(self, function: Callable[[], Any], owner: str = "", kind: str = "task") -> Any:
        return self.submit_task(function, owner, kind).future.result()

    # --- running ----------------------------------------------------------------------------------------------

    def _next(self) -> tuple[Job, Callable[[], Any]] | None:
        """The next job (tasks first, then the queue's fair order), marked running; waits while none is there."""
        with self._wake:
            while not self._stopping:
                if self._tasks:
                    job, function = self._tasks.popleft()
                elif self.held:
                    self._wake.wait()
                    continue
                else:
                    claimed = self.store.claim_next()
                    if claimed is None:
                        self._wake.wait()
                        continue
                    record, request = claimed
                    job = self._jobs.get(record.id) or self._new_job(record, self._control())
                    job.request = request
                    self._jobs[job.id] = job
                    function = self._generation(job, request, record.scripts)
                job.state = JobState.RUNNING
                self._running[job.id] = job
                return job, function
        return None

    def _generation(
        self, job: Job, request: GenerationRequest, stored: str | None = None
    ) -> Callable[[], ProcessingResult]:
        scripts = self._scripts.pop(job.id, None)
        if self.runner is not None:
            return self._remote_generation(job, request, scripts, stored)
        if scripts is None and stored:  # queued before a restart: the scripts are read back from the row
            return lambda: self._restored_scripts(stored).execute(request, self.context, job.control, job.owner)
        if scripts is not None:
            return lambda: scripts.execute(request, self.context, job.control, job.owner)
        return lambda: process(request, self.context, job.control, job.owner)

    def _restored_scripts(self, stored: str) -> BoundScripts:
        if self.script_catalogue is None:
            raise ProcessingError("this job's scripts cannot be restored: no script catalogue")
        try:
            return self.script_catalogue.restore(decode_value(stored))
        except ScriptNotFoundError as error:
            raise ProcessingError(str(error)) from error

    def _remote_generation(
        self, job: Job, request: GenerationRequest, scripts: BoundScripts | None, stored: str | None = None
    ) -> Callable[[], ProcessingResult]:
        """The job for the runner; the slot this thread holds goes with it (set by ``_work``). A job with scripts
        (also those stored before a restart) is refused: scripts run in the Easel process only."""
        if scripts is None and stored:
            try:
                scripts = self._restored_scripts(stored)
            except ProcessingError as error:
                return refusal(str(error))
        if scripts is not None and (scripts.selected is not None or scripts.changed_always_on()):
            return refusal("scripts run in the Easel process only and cannot run on Ray workers (--ray-address)")
        return lambda: self.runner.run(job, request, self._slots.pop(job.id, None))  # type: ignore[union-attr]

    def _work(self) -> None:
        while not self._stopping:
            slot = self.runner.hold() if self.runner is not None else None
            picked = self._next()
            if picked is None:
                if self.runner is not None:
                    self.runner.release(slot)
                return
            job, function = picked
            if self.runner is not None:
                if job.kind == GENERATE:
                    self._slots[job.id] = slot
                else:
                    self.runner.release(slot)  # an internal task runs here, not on a worker
            try:
                self._run(job, function)
            finally:
                with self._wake:
                    self._running.pop(job.id, None)
                    leftover = self._slots.pop(job.id, None)
                if leftover is not None and self.runner is not None:
                    self.runner.release(leftover)
                self._forget_old()

    def _run(self, job: Job, function: Callable[[], Any]) -> None:
        job.control.started_at = time.monotonic()
        try:
            result = function()
        except USER_ERRORS as error:
            logger.warning("job refused id=%s kind=%s owner=%s reason=%s", job.id, job.kind, job.owner or "-", error)
            self._fail(job, error)
        except Exception as error:
            logger.exception("job failed id=%s kind=%s owner=%s", job.id, job.kind, job.owner or "-")
            self._fail(job, error)
        else:
            if job.kind == GENERATE:
                self._record_result(job, result)
            job.state = JobState.DONE
            if not job.future.done():
                job.future.set_result(result)

    def _fail(self, job: Job, error: BaseException) -> None:
        if job.kind == GENERATE:
            self.store.finish(job.id, JobState.FAILED, error=f"{type(error).__name__}: {error}")
        job.state = JobState.FAILED
        if not job.future.done():
            job.future.set_exception(error)

    def _record_result(self, job: Job, result: ProcessingResult) -> None:
        paths = [str(path) for path in result.saved_paths]
        if result.grid_path is not None:
            paths.append(str(result.grid_path))
        self.store.finish(job.id, JobState.DONE, paths)
        if self.history is not None and result.saved_paths:
            try:
                self.history.add_result(job.owner, result)
            except Exception:  # the images are saved; a failed index entry must not fail the job
                logger.exception("history not updated id=%s", job.id)

    def _forget_old(self) -> None:
        with self._wake:
            finished = [job for job in self._jobs.values() if job.future.done()]
            for job in finished[:-FINISHED_KEPT_IN_MEMORY] if len(finished) > FINISHED_KEPT_IN_MEMORY else []:
                self._jobs.pop(job.id, None)

    # --- looking ---------------------------------------------------------------------------------------------

    def job(self, job_id: str) -> Job | None:
        """The job with this id, live or from the queue's finished rows; None when there is none."""
        found = self._jobs.get(job_id)
        if found is not None:
            return found
        record = self.store.record(job_id)
        return finished_job(record) if record is not None and record.state in FINISHED_STATES else None

    def current(self) -> Job | None:
        """The running job that started first (one machine: the running job)."""
        with self._wake:
            return next(iter(self._running.values()), None)

    def running(self) -> list[Job]:
        """Every running job, in the order they started (several with Ray workers)."""
        with self._wake:
            return list(self._running.values())

    def pending(self) -> list[Job]:
        """Waiting jobs in the order they will start: internal tasks, then the queue's fair order."""
        with self._wake:
            tasks = [job for job, _ in self._tasks]
            waiting = [self._jobs[job_id] for job_id in self.store.waiting_ids() if job_id in self._jobs]
        return tasks + waiting

    def position(self, job: Job) -> int:
        """0 when running or finished, else the 1-based place among the waiting jobs."""
        if job.state is not JobState.QUEUED:
            return 0
        with self._wake:
            tasks = [queued for queued, _ in self._tasks]
            if job.kind != GENERATE:
                return tasks.index(job) + 1 if job in tasks else 0
            place = self.store.position(job.id)
        return len(tasks) + place if place else 0

    # --- signals -----------------------------------------------------------------------------------------------

    def cancel(self, job_id: str, owner: str = "", admin: bool = False, reason: str = "cancelled") -> bool:
        """Cancel a waiting generation job of ``owner`` (an admin: anyone's). False when there is no such waiting
        job for this caller: another login's id answers exactly as an unknown id does."""
        if not self.store.cancel(job_id, None if admin else owner, reason):
            return False
        job = self._jobs.get(job_id)
        if job is not None:
            job.state = JobState.CANCELLED
            if not job.future.done():
                job.future.set_exception(JobCancelledError(f"job cancelled before it started: {reason}"))
        logger.info("job cancelled id=%s by=%s reason=%s", job_id, owner or "-", reason)
        return True

    def interrupt(self, owner: str = "", job_id: str | None = None, admin: bool = False) -> bool:
        return self._signal("interrupt", owner, job_id, admin)

    def skip(self, owner: str = "", job_id: str | None = None, admin: bool = False) -> bool:
        return self._signal("skip", owner, job_id, admin)

    def _signal(self, action: str, owner: str, job_id: str | None, admin: bool) -> bool:
        """Interrupt/skip act on the caller's own running job (an admin's on any), or on the job named by id."""
        with self._wake:
            if job_id is not None:
                candidates = [self._jobs[job_id]] if job_id in self._jobs else []
            else:
                candidates = list(self._running.values())
        for job in candidates:
            if job.future.done() or not (admin or job.owner == owner):
                continue
            getattr(job.control, action)()
            logger.info("job signal action=%s id=%s by=%s", action, job.id, owner or "-")
            return True
        return False

    def shutdown(self) -> None:
        """Stop taking jobs: waiting generations stay in the queue for the next start; their waiters are told."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
            waiting = [job for job in self._jobs.values() if job.state is JobState.QUEUED and not job.done]
            tasks = [job for job, _ in self._tasks]
            self._tasks.clear()
        for job in waiting + tasks:
            if not job.future.done():
                job.future.set_exception(QueueError("the server is stopping; queued jobs run at the next start"))
        if self.runner is not None:
            self.runner.close()


def refusal(message: str) -> Callable[[], ProcessingResult]:
    """A job function that fails with ``message`` when it runs."""

    def refuse() -> ProcessingResult:
        raise ProcessingError(message)

    return refuse


def stored_scripts(scripts: BoundScripts | None) -> str | None:
    """A job's scripts as JSON for its row; None without scripts, or (logged) when an argument is not plain data."""
    if scripts is None:
        return None
    try:
        return encode_value(scripts.describe())
    except (TypeError, ValueError) as error:
        logger.warning("job scripts not stored (a restart would run the job without them) reason=%s", error)
        return None

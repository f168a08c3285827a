"""Ray workers behind Easel's one queue (``--ray-address``): a ``JobRunner`` for the generation service.

Imported only when ``--ray-address`` is given (Ray is an optional requirement: requirements-ray.txt).

Each worker is a Ray actor (``GenerationWorker``, modules/cluster/worker.py), one per GPU of the cluster by default
(``--ray-workers N`` sets the count, e.g. on CPU-only nodes). The Easel process keeps the queue, its owners and fair
order; a service thread holds a free worker, takes the next job, and this pool runs it on a worker, preferring one
that already holds the job's checkpoint. While it runs, the pool polls the actor for progress and previews (shown by
the UI and ``/sdapi/v1/progress``) and forwards interrupt and skip. The result comes back with the files the job
would have written; the pool writes them here (``modules/processing/saver.py``).

Faults: a worker that dies mid-job is dropped and the job runs once more on another worker, then fails with a clear
message; a watcher thread replaces dead workers and picks up GPUs that join; when no worker can be reached for
``worker_wait_s`` seconds, jobs fail with a message that names the cluster's address instead of waiting for ever.

Why actors rather than Ray Serve: see README ("Generation on a Ray cluster"). In short, Easel already owns the
queue, fairness between owners, cancel and per-job signals; Serve's router would add a second queue that knows
none of it, and its model multiplexing routes by a model id only, without progress, interrupt or skip.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError, RaySystemError, RayTaskError

from modules.cluster.worker import GenerationWorker, WorkerInfo, WorkerJob, WorkerOutcome
from modules.generation import Job
from modules.options import Options
from modules.processing.processing import ProcessingError
from modules.processing.requests import GenerationRequest
from modules.processing.run import ProcessingResult
from modules.processing.saver import replay

logger = logging.getLogger(__name__)

MAX_SLOTS = 32  # service threads when the worker count follows the cluster's GPUs (each waits for a free worker)
PROGRESS_TIMEOUT_S = 5.0
STALLED_AFTER_S = 60.0  # no answer at all from a running worker for this long: the job fails
PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Passed on to the workers: offline switches, log level, thread counts (the rest of the environment is the node's).
FORWARDED_ENVIRONMENT = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DIFFUSERS_OFFLINE", "HF_HOME", "EASEL_LOG_LEVEL")


def probe_address(address: str, timeout_s: float = 5.0) -> None:
    """Ray's own join retries for ever when nothing answers; a ``host:port`` that does not take a TCP connection is
    refused here at once with a clear message (other forms, ``auto`` say, are left to Ray)."""
    host, separator, port = address.rpartition(":")
    if not separator or not port.isdigit() or "/" in address:
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise ClusterError(f"no Ray head answers at {address} ({error}); start one with `ray start --head`") from error


def worker_environment() -> dict[str, str]:
    """The workers import Easel from this checkout (the shared filesystem: the same path on every node)."""
    forwarded = {name: os.environ[name] for name in FORWARDED_ENVIRONMENT if name in os.environ}
    return {"PYTHONPATH": str(PROJECT_ROOT), **forwarded}


class ClusterError(ProcessingError):
    """The Ray cluster or its workers cannot run the job; the message says why."""


@dataclass(frozen=True)
class PoolSettings:
    address: str
    workers: int | None = None  # None: one per GPU of the cluster
    torch_threads: int | None = None  # each CPU worker's torch threads (None: Ray's default, one per CPU asked)
    worker_wait_s: float = 60.0
    start_timeout_s: float = 600.0  # a worker not started by then (no room on the cluster, cluster gone) is dropped
    poll_interval_s: float = 0.2
    watch_interval_s: float = 2.0


@dataclass
class WorkerHandle:
    name: str
    actor: Any
    starting: Any | None  # the first describe() call, pending while the actor starts
    session: int = 0  # the pool's connection it belongs to
    created_at: float = field(default_factory=time.monotonic)
    info: WorkerInfo | None = None
    busy: bool = False
    job: str | None = None
    dead: bool = False


@dataclass
class Slot:
    """A free worker held by a service thread until it takes a job."""

    released: bool = False


@dataclass
class HopStats:
    """The cost of running a job on a worker rather than here: Easel's wall time minus the worker's time."""

    jobs: int = 0
    seconds: float = 0.0

    def add(self, seconds: float) -> None:
        self.jobs += 1
        self.seconds += seconds

    @property
    def mean_ms(self) -> float:
        return self.seconds / self.jobs * 1000 if self.jobs else 0.0


@dataclass
class PoolState:
    workers: dict[str, WorkerHandle] = field(default_factory=dict)
    held: int = 0
    last_error: str = ""
    closing: bool = False


def routing_rank(worker: WorkerHandle, checkpoint_path: str | None) -> int:
    """0: the worker holds the job's checkpoint; 1: it holds none (nothing to give back); 2: it holds another
    (loaded with the cache policy, ``--ckpt-cache``)."""
    held = worker.info.checkpoint_path if worker.info is not None else None
    if held is not None and held == checkpoint_path:
        return 0
    return 1 if held is None else 2


class RayWorkerPool:
    """Implements the generation service's ``JobRunner`` protocol over Ray actors."""

    def __init__(
        self,
        settings: PoolSettings,
        args: argparse.Namespace,
        options: Options,
        resolve_checkpoint: Callable[[str | None], tuple[str, str] | None],
    ) -> None:
        self.settings = settings
        self.args = args
        self.options = options
        self.resolve_checkpoint = resolve_checkpoint
        self.slots = settings.workers or MAX_SLOTS
        self._state = PoolState()
        self._changed = threading.Condition()
        self._names = itertools.count(1)
        self.hops = HopStats()
        self._saving = threading.Lock()  # one job's files at a time: file numbers are taken from the folder
        self._session = 0  # counts the connections to the cluster; a worker belongs to the one that started it
        self._connect()
        self.sync()
        self._watcher = threading.Thread(target=self._watch, name="easel-ray-watch", daemon=True)
        self._watcher.start()

    # --- the connection -----------------------------------------------------------------------------------------

    def _connect(self) -> None:
        probe_address(self.settings.address)
        try:
            ray.init(
                address=self.settings.address,
                namespace="easel",
                runtime_env={"env_vars": worker_environment()},
                log_to_driver=False,
                logging_level=logging.WARNING,
            )
        except (ConnectionError, RayError, ValueError) as error:
            raise ClusterError(f"cannot join the Ray cluster at {self.settings.address}: {error}") from error
        with self._changed:
            self._session += 1

    def _check_connection(self) -> bool:
        """Whether the head answers. When it stops, this process leaves the cluster at once (a Ray driver that is
        still connected when a new head starts at the same address is aborted by Ray); when it answers again, this
        process joins it again and the watcher starts the workers anew."""
        try:
            probe_address(self.settings.address, timeout_s=2.0)
        except ClusterError as error:
            if ray.is_initialized():
                self._disconnect(str(error))
            return False
        if not ray.is_initialized():
            try:
                self._connect()
            except ClusterError as error:
                self._note_error(str(error))
                return False
            logger.warning("ray cluster joined again address=%s", self.settings.address)
        return True

    def _disconnect(self, reason: str) -> None:
        with self._changed:
            self._session += 1  # running jobs see it and fail clearly (their workers went with the cluster)
            lost = list(self._state.workers.values())
            self._state.workers.clear()
            self._state.last_error = f"cluster unreachable: {reason}"
            self._changed.notify_all()
        logger.warning("ray cluster lost address=%s workers=%d reason=%s", self.settings.address, len(lost), reason)
        ray.shutdown()

    # --- membership ---------------------------------------------------------------------------------------------

    def wanted_workers(self) -> int:
        """``--ray-workers``, else one per GPU of the live nodes."""
        if self.settings.workers:
            return self.settings.workers
        return int(ray.cluster_resources().get("GPU", 0))

    def _create_worker(self, gpus: bool) -> WorkerHandle:
        name = f"worker-{next(self._names)}"
        remote = ray.remote(GenerationWorker).options(
            name=f"easel-{name}-{id(self):x}",
            num_gpus=1 if gpus else 0,
            num_cpus=0 if gpus else 1,
            max_concurrency=4,  # run() holds one thread; progress, signal and describe answer meanwhile
            max_restarts=0,  # a dead worker is replaced by the watcher; its job is retried by the pool
        )
        actor = remote.remote(name, self.args, self.settings.torch_threads)
        logger.info("ray worker starting name=%s gpu=%s", name, gpus)
        return WorkerHandle(name, actor, actor.describe.remote(), session=self._session)

    def sync(self) -> None:
        """Start workers up to the wanted count, learn which started, drop the dead ones."""
        if self._state.closing:
            return
        try:
            wanted = self.wanted_workers()
            gpus = not self.settings.workers or ray.cluster_resources().get("GPU", 0) > 0
        except RayError as error:
            self._note_error(f"cluster unreachable: {error}")
            return
        with self._changed:
            live = [worker for worker in self._state.workers.values() if not worker.dead]
            missing = max(0, wanted - len(live))
        created = [self._create_worker(gpus) for _ in range(missing)]
        with self._changed:
            for worker in created:
                self._state.workers[worker.name] = worker
            pending = [worker for worker in self._state.workers.values() if worker.starting is not None]
        for worker in pending:
            self._check_started(worker)
        for worker in self.workers():
            if not worker.busy and not worker.dead:
                self._refresh(worker)

    def _check_started(self, worker: WorkerHandle) -> None:
        ready, _ = ray.wait([worker.starting], timeout=0)
        if not ready:
            if time.monotonic() - worker.created_at > self.settings.start_timeout_s:
                self._drop(worker, f"did not start within {self.settings.start_timeout_s:.0f} s")
                self._stop(worker)
            return
        try:
            info = ray.get(worker.starting)
        except RayError as error:
            self._drop(worker, f"did not start: {error}")
            return
        with self._changed:
            worker.info, worker.starting = info, None
            self._changed.notify_all()
        logger.info("ray worker ready name=%s node=%s device=%s pid=%d", info.name, info.node, info.device, info.pid)

    def _refresh(self, worker: WorkerHandle) -> None:
        if worker.starting is not None:
            return
        try:
            info = ray.get(worker.actor.describe.remote(), timeout=PROGRESS_TIMEOUT_S)
        except GetTimeoutError:
            return
        except RayError as error:
            self._drop(worker, str(error))
            return
        with self._changed:
            worker.info = info

    def _drop(self, worker: WorkerHandle, reason: str) -> None:
        with self._changed:
            if worker.dead:
                return
            worker.dead = True
            self._state.workers.pop(worker.name, None)
            self._state.last_error = f"worker {worker.name} lost: {reason}"
            self._changed.notify_all()
        logger.warning("ray worker dropped name=%s reason=%s", worker.name, reason.splitlines()[0] if reason else "-")

    @staticmethod
    def _stop(worker: WorkerHandle) -> None:
        try:
            ray.kill(worker.actor)
        except RayError as error:  # already gone with its node: nothing left to stop
            logger.info("ray worker not stopped name=%s error=%s", worker.name, error)

    def _note_error(self, message: str) -> None:
        with self._changed:
            self._state.last_error = message
            self._changed.notify_all()
        logger.warning("ray %s", message)

    def _watch(self) -> None:
        while not self._state.closing:
            time.sleep(self.settings.watch_interval_s)
            try:
                if self._check_connection():
                    self.sync()
            except Exception:  # the watcher must outlive any one failure (it is what notices the cluster again)
                logger.exception("ray watcher failed")

    def workers(self) -> list[WorkerHandle]:
        with self._changed:
            return list(self._state.workers.values())

    def describe(self) -> list[WorkerInfo]:
        """The ready workers as last seen (node, device, loaded checkpoint, memory), with the job each runs now."""
        with self._changed:
            return [
                replace(worker.info, job=worker.job)
                for worker in self._state.workers.values()
                if worker.info is not None and not worker.dead
            ]

    # --- slots (the JobRunner protocol) ---------------------------------------------------------------------------

    def _free(self, exclude: set[str] = frozenset()) -> list[WorkerHandle]:
        return [
            worker
            for worker in self._state.workers.values()
            if worker.info is not None and not worker.busy and not worker.dead and worker.name not in exclude
        ]

    def _alive(self, exclude: set[str] = frozenset()) -> bool:
        """Some worker (not in ``exclude``) is ready, or still starting within its start timeout."""
        now = time.monotonic()
        return any(
            not worker.dead
            and worker.name not in exclude
            and (worker.info is not None or now - worker.created_at <= self.settings.start_timeout_s)
            for worker in self._state.workers.values()
        )

    def hold(self) -> Slot | None:
        """Wait for a free worker and hold it; None at once when no worker is alive (the job then waits for one
        for ``worker_wait_s`` and fails clearly)."""
        with self._changed:
            while not self._state.closing and self._alive():
                if len(self._free()) > self._state.held:
                    self._state.held += 1
                    return Slot()
                self._changed.wait()
        return None

    def release(self, slot: object | None) -> None:
        if isinstance(slot, Slot) and not slot.released:
            with self._changed:
                slot.released = True
                self._state.held -= 1
                self._changed.notify_all()

    def close(self) -> None:
        """Stop: the workers end (they belong to this process) and the connection to the cluster closes."""
        with self._changed:
            self._state.closing = True
            workers = list(self._state.workers.values())
            self._state.workers.clear()
            self._changed.notify_all()
        for worker in workers:
            self._stop(worker)
        self._watcher.join(timeout=self.settings.watch_interval_s * 2)
        if ray.is_initialized():
            ray.shutdown()

    def _assign(self, slot: object | None, job: Job, checkpoint_path: str | None, exclude: set[str]) -> WorkerHandle:
        """A free worker for the job (``routing_rank``); waits while every live worker is busy."""
        self.release(slot)
        deadline = time.monotonic() + self.settings.worker_wait_s
        with self._changed:
            while True:
                free = self._free(exclude)
                if free:
                    chosen = min(free, key=lambda worker: routing_rank(worker, checkpoint_path))
                    chosen.busy, chosen.job = True, job.id
                    return chosen
                if self._state.closing:
                    raise ClusterError("the server is stopping")
                remaining = deadline - time.monotonic()
                if not self._alive(exclude) and remaining <= 0:
                    raise ClusterError(self._unavailable_message())
                self._changed.wait(timeout=max(0.1, min(remaining, 1.0)) if remaining > 0 else 1.0)

    def _unavailable_message(self) -> str:
        detail = f" (last: {self._state.last_error})" if self._state.last_error else ""
        return (
            f"no Ray worker became available within {self.settings.worker_wait_s:.0f} s on the cluster at "
            f"{self.settings.address}{detail}"
        )

    def _done_with(self, worker: WorkerHandle) -> None:
        with self._changed:
            worker.busy, worker.job = False, None
            self._changed.notify_all()

    # --- running a job -------------------------------------------------------------------------------------------

    def run(self, job: Job, request: GenerationRequest, slot: object | None) -> ProcessingResult:
        title, path = self.resolve_checkpoint(request.checkpoint) or (None, None)
        spec = WorkerJob(
            job_id=job.id,
            request=request,
            checkpoint=title,
            options=self.options.model_dump(),
            owner=job.owner,
            preview_every_n_steps=job.control.preview_every_n_steps,
            preview_method=job.control.preview_method,
        )
        lost: list[str] = []
        while True:
            worker = self._assign(slot, job, path, set(lost))
            slot = None
            logger.info("ray job start id=%s worker=%s checkpoint=%s", job.id, worker.name, title or "-")
            started = time.perf_counter()
            try:
                outcome = self._run_on(worker, job, spec)
            except RaySystemError as error:  # this process left the cluster meanwhile (the head stopped)
                raise ClusterError(f"the Ray cluster at {self.settings.address} went away while the job ran") from error
            except RayActorError as error:
                self._drop(worker, f"died while running job {job.id}: {error}")
                lost.append(worker.name)
                if len(lost) > 1:
                    raise ClusterError(
                        f"the job was lost twice: Ray workers {lost[0]} and {lost[1]} died while running it"
                    ) from error
                logger.warning("ray job retried id=%s lost_worker=%s", job.id, worker.name)
                continue
            finally:
                self._done_with(worker)
            result = self._finish(worker, outcome)
            hop = time.perf_counter() - started - outcome.seconds
            with self._changed:
                self.hops.add(hop)
            logger.info(
                "ray job done id=%s worker=%s seconds=%.3f hop_ms=%.1f",
                job.id,
                worker.name,
                outcome.seconds,
                hop * 1000,
            )
            return result

    def _finish(self, worker: WorkerHandle, outcome: WorkerOutcome) -> ProcessingResult:
        with self._changed:
            if worker.info is not None:
                worker.info.checkpoint, worker.info.checkpoint_path = outcome.checkpoint, outcome.checkpoint_path
        with self._saving:
            return replay(outcome.orders, outcome.result)

    def _run_on(self, worker: WorkerHandle, job: Job, spec: WorkerJob) -> WorkerOutcome:
        pending = worker.actor.run.remote(spec)
        forwarded_interrupt = False
        last_answer = time.monotonic()
        while True:
            if worker.session != self._session:
                raise ClusterError(f"the Ray cluster at {self.settings.address} went away while the job ran")
            ready, _ = ray.wait([pending], timeout=self.settings.poll_interval_s)
            if ready:
                try:
                    return ray.get(pending)
                except RayTaskError as error:  # the job's own error (a bad request, a missing file): as it is
                    cause = error.cause
                    raise (cause if isinstance(cause, Exception) else ProcessingError(str(error))) from None
            if job.control.interrupted and not forwarded_interrupt:
                worker.actor.signal.remote(job.id, "interrupt")
                forwarded_interrupt = True
            if job.control.skipped:
                worker.actor.signal.remote(job.id, "skip")
                job.control.clear_skip()
            if self._pull_progress(worker, job):
                last_answer = time.monotonic()
            elif time.monotonic() - last_answer > STALLED_AFTER_S:
                ray.cancel(pending, force=True)
                raise ClusterError(f"Ray worker {worker.name} stopped answering for {STALLED_AFTER_S:.0f} s")

    def _pull_progress(self, worker: WorkerHandle, job: Job) -> bool:
        """Copy the worker's progress and preview into the job's control; False when the worker did not answer."""
        try:
            snapshot = ray.get(worker.actor.progress.remote(job.id), timeout=PROGRESS_TIMEOUT_S)
        except RayActorError:
            return True  # the run's own reference reports the death on the next wait
        except RayError:
            return False
        if snapshot is not None:
            job.control.show(snapshot)
        return True

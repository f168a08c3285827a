"""Download jobs: a diffusers pipeline into the hub cache, or chosen single files into the model folders.

Guarantees:
- nothing half-written appears in a model list: huggingface_hub writes each file to a temporary name and
  renames it; a pipeline's model_index.json (what makes a folder a model) is fetched last, and single
  files are staged in the hidden models/.downloads and renamed into place;
- a cut connection resumes where it stopped (huggingface_hub retries with a Range request); a cancelled or
  failed pipeline download keeps its finished files in the cache, so starting it again skips them;
- progress (bytes, speed, ETA) is kept on the job for the UI and logged every few seconds.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

from modules.hub.client import HubClient, RepoFile, RepoListing
from modules.hub.errors import DownloadCancelledError, HubError
from modules.hub.files import (
    FileKind,
    destination_dir,
    diffusers_cache_dir,
    select_pipeline_files,
    staging_dir,
    variant_aliases,
)
from modules.paths import DataPaths

logger = logging.getLogger(__name__)

LOG_EVERY_SECONDS = 5.0


class DownloadState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class DownloadStatus:
    """A consistent snapshot of a job for the UI."""

    id: str
    repo_id: str
    description: str
    state: DownloadState
    done_bytes: int
    total_bytes: int
    speed_bytes: float
    eta_seconds: float | None
    current_file: str
    message: str

    @property
    def fraction(self) -> float:
        return min(self.done_bytes / self.total_bytes, 1.0) if self.total_bytes else 0.0

    def describe(self) -> str:
        """One line; the ETA only while it is known (a running job with a measured speed)."""
        eta = f", ETA {self.eta_seconds:.0f} s" if self.eta_seconds is not None else ""
        return (
            f"{self.description}: {self.state.value} {format_bytes(self.done_bytes)} / "
            f"{format_bytes(self.total_bytes)} ({self.fraction:.0%}), {format_bytes(self.speed_bytes)}/s{eta}"
            + (f" - {self.message}" if self.message else "")
        )


@dataclass
class DownloadJob:
    """One download; progress fields change under ``lock`` from the worker thread."""

    repo_id: str
    description: str
    total_bytes: int
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    state: DownloadState = DownloadState.QUEUED
    finished_bytes: int = 0
    file_bytes: int = 0
    transferred_bytes: int = 0
    started: float = 0.0
    ended: float = 0.0
    current_file: str = ""
    message: str = ""
    result: Path | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    future: Future | None = field(default=None, repr=False)
    last_logged: float = 0.0

    def status(self) -> DownloadStatus:
        with self.lock:
            # a finished job's speed is the average over its run, not over the time since it started
            elapsed = (self.ended or time.monotonic()) - self.started if self.started else 0.0
            speed = self.transferred_bytes / elapsed if elapsed > 0 else 0.0
            done = self.finished_bytes + self.file_bytes
            eta = (self.total_bytes - done) / speed if speed > 0 and self.state is DownloadState.RUNNING else None
            return DownloadStatus(
                id=self.id,
                repo_id=self.repo_id,
                description=self.description,
                state=self.state,
                done_bytes=done,
                total_bytes=self.total_bytes,
                speed_bytes=speed,
                eta_seconds=eta,
                current_file=self.current_file,
                message=self.message,
            )

    def advance(self, count: int) -> None:
        """Bytes written for the current file (called by the progress class); raises when cancelled."""
        if self.cancel_event.is_set():
            raise DownloadCancelledError(f"download of {self.repo_id} cancelled")
        with self.lock:
            self.file_bytes += count
            self.transferred_bytes += max(count, 0)
        now = time.monotonic()
        if now - self.last_logged >= LOG_EVERY_SECONDS:
            self.last_logged = now
            logger.info("download progress %s", self.status().describe())

    def start_file(self, path: str) -> None:
        if self.cancel_event.is_set():
            raise DownloadCancelledError(f"download of {self.repo_id} cancelled")
        with self.lock:
            self.current_file = path
            self.file_bytes = 0

    def finish_file(self, size: int) -> None:
        with self.lock:
            self.finished_bytes += size
            self.file_bytes = 0

    def end(self, state: DownloadState, message: str = "") -> None:
        with self.lock:
            self.state = state
            self.message = message
            self.current_file = ""
            self.ended = time.monotonic()


def progress_class_for(job: DownloadJob) -> type:
    """A tqdm-compatible class (huggingface_hub's ``tqdm_class`` hook) that feeds one job's progress."""

    class JobProgress:
        def __init__(self, *args: Any, initial: int = 0, **kwargs: Any) -> None:
            if initial:
                job.advance(initial)

        def __enter__(self) -> JobProgress:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def update(self, count: int | float | None = 1) -> None:
            job.advance(int(count or 0))

        def close(self) -> None:
            return None

    return JobProgress


def format_bytes(count: float) -> str:
    """Binary units, named as such (1 MiB = 1024 KiB)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def place_atomically(source: Path, target: Path) -> Path:
    """Move a finished download into a model folder with one rename (same file system), never a partial copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        os.replace(source, temporary)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return target


def link_variant_aliases(snapshot: Path, chosen: Sequence[RepoFile]) -> None:
    """Give fp16-only components the plain file name too, so the loader needs no ``variant`` argument.

    In a hub cache each snapshot file is a link to a blob; the alias is one more link to the same blob."""
    for variant_path, plain_path in variant_aliases(chosen).items():
        source, alias = snapshot / variant_path, snapshot / plain_path
        if alias.exists() or alias.is_symlink():
            continue
        if source.is_symlink():
            alias.symlink_to(os.readlink(source))
        else:
            os.link(source, alias)


class DownloadManager:
    """Runs download jobs on a small thread pool; ``on_complete`` runs after each success (registry refresh)."""

    def __init__(
        self, client: HubClient, paths: DataPaths, on_complete: Callable[[DownloadJob], None] = lambda job: None
    ) -> None:
        self.client = client
        self.paths = paths
        self.on_complete = on_complete
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="easel-download")
        self._jobs: dict[str, DownloadJob] = {}
        self._lock = threading.Lock()

    def jobs(self) -> list[DownloadJob]:
        with self._lock:
            return list(self._jobs.values())

    def get(self, job_id: str) -> DownloadJob:
        with self._lock:
            return self._jobs[job_id]

    def cancel(self, job_id: str) -> bool:
        """Ask a job to stop (at its next chunk); False when no such job exists."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            return False
        job.cancel_event.set()
        logger.info("download cancel requested id=%s repo=%s", job.id, job.repo_id)
        return True

    def start_pipeline(self, repo_id: str, fp16: bool = True, listing: RepoListing | None = None) -> DownloadJob:
        """Queue a diffusers pipeline download into models/Diffusers (hub cache)."""
        listing = listing or self.client.list_files(repo_id)
        chosen = select_pipeline_files(listing.files, fp16=fp16)
        job = DownloadJob(repo_id, f"{repo_id} (diffusers)", sum(item.size for item in chosen))
        return self._submit(job, lambda: self._run_pipeline(job, listing, chosen))

    def start_files(
        self, repo_id: str, paths_and_kinds: Sequence[tuple[str, FileKind]], listing: RepoListing | None = None
    ) -> DownloadJob:
        """Queue single files, each into the folder of its kind (models/Lora, embeddings, ...)."""
        listing = listing or self.client.list_files(repo_id)
        sizes = {item.path: item.size for item in listing.files}
        missing = [path for path, _ in paths_and_kinds if path not in sizes]
        if missing:
            raise HubError(f"{repo_id} has no file {missing[0]!r}")
        targets = [
            (path, destination_dir(self.paths, kind) / PurePosixPath(path).name) for path, kind in paths_and_kinds
        ]
        existing = [str(target) for _, target in targets if target.exists()]
        if existing:
            raise HubError(f"{existing[0]} already exists; delete or rename it first")
        names = ", ".join(PurePosixPath(path).name for path, _ in paths_and_kinds)
        job = DownloadJob(repo_id, f"{repo_id}: {names}", sum(sizes[path] for path, _ in paths_and_kinds))
        return self._submit(job, lambda: self._run_files(job, listing, targets, sizes))

    def _submit(self, job: DownloadJob, work: Callable[[], Path]) -> DownloadJob:
        with self._lock:  # listed with its future: jobs() never hands out a job whose future is not set yet
            self._jobs[job.id] = job
            job.future = self._executor.submit(self._run, job, work)
        logger.info("download queued id=%s %s", job.id, job.status().describe())
        return job

    def _run(self, job: DownloadJob, work: Callable[[], Path]) -> Path | None:
        with job.lock:
            job.state, job.started = DownloadState.RUNNING, time.monotonic()
        try:
            job.result = work()
        except DownloadCancelledError:
            job.end(DownloadState.CANCELLED, "cancelled; finished files are kept and skipped next time")
            logger.info("download cancelled id=%s repo=%s", job.id, job.repo_id)
            return None
        except HubError as error:
            job.end(DownloadState.FAILED, str(error))
            logger.error("download failed id=%s repo=%s error=%s", job.id, job.repo_id, error)
            return None
        except OSError as error:  # disk full, permissions: reported, nothing half-written is listed
            job.end(DownloadState.FAILED, f"{type(error).__name__}: {error}")
            logger.error("download failed id=%s repo=%s error=%s", job.id, job.repo_id, error)
            return None
        job.end(DownloadState.DONE, f"saved to {job.result}")
        logger.info("download done %s", job.status().describe())
        self.on_complete(job)
        return job.result

    def _run_pipeline(self, job: DownloadJob, listing: RepoListing, chosen: list[RepoFile]) -> Path:
        cache_dir = diffusers_cache_dir(self.paths)
        progress_class = progress_class_for(job)
        snapshot: Path | None = None
        for item in chosen:  # model_index.json is last: the folder is listed only once complete
            job.start_file(item.path)
            if item.path == chosen[-1].path and snapshot is not None:
                link_variant_aliases(snapshot, chosen)
            path = self.client.download(
                listing.repo_id, item.path, listing.commit, cache_dir=cache_dir, progress_class=progress_class
            )
            snapshot = path.parents[len(PurePosixPath(item.path).parts) - 1]
            job.finish_file(item.size)
        assert snapshot is not None
        return snapshot

    def _run_files(
        self, job: DownloadJob, listing: RepoListing, targets: list[tuple[str, Path]], sizes: dict[str, int]
    ) -> Path:
        staging = staging_dir(self.paths) / listing.repo_id.replace("/", "--")
        progress_class = progress_class_for(job)
        placed: Path | None = None
        for path, target in targets:
            job.start_file(path)
            staged = self.client.download(
                listing.repo_id, path, listing.commit, local_dir=staging, progress_class=progress_class
            )
            placed = place_atomically(staged, target)
            job.finish_file(sizes[path])
            logger.info("file placed repo=%s file=%s path=%s", listing.repo_id, path, placed)
        assert placed is not None
        return placed if len(targets) == 1 else placed.parent

    def shutdown(self) -> None:
        for job in self.jobs():
            job.cancel_event.set()
        self._executor.shutdown(wait=False, cancel_futures=True)

"""The state of one running job: progress, preview, interrupt and skip. Shared between threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image


@dataclass
class JobProgress:
    """A snapshot of a job's progress, safe to hand to another thread."""

    job_no: int = 0
    job_count: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0
    progress: float = 0.0
    eta_seconds: float | None = None
    textinfo: str = ""
    preview: Image.Image | None = None


@dataclass
class JobControl:
    """Written by the processing thread, read and signalled by the UI/API threads."""

    preview_every_n_steps: int = 5
    preview_method: str = "Approx cheap"  # the show_progress_type setting (modules/backends/previews.py)
    preview_dir: Path | None = None  # models/VAE-approx
    started_at: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _interrupted: threading.Event = field(default_factory=threading.Event, repr=False)
    _skipped: threading.Event = field(default_factory=threading.Event, repr=False)
    _progress: JobProgress = field(default_factory=JobProgress, repr=False)
    _sampled_infotext: dict[str, object] = field(default_factory=dict, repr=False)

    def interrupt(self) -> None:
        """Stop now and keep what is done."""
        self._interrupted.set()

    def skip(self) -> None:
        """Stop the current image, go on with the next one of the batch."""
        self._skipped.set()

    @property
    def interrupted(self) -> bool:
        return self._interrupted.is_set()

    @property
    def skipped(self) -> bool:
        return self._skipped.is_set()

    def clear_skip(self) -> None:
        self._skipped.clear()

    def begin_image(self, job_no: int, job_count: int, steps: int) -> None:
        with self._lock:
            self._progress = JobProgress(
                job_no=job_no,
                job_count=job_count,
                sampling_steps=steps,
                progress=job_no / max(job_count, 1),
                preview=self._progress.preview,
            )

    def add_infotext(self, entries: Mapping[str, object]) -> None:
        """Entries a backend found while sampling; processing takes them after each pass (``take_infotext``)."""
        with self._lock:
            self._sampled_infotext.update(entries)

    def take_infotext(self) -> dict[str, object]:
        with self._lock:
            entries, self._sampled_infotext = self._sampled_infotext, {}
        return entries

    def step_done(self, step: int, preview: Image.Image | None = None) -> None:
        with self._lock:
            current = self._progress
            fraction = (current.job_no + step / max(current.sampling_steps, 1)) / max(current.job_count, 1)
            elapsed = time.monotonic() - self.started_at
            eta = elapsed / fraction - elapsed if fraction > 0 else None
            self._progress = JobProgress(
                job_no=current.job_no,
                job_count=current.job_count,
                sampling_step=step,
                sampling_steps=current.sampling_steps,
                progress=min(fraction, 1.0),
                eta_seconds=eta,
                textinfo=f"Image {current.job_no + 1}/{current.job_count}, step {step}/{current.sampling_steps}",
                preview=preview if preview is not None else current.preview,
            )

    def snapshot(self) -> JobProgress:
        with self._lock:
            return self._progress

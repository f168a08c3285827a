"""One generation worker: the body of a Ray actor (modules/cluster/pool.py), free of Ray itself.

A worker builds its own generation stack from Easel's flags (modules/assembly.py): its own model service on its own
device, the same backends and the same processing core as one machine. It runs one job at a time with the settings
Easel sends along, and records the files the job writes (``DeferredSaver``) instead of writing them: Easel replays
them, so outputs, infotext and grids are saved by the one process that owns the output folders, exactly as today.

Storage model: a shared filesystem. Every worker reads checkpoints, LoRA, embeddings and VAE from the same models
folder as Easel (the same paths: ``--data-dir`` / ``--models-dir`` on a shared mount). Nothing is shipped through
Ray's object store; a worker that cannot see a file fails the job with a message that says so.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

import psutil
import torch

from modules.assembly import GenerationStack, build_stack
from modules.compute.options import OPTION_FIELDS, compute_settings_from
from modules.models.errors import ModelError
from modules.options import Options
from modules.paths import DataPaths
from modules.processing.job import JobControl, JobProgress
from modules.processing.processing import ProcessingError, process
from modules.processing.requests import GenerationRequest
from modules.processing.run import ProcessingResult
from modules.processing.saver import DeferredSaver, SaveOrder
from modules.system_info import memory_figures

logger = logging.getLogger(__name__)

STORAGE_HINT = "Easel's Ray workers read models from a shared filesystem: every node must see the same models folder"


@dataclass(frozen=True)
class WorkerJob:
    """What Easel sends with a job: the request, the checkpoint to make current, its settings and owner."""

    job_id: str
    request: GenerationRequest
    checkpoint: str | None
    options: dict[str, Any]
    owner: str = ""
    preview_every_n_steps: int = 0
    preview_method: str = "Approx cheap"


@dataclass
class WorkerOutcome:
    """What comes back: the result (placeholder paths), the files to write, the checkpoint now loaded."""

    result: ProcessingResult
    orders: list[SaveOrder]
    checkpoint: str | None
    checkpoint_path: str | None
    seconds: float = 0.0  # the job's time on the worker (Easel's wall time minus this is the hop)


@dataclass
class WorkerInfo:
    """What the Models tab and ``/sdapi/v1/memory`` show of a worker."""

    name: str
    node: str
    node_id: str
    pid: int
    device: str
    checkpoint: str | None
    checkpoint_path: str | None  # what routing compares (a title gains its hash once it is computed)
    job: str | None
    memory: dict[str, Any] = field(default_factory=dict)


def node_identity() -> tuple[str, str]:
    """(address, id) of the node this process runs on: Ray's, inside an actor; else the host's name."""
    ray = sys.modules.get("ray")  # imported by the actor's process; never imported here without it
    if ray is not None and ray.is_initialized():
        return ray.util.get_node_ip_address(), ray.get_runtime_context().get_node_id()
    return platform.node(), ""


class GenerationWorker:
    """Runs jobs on its own stack; ``progress`` and ``signal`` may be called from other threads meanwhile."""

    def __init__(self, name: str, args: argparse.Namespace, torch_threads: int | None = None) -> None:
        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.name = name
        self.args = args
        self.paths = DataPaths.create(args.data_dir, args.models_dir, tuple(args.ckpt_dir), args.styles_file)
        self.options = Options.load(self.paths.config_file)
        self.stack: GenerationStack = build_stack(args, self.paths, self.options)
        self._run_lock = threading.Lock()
        self._controls: dict[str, JobControl] = {}
        self._controls_lock = threading.Lock()
        logger.info("ray worker ready name=%s pid=%d device=%s", name, os.getpid(), self.stack.models.device_name)

    # --- the job -----------------------------------------------------------------------------------------------

    def run(self, job: WorkerJob) -> WorkerOutcome:
        control = JobControl(
            preview_every_n_steps=job.preview_every_n_steps,
            preview_method=job.preview_method,
            preview_dir=self.paths.vae_approx_dir,
        )
        with self._controls_lock:
            self._controls[job.job_id] = control
        try:
            with self._run_lock:
                return self._run(job, control)
        finally:
            with self._controls_lock:
                self._controls.pop(job.job_id, None)

    def _run(self, job: WorkerJob, control: JobControl) -> WorkerOutcome:
        self._take_options(job.options)
        saver = DeferredSaver()
        context = replace(self.stack.context, saver=saver)
        logger.info("ray worker job id=%s name=%s checkpoint=%s", job.job_id, self.name, job.checkpoint or "-")
        started = time.perf_counter()
        try:
            if job.checkpoint:
                self.stack.models.ensure_loaded(job.checkpoint)
            result = process(job.request, context, control, job.owner)
        except ModelError as error:
            raise ProcessingError(self._missing_file_message(error)) from error
        result.worker = self.name
        seconds = time.perf_counter() - started
        return WorkerOutcome(result, saver.orders, self.checkpoint(), self.checkpoint_path(), seconds)

    def _missing_file_message(self, error: ModelError) -> str:
        node, _ = node_identity()
        return f"worker {self.name} on {node}: {error} ({STORAGE_HINT}: {self.paths.models_dir})"

    def _take_options(self, values: dict[str, Any]) -> None:
        """Easel's settings at dispatch become this worker's (in place: the stack's services read this object)."""
        incoming = Options.model_validate(values)
        compute_changed = any(getattr(self.options, key) != getattr(incoming, key) for key in OPTION_FIELDS)
        for key in type(incoming).model_fields:
            setattr(self.options, key, getattr(incoming, key))
        if compute_changed:
            self.stack.models.set_compute(compute_settings_from(self.options, self.args))

    # --- signals and looking -----------------------------------------------------------------------------------

    def progress(self, job_id: str) -> JobProgress | None:
        with self._controls_lock:
            control = self._controls.get(job_id)
        return control.snapshot() if control is not None else None

    def signal(self, job_id: str, action: str) -> bool:
        """``interrupt`` or ``skip`` the job, when it runs here."""
        if action not in ("interrupt", "skip"):
            raise ValueError(f"unknown signal {action!r}")
        with self._controls_lock:
            control = self._controls.get(job_id)
        if control is None:
            return False
        getattr(control, action)()
        logger.info("ray worker signal action=%s id=%s name=%s", action, job_id, self.name)
        return True

    def checkpoint(self) -> str | None:
        loaded = self.stack.models.current
        return loaded.info.title if loaded is not None else None

    def checkpoint_path(self) -> str | None:
        loaded = self.stack.models.current
        return str(loaded.info.path) if loaded is not None else None

    def describe(self) -> WorkerInfo:
        node, node_id = node_identity()
        with self._controls_lock:
            job = next(iter(self._controls), None)
        memory = memory_figures()
        memory["process"] = {"rss": psutil.Process().memory_info().rss}
        return WorkerInfo(
            name=self.name,
            node=node,
            node_id=node_id,
            pid=os.getpid(),
            device=self.stack.models.device_name,
            checkpoint=self.checkpoint(),
            checkpoint_path=self.checkpoint_path(),
            job=job,
            memory=memory,
        )

"""The model manager: the only owner of loaded pipelines. Loads, caches per task, switches, frees."""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, DiffusionPipeline

from modules.devices import MemoryPolicy
from modules.models.detection import ModelArchitecture, detect_architecture, read_key_shapes
from modules.models.errors import CheckpointNotFoundError, ModelError
from modules.models.loader import load_pipeline
from modules.models.registry import CheckpointInfo, CheckpointRegistry

logger = logging.getLogger(__name__)


class Task(StrEnum):
    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    INPAINT = "inpaint"


@dataclass
class LoadedModel:
    """A loaded checkpoint: its base pipeline and the task pipelines sharing its components."""

    info: CheckpointInfo
    pipeline: DiffusionPipeline
    architecture: ModelArchitecture | None
    sha256: str
    scheduler_config: dict[str, Any]
    load_seconds: float
    _task_pipelines: dict[Task, DiffusionPipeline] = field(default_factory=dict, repr=False)

    @property
    def is_inpainting(self) -> bool:
        return self.pipeline.unet.config.in_channels == 9

    @property
    def short_hash(self) -> str:
        return self.sha256[:10]

    @property
    def name(self) -> str:
        return self.info.name

    def pipeline_for(self, task: Task) -> DiffusionPipeline:
        """The pipeline for a task, built once with ``from_pipe`` so that no weight is loaded twice."""
        if task not in self._task_pipelines:
            if task is Task.TXT2IMG and not self.is_inpainting:
                pipeline = self.pipeline
            elif task is Task.IMG2IMG and not self.is_inpainting:
                pipeline = AutoPipelineForImage2Image.from_pipe(self.pipeline)
            else:
                # An inpainting checkpoint serves every task through its inpainting pipeline.
                pipeline = AutoPipelineForInpainting.from_pipe(self.pipeline)
            pipeline.set_progress_bar_config(disable=True)
            self._task_pipelines[task] = pipeline
        return self._task_pipelines[task]


class ModelManager:
    """Owns the one loaded checkpoint. Switching frees the previous; a failed load keeps it usable."""

    def __init__(self, registry: CheckpointRegistry, policy: MemoryPolicy, configs_dir: Path) -> None:
        self.registry = registry
        self.policy = policy
        self.configs_dir = configs_dir
        self._current: LoadedModel | None = None
        self._lock = threading.RLock()

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def get(self, name_or_title: str | None = None) -> LoadedModel:
        """The model for a request: the loaded one, or ``name_or_title`` (loaded when needed)."""
        with self._lock:
            if name_or_title:
                info = self.registry.find(name_or_title)
                if self._current is None or self._current.info.path != info.path:
                    return self.load(info)
                return self._current
            if self._current is not None:
                return self._current
            checkpoints = self.registry.checkpoints()
            if not checkpoints:
                raise CheckpointNotFoundError(
                    "No checkpoint found. Put a .safetensors file or a diffusers folder into "
                    f"{self.registry_dirs_text()} and press refresh."
                )
            return self.load(checkpoints[0])

    def registry_dirs_text(self) -> str:
        return ", ".join(str(folder) for folder in self.registry.dirs)

    def load(self, checkpoint: CheckpointInfo | str) -> LoadedModel:
        """Load a checkpoint, freeing the current one; on failure the current one stays usable."""
        with self._lock:
            info = self.registry.find(checkpoint) if isinstance(checkpoint, str) else checkpoint
            self._precheck(info)
            previous = self._current
            self.unload()
            try:
                self._current = self._load_fresh(info)
            except ModelError:
                if previous is not None:
                    logger.warning("load failed path=%s; reloading previous=%s", info.path, previous.info.name)
                    self._current = self._load_fresh(previous.info)
                raise
            return self._current

    def _precheck(self, info: CheckpointInfo) -> None:
        """Cheap checks (header and architecture) before the current model is freed."""
        if info.kind == "single-file" and info.path.suffix == ".safetensors":
            sidecar = info.path.with_suffix(".config")
            shapes = read_key_shapes(info.path)
            if not sidecar.is_dir():
                detect_architecture(shapes)

    def _load_fresh(self, info: CheckpointInfo) -> LoadedModel:
        started = time.perf_counter()
        pipeline, architecture = load_pipeline(info, self.configs_dir, torch_dtype=self.policy.dtype)
        self.policy.apply(pipeline)
        pipeline.set_progress_bar_config(disable=True)
        seconds = time.perf_counter() - started
        sha256 = self.registry.hash_of(info)
        logger.info(
            "model loaded name=%s arch=%s seconds=%.2f %s",
            info.name,
            architecture.value if architecture else "sidecar",
            seconds,
            self.policy.describe(),
        )
        return LoadedModel(
            info=info,
            pipeline=pipeline,
            architecture=architecture,
            sha256=sha256,
            scheduler_config=dict(pipeline.scheduler.config),
            load_seconds=seconds,
        )

    def unload(self) -> None:
        """Free the loaded checkpoint (RAM and device memory)."""
        with self._lock:
            if self._current is None:
                return
            logger.info("model unloaded name=%s", self._current.info.name)
            self._current = None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

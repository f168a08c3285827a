"""The model manager: the only owner of loaded pipelines. Loads, caches per task, switches, frees."""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, DiffusionPipeline

from modules.devices import MemoryPolicy, MemoryPreset
from modules.models.detection import ModelArchitecture, detect_architecture, read_key_shapes
from modules.models.errors import CheckpointNotFoundError, ModelError
from modules.models.loader import load_pipeline
from modules.models.registry import CheckpointInfo, CheckpointRegistry
from modules.prompts.conditioning import PromptEncoder

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
    _prompt_encoder: PromptEncoder | None = field(default=None, repr=False)

    @property
    def prompt_encoder(self) -> PromptEncoder:
        """The prompt encoder of this model (its cache is per model, shared by every task pipeline)."""
        if self._prompt_encoder is None:
            self._prompt_encoder = PromptEncoder.for_pipeline(self.pipeline, model_key=self.sha256)
        return self._prompt_encoder

    @property
    def is_inpainting(self) -> bool:
        return self.pipeline.unet.config.in_channels == 9

    @property
    def weights_bytes(self) -> int:
        """Memory held by the model's weights and buffers (every component), in bytes."""
        total = 0
        for component in self.pipeline.components.values():
            if isinstance(component, torch.nn.Module):
                tensors = [*component.parameters(), *component.buffers()]
                total += sum(tensor.numel() * tensor.element_size() for tensor in tensors)
        return total

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
    """Owns the loaded checkpoint. Switching frees the previous (or keeps it in the RAM cache, ``--ckpt-cache``);
    a failed load keeps the previous one usable."""

    def __init__(
        self, registry: CheckpointRegistry, policy: MemoryPolicy, configs_dir: Path, cache_size: int = 1
    ) -> None:
        self.registry = registry
        self.policy = policy
        self.configs_dir = configs_dir
        self._current: LoadedModel | None = None
        self._lock = threading.RLock()
        # --ckpt-cache N: the last N loaded checkpoints stay in CPU RAM (the current one included), LRU order.
        self.cache_size = max(int(cache_size), 1)
        self._ram_cache: OrderedDict[Path, LoadedModel] = OrderedDict()
        self.disk_loads = 0  # checkpoints read from disk (the cache's hits do not count)

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
            cached = self._ram_cache.pop(info.path, None)  # taken out first: parking the current cannot evict it
            if cached is None:
                self._precheck(info)
            previous = self._current
            self._park_current()
            try:
                self._current = self._restore(cached) if cached else self._load_fresh(info)
            except ModelError:
                if previous is not None:
                    logger.warning("load failed path=%s; reloading previous=%s", info.path, previous.info.name)
                    parked = self._ram_cache.pop(previous.info.path, None)
                    self._current = self._restore(parked) if parked else self._load_fresh(previous.info)
                raise
            return self._current

    def set_cache_size(self, size: int) -> None:
        """Change ``--ckpt-cache`` at run time (Settings); extra cached checkpoints are freed at once."""
        with self._lock:
            self.cache_size = max(int(size), 1)
            self._evict_over_limit()

    def cached_names(self) -> list[str]:
        """Checkpoints kept in RAM besides the current one, least recently used first."""
        with self._lock:
            return [model.info.name for model in self._ram_cache.values()]

    def _park_current(self) -> None:
        """Put the current model into the RAM cache (moved off the accelerator), or free it when the cache is off."""
        if self._current is None:
            return
        if self.cache_size <= 1:
            self.unload()
            return
        model, self._current = self._current, None
        if self.policy.has_accelerator and self.policy.preset is MemoryPreset.NONE:
            model.pipeline.to("cpu")
        self._ram_cache[model.info.path] = model
        self._ram_cache.move_to_end(model.info.path)
        logger.info("model kept in RAM name=%s cached=%d", model.info.name, len(self._ram_cache))
        self._evict_over_limit()

    def _restore(self, model: LoadedModel) -> LoadedModel:
        """A model from the RAM cache, back on the device (no disk read)."""
        started = time.perf_counter()
        if self.policy.has_accelerator and self.policy.preset is MemoryPreset.NONE:
            model.pipeline.to(self.policy.device)
        model.load_seconds = time.perf_counter() - started
        logger.info("model taken from RAM cache name=%s seconds=%.3f", model.info.name, model.load_seconds)
        return model

    def _evict_over_limit(self) -> None:
        evicted = False
        while len(self._ram_cache) > self.cache_size - 1:
            _, model = self._ram_cache.popitem(last=False)
            logger.info("model evicted from RAM cache name=%s", model.info.name)
            evicted = True
        if evicted:
            free_memory()

    def _precheck(self, info: CheckpointInfo) -> None:
        """Cheap checks (header and architecture) before the current model is freed."""
        if info.kind == "single-file" and info.path.suffix == ".safetensors":
            sidecar = info.path.with_suffix(".config")
            shapes = read_key_shapes(info.path)
            if not sidecar.is_dir():
                detect_architecture(shapes)

    def _load_fresh(self, info: CheckpointInfo) -> LoadedModel:
        self.disk_loads += 1
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
            free_memory()


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

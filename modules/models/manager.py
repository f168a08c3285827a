"""The model manager: the only owner of loaded pipelines. Loads, caches per task, switches, frees."""

from __future__ import annotations

import functools
import gc
import inspect
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, DiffusionPipeline

from modules.compute import ComputeSettings, ComputeState, apply_backend_flags, prepare_pipeline, warm_up
from modules.devices import MemoryPolicy, MemoryPreset
from modules.models.detection import ModelArchitecture, read_key_shapes
from modules.models.errors import CheckpointNotFoundError, ModelError
from modules.models.families import FamilyError, ModelFamily, family, family_of_pipeline
from modules.models.loader import folder_class_name, load_pipeline, precheck_single_file
from modules.models.prediction import resolve_sd2_prediction
from modules.models.registry import CheckpointInfo, CheckpointRegistry, sidecar_config_dir

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
    # Per-model state that upper layers keep with the model and that is freed with it (the prompt encoder
    # and its cache, the networks' module index): keyed by the owning module's name.
    attachments: dict[str, Any] = field(default_factory=dict, repr=False)
    compute: ComputeState | None = None  # the compute settings applied at load (modules/compute)
    # A cascade's later stages (DeepFloyd IF stage II), loaded with it; empty for other families.
    stages: list[DiffusionPipeline] = field(default_factory=list, repr=False)
    # task -> a loader (run once, on the first job of the task) of the decoder folder that task needs (the
    # family's ``task_decoders``: Kandinsky 2.2 inpainting); a task whose decoder folder is not listed is absent.
    task_decoders: dict[str, Callable[[], DiffusionPipeline]] = field(default_factory=dict, repr=False)
    # Where Easel encodes the prompts of a family that it encodes itself (``prompt_embedding_names``): the CPU
    # when --medvram / --lowvram keep its text encoders there, else None (the pipeline's execution device).
    text_device: torch.device | None = None
    _task_pipelines: dict[Task, DiffusionPipeline] = field(default_factory=dict, repr=False)

    @property
    def family(self) -> ModelFamily:
        """The family description the loader, processing, the backends, the UI and the API read."""
        if self.architecture is not None:
            return self.architecture.family
        return family_of_pipeline(type(self.pipeline).__name__) or family("sd1")

    @property
    def denoiser(self) -> torch.nn.Module:
        """The UNet or the transformer, as the family says."""
        return getattr(self.pipeline, self.family.denoiser)

    @property
    def is_inpainting(self) -> bool:
        return self._unet_in_channels() == 9

    @property
    def is_pix2pix(self) -> bool:
        """An instruct-pix2pix model: the UNet reads the latents and the source image's latents (8 channels)."""
        return self._unet_in_channels() == 8

    def _unet_in_channels(self) -> int | None:
        unet = getattr(self.pipeline, "unet", None)
        return int(unet.config.in_channels) if unet is not None else None

    @property
    def is_refiner(self) -> bool:
        """The SDXL refiner: OpenCLIP-G only, conditioned on an aesthetic score (its pipeline is img2img)."""
        return bool(getattr(self.pipeline.config, "requires_aesthetics_score", False))

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
    def is_xl(self) -> bool:
        return self.family.is_xl

    @property
    def native_size(self) -> int:
        """The checkpoint's native image side in pixels (512 for SD 1.x, 1024 for SDXL)."""
        sample_size = self.denoiser.config.get("sample_size")
        if sample_size is None:
            return self.family.default_size
        return int(sample_size) * int(getattr(self.pipeline, "vae_scale_factor", 8))

    @property
    def short_hash(self) -> str:
        return self.sha256[:10]

    @property
    def name(self) -> str:
        return self.info.name

    def pipeline_for(self, task: Task) -> DiffusionPipeline:
        """The pipeline for a task, built once with ``from_pipe`` so that no weight is loaded twice."""
        if task not in self._task_pipelines:
            if task.value in self.family.task_decoders:
                pipeline = self._decoder_task_pipeline(task)
            elif not self.family.uses_a1111_prompts:
                pipeline = family_task_pipeline(self.pipeline, self.family, task)
            elif self.is_pix2pix or (self.is_refiner and task is not Task.INPAINT):
                pipeline = self.pipeline  # its img2img pipeline serves txt2img too (see the diffusers backend)
            elif task is Task.TXT2IMG and not self.is_inpainting:
                pipeline = self.pipeline
            elif task is Task.IMG2IMG and not self.is_inpainting:
                pipeline = AutoPipelineForImage2Image.from_pipe(self.pipeline)
            else:
                # An inpainting checkpoint serves every task through its inpainting pipeline.
                pipeline = AutoPipelineForInpainting.from_pipe(self.pipeline)
            pipeline.set_progress_bar_config(disable=True)
            self._task_pipelines[task] = pipeline
        return self._task_pipelines[task]

    def _decoder_task_pipeline(self, task: Task) -> DiffusionPipeline:
        """The family's pipeline of ``task`` over this model's components with the task's decoder folder's in place."""
        loader = self.task_decoders.get(task.value)
        if loader is None:
            raise FamilyError(missing_decoder_message(self.family, task.value))
        components = {**self.pipeline.components, **loader().components}
        return pipeline_from_components(self.family.pipeline_class_name(task.value), components)

    def pipeline_view(self, task: Task, **overrides: Any) -> DiffusionPipeline:
        """A new pipeline object for one request over this model's components, with ``overrides`` (its own
        scheduler, a wrapped UNet) in place: a request never changes the loaded model."""
        return pipeline_view(self.pipeline_for(task), **overrides)


class ModelManager:
    """Owns the loaded checkpoint. Switching frees the previous (or keeps it in the RAM cache, ``--ckpt-cache``);
    a failed load keeps the previous one usable."""

    def __init__(
        self,
        registry: CheckpointRegistry,
        policy: MemoryPolicy,
        configs_dir: Path,
        cache_size: int = 1,
        compute: ComputeSettings | None = None,
        without_t5: bool = False,
    ) -> None:
        self.registry = registry
        self.without_t5 = without_t5  # --no-t5: families whose T5 is optional (SD 3.5) load without it
        self.policy = policy
        self.compute = compute or ComputeSettings()
        self.configs_dir = configs_dir
        self._current: LoadedModel | None = None
        self._lock = threading.RLock()
        # --ckpt-cache N: the last N loaded checkpoints stay in CPU RAM (the current one included), LRU order.
        self.cache_size = max(int(cache_size), 1)
        self._ram_cache: OrderedDict[Path, LoadedModel] = OrderedDict()
        self._pinned: set[Path] = set()  # parked for a scope that borrowed another checkpoint (never evicted)
        self.disk_loads = 0  # checkpoints read from disk (the cache's hits do not count)
        # Called with each model that becomes the current one (A1111's on_model_loaded, registered by the extension
        # adapter); one that raises is logged and the load stands.
        self.loaded_listeners: list[Callable[[LoadedModel], None]] = []

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

    def load(self, checkpoint: CheckpointInfo | str, keep_previous: bool = False) -> LoadedModel:
        """Load a checkpoint, freeing the current one; on failure the current one stays usable.

        ``keep_previous`` keeps the current model in RAM (pinned, whatever the cache size) until it is loaded
        again: a scope that borrows another checkpoint for one pass gives the previous one back cheaply."""
        with self._lock:
            info = self.registry.find(checkpoint) if isinstance(checkpoint, str) else checkpoint
            cached = self._ram_cache.pop(info.path, None)  # taken out first: parking the current cannot evict it
            self._pinned.discard(info.path)
            if cached is None:
                self._precheck(info)
            previous = self._current
            self._park_current(pin=keep_previous)
            try:
                self._current = self._restore(cached) if cached else self._load_fresh(info)
            except ModelError:
                if previous is not None:
                    logger.warning("load failed path=%s; reloading previous=%s", info.path, previous.info.name)
                    self._pinned.discard(previous.info.path)
                    parked = self._ram_cache.pop(previous.info.path, None)
                    self._current = self._restore(parked) if parked else self._load_fresh(previous.info)
                    self._announce(self._current)
                raise
            self._announce(self._current)
            return self._current

    def _announce(self, model: LoadedModel) -> None:
        for listener in self.loaded_listeners:
            try:
                listener(model)
            except Exception:  # an extension's callback: logged, the model stays loaded
                logger.exception("model loaded listener failed name=%s", model.info.name)

    def set_cache_size(self, size: int) -> None:
        """Change ``--ckpt-cache`` at run time (Settings); extra cached checkpoints are freed at once."""
        with self._lock:
            self.cache_size = max(int(size), 1)
            self._evict_over_limit()

    def cached_names(self) -> list[str]:
        """Checkpoints kept in RAM besides the current one, least recently used first."""
        with self._lock:
            return [model.info.name for model in self._ram_cache.values()]

    def _park_current(self, pin: bool = False) -> None:
        """Put the current model into the RAM cache (moved off the accelerator), or free it when the cache is off
        (a pinned model is kept whatever the cache size)."""
        if self._current is None:
            return
        if self.cache_size <= 1 and not pin:
            self.unload()
            return
        if pin:
            self._pinned.add(self._current.info.path)
        model, self._current = self._current, None
        if self.policy.has_accelerator and self.policy.preset_for(model.pipeline) is MemoryPreset.NONE:
            model.pipeline.to("cpu")
        self._ram_cache[model.info.path] = model
        self._ram_cache.move_to_end(model.info.path)
        logger.info("model kept in RAM name=%s cached=%d", model.info.name, len(self._ram_cache))
        self._evict_over_limit()

    def _restore(self, model: LoadedModel) -> LoadedModel:
        """A model from the RAM cache, back on the device (no disk read)."""
        started = time.perf_counter()
        if self.policy.has_accelerator and self.policy.preset_for(model.pipeline) is MemoryPreset.NONE:
            model.pipeline.to(self.policy.device)
        self._refresh_compute(model)
        model.load_seconds = time.perf_counter() - started
        logger.info("model taken from RAM cache name=%s seconds=%.3f", model.info.name, model.load_seconds)
        return model

    def _evict_over_limit(self) -> None:
        evicted = False
        while True:
            unpinned = [path for path in self._ram_cache if path not in self._pinned]
            if len(unpinned) <= self.cache_size - 1:
                break
            model = self._ram_cache.pop(unpinned[0])
            logger.info("model evicted from RAM cache name=%s", model.info.name)
            evicted = True
        if evicted:
            free_memory()

    def _precheck(self, info: CheckpointInfo) -> None:
        """Cheap checks (header and architecture) before the current model is freed."""
        if info.kind == "single-file" and info.path.suffix == ".safetensors":
            precheck_single_file(info.path, read_key_shapes(info.path), self.configs_dir, self.diffusers_folders())

    def diffusers_folders(self) -> list[Path]:
        """The listed diffusers folders (they supply what a FLUX.1 single file lacks)."""
        return [info.path for info in self.registry.checkpoints() if info.kind == "diffusers"]

    def _load_fresh(self, info: CheckpointInfo) -> LoadedModel:
        self.disk_loads += 1
        started = time.perf_counter()
        pipeline, architecture = load_pipeline(
            info,
            self.configs_dir,
            torch_dtype=self.policy.dtype,
            without_t5=self.without_t5,
            folders=self.diffusers_folders() if info.kind != "diffusers" else (),
        )
        model_family = architecture.family if architecture else family_of_pipeline(type(pipeline).__name__)
        kept_on_cpu = cpu_text_encoders(pipeline, model_family, self.policy)
        self.policy.apply(pipeline, kept_on_cpu)
        log_t5_placement(pipeline, self.policy, kept_on_cpu)
        pipeline.set_progress_bar_config(disable=True)
        compute = prepare_pipeline(pipeline, self.compute, bool(model_family and model_family.is_xl))
        seconds = time.perf_counter() - started
        sha256 = self.registry.hash_of(info)
        if info.kind != "diffusers" and not sidecar_config_dir(info.path).is_dir():
            # Only the keys spoke: an SD 2.x file may be a 512 epsilon or a 768-v model.
            architecture = resolve_sd2_prediction(pipeline, architecture, sha256, self.registry.hash_cache)
        logger.info(
            "model loaded name=%s arch=%s seconds=%.2f %s",
            info.name,
            architecture.value if architecture else "sidecar",
            seconds,
            self.policy.describe(),
        )
        model = LoadedModel(
            info=info,
            pipeline=pipeline,
            architecture=architecture,
            sha256=sha256,
            scheduler_config=dict(pipeline.scheduler.config),
            load_seconds=seconds,
            compute=compute,
            stages=self._load_next_stages(model_family),
            task_decoders=self._task_decoder_loaders(model_family),
            text_device=torch.device("cpu") if kept_on_cpu else None,
        )
        if self.compute.compiles and self.compute.warmup:
            self._warm_up(model)
        return model

    def _load_next_stages(self, model_family: ModelFamily | None) -> list[DiffusionPipeline]:
        """A cascade's next stage: the first listed diffusers folder of the family's next-stage class (DeepFloyd
        IF stage II beside stage I); none found leaves the first stage alone (the job's notes say so)."""
        if model_family is None or model_family.next_stage is None:
            return []
        for candidate in self.registry.checkpoints():
            if candidate.kind == "diffusers" and folder_class_name(candidate.path) == model_family.next_stage:
                stage, _ = load_pipeline(candidate, self.configs_dir, torch_dtype=self.policy.dtype)
                self.policy.apply(stage)
                stage.set_progress_bar_config(disable=True)
                logger.info("cascade stage loaded family=%s stage=%s", model_family.key, candidate.name)
                return [stage, *self._load_optional_stage(model_family)]
        logger.warning("cascade stage missing family=%s wanted=%s", model_family.key, model_family.next_stage)
        return []

    def _load_optional_stage(self, model_family: ModelFamily) -> list[DiffusionPipeline]:
        """The family's optional last stage (IF stage III), when a diffusers folder of its class is listed."""
        for candidate in self.registry.checkpoints():
            if candidate.kind == "diffusers" and folder_class_name(candidate.path) == model_family.optional_stage:
                return [self._load_companion(candidate)]
        return []

    def _task_decoder_loaders(self, model_family: ModelFamily | None) -> dict[str, Callable[[], DiffusionPipeline]]:
        """For each task decoder of the family, a loader of the first listed diffusers folder of its class."""
        loaders: dict[str, Callable[[], DiffusionPipeline]] = {}
        for task, class_name in (model_family.task_decoders if model_family else {}).items():
            for candidate in self.registry.checkpoints():
                if candidate.kind == "diffusers" and folder_class_name(candidate.path) == class_name:
                    loaders[task] = functools.cache(functools.partial(self._load_companion, candidate))
                    break
        return loaders

    def _load_companion(self, info: CheckpointInfo) -> DiffusionPipeline:
        decoder, _ = load_pipeline(info, self.configs_dir, torch_dtype=self.policy.dtype)
        self.policy.apply(decoder)
        decoder.set_progress_bar_config(disable=True)
        logger.info("companion pipeline loaded name=%s", info.name)
        return decoder

    def _warm_up(self, model: LoadedModel) -> None:
        """Compilation happens here, while the checkpoint loads, not in the first job (logged per shape). A failed
        warm-up is reported and leaves compilation to the first job."""
        if model.compute is None:
            return
        if model.is_inpainting:
            model.compute.skipped["warm-up"] = "inpainting checkpoint: compiled on the first job"
            return
        try:
            warm_up(model.pipeline, model.compute, [warmup_size(model.native_size, self.compute.compile_dynamic)])
        except (RuntimeError, ValueError, torch.OutOfMemoryError) as error:
            model.compute.skipped["warm-up"] = str(error)
            logger.warning("compile warm-up failed name=%s error=%s", model.info.name, error)

    def set_compute(self, settings: ComputeSettings) -> None:
        """New compute settings: TF32/cudnn at once; token merging and DeepCache on the loaded model at once;
        compile, channels_last, fused QKV and FP8 reload the loaded checkpoint (the RAM cache is emptied)."""
        with self._lock:
            previous, self.compute = self.compute, settings
            apply_backend_flags(settings)
            if settings.needs_reload(previous):
                for path in [path for path in self._ram_cache if path not in self._pinned]:
                    self._ram_cache.pop(path)
                if self._current is not None:
                    info = self._current.info
                    logger.info("compute settings changed; reloading name=%s", info.name)
                    self.unload()
                    self.load(info)
            elif self._current is not None:
                self._refresh_compute(self._current)

    def _refresh_compute(self, model: LoadedModel) -> None:
        """Bring the settings that need no reload (token merging, DeepCache) up to date on ``model``."""
        state = model.compute
        if state is None or state.settings == self.compute or state.settings.needs_reload(self.compute):
            return
        changed = state.settings.token_merging_ratio != self.compute.token_merging_ratio
        if changed and model.family.denoiser == "unet":
            state.set_token_merging(model.pipeline.unet, self.compute.token_merging_ratio)
        state.settings = self.compute

    def unload(self) -> None:
        """Free the loaded checkpoint (RAM and device memory)."""
        with self._lock:
            if self._current is None:
                return
            logger.info("model unloaded name=%s", self._current.info.name)
            self._current = None
            free_memory()


def pipeline_view(pipeline: DiffusionPipeline, **overrides: Any) -> DiffusionPipeline:
    """The same pipeline class over the same components, with ``overrides`` replacing some of them.

    Written by hand because ``DiffusionPipeline.from_pipe`` casts every shared component to float32 (diffusers
    0.42.1 calls ``to(dtype=float32)`` when no dtype is given), which would change a half-precision model."""
    parameters = inspect.signature(type(pipeline).__init__).parameters
    arguments = {name: value for name, value in pipeline.components.items() if name in parameters}
    arguments.update(
        {key: value for key, value in pipeline.config.items() if key in parameters and key not in arguments}
    )
    arguments.update(overrides)
    view = type(pipeline)(**arguments)
    view.set_progress_bar_config(disable=True)
    return view


def cpu_text_encoders(
    pipeline: DiffusionPipeline, model_family: ModelFamily | None, policy: MemoryPolicy
) -> tuple[str, ...]:
    """The text encoders that stay in CPU RAM: those of a family with T5 (T5-XXL alone is 8.9 GiB in fp16) under
    --medvram / --lowvram, where Easel encodes the prompts on the CPU and moves the embeddings to the GPU; none
    otherwise, or when the T5 encoder is not loaded (SD 3.5 with --no-t5)."""
    if model_family is None or not model_family.prompt_embedding_names or model_family.t5_encoder is None:
        return ()
    if policy.preset_for(pipeline) is MemoryPreset.NONE or getattr(pipeline, model_family.t5_encoder, None) is None:
        return ()
    return text_encoder_names(pipeline)


def text_encoder_names(pipeline: DiffusionPipeline) -> tuple[str, ...]:
    """The pipeline's loaded text encoders (``text_encoder``, ``text_encoder_2`` ...)."""
    return tuple(
        name
        for name, component in pipeline.components.items()
        if name.startswith("text_encoder") and isinstance(component, torch.nn.Module)
    )


def log_t5_placement(pipeline: DiffusionPipeline, policy: MemoryPolicy, kept_on_cpu: tuple[str, ...]) -> None:
    """Where a family's T5 encoder lives: on the device with every other component (no flag), or in CPU RAM with
    the other text encoders under --medvram / --lowvram (``cpu_text_encoders``). No 8-bit mode is offered:
    bitsandbytes needs CUDA and is not among Easel's requirements."""
    model_family = family_of_pipeline(type(pipeline).__name__)
    if model_family is None or model_family.t5_encoder is None:
        return
    present = getattr(pipeline, model_family.t5_encoder, None) is not None
    logger.info(
        "t5 encoder family=%s present=%s placement=%s",
        model_family.key,
        present,
        "cpu" if kept_on_cpu or not policy.has_accelerator else str(policy.device),
    )


def family_task_pipeline(pipeline: DiffusionPipeline, model_family: ModelFamily, task: Task) -> DiffusionPipeline:
    """The family's pipeline class for ``task`` over the loaded pipeline's components (no weight is copied)."""
    return pipeline_of_class(pipeline, model_family.pipeline_class_name(task.value))


def pipeline_of_class(pipeline: DiffusionPipeline, class_name: str) -> DiffusionPipeline:
    """The diffusers pipeline ``class_name`` over ``pipeline``'s components (``pipeline`` itself when of that class)."""
    if type(pipeline).__name__ == class_name:
        return pipeline
    return pipeline_from_components(class_name, pipeline.components)


def pipeline_from_components(class_name: str, components: dict[str, Any]) -> DiffusionPipeline:
    """The diffusers pipeline ``class_name`` over those of ``components`` it takes (no weight is copied)."""
    pipeline_class = getattr(diffusers, class_name)
    parameters = inspect.signature(pipeline_class.__init__).parameters
    task_pipeline = pipeline_class(**{name: value for name, value in components.items() if name in parameters})
    task_pipeline.set_progress_bar_config(disable=True)
    return task_pipeline


def missing_decoder_message(model_family: ModelFamily, task: str) -> str:
    class_name = model_family.task_decoders[task]
    return (
        f"{model_family.display_name} {task} needs its {task} decoder: put a diffusers folder saved by {class_name} "
        "in the checkpoints folder"
    )


def warmup_size(native: int, dynamic: bool) -> tuple[int, int]:
    """The warm-up image size. A dynamic graph is traced on a non-square size: traced on a square one, torch
    would tie width to height (duck sizing) and compile again for the first non-square job. Duck sizing also ties a
    latent side to any other input dimension of the same value (the text width: 768, 1024 or 2048 in SD models,
    never a latent side of these sizes)."""
    return (native, native - 64) if dynamic and native > 128 else (native, native)


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

"""The application object built once in webui.py and passed down: options, models, the job service."""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modules.assembly import build_stack
from modules.backends.base import Backend
from modules.compute.options import OPTION_FIELDS, compute_settings_from
from modules.controlnet.models import ControlNetLibrary
from modules.extension_settings import ExtensionSettings
from modules.extensions.registry import Extension
from modules.generation import GenerationService
from modules.hub.downloads import DownloadManager
from modules.jobs.database import Database
from modules.jobs.history import ImageHistory
from modules.jobs.store import JobStore
from modules.models.errors import ModelError
from modules.models.families import ModelFamily
from modules.models.hashing import HashCache
from modules.models.inventory import checkpoint_family
from modules.models.registry import CheckpointRegistry
from modules.models.service import ModelService
from modules.networks.service import Networks
from modules.options import Options
from modules.paths import DataPaths
from modules.postprocess.service import Postprocessor
from modules.processing.extras import Extras
from modules.scripts.builtin import builtin_scripts
from modules.scripts.runner import ScriptCatalogue

if TYPE_CHECKING:
    from modules.cluster.worker import WorkerInfo

logger = logging.getLogger(__name__)


@dataclass
class TokenCountInput:
    """What a prompt box's token counter is about to count (A1111's BeforeTokenCounterParams, in its order): the
    prompt, the steps (for prompt editing), the selected styles, and whether it is the positive prompt's counter."""

    prompt: str = ""
    steps: int = 0
    styles: list[str] = field(default_factory=list)
    is_positive: bool = True


@dataclass
class Application:
    """Long-lived state, explicit: built once, handed to the UI and the API."""

    args: argparse.Namespace
    paths: DataPaths
    options: Options
    registry: CheckpointRegistry
    models: ModelService
    backend: Backend
    service: GenerationService
    postprocessor: Postprocessor
    downloads: DownloadManager | None = None
    history: ImageHistory | None = None
    networks: Networks | None = None
    backends: Mapping[str, Backend] = field(default_factory=dict)
    scripts: ScriptCatalogue = field(default_factory=ScriptCatalogue)
    controlnet: ControlNetLibrary | None = None  # ControlNet models (the ControlNet script and /controlnet/*)
    extensions: list[Extension] = field(default_factory=list)  # what the extension loader found (modules.compat)
    extension_settings: ExtensionSettings = field(default_factory=ExtensionSettings)  # opts.add_option's settings
    # Given by the composition root: extension UI tabs (each returns [(Blocks, title, elem_id)]) and how to
    # restart the process (None: not started from webui.py).
    ui_tab_providers: list[Callable[[], list[Any]]] = field(default_factory=list)
    restart: Callable[[], None] | None = None
    # Listeners the extension adapter registers: an infotext read for pasting (PNG Info; they may change the parsed
    # parameters), and the scripts about to be unloaded (before Apply and restart).
    infotext_pasted: list[Callable[[str, dict[str, Any]], None]] = field(default_factory=list)
    before_restart: list[Callable[[], None]] = field(default_factory=list)
    # The UI's token counter about to count (they may change what is counted).
    before_token_counter: list[Callable[[TokenCountInput], None]] = field(default_factory=list)
    # With --ray-address: the Ray workers as last seen (node, device, loaded checkpoint, memory); None without.
    workers: Callable[[], list[WorkerInfo]] | None = None
    _options_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def create(cls, args: argparse.Namespace, hold_queue: bool = False) -> Application:
        """Build everything from the flags; ``hold_queue``: queued generations wait for ``service.release()`` (the
        composition root releases them once the extensions' scripts are loaded, so a job resumed after a restart
        finds its scripts)."""
        paths = DataPaths.create(args.data_dir, args.models_dir, tuple(args.ckpt_dir), args.styles_file)
        paths.ensure()
        options = Options.load(paths.config_file)
        stack = build_stack(args, paths, options)
        registry, models, backend, context = stack.registry, stack.models, stack.backend, stack.context
        policy, postprocessor, networks, backends = stack.policy, stack.postprocessor, stack.networks, stack.backends
        database = Database(paths.queue_file)
        history = ImageHistory(database, paths.outputs_dir)
        pool = start_ray_pool(args, options) if getattr(args, "ray_address", None) else None
        service = GenerationService(context, JobStore(database), history, hold=hold_queue, runner=pool)
        controlnet = ControlNetLibrary(
            [paths.controlnet_dir, *getattr(args, "controlnet_dir", [])],
            HashCache(paths.cache_file),
            paths.configs_dir,
            cache_size=options.control_net_model_cache_size,
            clip_vision_dir=paths.clip_vision_dir,
        )
        controlnet.refresh()
        scripts = ScriptCatalogue(
            builtin_scripts(context, allow_code=getattr(args, "allow_code", False), controlnet=controlnet)
        )
        service.script_catalogue = scripts
        logger.info(
            "application ready data_dir=%s checkpoints=%d %s",
            paths.data_dir,
            len(registry.checkpoints()),
            policy.describe(),
        )
        application = cls(
            args=args,
            paths=paths,
            options=options,
            registry=registry,
            models=models,
            backend=backend,
            service=service,
            postprocessor=postprocessor,
            networks=networks,
            backends=backends,
            history=history,
            scripts=scripts,
            controlnet=controlnet,
            extension_settings=ExtensionSettings(paths.config_file),
            workers=pool.describe if pool is not None else None,
        )
        if pool is not None:
            pool.resolve_checkpoint = application.checkpoint_for
        return application

    def extras(self) -> Extras:
        """The Extras operation with this application's postprocessor, settings, data folder and save listeners."""
        return Extras(self.postprocessor, self.options, self.paths.data_dir, self.service.context.listeners.saving)

    def checkpoint_for(self, name: str | None) -> tuple[str, str] | None:
        """(title, path) of the checkpoint a job needs: ``name`` (a per-request checkpoint), else the current one;
        None when there is none."""
        title = name or self._chosen_for_workers() or self.current_title()
        if not title:
            return None
        info = self.registry.find(title)
        return info.title, str(info.path)

    def _chosen_for_workers(self) -> str | None:
        """With Ray workers, the Settings' checkpoint (nothing is loaded here to say otherwise), when it exists."""
        chosen = self.options.sd_model_checkpoint
        if self.workers is None or not chosen:
            return None
        try:
            return self.registry.find(chosen).title
        except ModelError:
            return None

    def active_backend(self, name: str | None = None) -> Backend:
        """The backend a request without a choice of its own uses: ``name``, else the ``sd_sampling_backend``
        setting, else the ``--backend`` flag's (an unknown name falls back to the flag's)."""
        wanted = name or self.options.sd_sampling_backend
        return self.backends.get(wanted, self.backend) if wanted else self.backend

    def initial_checkpoint(self) -> str | None:
        """The checkpoint to load at start: --ckpt, else the saved setting, else the first one found."""
        if self.args.ckpt and self.args.ckpt.exists():
            return str(self.args.ckpt.stem)
        if self.options.sd_model_checkpoint:
            return self.options.sd_model_checkpoint
        checkpoints = self.registry.checkpoints()
        return checkpoints[0].title if checkpoints else None

    def preload_checkpoint(self) -> Future | None:
        """Queue the start checkpoint's load (first in the queue, so generations wait for it); failures are logged.
        Done where the application starts, with or without the UI."""
        title = self.current_title()
        if title is None or self.models.current is not None or self.workers is not None:  # Ray workers load their own
            return None
        job = self.service.submit_task(lambda: self.models.ensure_loaded(title), kind="load-checkpoint")

        def report(future: Future) -> None:
            error = future.exception()
            if error is not None:
                logger.error("start checkpoint not loaded title=%s error=%s", title, error)

        job.future.add_done_callback(report)
        return job.future

    def current_title(self) -> str | None:
        """The loaded checkpoint's title, else the one that will load at start; None when there is none."""
        loaded = self.models.current
        if loaded is not None:
            return next(
                (info.title for info in self.registry.checkpoints() if info.path == loaded.info.path),
                loaded.info.title,
            )
        wanted = self.initial_checkpoint()
        if not wanted:
            return None
        try:
            return self.registry.find(wanted).title
        except ModelError:
            return None

    def checkpoint_family(self, title: str | None) -> ModelFamily | None:
        """The model family of the checkpoint a job naming ``title`` runs on (None: the loaded one, else the start
        one): the loaded model's, else read from the file's header or model_index.json (nothing loads); None when
        it cannot be told (an unknown name, a pickle file not loaded yet)."""
        wanted = title or self.current_title()
        if not wanted:
            return None
        try:
            info = self.registry.find(wanted)
        except ModelError:
            return None
        loaded = self.models.current
        if loaded is not None and loaded.info.path == info.path:
            return loaded.family
        return checkpoint_family(info)

    def update_options(self, **changes: object) -> None:
        """Validate, apply and persist settings changes (invalid values raise, nothing is half-applied)."""
        with self._options_lock:
            updated = self.options.model_validate({**self.options.model_dump(), **changes})
            for key in changes:
                setattr(self.options, key, getattr(updated, key))
            self.options.save(self.paths.config_file)
        if any(key in OPTION_FIELDS for key in changes):
            self.models.set_compute(compute_settings_from(self.options, self.args))


class StartupError(Exception):
    """The application cannot start as asked (the message says why and what to do)."""


def start_ray_pool(args: argparse.Namespace, options: Options) -> Any:
    """Join the Ray cluster of ``--ray-address`` (Ray is imported here only) and start its workers."""
    try:
        from modules.cluster.pool import ClusterError, PoolSettings, RayWorkerPool
    except ImportError as error:
        raise StartupError(f"--ray-address needs Ray: pip install -r requirements-ray.txt ({error})") from error
    if args.ray_workers is not None and args.ray_workers < 1:
        raise StartupError("--ray-workers must be 1 or more")
    settings = PoolSettings(address=args.ray_address, workers=args.ray_workers)
    logger.info("ray cluster address=%s workers=%s", args.ray_address, args.ray_workers or "one per GPU")
    try:
        return RayWorkerPool(settings, args, options, resolve_checkpoint=lambda name: (name, name) if name else None)
    except ClusterError as error:
        raise StartupError(str(error)) from error

"""The model service: the one way processing, the UI and the API use, switch, unload and save checkpoints.

``with models.use(checkpoint, networks) as scope:`` is one pass: it loads the checkpoint (or takes it from the
RAM cache), applies the prompt's LoRA, the embeddings and the VAE choice, and on exit, exceptions included,
removes the LoRA deltas and gives back the checkpoint that was loaded before the scope. A scope that borrows
another checkpoint (a hires pass with its own checkpoint, a per-request checkpoint) keeps the previous one in
RAM meanwhile, so giving it back reads nothing from disk.

The networks are injected (``NetworkPatcher``): this module sits below ``modules.networks`` in the layers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from modules.compute import ComputeSettings
from modules.models.convert import save_as
from modules.models.errors import ModelError
from modules.models.manager import LoadedModel, ModelManager
from modules.models.registry import CheckpointRegistry

logger = logging.getLogger(__name__)


class AppliedNetworkState(Protocol):
    """What applying networks reports: notes for the user and infotext keys."""

    notes: list[str]
    infotext: dict[str, str]


class NetworkPatcher(Protocol):
    """LoRA / embeddings / VAE for one pass (``modules.networks.service.Networks`` implements it)."""

    def applied(
        self, model: LoadedModel, prompts: Sequence[str], negative_prompts: Sequence[str], vae: str | None = None
    ) -> AbstractContextManager[AppliedNetworkState]: ...

    def use_checkpoint_vae(self, model: LoadedModel) -> None: ...


@dataclass(frozen=True)
class NetworkRequest:
    """The networks of one pass: the prompts whose tags and embedding names apply, and the VAE (None: setting)."""

    prompts: Sequence[str] = ()
    negative_prompts: Sequence[str] = ()
    vae: str | None = None


@dataclass
class ModelScope:
    """What a pass gets: the model, and what its networks reported."""

    model: LoadedModel
    notes: list[str] = field(default_factory=list)
    infotext: dict[str, str] = field(default_factory=dict)


class ModelService:
    """Owns the model manager for everyone above it; every operation holds one lock, so none overlaps another."""

    def __init__(self, manager: ModelManager, networks: NetworkPatcher | None = None) -> None:
        self.manager = manager
        self.networks = networks
        self._lock = threading.RLock()

    @property
    def registry(self) -> CheckpointRegistry:
        return self.manager.registry

    @property
    def current(self) -> LoadedModel | None:
        return self.manager.current

    @property
    def device_name(self) -> str:
        return str(self.manager.policy.device)

    @contextmanager
    def use(self, checkpoint: str | None = None, networks: NetworkRequest | None = None) -> Iterator[ModelScope]:
        """One pass with ``checkpoint`` (None: the loaded one) and ``networks`` applied; restored on exit."""
        with self._lock:
            entry = self.manager.current
            model = self._activate(checkpoint)
            try:
                compute = dict(model.compute.infotext) if model.compute is not None else {}
                if networks is None or self.networks is None:
                    yield ModelScope(model, infotext=compute)
                else:
                    with self.networks.applied(
                        model, networks.prompts, networks.negative_prompts, networks.vae
                    ) as applied:
                        yield ModelScope(model, list(applied.notes), {**compute, **applied.infotext})
            finally:
                self._give_back(entry)

    def _activate(self, checkpoint: str | None) -> LoadedModel:
        if not checkpoint:
            return self.manager.get()
        info = self.registry.find(checkpoint)
        current = self.manager.current
        if current is not None and current.info.path == info.path:
            return current
        logger.info("scope borrows checkpoint name=%s", info.name)
        return self.manager.load(info, keep_previous=True)

    def _give_back(self, entry: LoadedModel | None) -> None:
        if entry is None or self.manager.current is entry:
            return
        logger.info("scope gives back checkpoint name=%s", entry.info.name)
        self.manager.load(entry.info)

    def load(self, checkpoint: str) -> LoadedModel:
        """Switch to ``checkpoint`` (the top bar, the options route); the previous one stays on failure."""
        with self._lock:
            return self.manager.load(checkpoint)

    def ensure_loaded(self, checkpoint: str | None = None) -> LoadedModel:
        """The loaded model, loading ``checkpoint`` (or the first one found) when none is."""
        with self._lock:
            current = self.manager.current
            if current is not None and (not checkpoint or self.registry.find(checkpoint).path == current.info.path):
                return current
            return self.manager.load(checkpoint) if checkpoint else self.manager.get()

    def unload(self) -> None:
        with self._lock:
            self.manager.unload()

    def reload(self) -> LoadedModel:
        """Read the loaded checkpoint again from disk (after it changed there, say)."""
        with self._lock:
            current = self.manager.current
            if current is None:
                raise ModelError("No checkpoint is loaded.")
            self.manager.unload()
            return self.manager.load(current.info)

    def save_current_as(self, target: Path, fp16: bool = False) -> Path:
        """Write the loaded checkpoint with its own VAE and scheduler (never what the last request used)."""
        with self._lock:
            model = self.manager.current
            if model is None:
                raise ModelError("No checkpoint is loaded.")
            if self.networks is not None:
                self.networks.use_checkpoint_vae(model)
            return save_as(model.pipeline, target, fp16=fp16)

    def set_compute(self, settings: ComputeSettings) -> None:
        """Apply new compute settings (Settings > Compute); may reload the loaded checkpoint."""
        with self._lock:
            self.manager.set_compute(settings)

    def set_cache_size(self, size: int) -> None:
        with self._lock:
            self.manager.set_cache_size(size)

    def cached_names(self) -> list[str]:
        return self.manager.cached_names()

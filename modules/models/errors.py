"""Errors raised while finding, reading and loading checkpoints; each message is meant for the user."""

from __future__ import annotations

from pathlib import Path


class ModelError(Exception):
    """Base of every checkpoint error; ``str(error)`` is a sentence a user can act on."""


class CheckpointNotFoundError(ModelError):
    """No checkpoint matches a name, title or hash."""


class CorruptCheckpointError(ModelError):
    """A file is truncated, damaged or not a checkpoint at all."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"checkpoint {path} is damaged or not a checkpoint: {reason}")
        self.path = path


class UnsafeCheckpointError(ModelError):
    """A pickle checkpoint that needs arbitrary code to unpickle; it was refused and nothing ran."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"checkpoint {path} was refused: it is a pickle that needs to run code to load ({reason}). "
            "Only plain tensors can be loaded from .ckpt/.pt files; convert it to .safetensors with a trusted tool."
        )
        self.path = path


class UnsupportedModelError(ModelError):
    """A checkpoint of an architecture Easel cannot load (Flux, SD3, refiner, ...)."""


class CheckpointLoadError(ModelError):
    """Building the pipeline from a checkpoint failed for another reason (shown with the file and the cause)."""

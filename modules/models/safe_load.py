"""Read checkpoint files without ever running code from them.

``.safetensors`` is read through the safetensors library (a JSON header plus raw tensor data, no code).
``.ckpt``/``.pt`` are pickles: they are read only through ``torch.load(weights_only=True)``, whose restricted
unpickler accepts tensors and plain containers and refuses anything else before it is built. A file that
needs more is refused with UnsafeCheckpointError.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from modules.models.errors import CorruptCheckpointError, UnsafeCheckpointError

logger = logging.getLogger(__name__)

SAFETENSORS_SUFFIXES = frozenset({".safetensors"})
PICKLE_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin"})
CHECKPOINT_SUFFIXES = SAFETENSORS_SUFFIXES | PICKLE_SUFFIXES

# torch's restricted unpickler says this when a pickle asks for a global it does not allow.
WEIGHTS_ONLY_REFUSAL = "Weights only load failed"


def is_safetensors(path: Path) -> bool:
    return path.suffix.lower() in SAFETENSORS_SUFFIXES


def read_safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Shapes from the safetensors header; no tensor data is read."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as error:
        raise CorruptCheckpointError(path, str(error)) from error


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise CorruptCheckpointError(path, str(error)) from error


def load_pickle_weights(path: Path) -> dict[str, torch.Tensor]:
    """``torch.load(weights_only=True)``, memory-mapped when the file is in torch's zip format."""
    use_mmap = zipfile.is_zipfile(path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=use_mmap)
    except pickle.UnpicklingError as error:
        if WEIGHTS_ONLY_REFUSAL in str(error):
            raise UnsafeCheckpointError(path, refusal_reason(str(error))) from None
        raise CorruptCheckpointError(path, first_line(str(error))) from error
    except Exception as error:  # any failure to parse an untrusted file (IndexError, EOFError, ...) means damaged
        raise CorruptCheckpointError(path, f"{type(error).__name__}: {first_line(str(error))}") from error
    return unwrap_state_dict(path, loaded)


def unwrap_state_dict(path: Path, loaded: object) -> dict[str, torch.Tensor]:
    """A1111 ``.ckpt`` files keep the weights under ``"state_dict"`` next to training counters."""
    while isinstance(loaded, Mapping) and "state_dict" in loaded:
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping):
        raise CorruptCheckpointError(path, f"expected a dict of tensors, found {type(loaded).__name__}")
    tensors = {str(key): value for key, value in loaded.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise CorruptCheckpointError(path, "the file holds no tensors")
    return tensors


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a single-file checkpoint, read safely (see the module docstring)."""
    if not path.is_file():
        raise CorruptCheckpointError(path, "the file does not exist")
    if is_safetensors(path):
        return load_safetensors(path)
    return load_pickle_weights(path)


def read_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a single-file checkpoint; cheap for safetensors, mmap-loaded for pickles."""
    if not path.is_file():
        raise CorruptCheckpointError(path, "the file does not exist")
    if is_safetensors(path):
        return read_safetensors_shapes(path)
    return {key: tuple(tensor.shape) for key, tensor in load_pickle_weights(path).items()}


def refusal_reason(message: str) -> str:
    """The line of torch's refusal that names the blocked global (e.g. "unsupported GLOBAL posix.system")."""
    for line in message.splitlines():
        if "GLOBAL" in line or "Unsupported" in line:
            return line.strip().rstrip(".")
    return "it references objects other than tensors"


def first_line(text: str) -> str:
    stripped = text.strip()
    return stripped.splitlines()[0] if stripped else "unknown error"

"""Safe reading of model weight files and architecture detection through spandrel.

spandrel's own ``ModelLoader.load_from_file`` reads ``.pth`` files with its restricted unpickler (safe) but
``.pt`` files with ``torch.jit.load``, which would run TorchScript code from an untrusted file. Easel reads
every pickle-based file with ``torch.load(weights_only=True)`` (no arbitrary objects are rebuilt) and
safetensors with ``safetensors``, then hands the plain state dict to a spandrel registry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from spandrel import MAIN_REGISTRY, ArchRegistry, ModelDescriptor, StateDict, canonicalize_state_dict

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES: tuple[str, ...] = (".pth", ".pt", ".ckpt", ".safetensors")


class ModelFileError(ValueError):
    """A weight file cannot be read or is not a model spandrel knows."""


@dataclass(frozen=True)
class ArchitectureMatch:
    """What a key/shape read of a weight file says about it (no tensor data is read)."""

    supported: bool
    architecture: str
    reason: str


def build_arch_registry() -> ArchRegistry:
    """spandrel's registry plus spandrel_extra_arches (CodeFormer), without changing spandrel's global one."""
    registry = MAIN_REGISTRY.copy()
    try:
        from spandrel_extra_arches import EXTRA_REGISTRY
    except ImportError:
        logger.info("spandrel_extra_arches=absent effect='CodeFormer and other extra architectures unavailable'")
        return registry
    registry.add(*EXTRA_REGISTRY, ignore_duplicates=True)
    return registry


def read_state_dict(path: Path, device: str | torch.device = "cpu") -> StateDict:
    """Read a weight file as a canonical state dict; pickles are read with ``weights_only=True``.

    ``device="meta"`` reads only key names, shapes and dtypes (no tensor data).
    """
    suffix = path.suffix.lower()
    if suffix not in WEIGHT_SUFFIXES:
        raise ModelFileError(f"{path.name}: unsupported file type {suffix!r}; expected one of {WEIGHT_SUFFIXES}")
    try:
        if suffix == ".safetensors":
            state_dict = _read_safetensors(path, torch.device(device))
        else:
            state_dict = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        raise ModelFileError(
            f"{path.name}: cannot be read as weights only ({type(error).__name__}: {error})"
        ) from error
    if not isinstance(state_dict, dict):
        raise ModelFileError(f"{path.name}: holds a {type(state_dict).__name__}, not a state dict")
    return canonicalize_state_dict(state_dict)


def _read_safetensors(path: Path, device: torch.device) -> StateDict:
    if device.type != "meta":
        return load_file(path, device=str(device))
    state_dict: StateDict = {}
    with safe_open(path, framework="pt") as handle:
        for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
            tensor_slice = handle.get_slice(key)
            dtype = _SAFETENSORS_DTYPES.get(tensor_slice.get_dtype(), torch.float32)
            state_dict[key] = torch.empty(tensor_slice.get_shape(), dtype=dtype, device="meta")
    return state_dict


_SAFETENSORS_DTYPES = MappingProxyType(
    {
        "F32": torch.float32,
        "F16": torch.float16,
        "BF16": torch.bfloat16,
        "F64": torch.float64,
        "I64": torch.int64,
        "I32": torch.int32,
        "U8": torch.uint8,
        "BOOL": torch.bool,
    }
)


def detect_architecture(path: Path, registry: ArchRegistry | None = None) -> ArchitectureMatch:
    """Tell whether spandrel recognises a file, reading keys and shapes only."""
    registry = registry or build_arch_registry()
    try:
        state_dict = read_state_dict(path, device="meta")
    except ModelFileError as error:
        return ArchitectureMatch(supported=False, architecture="", reason=str(error))
    for support in registry.architectures("detection"):
        try:
            if support.detect(state_dict):
                return ArchitectureMatch(supported=True, architecture=support.architecture.name, reason="")
        except Exception as error:  # a detector failing on odd keys must not break the listing
            logger.debug("detector=%s file=%s error=%r", support.architecture.id, path.name, error)
    sample = ", ".join(list(state_dict)[:3])
    reason = f"spandrel does not recognise this architecture ({len(state_dict)} tensors, keys like {sample})"
    return ArchitectureMatch(supported=False, architecture="", reason=reason)


def load_descriptor(path: Path, device: torch.device, registry: ArchRegistry | None = None) -> ModelDescriptor:
    """Load a weight file into a spandrel model descriptor, in eval mode on ``device`` in its best dtype."""
    state_dict = read_state_dict(path)
    try:
        descriptor = (registry or build_arch_registry()).load(state_dict)
    except Exception as error:  # UnsupportedModelError or an arch-specific KeyError/shape error
        raise ModelFileError(f"{path.name}: spandrel cannot load it ({type(error).__name__}: {error})") from error
    descriptor = descriptor.to(device).eval()
    descriptor = descriptor.to(choose_dtype(descriptor, device))
    logger.info(
        "model=%s architecture=%s scale=%s device=%s dtype=%s",
        path.name,
        descriptor.architecture.name,
        descriptor.scale,
        device,
        descriptor.dtype,
    )
    return descriptor


def choose_dtype(descriptor: ModelDescriptor, device: torch.device) -> torch.dtype:
    """float32 on the CPU; half (or bfloat16) on an accelerator when the architecture supports it."""
    if device.type == "cpu":
        return torch.float32
    if descriptor.supports_half:
        return torch.float16
    if descriptor.supports_bfloat16:
        return torch.bfloat16
    return torch.float32

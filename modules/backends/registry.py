"""The one list of backends: ``--backend`` choices, the per-request setting, and how each one is built.

Imported lazily by name, so listing the choices (flag parsing) loads no backend.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modules.backends.base import Backend

BACKENDS: Mapping[str, str] = MappingProxyType(
    {
        "diffusers": "modules.backends.diffusers_backend:DiffusersBackend",
        "original": "modules.backends.original.backend:OriginalBackend",
    }
)
DEFAULT_BACKEND = "diffusers"


def backend_names() -> list[str]:
    return list(BACKENDS)


def create_backend(name: str) -> Backend:
    """A new backend object for ``name`` (one of ``backend_names()``)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    module_name, class_name = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)()

"""A1111's ``modules.paths`` / ``paths_internal``: folders of this installation (read when asked)."""

from __future__ import annotations

from typing import Any

from modules.compat.runtime import application
from modules.paths import INSTALL_DIR

script_path = str(INSTALL_DIR)
extensions_builtin_dir = str(INSTALL_DIR / "extensions-builtin")


def __getattr__(name: str) -> Any:
    paths = application().paths
    values = {
        "data_path": paths.data_dir,
        "models_path": paths.models_dir,
        "extensions_dir": paths.extensions_dir,
        "extensions_builtin_dir": paths.builtin_extensions_dir,
        "default_output_dir": paths.outputs_dir,
        "config_states_dir": paths.data_dir / "config_states",
    }
    if name not in values:
        raise AttributeError(f"Easel's A1111 compatibility layer has no modules.paths.{name}")
    return str(values[name])

"""The objects the A1111 adapter modules read: the application and the extensions' own state. This is the one
module-level state of the program (A1111 extensions expect ``shared.opts`` and friends at module level); it is set
once by ``modules.compat.loader.install`` and read only by ``modules.compat``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modules.application import Application
    from modules.extensions.registry import Extension


@dataclass
class Runtime:
    application: Application | None = None
    args: argparse.Namespace = field(default_factory=argparse.Namespace)
    extensions: list[Extension] = field(default_factory=list)
    # extension settings: key -> OptionInfo (their values: the application's extension_settings)
    option_infos: dict[str, Any] = field(default_factory=dict)
    onchange: dict[str, list[Callable[[], None]]] = field(default_factory=dict)
    callbacks: dict[str, list[tuple[Callable[..., Any], str]]] = field(default_factory=dict)
    loading: Path | None = None  # the extension folder whose script is being imported (scripts.basedir())
    loading_file: str = ""


CURRENT = Runtime()


def runtime() -> Runtime:
    return CURRENT


def application() -> Application:
    """The application; an AttributeError (what an extension sees for a missing attribute) before start."""
    if CURRENT.application is None:
        raise AttributeError("Easel's application is not started yet (used at import time of an extension?)")
    return CURRENT.application

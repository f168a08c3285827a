"""The import hook the extension loader installs: extension files (and only they) see A1111's module names.

A1111 names collide with Easel's (``modules.processing`` and ``modules.scripts`` are Easel packages), so nothing is
put in ``sys.modules`` under those names. Instead each extension file runs with its own ``__builtins__`` whose
``__import__`` maps ``modules.<name>`` to ``modules.compat.a1111.<name>``; a path finder gives the same import
function to every module loaded from an extension folder (an extension's own helper modules). Easel's code keeps
the standard import. Hand-written: Python's import system offers no per-caller aliasing."""

from __future__ import annotations

import builtins
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# A1111 module name (under ``modules.``) -> the adapter module that provides it.
PROVIDED: dict[str, str] = {
    "scripts": "modules.compat.a1111.scripts",
    "script_callbacks": "modules.compat.a1111.script_callbacks",
    "shared": "modules.compat.a1111.shared",
    "shared_cmd_options": "modules.compat.a1111.shared",
    "shared_state": "modules.compat.a1111.shared",
    "options": "modules.compat.a1111.shared",
    "processing": "modules.compat.a1111.processing",
    "images": "modules.compat.a1111.images",
    "paths": "modules.compat.a1111.paths",
    "paths_internal": "modules.compat.a1111.paths",
    "ui_components": "modules.compat.a1111.ui_components",
    "errors": "modules.compat.a1111.errors",
}


class MissingCompatModuleError(ModuleNotFoundError):
    """An extension imported an A1111 module Easel does not provide."""


class A1111Package(types.ModuleType):
    """What ``import modules`` gives extension code: A1111's module names as attributes."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return provided_module(name)


def provided_module(name: str) -> types.ModuleType:
    target = PROVIDED.get(name)
    if target is None:
        raise MissingCompatModuleError(
            f"Easel's A1111 compatibility layer has no module 'modules.{name}'", name=f"modules.{name}"
        )
    return importlib.import_module(target)


PACKAGE = A1111Package("modules", "A1111's modules package as extensions see it (modules.compat)")


def compat_import(
    name: str,
    globals: dict[str, Any] | None = None,
    locals: dict[str, Any] | None = None,
    fromlist: Sequence[str] | None = (),
    level: int = 0,
) -> types.ModuleType:
    """``__import__`` for extension code: ``modules`` and ``modules.X`` are A1111's names; the rest is normal."""
    if level == 0 and (name == "modules" or name.startswith("modules.")):
        parts = name.split(".")
        if len(parts) == 1:
            return PACKAGE
        module = provided_module(parts[1])
        if len(parts) > 2:
            raise MissingCompatModuleError(f"Easel's A1111 compatibility layer has no module '{name}'", name=name)
        return module if fromlist else PACKAGE
    return builtins.__import__(name, globals, locals, fromlist or (), level)


def extension_builtins() -> dict[str, Any]:
    namespace = dict(vars(builtins))
    namespace["__import__"] = compat_import
    return namespace


def exec_extension_file(path: Path, module_name: str, extension_dir: Path) -> types.ModuleType:
    """Import an extension's file as A1111 does (module name = the file name), with A1111's module names; the
    extension folder is on sys.path while it runs (its helper modules are found)."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    module.__dict__["__builtins__"] = extension_builtins()
    added = str(extension_dir) not in sys.path
    if added:
        sys.path.insert(0, str(extension_dir))
    try:
        code = compile(path.read_text(encoding="utf-8"), str(path), "exec")
        exec(code, module.__dict__)
    finally:
        if added:
            sys.path.remove(str(extension_dir))
    return module


class ExtensionFinder(importlib.abc.MetaPathFinder):
    """Modules found under the extension folders run with A1111's module names too (their helper modules)."""

    def __init__(self, folders: Sequence[Path]) -> None:
        self.folders = [folder.resolve() for folder in folders]

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None):
        if fullname == "modules" or fullname.startswith("modules."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            return None
        origin = Path(spec.origin).resolve()
        if not any(origin.is_relative_to(folder) for folder in self.folders):
            return None
        spec.loader = ExtensionLoader(fullname, str(origin))
        return spec


class ExtensionLoader(importlib.machinery.SourceFileLoader):
    def exec_module(self, module: types.ModuleType) -> None:
        module.__dict__["__builtins__"] = extension_builtins()
        super().exec_module(module)


def install_finder(folders: Sequence[Path]) -> ExtensionFinder:
    """Put the finder first on sys.meta_path (once); it only answers for files under ``folders``."""
    for finder in sys.meta_path:
        if isinstance(finder, ExtensionFinder):
            finder.folders = sorted({*finder.folders, *(folder.resolve() for folder in folders)})
            return finder
    finder = ExtensionFinder(folders)
    sys.meta_path.insert(0, finder)
    return finder

"""Loading A1111 extensions: preload.py (flags, before the command line is parsed), install.py, scripts/*.py (with
A1111's module names), callbacks, javascript and style. A broken extension is marked failed with its message and
the rest goes on."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from modules.application import Application
from modules.compat import callbacks, importer
from modules.compat.a1111 import script_callbacks
from modules.compat.a1111 import scripts as a1111_scripts
from modules.compat.adapter import A1111Script, read_all_controls
from modules.compat.runtime import CURRENT
from modules.extensions.manage import run_install_scripts
from modules.extensions.registry import DisableMode, Extension, list_extensions
from modules.paths import DataPaths
from modules.scripts.base import Script

logger = logging.getLogger(__name__)


def disable_mode(args: argparse.Namespace) -> DisableMode:
    if getattr(args, "disable_all_extensions", False):
        return DisableMode.ALL
    if getattr(args, "disable_extra_extensions", False):
        return DisableMode.EXTRA
    return DisableMode.NONE


@dataclass
class Prepared:
    args: argparse.Namespace
    extensions: list[Extension]


def parse_with_extensions(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> Prepared:
    """A1111's start: find the extensions (the data folder from a first look at the flags), let each preload.py add
    its flags, then parse the command line."""
    early, _ = parser.parse_known_args(argv)
    paths = DataPaths.create(early.data_dir, early.models_dir, (), early.styles_file)
    extensions = list_extensions(paths, disable_mode(early))
    for extension in extensions:
        preload = extension.path / "preload.py"
        if extension.enabled and not extension.error and preload.exists():
            try:
                module = importer.exec_extension_file(preload, "preload", extension.path)
                if hasattr(module, "preload"):
                    module.preload(parser)
            except Exception as error:  # an extension's own code: it fails, the program starts
                extension.error = f"preload.py: {type(error).__name__}: {error}"
                logger.exception("extension preload failed name=%s", extension.name)
    return Prepared(parser.parse_args(argv), extensions)


def attach(application: Application, prepared: Prepared) -> list[Script]:
    """Run install.py (unless --skip-install), load every enabled extension's scripts into the application's
    catalogue, then the ``on_ui_settings`` callbacks. Returns the scripts added."""
    started = time.monotonic()
    args, extensions = prepared.args, prepared.extensions
    CURRENT.application, CURRENT.args, CURRENT.extensions = application, args, extensions
    script_callbacks.clear_callbacks()  # a new application: the last one's callbacks are not its
    application.extensions = extensions
    folders = [extension.path for extension in extensions]
    importer.install_finder(folders)
    if not getattr(args, "skip_install", False):
        run_install_scripts(extensions, application.paths.data_dir)
    added: list[Script] = []
    for extension in extensions:
        if extension.enabled and not extension.error:
            added += load_extension_scripts(extension)
    read_all_controls([script for script in added if isinstance(script, A1111Script)])
    application.scripts.add(added)
    application.ui_tab_providers.append(script_callbacks.ui_tabs_callback)
    callbacks.connect(application)
    script_callbacks.ui_settings_callback()
    logger.info(
        "extensions loaded count=%d enabled=%d failed=%d scripts=%d seconds=%.3f",
        len(extensions),
        sum(extension.enabled for extension in extensions),
        sum(bool(extension.error) for extension in extensions),
        len(added),
        time.monotonic() - started,
    )
    return added


def load_extension_scripts(extension: Extension) -> list[Script]:
    """Each scripts/*.py (sorted), imported as A1111 does (module name = file name); every Script subclass defined
    in it becomes an Easel script. A file that fails marks the extension failed; its other files still load."""
    found: list[Script] = []
    for path in sorted((extension.path / "scripts").glob("*.py")):
        CURRENT.loading, CURRENT.loading_file = extension.path, str(path)
        try:
            module = importer.exec_extension_file(path, path.name, extension.path)
            for value in list(vars(module).values()):
                if (
                    isinstance(value, type)
                    and issubclass(value, a1111_scripts.Script)
                    and value is not a1111_scripts.Script
                    and value.__module__ == module.__name__
                ):
                    script = A1111Script(value, str(path))
                    script.title()  # a script whose title() fails is a broken script
                    found.append(script)
                    extension.scripts.append(script.title())
        except Exception as error:  # an extension's own code: it is marked failed, the program goes on
            extension.error = f"{path.name}: {type(error).__name__}: {error}"
            logger.exception("extension script failed extension=%s file=%s", extension.name, path.name)
        finally:
            CURRENT.loading, CURRENT.loading_file = None, ""
    return found


def app_started(app: object) -> None:
    """``on_app_started`` callbacks, with the FastAPI app (A1111 passes its Blocks and app; Easel has no global
    Blocks: None)."""
    script_callbacks.before_ui_callback()
    script_callbacks.app_started_callback(None, app)

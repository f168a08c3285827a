"""The one-way imports of ARCHITECTURE.md: every import under modules/ is checked against one layer table."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULES = ROOT / "modules"

# Lower numbers are lower layers. A module may import its own layer and the layers below it, never above.
# The composition root (webui.py, and modules.cmd_args which it parses with) may import anything.
LAYERS: dict[str, int] = {
    # 0: leaf facts and settings
    "modules.paths": 0,
    "modules.options": 0,
    "modules.devices": 0,
    "modules.compute": 1,  # compute settings applied to a loaded model (below the model manager)
    "modules.samplers": 0,  # the neutral sampler catalogue
    "modules.extension_settings": 0,  # settings extensions add (described without Gradio)
    # 1: models (registry, loader, manager, model service), the hub downloader
    "modules.models": 1,
    "modules.hub": 1,
    "modules.tiny_model": 1,
    "modules.tiny_families": 1,
    # 2: what runs on a model
    "modules.backends": 2,
    "modules.prompts": 2,
    "modules.prompt_parser": 2,
    "modules.networks": 2,
    "modules.controlnet": 2,  # ControlNet models, preprocessors and the residual UNet wrapper (both backends)
    "modules.postprocess": 2,
    # 3: processing (the run object and its stages)
    "modules.processing": 3,
    # 4: scripts (hooks called by processing through its ScriptHooks protocol; run() calls processing), the
    # generation service and the application object
    "modules.scripts": 4,
    "modules.extensions": 4,  # extension folders, metadata, git, install.py (no A1111 module style)
    "modules.generation": 4,
    "modules.assembly": 4,  # builds the generation stack from the flags (the application and each Ray worker)
    "modules.cluster": 4,  # Ray workers behind the one queue (--ray-address)
    "modules.jobs": 4,  # the SQLite queue and image history
    "modules.application": 4,
    "modules.settings_policy": 4,  # who may change which settings (the UI and the API ask it)
    "modules.system_info": 4,  # versions, memory, loaded models, the benchmark
    # 5: the edges
    "modules.api": 5,
    "modules.server": 5,
    "modules.ui": 6,  # the UI may use the server's types; nothing imports the UI
    "modules.cmd_args": 7,
    # A1111's module names for extensions (adapters over the objects below): the one place where A1111's module
    # style is allowed; nothing of Easel's own imports it (test_nothing_imports_the_compat_layer)
    "modules.compat": 7,
}


def layer_of(module: str) -> int | None:
    """The layer of a dotted module name (longest matching prefix), None for third-party modules."""
    matches = [prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")]
    return LAYERS[max(matches, key=len)] if matches else None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def runtime_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every import that runs: ``if TYPE_CHECKING:`` blocks are skipped."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def program_files() -> list[Path]:
    """Every module under modules/ but the package marker ``modules/__init__.py`` itself."""
    return sorted(path for path in MODULES.rglob("*.py") if path != MODULES / "__init__.py")


def upward_imports(importer: str, source: str) -> list[str]:
    """The imports of ``source`` (the text of module ``importer``) that run upward in the layer table."""
    own = layer_of(importer)
    assert own is not None, f"{importer} has no layer in the table: add it"
    offenders = []
    for line, imported in runtime_imports(ast.parse(source)):
        target = layer_of(imported)
        if target is not None and target > own:
            offenders.append(f"{importer}:{line} imports {imported} (layer {target} > {own})")
    return offenders


def test_every_import_runs_downward():
    offenders = [
        offence
        for path in program_files()
        for offence in upward_imports(module_name(path), path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_the_layer_check_catches_an_upward_import():
    """The check itself: a models module importing processing is reported, a TYPE_CHECKING import is not."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "import torch\n"
        "from modules.processing.processing import process\n"
        "if TYPE_CHECKING:\n    from modules.application import Application\n"
    )
    assert upward_imports("modules.models.probe", source) == [
        "modules.models.probe:3 imports modules.processing.processing (layer 3 > 1)",
        "modules.models.probe:3 imports modules.processing.processing.process (layer 3 > 1)",
    ]
    assert upward_imports("modules.ui.probe", source) == []


@pytest.mark.parametrize("library", ["gradio"])
def test_nothing_below_the_ui_imports_gradio(library: str):
    offenders = [
        str(path)
        for path in program_files()
        if layer_of(module_name(path)) < LAYERS["modules.ui"]
        and any(
            name == library or name.startswith(library + ".")
            for _, name in runtime_imports(ast.parse(path.read_text()))
        )
    ]
    assert offenders == []


def test_no_argparse_parsing_at_import_time():
    for path in program_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.Expr | ast.Assign) and "parse_args" in ast.unparse(node):
                raise AssertionError(f"{path} parses flags at import")


def test_nothing_imports_the_compat_layer():
    """Only the composition root (webui.py) and compat itself import modules.compat."""
    offenders = [
        f"{module_name(path)}:{line}"
        for path in program_files()
        if not module_name(path).startswith("modules.compat")
        for line, name in runtime_imports(ast.parse(path.read_text(encoding="utf-8")))
        if name == "modules.compat" or name.startswith("modules.compat.")
    ]
    assert offenders == []

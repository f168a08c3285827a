"""Only modules/ui/ may import gradio, and nothing imports modules/ui/ (the one-way dependency rule)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import REPO_ROOT

MODULES = REPO_ROOT / "modules"


def imported_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_gradio_only_in_ui_and_ui_imported_by_no_module() -> None:
    offenders = []
    for path in sorted(MODULES.rglob("*.py")):
        relative = path.relative_to(REPO_ROOT)
        if relative.parts[:2] == ("modules", "ui"):
            continue
        for name in imported_names(path):
            if name.split(".")[0] == "gradio" or name.startswith("modules.ui"):
                offenders.append(f"{relative} imports {name}")
    assert offenders == []

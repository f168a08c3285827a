"""The one-way imports of ARCHITECTURE.md, checked by walking every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = ROOT / "modules"


def imported_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def program_files() -> list[Path]:
    return sorted(path for path in MODULES.rglob("*.py") if "ui" not in path.relative_to(MODULES).parts)


def test_nothing_below_ui_imports_gradio():
    offenders = [
        str(path)
        for path in program_files()
        if any(name == "gradio" or name.startswith("gradio.") for name in imported_names(path))
    ]
    assert offenders == []


def test_nothing_imports_the_ui_but_the_composition_root():
    offenders = [
        str(path) for path in program_files() if any(name.startswith("modules.ui") for name in imported_names(path))
    ]
    assert offenders == []


def test_no_argparse_parsing_at_import_time():
    for path in program_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.Expr | ast.Assign) and "parse_args" in ast.unparse(node):
                raise AssertionError(f"{path} parses flags at import")

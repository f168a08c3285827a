"""What the page carries besides the Blocks: the browser helpers of javascript/ (Easel's, then the extensions'),
the extensions' style.css, and the live settings the scripts read as ``opts``.

Gradio 6.31's supported hooks are used: the ``head`` and ``css`` parameters of ``mount_gradio_app`` (inline
``<script>`` elements, which gradio's frontend runs in order) and events whose ``js`` runs in the browser."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

import gradio as gr

from modules.options import Options
from modules.paths import DataPaths

logger = logging.getLogger(__name__)

# Loaded before the other scripts: it defines gradioApp(), onUiLoaded() ... that they (and extensions) call.
PAGE_API_SCRIPT = "page.js"


def script_files(paths: DataPaths) -> list[Path]:
    """Easel's javascript/*.js (page.js first, then by name), then each extension's javascript/*.js (A1111 order)."""
    own = sorted(paths.javascript_dir.glob("*.js"), key=lambda path: (path.name != PAGE_API_SCRIPT, path.name))
    return own + sorted(paths.extensions_dir.glob("*/javascript/*.js"))


def extension_styles(paths: DataPaths) -> list[Path]:
    return sorted(paths.extensions_dir.glob("*/style.css"))


def inline_script(path: Path) -> str:
    """One ``<script>`` element holding the file (a closing tag inside the text is escaped, as in JS strings)."""
    text = path.read_text(encoding="utf-8").replace("</script", "<\\/script")
    return f'<script data-source="{path.name}">\n{text}\n</script>'


def page_head(files: Iterable[Path], extra: str = "") -> str:
    parts: list[str] = []
    for path in files:
        try:
            parts.append(inline_script(path))
        except (OSError, UnicodeDecodeError) as error:
            logger.error("script not loaded path=%s error=%s", path, error)
    return "\n".join([*parts, extra]).strip()


def page_css(base: str, styles: Iterable[Path]) -> str:
    parts = [base]
    for path in styles:
        try:
            parts.append(f"/* {path.parent.name}/style.css */\n" + path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as error:
            logger.error("style not loaded path=%s error=%s", path, error)
    return "\n".join(parts)


def options_json(options: Options) -> str:
    """The settings the browser may see (``model_dump`` leaves the Hugging Face token out)."""
    return json.dumps(options.model_dump(), ensure_ascii=False)


def build_options_carrier(options: Options) -> gr.Textbox:
    """A hidden box holding the settings as JSON; ``send_options`` copies it into the page's ``opts``."""
    return gr.Textbox(options_json(options), visible="hidden", elem_id="settings_json", interactive=False)


def send_options(dependency: gr.events.Dependency, carrier: gr.Textbox) -> gr.events.Dependency:
    """After ``dependency`` (an event that wrote ``carrier``), hand the new settings to the page's scripts."""
    return dependency.then(None, inputs=carrier, js="(text) => { easelSetOptions(text); }", queue=False)

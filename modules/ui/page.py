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


def options_json(options: Options, config_file: Path | None = None) -> str:
    """The settings the browser may see: Easel's (``model_dump`` leaves the Hugging Face token out) over the other
    keys of config.json (extensions' settings, which their scripts read from ``opts``), the token never."""
    values: dict = {}
    if config_file is not None:
        try:
            stored = json.loads(config_file.read_text(encoding="utf-8"))
            values = stored if isinstance(stored, dict) else {}
        except FileNotFoundError:
            values = {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            logger.warning("config.json unreadable for the page path=%s error=%s", config_file, error)
    values = {key: value for key, value in values.items() if key not in Options.model_fields}
    return json.dumps({**values, **options.model_dump()}, ensure_ascii=False)


def build_options_carrier(options: Options) -> gr.Textbox:
    """A hidden box holding the settings as JSON; ``send_options`` copies it into the page's ``opts``."""
    return gr.Textbox(options_json(options), visible="hidden", elem_id="settings_json", interactive=False)


def send_options(dependency: gr.events.Dependency, carrier: gr.Textbox) -> gr.events.Dependency:
    """After ``dependency`` (an event that wrote ``carrier``), hand the new settings to the page's scripts."""
    return dependency.then(None, inputs=carrier, js="(text) => { easelSetOptions(text); }", queue=False)


def localization_files(paths: DataPaths) -> dict[str, Path]:
    """A1111's localizations/<name>.json files by name: Easel's, the data folder's, then the extensions' (a later
    file of the same name wins, as A1111 lets extensions override)."""
    found: dict[str, Path] = {}
    folders = [*paths.localizations_dirs, *sorted(paths.extensions_dir.glob("*/localizations"))]
    for folder in folders:
        for path in sorted(folder.glob("*.json")):
            found[path.stem] = path
    return found


def localization_json(paths: DataPaths, name: str) -> str:
    """The chosen file's {"English": "translation"} object as JSON text; "{}" for None or an unreadable file."""
    path = localization_files(paths).get(name)
    if path is None:
        if name and name != "None":
            logger.warning("localization not found name=%s", name)
        return "{}"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        logger.error("localization unreadable path=%s error=%s", path, error)
        return "{}"
    if not isinstance(data, dict):
        logger.error("localization is not an object path=%s", path)
        return "{}"
    return json.dumps({str(key): str(value) for key, value in data.items()}, ensure_ascii=False)


def wire_localization(blocks: gr.Blocks, paths: DataPaths, options: Options) -> None:
    """At each page load, the file chosen by the "localization" setting goes to javascript/localization.js."""
    carrier = gr.Textbox("{}", visible="hidden", elem_id="localization_json", interactive=False)
    loaded = blocks.load(
        lambda: localization_json(paths, options.localization),
        outputs=carrier,
        show_progress="hidden",
        api_visibility="private",
    )
    loaded.then(None, inputs=carrier, js="(text) => { easelSetLocalization(text); }", queue=False)

"""The Extensions tab (A1111's): installed extensions with their git state, enable/disable with Apply and restart,
Check for updates, Update, Remove, Install from URL (git clone; a local path or file:// works), and the index of
available extensions from a URL. With --listen (or --server-name) installing is refused unless
--enable-insecure-extension-access, as A1111."""

from __future__ import annotations

import html
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import gradio as gr
import httpx

from modules.application import Application
from modules.extensions import manage
from modules.extensions.registry import Extension, list_extensions, read_disabled, write_disabled
from modules.ui.messages import status_html

logger = logging.getLogger(__name__)

INDEX_URL = "https://raw.githubusercontent.com/AUTOMATIC1111/stable-diffusion-webui-extensions/master/index.json"
INDEX_TIMEOUT_SECONDS = 10


def installing_allowed(application: Application) -> bool:
    """A1111's ``disable_extension_access``: serving beyond this machine turns the installers off."""
    args = application.args
    exposed = bool(
        getattr(args, "listen", False) or getattr(args, "server_name", None) or getattr(args, "share", False)
    )
    return not exposed or bool(getattr(args, "enable_insecure_extension_access", False))


REFUSED = "Installing and changing extensions is turned off because the server is reachable from the network "
REFUSED += "(--listen); start with --enable-insecure-extension-access to allow it."


def current_extensions(application: Application) -> list[Extension]:
    """The folders as they are now (installed or removed since start), with the load results of this run."""
    loaded = {extension.name: extension for extension in application.extensions}
    found = list_extensions(application.paths)
    for extension in found:
        if extension.name in loaded:
            extension.error = extension.error or loaded[extension.name].error
            extension.scripts = loaded[extension.name].scripts
    return found


def commit_date(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M") if seconds else ""


def installed_table(extensions: list[Extension], updates: dict[str, str] | None = None) -> str:
    updates = updates or {}
    rows = []
    for extension in extensions:
        state = html.escape(extension.error) if extension.error else extension.status
        rows.append(
            "<tr>"
            f"<td>{html.escape(extension.name)}{' (built-in)' if extension.builtin else ''}</td>"
            f"<td>{html.escape(extension.git.remote)}</td><td>{html.escape(extension.git.branch)}</td>"
            f"<td>{extension.git.version}</td><td>{commit_date(extension.git.commit_date)}</td>"
            f"<td class='ext-status-{extension.status}'>{state}</td>"
            f"<td>{html.escape(updates.get(extension.name, ''))}</td>"
            "</tr>"
        )
    head = "<tr><th>Extension</th><th>URL</th><th>Branch</th><th>Version</th><th>Date</th><th>State</th>"
    head += "<th>Update</th></tr>"
    body = "".join(rows) or "<tr><td colspan='7'>No extension installed.</td></tr>"
    return f"<table id='extensions_installed_table'>{head}{body}</table>"


def apply_enabled(application: Application, enabled: list[str]) -> str:
    extensions = current_extensions(application)
    _, mode = read_disabled(application.paths.config_file)
    disabled = [extension.name for extension in extensions if extension.name not in enabled]
    write_disabled(application.paths.config_file, disabled, mode)
    logger.info("extensions disabled=%s", ",".join(disabled) or "-")
    if application.restart is not None:
        application.restart()
    return "Saved. Restart Easel to load the changed set of extensions."


def load_index(url: str) -> list[dict[str, Any]]:
    """The index of available extensions (A1111's index.json: {"extensions": [{name, url, description, tags}]}).
    A file:// URL or a local path is read from disk."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        text = Path(parsed.path if parsed.scheme else url).read_text(encoding="utf-8")
    else:
        response = httpx.get(url, timeout=INDEX_TIMEOUT_SECONDS, follow_redirects=True)
        response.raise_for_status()
        text = response.text
    data = json.loads(text)
    return list(data.get("extensions", [])) if isinstance(data, dict) else list(data)


def index_table(entries: list[dict[str, Any]], installed: set[str]) -> str:
    rows = []
    for entry in entries:
        url = str(entry.get("url", ""))
        name = str(entry.get("name", "")) or url
        done = url.rstrip("/").removesuffix(".git") in installed
        rows.append(
            f"<tr><td><a href='{html.escape(url)}' target='_blank'>{html.escape(name)}</a></td>"
            f"<td>{html.escape(str(entry.get('description', '')))}</td>"
            f"<td>{'installed' if done else html.escape(url)}</td></tr>"
        )
    return (
        "<table id='extensions_index_table'><tr><th>Extension</th><th>Description</th><th>Install URL</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def create_extensions_tab(application: Application) -> None:
    allowed = installing_allowed(application)

    def names() -> list[str]:
        return [extension.name for extension in current_extensions(application)]

    def enabled_names() -> list[str]:
        return [extension.name for extension in current_extensions(application) if extension.enabled]

    with gr.Tabs():
        with gr.Tab("Installed", id="extensions_installed"):
            if not allowed:
                gr.Markdown(REFUSED, elem_id="extensions_refused")
            with gr.Row():
                apply = gr.Button("Apply and restart", variant="primary", elem_id="extensions_apply")
                check = gr.Button("Check for updates", elem_id="extensions_check")
                update = gr.Button("Update", elem_id="extensions_update")
            enabled = gr.CheckboxGroup(names(), value=enabled_names(), label="Enabled", elem_id="extensions_enabled")
            with gr.Row():
                removable = gr.Dropdown(names(), label="Extension to remove", elem_id="extensions_remove_name")
                remove = gr.Button("Remove", variant="stop", elem_id="extensions_remove")
            table = gr.HTML(installed_table(current_extensions(application)), elem_id="extensions_table")
            status = gr.HTML("", elem_id="extensions_status")
        with gr.Tab("Install from URL", id="extensions_install"):
            url = gr.Textbox(label="URL for extension's git repository", elem_id="extensions_url")
            branch = gr.Textbox(label="Specific branch name (empty for default)", elem_id="extensions_branch")
            folder = gr.Textbox(label="Local directory name (empty for the URL's name)", elem_id="extensions_dir")
            install = gr.Button("Install", variant="primary", elem_id="extensions_install_button")
            install_status = gr.HTML("", elem_id="extensions_install_status")
        with gr.Tab("Available", id="extensions_available"):
            index_url = gr.Textbox(INDEX_URL, label="Extension index URL", elem_id="extensions_index_url")
            load = gr.Button("Load from:", elem_id="extensions_index_load")
            available = gr.HTML("", elem_id="extensions_available_table")

    def refreshed(message: str, kind: str = "info", updates: dict[str, str] | None = None) -> tuple[Any, ...]:
        extensions = current_extensions(application)
        choices = [extension.name for extension in extensions]
        return (
            installed_table(extensions, updates),
            gr.update(choices=choices, value=[e.name for e in extensions if e.enabled]),
            gr.update(choices=choices, value=None),
            status_html(message, kind),
        )

    outputs = [table, enabled, removable, status]

    def on_apply(chosen: list[str]) -> tuple[Any, ...]:
        if not allowed:
            return refreshed(REFUSED, "error")
        return refreshed(apply_enabled(application, chosen or []))

    def on_check() -> tuple[Any, ...]:
        results = {e.name: manage.check_for_updates(e).message for e in current_extensions(application)}
        return refreshed("Checked for updates.", updates=results)

    def on_update() -> tuple[Any, ...]:
        if not allowed:
            return refreshed(REFUSED, "error")
        done, failed = [], []
        for extension in current_extensions(application):
            if manage.check_for_updates(extension).behind:
                try:
                    manage.update(extension)
                    done.append(extension.name)
                except manage.ExtensionError as error:
                    failed.append(f"{extension.name}: {error}")
        message = f"Updated: {', '.join(done) or 'nothing'}." + (f" Failed: {'; '.join(failed)}" if failed else "")
        return refreshed(
            message + (" Restart Easel to load the new code." if done else ""), "error" if failed else "info"
        )

    def on_remove(name: str | None) -> tuple[Any, ...]:
        if not allowed:
            return refreshed(REFUSED, "error")
        chosen = next((e for e in current_extensions(application) if e.name == name), None)
        if chosen is None:
            return refreshed("Choose an extension to remove.", "error")
        try:
            manage.remove(chosen)
        except (manage.ExtensionError, OSError) as error:
            return refreshed(str(error), "error")
        return refreshed(f"Removed {name}. Restart Easel to unload its code.")

    def on_install(address: str, wanted_branch: str, name: str) -> tuple[Any, ...]:
        if not allowed:
            return (*refreshed(REFUSED, "error")[:3], status_html(REFUSED, "error"))
        try:
            target = manage.install_from_url(application.paths.extensions_dir, address, name, wanted_branch.strip())
        except manage.ExtensionError as error:
            return (*refreshed("")[:3], status_html(str(error), "error"))
        message = f"Installed into {target}. Use Installed > Apply and restart to load it."
        return (*refreshed("")[:3], status_html(message))

    def on_load(address: str) -> str:
        try:
            entries = load_index(address.strip())
        except (httpx.HTTPError, OSError, ValueError) as error:
            return str(
                status_html(
                    f"Could not load the extension index from {address} ({error}). Offline? "
                    "Install from a URL (or a local git folder) instead.",
                    "error",
                )
            )
        installed = {e.git.remote.rstrip("/").removesuffix(".git") for e in current_extensions(application)}
        return index_table(entries, installed)

    common = {"show_progress": "hidden", "api_visibility": "private"}
    apply.click(on_apply, inputs=enabled, outputs=outputs, **common)
    check.click(on_check, outputs=outputs, **common)
    update.click(on_update, outputs=outputs, **common)
    remove.click(on_remove, inputs=removable, outputs=outputs, **common)
    install.click(
        on_install, inputs=[url, branch, folder], outputs=[table, enabled, removable, install_status], **common
    )
    load.click(on_load, inputs=index_url, outputs=available, **common)

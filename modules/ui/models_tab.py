"""The Models tab: search the Hugging Face hub, list a repository's files, download, watch progress, cancel.

Also the Hugging Face token field of the Settings tab (a password box; the stored token never reaches the browser).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import gradio as gr

from modules.application import Application
from modules.hub.client import HubClient, ModelSummary, RepoListing, SearchKind, SortKey, gated_error
from modules.hub.downloads import DownloadManager, DownloadState, format_bytes
from modules.hub.errors import HubError
from modules.hub.files import FileKind, guess_file_kind, is_weight
from modules.hub.startup import create_download_manager
from modules.models.errors import ModelError
from modules.models.inventory import checkpoint_rows
from modules.settings_policy import settings_policy
from modules.ui.checkpoints import checkpoint_state
from modules.ui.messages import status_html

logger = logging.getLogger(__name__)

SEARCH_HEADERS = ["id", "pipeline or type", "downloads", "likes", "modified", "gated"]
FILE_HEADERS = ["file", "size"]
ACTIVE_STATES = frozenset({DownloadState.QUEUED, DownloadState.RUNNING})


@dataclass
class ModelsTab:
    downloads: DownloadManager
    client: HubClient


def search_table(client: HubClient, query: str, kind: str, sort: str, page: int) -> tuple[list[list[Any]], str]:
    """Rows for the search table and a status line (errors as sentences)."""
    try:
        rows = client.search(query or "", SearchKind(kind), SortKey(sort), int(page or 0))
    except HubError as error:
        return [], status_html(str(error), "error")
    if not rows:
        return [], status_html("No model found on this page.", "note")
    return [summary_row(row) for row in rows], status_html(f"{len(rows)} models (page {int(page or 0) + 1}).")


def summary_row(row: ModelSummary) -> list[Any]:
    modified = row.last_modified.strftime("%Y-%m-%d") if row.last_modified else ""
    return [row.id, row.kind, row.downloads, row.likes, modified, "yes" if row.gated else ""]


def files_table(listing: RepoListing) -> tuple[list[list[Any]], str]:
    rows = [[item.path, format_bytes(item.size)] for item in listing.files]
    kind = "diffusers pipeline" if listing.is_diffusers_pipeline else "single files"
    gated = " (gated: a token with access is needed)" if listing.gated else ""
    return rows, f"{listing.repo_id}: {len(rows)} files, {format_bytes(listing.total_bytes)} in all, {kind}{gated}"


def progress_html(downloads: DownloadManager) -> str:
    """One line per download (newest first), with a bar."""
    lines = []
    for job in reversed(downloads.jobs()):
        status = job.status()
        kind = "error" if status.state is DownloadState.FAILED else "info"
        bar = f'<progress value="{status.fraction:.3f}" max="1" style="width:100%"></progress>'
        lines.append(status_html(f"[{status.id}] {status.describe()}", kind) + bar)
    return "".join(lines) or status_html("No downloads yet.")


def active_job_ids(downloads: DownloadManager) -> list[str]:
    return [job.id for job in downloads.jobs() if job.status().state in ACTIVE_STATES]


def start_download(tab: ModelsTab, repo_id: str, as_pipeline: bool, fp16: bool, chosen: list[str], kind: str) -> str:
    repo_id = (repo_id or "").strip()
    if not repo_id:
        return status_html("Enter or select a repository first.", "note")
    try:
        listing = tab.client.list_files(repo_id)
        if listing.gated and not tab.client.token():
            # refused here rather than "Download started" followed by a failure a moment later
            raise gated_error(tab.client.endpoint, repo_id, has_token=False)
        if as_pipeline:
            job = tab.downloads.start_pipeline(repo_id, fp16=fp16, listing=listing)
        else:
            if not chosen:
                return status_html("Choose the files to download.", "note")
            job = tab.downloads.start_files(repo_id, [(path, FileKind(kind)) for path in chosen], listing=listing)
    except HubError as error:
        return status_html(str(error), "error")
    return status_html(f"Download started: {job.description} ({format_bytes(job.total_bytes)}).")


def build_search(tab: ModelsTab) -> tuple[gr.Dataframe, gr.Textbox]:
    with gr.Row():
        query = gr.Textbox(label="Search the Hugging Face hub", elem_id="models_query", scale=4)
        kind = gr.Dropdown([item.value for item in SearchKind], value=SearchKind.DIFFUSERS.value, label="Type")
        sort = gr.Dropdown([item.value for item in SortKey], value=SortKey.DOWNLOADS.value, label="Sort by")
        page = gr.Number(0, label="Page", precision=0, minimum=0, elem_id="models_page", scale=0, min_width=80)
        search = gr.Button("Search", variant="primary", elem_id="models_search", scale=0, min_width=100)
    status = gr.HTML(elem_id="models_search_status")
    table = gr.Dataframe(headers=SEARCH_HEADERS, interactive=False, elem_id="models_table", max_height=400)
    repo = gr.Textbox(label="Repository", placeholder="org/name (click a row above)", elem_id="models_repo")

    def run(query_text: str, kind_value: str, sort_value: str, page_value: float) -> tuple[Any, str]:
        rows, message = search_table(tab.client, query_text, kind_value, sort_value, int(page_value or 0))
        return gr.update(value=rows or None, headers=SEARCH_HEADERS), message

    def pick(event: gr.SelectData) -> str:
        return str(event.row_value[0]) if event.row_value else ""

    for trigger in (search.click, query.submit):
        trigger(run, [query, kind, sort, page], [table, status], api_visibility="private")
    table.select(pick, None, repo, api_visibility="private")
    return table, repo


def build_files(tab: ModelsTab, repo: gr.Textbox) -> None:
    with gr.Row():
        show = gr.Button("Show files", elem_id="models_show_files", scale=0, min_width=120)
        summary = gr.HTML(elem_id="models_files_summary")
    files = gr.Dataframe(headers=FILE_HEADERS, interactive=False, elem_id="models_files", max_height=300)
    with gr.Row():
        as_pipeline = gr.Checkbox(
            True, label="Download as diffusers pipeline (safetensors only)", elem_id="models_pipe"
        )
        fp16 = gr.Checkbox(True, label="fp16 variant when present", elem_id="models_fp16")
    chosen = gr.CheckboxGroup([], label="Single files to download", elem_id="models_chosen")
    kind = gr.Dropdown([item.value for item in FileKind], value=FileKind.CHECKPOINT.value, label="Save as")
    download = gr.Button("Download", variant="primary", elem_id="models_download")
    started = gr.HTML(elem_id="models_download_status")

    def list_repo(repo_id: str) -> tuple[Any, str, Any, Any, Any]:
        try:
            listing = tab.client.list_files((repo_id or "").strip())
        except HubError as error:
            return None, status_html(str(error), "error"), gr.update(choices=[], value=[]), gr.update(), gr.update()
        rows, text = files_table(listing)
        weights = [item.path for item in listing.files if is_weight(item.path)]
        guessed = guess_file_kind(weights[0]) if weights else FileKind.CHECKPOINT
        return (
            rows,
            status_html(text),
            gr.update(choices=weights, value=[]),
            gr.update(value=listing.is_diffusers_pipeline),
            gr.update(value=guessed.value),
        )

    show.click(list_repo, repo, [files, summary, chosen, as_pipeline, kind], api_visibility="private")
    # another repository: the listed files (and the choice among them) belong to the previous one
    repo.change(
        lambda: (None, "", gr.update(choices=[], value=[])),
        None,
        [files, summary, chosen],
        show_progress="hidden",
        queue=False,
        api_visibility="private",
    )
    download.click(
        lambda *values: start_download(tab, *values),
        [repo, as_pipeline, fp16, chosen, kind],
        started,
        api_visibility="private",
    )


def build_progress(tab: ModelsTab, application: Application, table: gr.Dataframe, loaded: gr.HTML) -> None:
    """The downloads' progress, refreshed every second; the Checkpoints table and the loaded-model line follow
    when a download (or anything else) changed the checkpoints or the loaded model."""
    progress = gr.HTML(progress_html(tab.downloads), elem_id="models_progress")
    seen = gr.State("")
    with gr.Row():
        job = gr.Dropdown([], label="Running download", elem_id="models_job", allow_custom_value=True, scale=3)
        cancel = gr.Button("Cancel download", variant="stop", elem_id="models_cancel", scale=0, min_width=150)
    timer = gr.Timer(1.0)

    def tick(selected: str | None, last: str) -> tuple[Any, ...]:
        ids = active_job_ids(tab.downloads)
        jobs = progress_html(tab.downloads), gr.update(choices=ids, value=selected if selected in ids else None)
        state = checkpoint_state(application)
        if state == last:
            return *jobs, gr.skip(), gr.skip(), last
        return *jobs, checkpoint_table(application), loaded_status(application), state

    def cancel_job(selected: str | None) -> str:
        if selected:
            tab.downloads.cancel(selected)
        return progress_html(tab.downloads)

    outputs = [progress, job, table, loaded, seen]
    timer.tick(tick, [job, seen], outputs, show_progress="hidden", api_visibility="private")
    cancel.click(cancel_job, job, progress, api_visibility="private")


def save_loaded_as(application: Application, name: str, fp16: bool) -> str:
    """Write the loaded checkpoint into models/Stable-diffusion (x.safetensors: single file, x: folder)."""
    name = (name or "").strip()
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return status_html("Give a plain name: x.safetensors for one file, or x for a diffusers folder.", "note")
    loaded = application.models.current
    if loaded is None:
        return status_html("No checkpoint is loaded.", "note")
    target = application.paths.checkpoints_dir / name
    models = application.models
    try:
        application.service.run_task(lambda: models.save_current_as(target, fp16=fp16), kind="save-checkpoint")
    except (ModelError, OSError, ValueError) as error:
        return status_html(f"Not saved: {error}", "error")
    application.registry.refresh()
    return status_html(f"Saved {loaded.info.name} as {target}.")


def build_save_as(application: Application) -> None:
    with gr.Accordion("Save the loaded checkpoint as", open=False):
        with gr.Row():
            name = gr.Textbox(
                label="Name (x.safetensors: single file, x: diffusers folder)", elem_id="models_save_name"
            )
            fp16 = gr.Checkbox(False, label="fp16", elem_id="models_save_fp16", scale=0, min_width=80)
            save = gr.Button("Save", elem_id="models_save", scale=0, min_width=100)
        result = gr.HTML(elem_id="models_save_status")
    save.click(lambda *values: save_loaded_as(application, *values), [name, fp16], result, api_visibility="private")


CHECKPOINT_HEADERS = ["checkpoint", "kind", "size", "hash", "architecture"]


def checkpoint_table(application: Application, refresh: bool = False) -> list[list[Any]]:
    if refresh:
        application.registry.refresh()
    return [
        [row.name, row.kind, format_bytes(row.size_bytes), row.short_hash or "(on load)", row.architecture]
        for row in checkpoint_rows(application.registry)
    ]


def loaded_status(application: Application) -> str:
    loaded = application.models.current
    if loaded is None:
        return status_html("No checkpoint is loaded.", "note")
    architecture = loaded.architecture.display_name if loaded.architecture else "sidecar config"
    return status_html(
        f"Loaded {loaded.info.name} [{loaded.short_hash}] ({architecture}) in {loaded.load_seconds:.2f} s; "
        f"weights {format_bytes(loaded.weights_bytes)} on {application.models.device_name}."
    )


def unload_checkpoint(application: Application) -> str:
    application.service.run_task(application.models.unload, kind="unload-checkpoint")
    return loaded_status(application)


def reload_checkpoint(application: Application) -> str:
    """Load the current checkpoint again from disk (after it changed there, say)."""
    if application.models.current is None:
        return status_html("No checkpoint is loaded.", "note")
    try:
        application.service.run_task(application.models.reload, kind="reload-checkpoint")
    except (ModelError, OSError) as error:
        return status_html(f"Not reloaded: {error}", "error")
    return loaded_status(application)


def build_checkpoints(application: Application) -> tuple[gr.Dataframe, gr.HTML]:
    with gr.Accordion("Checkpoints", open=True):
        table = gr.Dataframe(
            value=lambda: checkpoint_table(application),
            headers=CHECKPOINT_HEADERS,
            interactive=False,
            elem_id="models_checkpoints",
        )
        with gr.Row():
            refresh = gr.Button("Refresh", elem_id="models_checkpoints_refresh", scale=0, min_width=100)
            unload = gr.Button("Unload", elem_id="models_unload", scale=0, min_width=100)
            reload = gr.Button("Reload", elem_id="models_reload", scale=0, min_width=100)
        status = gr.HTML(value=lambda: loaded_status(application), elem_id="models_loaded_status")
    refresh.click(
        lambda: (checkpoint_table(application, refresh=True), loaded_status(application)),
        None,
        [table, status],
        api_visibility="private",
    )
    unload.click(lambda: unload_checkpoint(application), None, status, api_visibility="private")
    reload.click(lambda: reload_checkpoint(application), None, status, api_visibility="private")
    return table, status


WORKER_HEADERS = ["worker", "node", "device", "checkpoint", "job", "process RAM", "GPU memory used"]


def worker_rows(application: Application) -> list[list[Any]]:
    """One row per Ray worker (--ray-address): where it runs, what it holds, its memory."""
    if application.workers is None:
        return []
    rows = []
    for info in application.workers():
        cuda = info.memory.get("cuda", {})
        used = cuda.get("system", {}).get("used") if "system" in cuda else None
        rss = info.memory.get("process", {}).get("rss")
        ram = format_bytes(rss) if rss is not None else ""
        gpu = format_bytes(used) if used is not None else "-"
        rows.append([info.name, info.node, info.device, info.checkpoint or "(none)", info.job or "", ram, gpu])
    return rows


def build_workers(application: Application) -> None:
    """The Ray workers, with a refresh (shown only with --ray-address)."""
    with gr.Accordion("Ray workers", open=True):
        table = gr.Dataframe(
            value=lambda: worker_rows(application),
            headers=WORKER_HEADERS,
            interactive=False,
            elem_id="models_ray_workers",
        )
        refresh = gr.Button("Refresh", elem_id="models_ray_workers_refresh", scale=0, min_width=100)
    refresh.click(lambda: worker_rows(application), None, table, api_visibility="private")


def create_models_tab(application: Application, downloads: DownloadManager | None = None) -> ModelsTab:
    """Build the tab; finished downloads refresh the checkpoint list (the dropdown shows them when opened)."""
    downloads = downloads or create_download_manager(application)
    tab = ModelsTab(downloads=downloads, client=downloads.client)
    gr.Markdown(
        "Search the Hugging Face hub and download into `models/` (diffusers pipelines into `models/Diffusers`). "
        "Gated models need a token: Settings > Hugging Face token, or the `HF_TOKEN` environment variable."
    )
    table, loaded = build_checkpoints(application)
    if application.workers is not None:
        build_workers(application)
    _, repo = build_search(tab)
    build_files(tab, repo)
    build_progress(tab, application, table, loaded)
    build_save_as(application)
    return tab


def token_state_text(application: Application) -> str:
    if application.options.hf_token:
        return "A token is saved in config.json (readable only by you)."
    return "No token saved; HF_TOKEN or a saved `hf auth login` is used when present."


def save_token(application: Application, token: str, user: str | None = None) -> tuple[str, str]:
    """Store (or, when empty, clear) the token for the login ``user`` (the admin when --admin-user is set); the value
    is never echoed or logged."""
    if not settings_policy(application).may_change(user):
        return "", status_html("Only the admin login (--admin-user) may change the Hugging Face token.", "error")
    try:
        application.update_options(hf_token=(token or "").strip())
    except OSError as error:
        return "", status_html(f"Token not saved to config.json: {error}", "error")
    logger.info("hugging face token %s", "saved" if token.strip() else "cleared")
    return "", status_html(token_state_text(application))


def create_token_settings(application: Application) -> None:
    """The Settings tab's token field: a password box that starts empty (the saved token is never sent back)."""
    with gr.Accordion("Hugging Face", open=True):
        token = gr.Textbox(
            "",
            label="Hugging Face token (for gated or private models)",
            type="password",
            placeholder="hf_... (leave empty and save to clear)",
            elem_id="setting_hf_token",
        )
        with gr.Row():
            save_button = gr.Button("Save token", elem_id="settings_hf_token_save", scale=0, min_width=140)
            state = gr.HTML(status_html(token_state_text(application)), elem_id="settings_hf_token_state")

    def save(value: str, request: gr.Request) -> tuple[str, str]:
        return save_token(application, value, request.username if request else None)

    save_button.click(save, token, [token, state], api_visibility="private")

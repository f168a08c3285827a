"""The Queue tab: my jobs (the admin: everyone's) with their place and state, and cancel for a waiting one."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import gradio as gr

from modules.application import Application
from modules.generation import GenerationService
from modules.jobs.store import JobState
from modules.ui.common import owner_of
from modules.ui.messages import status_html

logger = logging.getLogger(__name__)

HEADERS = ["Job", "Owner", "State", "Place", "Prompt", "Queued", "Note"]
PROMPT_SHOWN = 80


@dataclass
class QueuePanel:
    table: gr.Dataframe
    job_id: gr.Textbox
    cancel: gr.Button
    status: gr.HTML


def is_admin(application: Application, owner: str) -> bool:
    admin = getattr(application.args, "admin_user", None)
    return bool(admin) and owner == admin


def queue_rows(service: GenerationService, owner: str, admin: bool) -> list[list[Any]]:
    """Running and waiting jobs in start order (place 1 starts next), then the latest finished ones."""
    places = {job_id: index + 1 for index, job_id in enumerate(service.store.waiting_ids())}
    rows = []
    for record in service.store.list(None if admin else owner, limit=100):
        prompt = record.prompt if len(record.prompt) <= PROMPT_SHOWN else record.prompt[:PROMPT_SHOWN] + "..."
        queued = datetime.fromtimestamp(record.queued_at).strftime("%Y-%m-%d %H:%M:%S")
        note = record.error or (f"{len(record.result_paths)} file(s)" if record.state is JobState.DONE else "")
        rows.append(
            [record.id, record.owner or "-", str(record.state), places.get(record.id, ""), prompt, queued, note]
        )
    return rows


def cancel_job(service: GenerationService, job_id: str, owner: str, admin: bool) -> str:
    """Cancel a waiting job; the message says what happened (another login's id reads as an unknown one)."""
    job_id = (job_id or "").strip()
    if not job_id:
        return status_html("Pick a waiting job in the table first.", "note")
    if service.cancel(job_id, owner, admin=admin, reason="cancelled from the Queue tab"):
        return status_html(f"Cancelled job {job_id}.")
    return status_html(f"No waiting job of yours has the id {job_id!r} (a running job stops with Interrupt).", "error")


def create_queue_tab(application: Application) -> QueuePanel:
    service = application.service
    gr.Markdown(
        "Jobs wait in fair order between logins: each login's next job takes the next round. "
        "Click a row to pick it, then Cancel (waiting jobs only)."
    )
    table = gr.Dataframe(headers=HEADERS, interactive=False, elem_id="queue_table", max_height=480, wrap=True)
    with gr.Row():
        job_id = gr.Textbox(label="Job", elem_id="queue_job_id", scale=4)
        cancel = gr.Button("Cancel job", variant="stop", elem_id="queue_cancel", scale=0, min_width=140)
        refresh = gr.Button("Refresh", elem_id="queue_refresh", scale=0, min_width=100)
    status = gr.HTML(elem_id="queue_status")
    timer = gr.Timer(2.0)

    def rows(request: gr.Request) -> list[list[Any]]:
        owner = owner_of(request)
        return queue_rows(service, owner, is_admin(application, owner))

    def pick(event: gr.SelectData) -> str:
        row = event.row_value if isinstance(event.row_value, list) else []
        return str(row[0]) if row else ""

    def cancel_selected(selected: str, request: gr.Request) -> tuple[str, list[list[Any]]]:
        owner = owner_of(request)
        admin = is_admin(application, owner)
        return cancel_job(service, selected, owner, admin), queue_rows(service, owner, admin)

    for trigger in (timer.tick, refresh.click):
        trigger(rows, None, table, show_progress="hidden", api_visibility="private")
    table.select(pick, None, job_id, show_progress="hidden", api_visibility="private")
    cancel.click(cancel_selected, job_id, [status, table], api_visibility="private")
    return QueuePanel(table=table, job_id=job_id, cancel=cancel, status=status)

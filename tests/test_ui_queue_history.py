"""The Queue and History tabs' functions: whose jobs and images a login sees, cancel, favourite, delete, send."""

from __future__ import annotations

import threading
from pathlib import Path

import gradio as gr

from modules.application import Application
from modules.cmd_args import build_parser
from modules.generation import GenerationService
from modules.ui.app import create_ui
from modules.ui.queue_panel import cancel_job, queue_rows
from tests.helpers import tiny_request


def test_queue_rows_show_my_jobs_with_their_place_and_the_admin_sees_all(context) -> None:
    service = GenerationService(context)
    release = threading.Event()
    service.submit_task(lambda: release.wait(120), kind="hold")
    try:
        first = service.submit(tiny_request(prompt="alice one"), owner="alice")
        bobs = service.submit(tiny_request(prompt="bob one"), owner="bob")
        second = service.submit(tiny_request(prompt="alice two"), owner="alice")
        mine = queue_rows(service, "alice", admin=False)
        assert [(row[0], row[2], row[3], row[4]) for row in mine] == [
            (first.id, "queued", 1, "alice one"),
            (second.id, "queued", 3, "alice two"),
        ]
        assert {row[0] for row in queue_rows(service, "root", admin=True)} == {first.id, bobs.id, second.id}

        refused = cancel_job(service, bobs.id, "alice", admin=False)
        assert "No waiting job of yours" in refused
        assert "No waiting job of yours" in cancel_job(service, "made-up", "alice", admin=False)
        assert "Cancelled" in cancel_job(service, second.id, "alice", admin=False)
        states = {row[0]: row[2] for row in queue_rows(service, "alice", admin=False)}
        assert states[second.id] == "cancelled"
        assert "Cancelled" in cancel_job(service, bobs.id, "root", admin=True)
    finally:
        release.set()
        service.shutdown()


def test_the_ui_has_the_queue_tab(tmp_path: Path) -> None:
    application = Application.create(build_parser().parse_args(["--data-dir", str(tmp_path)]))
    try:
        blocks = create_ui(application)
        ids = {block.elem_id for block in blocks.blocks.values() if isinstance(block, gr.components.Component)}
        assert {"queue_table", "queue_cancel", "queue_job_id"} <= ids
    finally:
        application.service.shutdown()

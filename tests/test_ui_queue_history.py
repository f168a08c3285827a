"""The Queue and History tabs' functions: whose jobs and images a login sees, cancel, favourite, delete, send."""

from __future__ import annotations

import threading
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image

from modules.application import Application
from modules.cmd_args import build_parser
from modules.generation import GenerationService
from modules.jobs.database import Database
from modules.jobs.history import ImageHistory
from modules.ui.app import create_ui
from modules.ui.history_tab import build_query, open_image, search
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


def targets_of(blocks: gr.Blocks, elem_id: str) -> set[str]:
    """The elem_ids a click on the component ``elem_id`` writes to."""
    source = next(block for block in blocks.blocks.values() if getattr(block, "elem_id", None) == elem_id)
    found: set[str] = set()
    for function in blocks.fns.values():
        if any(target[0] == source._id for target in function.targets):
            found |= {getattr(output, "elem_id", None) or "" for output in function.outputs}
    return found


def test_the_ui_has_the_queue_and_history_tabs_with_send_to(tmp_path: Path) -> None:
    application = Application.create(build_parser().parse_args(["--data-dir", str(tmp_path)]))
    try:
        blocks = create_ui(application)
        ids = {block.elem_id for block in blocks.blocks.values() if isinstance(block, gr.components.Component)}
        assert {"queue_table", "queue_cancel", "queue_job_id", "history_gallery", "history_delete"} <= ids
        assert "txt2img_prompt" in targets_of(blocks, "history_send_to_txt2img")
        assert "img2img_prompt" in targets_of(blocks, "history_send_to_img2img")
        assert "extras_image" in targets_of(blocks, "history_send_to_extras")
    finally:
        application.service.shutdown()


def test_history_search_shows_my_images_and_dates_are_checked(tmp_path: Path) -> None:
    history = ImageHistory(Database(), tmp_path)
    for owner, seed in (("alice", 1), ("bob", 2)):
        path = tmp_path / f"{owner}.png"
        Image.new("RGB", (300, 200), "red").save(path)
        history.add(path, owner, f"a boat\nSteps: 3, Sampler: Euler, Seed: {seed}, Size: 300x200, Model: tiny")
    items, ids, status = search(history, build_query("boat", "", None, "", "", False), "alice")
    assert len(items) == 1 and items[0][0].size == (256, 171) and "seed 1" in items[0][1] and "1 image" in status
    picture, text = open_image(history, ids[0], "alice")
    assert picture.size == (300, 200) and "Seed: 1" in text
    assert open_image(history, ids[0], "bob") == (None, "")  # not bob's
    assert len(search(history, build_query("", "", None, "", "", False), None)[1]) == 2  # the admin
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        build_query("", "", None, "14/03/2026", "", False)

"""A queued job keeps its scripts across a restart: the selected script and the always-on scripts' arguments are
stored in its queue.db row and restored (by title) when the next start runs it, once the extensions are loaded."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from modules.application import Application
from modules.cmd_args import build_parser
from modules.compat import loader
from modules.processing.infotext import parse_infotext
from modules.tiny_model import write_diffusers
from tests.extension_support import write_test_extension
from tests.helpers import tiny_request


def start(data_dir: Path) -> Application:
    """webui.py's order: the queue is held until the extensions' scripts are loaded."""
    prepared = loader.parse_with_extensions(build_parser(), ["--data-dir", str(data_dir), "--test-ext-word", "otter"])
    application = Application.create(prepared.args, hold_queue=True)
    loader.attach(application, prepared)
    return application


@pytest.fixture
def data_dir(tmp_path: Path, tiny_pipeline) -> Path:
    write_diffusers(tiny_pipeline, tmp_path / "models" / "Stable-diffusion" / "tiny")
    write_test_extension(tmp_path / "extensions")
    return tmp_path


def test_a_queued_job_runs_with_its_scripts_after_a_restart(data_dir: Path):
    before = start(data_dir)
    tab = before.scripts.tab(False)
    xyz, always_on = tab.find_selectable("x/y/z plot"), tab.find("test always on")
    xyz_args = tab.arguments(xyz, [4, "2,3", [], 0, "", [], 0, "", [], False, True])
    scripts = tab.bind((xyz, xyz_args), {id(always_on): tab.arguments(always_on, [True, False])})
    before.service.submit(tiny_request(prompt="a fox", seed=5), job_id="kept")
    before.service.submit(tiny_request(prompt="a fox", seed=5), job_id="with-scripts", scripts=scripts)
    before.service.shutdown()  # the queue was held: neither job started
    with sqlite3.connect(data_dir / "queue.db") as connection:
        stored = dict(connection.execute("SELECT id, scripts FROM jobs WHERE state='queued'").fetchall())
    assert stored["kept"] is None and "X/Y/Z plot" in stored["with-scripts"]

    after = start(data_dir)
    try:
        after.service.release()
        plain = after.service.job("kept").future.result(timeout=300)
        result = after.service.job("with-scripts").future.result(timeout=300)
    finally:
        after.service.shutdown()
    assert plain.prompts == ["a fox"]
    grid = parse_infotext(result.infotexts[0])
    assert (grid["Script"], grid["X Type"], grid["X Values"]) == ("X/Y/Z plot", "Steps", "2,3")
    cells = [parse_infotext(text) for text in result.infotexts[1:]]
    assert [cell["Steps"] for cell in cells] == ["2", "3"]
    assert {cell["Prompt"] for cell in cells} == {"a fox, otter from settings"}  # the always-on script's args

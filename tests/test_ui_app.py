"""The UI against a real application: no checkpoint, tiny model jobs, checkpoint switching, settings."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pytest

from modules.application import Application
from modules.cmd_args import build_parser
from modules.processing.requests import Txt2ImgRequest
from modules.tiny_model import write_diffusers
from modules.ui import checkpoints, handlers
from modules.ui.app import create_ui
from modules.ui.common import Controls, UiContext, build_output_panel, build_prompt_area, run_generation
from modules.ui.settings import apply_settings
from modules.ui.ui_config import UiConfig


def make_application(data_dir: Path) -> Application:
    return Application.create(build_parser().parse_args(["--data-dir", str(data_dir)]))


@pytest.fixture
def empty_application(tmp_path: Path) -> Application:
    return make_application(tmp_path)


@pytest.fixture(scope="module")
def tiny_application(tmp_path_factory: pytest.TempPathFactory, tiny_pipeline) -> Application:
    data_dir = tmp_path_factory.mktemp("data")
    write_diffusers(tiny_pipeline, data_dir / "models" / "Stable-diffusion" / "tiny")
    application = make_application(data_dir)
    yield application
    application.service.shutdown()


def test_no_checkpoint_ui_starts_and_says_where_to_put_files(empty_application: Application) -> None:
    assert checkpoints.checkpoint_titles(empty_application) == []
    assert checkpoints.current_title(empty_application) is None
    blocks = create_ui(empty_application)
    messages = [
        block.value
        for block in blocks.blocks.values()
        if isinstance(block, gr.Markdown) and block.elem_id == "checkpoint_message"
    ]
    assert len(messages) == 1
    assert "No checkpoint found" in messages[0]
    assert str(empty_application.paths.checkpoints_dir) in messages[0]


def test_generate_without_checkpoint_is_a_message(empty_application: Application) -> None:
    request = Txt2ImgRequest(prompt="x", width=64, height=64, steps=2)
    updates = list(handlers.stream_job(empty_application.service, request, owner="", poll_seconds=0.05))
    assert updates[-1].result is None
    assert "No checkpoint found" in updates[-1].error


def test_stream_job_ends_with_saved_images(tiny_application: Application) -> None:
    request = Txt2ImgRequest(prompt="a tiny test", width=64, height=64, steps=2, seed=3, batch_size=2)
    updates = list(handlers.stream_job(tiny_application.service, request, owner="", poll_seconds=0.05))
    assert all(update.progress for update in updates[:-1])
    result = updates[-1].result
    assert updates[-1].error is None and len(result.images) == 2
    assert [path.exists() for path in result.saved_paths] == [True, True]
    gallery = handlers.gallery_from_result(result, show_grid=True)
    assert len(gallery.images) == 3  # the grid, then both images
    assert gallery.seeds == [3, 3, 4]
    assert "Steps: 2" in gallery.infotexts[1] and gallery.infotexts[1].startswith("a tiny test")


def test_stream_job_error_is_a_message(tiny_application: Application) -> None:
    request = Txt2ImgRequest(prompt="x", width=64, height=64, steps=2, sampler_name="No Such Sampler")
    updates = list(handlers.stream_job(tiny_application.service, request, owner="", poll_seconds=0.05))
    assert updates[-1].result is None
    assert "Unknown sampler 'No Such Sampler'" in updates[-1].error


def test_switch_checkpoint_saves_setting_and_survives_a_corrupt_file(tiny_application: Application) -> None:
    title = checkpoints.checkpoint_titles(tiny_application)[0]
    switched = checkpoints.switch_checkpoint(tiny_application, title)
    assert switched.error == ""
    saved = json.loads(tiny_application.paths.config_file.read_text(encoding="utf-8"))
    assert saved["sd_model_checkpoint"] == switched.title
    assert switched.title == checkpoints.current_title(tiny_application)

    bad = tiny_application.paths.checkpoints_dir / "broken.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    try:
        tiny_application.registry.refresh()
        failed = checkpoints.switch_checkpoint(tiny_application, "broken.safetensors")
    finally:
        bad.unlink()
        tiny_application.registry.refresh()
    assert failed.error.startswith("Could not load broken.safetensors:")
    assert "Traceback" not in failed.error
    assert failed.title == switched.title
    assert tiny_application.models.current.info.name == "tiny"


def test_settings_apply_persists_and_rejects_bad_values(empty_application: Application) -> None:
    message = apply_settings(empty_application, {"samples_save": False, "default_steps": 20})
    assert "1 setting changed: Always save all generated images" in message
    assert json.loads(empty_application.paths.config_file.read_text(encoding="utf-8"))["samples_save"] is False

    rejected = apply_settings(empty_application, {"show_progress_every_n_steps": 100, "grid_save": False})
    assert "Settings not applied" in rejected and "Live preview every N sampling steps" in rejected
    assert "(got 100)" in rejected
    assert empty_application.options.grid_save is True  # nothing half-applied
    assert "Nothing changed" in apply_settings(empty_application, {"samples_save": False})


def test_bad_request_shows_message_and_is_not_remembered(empty_application: Application) -> None:
    context = UiContext(empty_application, UiConfig(empty_application.paths.ui_config_file))
    with gr.Blocks():
        controls = Controls("txt2img")
        build_prompt_area(context, controls)
        panel = build_output_panel("txt2img")
    values = {"prompt": "x", "width": 100, "height": 64, "steps": 2}
    updates = list(run_generation(context, controls, handlers.build_txt2img_request, values, "", panel))
    assert len(updates) == 1
    assert "Width: must be a multiple of 8 (got 100); try 96" in updates[0][panel.status]
    assert not empty_application.paths.ui_config_file.exists()

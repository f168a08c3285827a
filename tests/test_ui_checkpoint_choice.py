"""UI requests carry the top bar's checkpoint (an API override that loaded another model does not change what the UI
uses), and the --listen-without-logins warning is shown as a banner."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import pytest

from modules.application import Application
from modules.cmd_args import build_parser
from modules.processing.infotext import parse_infotext
from modules.ui import handlers
from modules.ui.app import create_ui, kept_choice
from tests.api_support import write_tiny_checkpoints

TOP_BAR_ID = "setting_sd_model_checkpoint"


@pytest.fixture(scope="module")
def application(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Application]:
    data_dir = tmp_path_factory.mktemp("ui-checkpoint")
    write_tiny_checkpoints(data_dir / "models" / "Stable-diffusion", ("tiny", "tiny2"))
    created = Application.create(build_parser().parse_args(["--data-dir", str(data_dir)]))
    yield created
    created.service.shutdown()


def value_of(application: Application, name: str) -> str:
    """The dropdown value: the file name, which stays the same when the title gains its hash."""
    return application.registry.find(name).relative_name


def test_kept_choice_keeps_the_dropdown_value_not_the_loaded_model(application: Application) -> None:
    application.service.run_task(lambda: application.models.load("tiny2"))  # as the options route would
    assert kept_choice(application, "tiny") == value_of(application, "tiny")
    assert kept_choice(application, application.registry.find("tiny").title) == value_of(application, "tiny")
    assert kept_choice(application, None) == value_of(application, "tiny2")
    assert kept_choice(application, "deleted-meanwhile") == value_of(application, "tiny2")


def test_ui_request_with_the_top_bar_checkpoint_uses_it(application: Application) -> None:
    application.service.run_task(lambda: application.models.load("tiny2"))
    values = {"checkpoint": "tiny", "prompt": "a fox", "width": 64, "height": 64, "steps": 2.0, "seed": 3}
    request = handlers.build_txt2img_request({**values, "sampler_name": "Euler", "save_images": False})
    assert request.checkpoint == "tiny"
    updates = list(handlers.stream_job(application.service, request, owner="", poll_seconds=0.05))
    result = updates[-1].result
    assert result is not None, updates[-1].error
    assert parse_infotext(result.infotexts[0])["Model"] == "tiny"
    # The job borrowed tiny and gave back the checkpoint that was loaded before it.
    assert application.models.current.info.name == "tiny2"
    img2img = handlers.build_img2img_request({**values, "init_image": result.images[0]})
    assert img2img.checkpoint == "tiny"
    assert handlers.build_txt2img_request({"prompt": "x", "checkpoint": None}).checkpoint is None


def generate_inputs(blocks: gr.Blocks) -> list[set[str]]:
    """The elem_ids of each event's inputs that include a prompt box."""
    found = []
    for function in blocks.fns.values():
        ids = {getattr(component, "elem_id", None) or "" for component in function.inputs}
        if any(name.endswith("_prompt") for name in ids):
            found.append(ids)
    return found


def test_generate_buttons_send_the_top_bar_dropdown(application: Application) -> None:
    blocks = create_ui(application)
    with_checkpoint = [ids for ids in generate_inputs(blocks) if TOP_BAR_ID in ids]
    prompts = {name for ids in with_checkpoint for name in ids if name.endswith("_prompt")}
    assert {"txt2img_prompt", "img2img_prompt", "inpaint_prompt"} <= prompts


def test_exposure_warning_banner(application: Application) -> None:
    text = "serving the UI on the network without --gradio-auth: anyone on your LAN can use it"
    banners = [
        block.value for block in create_ui(application, [text]).blocks.values() if block.elem_id == "exposure_warning"
    ]
    assert len(banners) == 1 and "without --gradio-auth" in banners[0]
    assert not [block for block in create_ui(application).blocks.values() if block.elem_id == "exposure_warning"]


def test_server_passes_the_warnings_to_the_ui(tmp_path: Path, application: Application) -> None:
    from modules.server import ServerOptions, create_app

    received: dict[str, object] = {}

    def mount(app: object, path: str, *, warnings: tuple = (), max_file_size: int | None = None) -> None:
        received.update(warnings=list(warnings), max_file_size=max_file_size)

    create_app(application, ServerOptions(host="0.0.0.0", ui=True, api=False), mount)
    assert received["warnings"] == [
        "serving the UI on the network without --gradio-auth: anyone on your LAN can use it"
    ]
    assert received["max_file_size"] == application.options.api_max_body_mb * 1024 * 1024


def test_image_cfg_scale_shows_for_instruct_pix2pix_checkpoints_only(tmp_path: Path) -> None:
    """A1111 shows the Image CFG Scale slider while an edit model is chosen, at page load and on a switch."""
    from modules.models.checkpoint_writer import write_single_file
    from modules.models.detection import ModelArchitecture
    from modules.tiny_model import build_tiny_pipeline

    folder = tmp_path / "models" / "Stable-diffusion"
    write_tiny_checkpoints(folder, ("tiny",))
    pix2pix = build_tiny_pipeline(architecture=ModelArchitecture.SD1_PIX2PIX)
    write_single_file(pix2pix, folder / "edit.safetensors", with_config=False)
    created = Application.create(build_parser().parse_args(["--data-dir", str(tmp_path)]))
    try:
        blocks = create_ui(created)
        (slider,) = [block for block in blocks.blocks.values() if block.elem_id == "img2img_image_cfg_scale"]
        assert slider.visible is False
        events = [
            function
            for function in blocks.fns.values()
            if slider in function.outputs and getattr(function.fn, "__name__", "") == "visibility"
        ]
        assert len(events) == 2  # page load and the top bar's change
        title = created.registry.find("edit").title
        assert events[0].fn(title)["visible"] is True
        assert events[1].fn(created.registry.find("tiny").title)["visible"] is False
    finally:
        created.service.shutdown()

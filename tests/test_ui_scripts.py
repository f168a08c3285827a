"""The Script dropdown and always-on accordions of the generation tabs, against a real application."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest

from modules.application import Application
from modules.cmd_args import build_parser
from modules.scripts.base import Script, Visibility
from modules.scripts.controls import Checkbox
from modules.tiny_model import write_diffusers
from modules.ui.app import create_ui
from modules.ui.common import Controls
from modules.ui.scripts_ui import build_scripts


class Stamp(Script):
    def title(self) -> str:
        return "Stamp"

    def show(self, is_img2img: bool) -> Visibility:
        return Visibility.ALWAYS_ON

    def ui(self, is_img2img: bool):
        return [Checkbox("enabled", "Enable stamp", False)]

    def process(self, run, args):
        if args["enabled"]:
            run.extra_generation_params["Stamp"] = "on"


@pytest.fixture(scope="module")
def application(tmp_path_factory: pytest.TempPathFactory, tiny_pipeline) -> Application:
    data_dir: Path = tmp_path_factory.mktemp("ui-scripts")
    write_diffusers(tiny_pipeline, data_dir / "models" / "Stable-diffusion" / "tiny")
    application = Application.create(build_parser().parse_args(["--data-dir", str(data_dir)]))
    application.scripts.add([Stamp()])
    yield application
    application.service.shutdown()


def elem_ids(blocks: gr.Blocks) -> dict[str, gr.components.Component]:
    return {block.elem_id: block for block in blocks.blocks.values() if getattr(block, "elem_id", None)}


def test_tabs_offer_their_scripts_with_controls(application: Application) -> None:
    found = elem_ids(create_ui(application))
    assert found["txt2img_script"].choices == [
        (name, name) for name in ("None", "Prompt matrix", "Prompts from file or textbox", "X/Y/Z plot")
    ]
    assert ("Loopback", "Loopback") in found["img2img_script"].choices
    assert "script_txt2img_x_y_z_plot_x_type" in found and "script_img2img_sd_upscale_overlap" in found
    assert "script_txt2img_stamp_accordion" in found and "script_inpaint_stamp_enabled" in found


def test_chosen_script_and_always_on_values_bind_by_name(application: Application) -> None:
    tab = application.scripts.tab(False)
    with gr.Blocks():
        controls = Controls("probe")
        widgets = build_scripts(controls, tab)
    values = {
        "script_name": "X/Y/Z plot",
        "script:x/y/z plot:x_type": "Steps",
        "script:x/y/z plot:x_values": "2,3",
        "script:stamp:enabled": True,
    }
    bound = widgets.bind(values)
    script, args = bound.selected
    assert script.title() == "X/Y/Z plot" and args["x_type"] == 4 and args["x_values"] == "2,3"
    assert args["y_type"] == 0 and args["draw_legend"] is True
    assert [(s.title(), a) for s, a in bound.always_on if s.title() != "ControlNet"] == [("Stamp", {"enabled": True})]
    assert widgets.bind({"script_name": "None"}).selected is None


def test_controlnet_unit_widgets_bind_and_paste_as_one_unit(application: Application) -> None:
    tab = application.scripts.tab(False)
    with gr.Blocks():
        controls = Controls("probe")
        widgets = build_scripts(controls, tab)
    prefix = "script:controlnet:unit_1:"
    values = {f"{prefix}enabled": True, f"{prefix}module": "canny", f"{prefix}weight": 0.5, f"{prefix}image": None}
    args = dict(next(a for s, a in widgets.bind(values).always_on if s.title() == "ControlNet"))
    assert args["unit_1"].enabled and args["unit_1"].module == "canny" and args["unit_1"].weight == 0.5
    assert not args["unit_0"].enabled
    infotext = (
        'a fox\nSteps: 3, Seed: 1, ControlNet 1: "Module: canny, Model: tiny [0123abcd], Weight: 0.5, '
        "Resize Mode: Just Resize, Processor Res: 512, Threshold A: 100.0, Threshold B: 200.0, Guidance Start: 0.0, "
        'Guidance End: 0.8, Pixel Perfect: False, Control Mode: My prompt is more important"'
    )
    pasted = widgets.pasted(infotext)
    assert pasted[f"{prefix}enabled"] is True and pasted[f"{prefix}module"] == "canny"
    assert pasted[f"{prefix}model"] == "tiny [0123abcd]" and pasted[f"{prefix}guidance_end"] == 0.8
    assert pasted[f"{prefix}resize_mode"] == "Just Resize"
    assert pasted[f"{prefix}control_mode"] == "My prompt is more important"
    assert not any(key.startswith("script:controlnet:unit_0") for key in pasted)


def test_xyz_values_dropdown_follows_the_axis(application: Application) -> None:
    xyz = application.scripts.tab(False).find_selectable("x/y/z plot")
    assert "Euler" in xyz.dynamic_choices(False, "x_values_dropdown", "Sampler")
    assert xyz.dynamic_choices(False, "x_values_dropdown", 4) is None
    assert xyz.dynamic_choices(False, "x_values_dropdown", "Checkpoint name") == ["tiny"]


def test_script_values_are_read_back_from_an_infotext(application: Application) -> None:
    tab = application.scripts.tab(False)
    with gr.Blocks():
        controls = Controls("probe")
        build_scripts(controls, tab)
    text = (
        'a fox\nSteps: 2, Seed: 1, Script: X/Y/Z plot, X Type: Steps, X Values: "2,3", Y Type: CFG Scale, '
        'Y Values: "3,7", X Vary seeds: True, Version: Easel'
    )
    fields = controls.paste_scripts(text)
    assert fields["script_name"] == "X/Y/Z plot"
    assert fields["script:x/y/z plot:x_type"] == "Steps" and fields["script:x/y/z plot:x_values"] == "2,3"
    assert fields["script:x/y/z plot:y_values"] == "3,7" and fields["script:x/y/z plot:vary_seeds_x"] is True
    assert controls.paste_scripts("a fox\nSteps: 2") == {}

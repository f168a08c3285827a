"""Easel's Script API on the tiny model: every hook in A1111's order, isolation of failing scripts, arguments by
name and by position, and the X/Y/Z plot's value syntax, grid and infotexts."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from modules.processing.infotext import parse_infotext
from modules.processing.processing import ProcessingError, process
from modules.scripts.base import Script, Visibility
from modules.scripts.builtin.xyz_axes import AXES, axes_for, csv_values, expand_float, expand_int, parse_values
from modules.scripts.builtin.xyz_grid import XYZPlot
from modules.scripts.controls import Checkbox, Slider, Textbox
from modules.scripts.runner import ScriptCatalogue, ScriptNotFoundError
from tests.helpers import pixels, tiny_request


class Recorder(Script):
    """Always on: records each hook, changes the request in before_process and the prompts in process, writes an
    infotext key and inverts every image in postprocess_image."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def title(self) -> str:
        return "Recorder"

    def show(self, is_img2img: bool) -> Visibility:
        return Visibility.ALWAYS_ON

    def ui(self, is_img2img: bool):
        return [Textbox("suffix", "Suffix", ", by recorder", "Recorder suffix"), Checkbox("invert", "Invert", False)]

    def before_process(self, run, args):
        self.calls.append("before_process")
        run.request = run.request.model_copy(update={"steps": 2})

    def process(self, run, args):
        self.calls.append(f"process steps={run.steps}")
        run.all_prompts = [prompt + args["suffix"] for prompt in run.all_prompts]
        run.extra_generation_params["Recorder suffix"] = args["suffix"].strip(", ")

    def before_process_batch(self, run, args, batch_number):
        self.calls.append(f"before_process_batch {batch_number}")

    def process_batch(self, run, args, batch_number):
        self.calls.append(f"process_batch {batch_number}")

    def postprocess_batch(self, run, args, images, batch_number):
        self.calls.append(f"postprocess_batch {batch_number} images={len(images)}")

    def postprocess_image(self, run, args, image):
        self.calls.append(f"postprocess_image {image.index}")
        if args["invert"]:
            image.image = Image.eval(image.image, lambda value: 255 - value)

    def postprocess(self, run, args, result):
        self.calls.append(f"postprocess images={len(result.images)}")


class Broken(Script):
    def title(self) -> str:
        return "Broken"

    def show(self, is_img2img: bool) -> Visibility:
        return Visibility.ALWAYS_ON

    def process(self, run, args):
        raise RuntimeError("boom")


class Selectable(Script):
    def title(self) -> str:
        return "Twice"

    def ui(self, is_img2img: bool):
        return [Slider("times", "Times", 2, minimum=1, maximum=4, step=1), Checkbox("fail", "Fail", False)]

    def run(self, job, args):
        if args["fail"]:
            raise ValueError("asked to fail")
        results = [job.process(job.request.model_copy(update={"seed": 10 + n})) for n in range(args["times"])]
        merged = results[0]
        for other in results[1:]:
            merged.images += other.images
            merged.infotexts += other.infotexts
        return merged


def test_hooks_run_in_a1111_order_and_act_on_the_run(context):
    recorder = Recorder()
    tab = ScriptCatalogue([recorder]).tab(False)
    hooks = tab.bind(always_on={id(recorder): tab.arguments(recorder, [", by recorder", True])})
    result = process(tiny_request(n_iter=2, steps=3), context, hooks=hooks)
    assert recorder.calls == [
        "before_process",
        "process steps=2",
        "before_process_batch 0",
        "process_batch 0",
        "postprocess_batch 0 images=1",
        "postprocess_image 0",
        "before_process_batch 1",
        "process_batch 1",
        "postprocess_batch 1 images=1",
        "postprocess_image 1",
        "postprocess images=2",
    ]
    assert result.prompts == ["a red fox, by recorder"] * 2
    parsed = parse_infotext(result.infotexts[0])
    assert parsed["Steps"] == "2" and parsed["Recorder suffix"] == "by recorder"
    plain = process(tiny_request(steps=2, prompt="a red fox, by recorder"), context)
    assert np.abs(pixels(result.images[0]) - (255 - pixels(plain.images[0]))).max() <= 1


def test_a_failing_always_on_script_is_noted_and_left_out(context):
    broken, recorder = Broken(), Recorder()
    tab = ScriptCatalogue([broken, recorder]).tab(False)
    result = process(tiny_request(), context, hooks=tab.bind())
    assert len(result.images) == 1
    assert any("Broken failed in process" in note and "boom" in note for note in result.notes)
    assert "postprocess images=1" in recorder.calls


def test_selectable_script_replaces_processing_and_its_failure_fails_the_job(context):
    twice, recorder = Selectable(), Recorder()
    tab = ScriptCatalogue([twice, recorder]).tab(False)
    assert tab.find_selectable("TWICE") is twice
    with pytest.raises(ScriptNotFoundError, match="Script 'recorder' not found"):
        tab.find_selectable("recorder")
    bound = tab.bind(selected=(twice, tab.arguments(twice, [3])))
    result = bound.execute(tiny_request(), context)
    assert [parse_infotext(text)["Seed"] for text in result.infotexts] == ["10", "11", "12"]
    assert recorder.calls.count("before_process") == 3  # always-on scripts act inside every process call
    failing = tab.bind(selected=(twice, tab.arguments(twice, {"fail": True})))
    with pytest.raises(ProcessingError, match="Twice failed: asked to fail"):
        failing.execute(tiny_request(), context)


def test_arguments_by_position_and_name():
    twice = Selectable()
    tab = ScriptCatalogue([twice]).tab(False)
    assert tab.arguments(twice) == {"times": 2, "fail": False}
    assert tab.arguments(twice, ["3"]) == {"times": 3, "fail": False}
    with pytest.raises(ValueError, match="got 3 arguments, the script has 2"):
        tab.arguments(twice, [1, True, 5])
    with pytest.raises(ValueError, match="unknown arguments nope"):
        tab.arguments(twice, {"nope": 1})


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1-5", [1, 2, 3, 4, 5]), ("1-5 (+2)", [1, 3, 5]), ("1-10 [5]", [1, 3, 5, 7, 10]), ("10-6 (-2)", [10, 8])],
)
def test_integer_ranges(text, expected):
    """A1111 adds 1 to the end whatever the step's sign, so a falling range stops short of it."""
    assert expand_int(text) == expected


def test_float_ranges_and_csv_quoting():
    assert expand_float("1-2 (+0.5)") == [1.0, 1.5, 2.0]
    assert expand_float("0-1 [3]") == [0.0, 0.5, 1.0]
    assert csv_values('a, "b, c",d') == ["a", "b, c", "d"]
    steps = axes_for(False)[4]
    assert parse_values(steps, "2, 4-6 (+2), 9", [], False) == [2, 4, 6, 9]


def test_axis_indices_are_a1111s():
    txt2img, img2img = axes_for(False), axes_for(True)
    assert len(txt2img) == 42 and len(img2img) == 41 and len(AXES) == 44
    assert [txt2img[i].label for i in (0, 4, 6, 9, 25, 28, 41)] == [
        "Nothing",
        "Steps",
        "CFG Scale",
        "Sampler",
        "Denoising",
        "Hires upscaler",
        "Size",
    ]
    assert [img2img[i].label for i in (5, 6, 24, 27, 40)] == [
        "CFG Scale",
        "Image CFG Scale",
        "Denoising",
        "Cond. Image Mask Weight",
        "Size",
    ]


def test_xyz_refiner_and_image_cfg_axes_set_their_request_fields(context):
    from modules.scripts.base import ScriptError
    from modules.scripts.builtin.xyz_axes import confirm

    axes = {axis.label: axis for axis in AXES}
    fields: dict = {}
    axes["Refiner checkpoint"].apply(fields, "tiny", ["None", "tiny"])
    axes["Refiner switch at"].apply(fields, 0.6, [0.6])
    axes["Image CFG Scale"].apply(fields, 1.5, [1.5])
    assert fields == {"refiner_checkpoint": "tiny", "refiner_switch_at": 0.6, "image_cfg_scale": 1.5}
    assert axes["Refiner checkpoint"].choices(context)[0] == "None"
    known = context.models.registry.checkpoints()[0].name
    confirm(axes["Refiner checkpoint"], ["None", known], tiny_request(), context)
    with pytest.raises(ScriptError, match="Unknown checkpoint: nowhere"):
        confirm(axes["Refiner checkpoint"], ["nowhere"], tiny_request(), context)


def run_xyz(context, request, script_args):
    xyz = XYZPlot(context)
    tab = ScriptCatalogue([xyz]).tab(False)
    return tab.bind(selected=(xyz, tab.arguments(xyz, script_args))).execute(request, context)


def test_xyz_plot_positional_arguments_as_a1111_clients_send_them(context):
    args = [4, "2,3", [], 6, "3,7", [], 0, "", [], True, True, False, False, False, False, False, 0, False]
    result = run_xyz(context, tiny_request(seed=-1), args)
    assert len(result.images) == 5 and result.first_image_index == 1
    assert result.images[0].size == (176, 137)
    cells = [parse_infotext(text) for text in result.infotexts[1:]]
    assert [(cell["Steps"], float(cell["CFG scale"])) for cell in cells] == [("2", 3), ("3", 3), ("2", 7), ("3", 7)]
    assert len({cell["Seed"] for cell in cells}) == 1  # -1 fixed once for every cell
    grid = parse_infotext(result.infotexts[0])
    assert grid["Script"] == "X/Y/Z plot" and grid["X Type"] == "Steps" and grid["X Values"] == "2,3"
    assert grid["Y Type"] == "CFG Scale" and grid["Y Values"] == "3,7"
    assert "Script" not in cells[0]
    assert result.images[0].crop((48, 9, 112, 73)).tobytes() == result.images[1].convert("RGB").tobytes()


def test_xyz_plot_z_axis_sub_grids_and_refusals(context):
    args = {
        "x_type": 1,
        "x_values": "5,6",
        "z_type": 4,
        "z_values": "2,3",
        "include_sub_grids": True,
        "draw_legend": False,
    }
    result = run_xyz(context, tiny_request(), args)
    assert len(result.images) == 3
    assert result.images[1].size == (128, 64) and result.images[0].size == (256, 64)
    grid = parse_infotext(result.infotexts[0])
    assert grid["Z Type"] == "Steps" and grid["Fixed X Values"] == "5, 6"
    assert "Z Type" not in parse_infotext(result.infotexts[1])
    with pytest.raises(ProcessingError, match="axis 'Token merging ratio' is not supported"):
        run_xyz(context, tiny_request(), {"x_type": 33, "x_values": "0.5"})
    with pytest.raises(ProcessingError, match="Unknown sampler: Nope"):
        run_xyz(context, tiny_request(), {"x_type": 9, "x_values_dropdown": ["Euler", "Nope"]})


def test_xyz_plot_noise_and_sampler_setting_axes(context):
    """Var. strength (a request field) and RNG source (an override_settings axis, A1111's apply_override) reach
    each cell: its infotext says what it ran with, and every cell's image differs."""
    args = {
        "x_type": 3,  # Var. strength
        "x_values": "0, 0.5",
        "y_type": 39,  # RNG source
        "y_values_dropdown": ["GPU", "NV"],  # on a CPU machine GPU and CPU draw the same noise, as in A1111
        "include_lone_images": True,
    }
    result = run_xyz(context, tiny_request(seed=5, subseed=9), args)
    cells = [parse_infotext(text) for text in result.infotexts[1:]]
    assert [(cell.get("Variation seed strength"), cell.get("RNG")) for cell in cells] == [
        (None, "GPU"),  # written only when not GPU; parse_infotext fills A1111's default
        ("0.5", "GPU"),
        (None, "NV"),
        ("0.5", "NV"),
    ]
    assert len({image.tobytes() for image in result.images[1:]}) == 4

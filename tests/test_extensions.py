"""A1111 extensions loading unchanged: preload flags, install.py, every hook and the called callbacks, settings
added by an extension, a selectable script with process_images, broken extensions marked failed, both sides of
the module-name collisions."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from modules.application import Application
from modules.cmd_args import build_parser
from modules.compat import loader
from modules.compat.a1111 import script_callbacks
from modules.compat.importer import compat_import
from modules.processing.infotext import parse_infotext
from modules.tiny_model import write_diffusers
from tests.extension_support import write_broken_extensions, write_test_extension
from tests.helpers import pixels, tiny_img2img, tiny_request


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, tiny_pipeline):
    data_dir: Path = tmp_path_factory.mktemp("extensions")
    write_diffusers(tiny_pipeline, data_dir / "models" / "Stable-diffusion" / "tiny")
    write_test_extension(data_dir / "extensions")
    write_broken_extensions(data_dir / "extensions")
    prepared = loader.parse_with_extensions(build_parser(), ["--data-dir", str(data_dir), "--test-ext-word", "otter"])
    application = Application.create(prepared.args)
    loader.attach(application, prepared)
    yield application, data_dir / "extensions" / "test-ext"
    application.service.shutdown()


def calls(folder: Path) -> list[list[str]]:
    path = folder / "calls.jsonl"
    found = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []
    path.unlink(missing_ok=True)
    return found


def test_broken_extensions_are_failed_and_the_rest_loads(loaded):
    application, _ = loaded
    status = {extension.name: extension for extension in application.extensions}
    assert status["test-ext"].status == "enabled" and status["test-ext"].scripts == ["Test always on", "Test twice"]
    assert "SyntaxError" in status["broken-syntax"].error
    assert "no_such_thing" in status["broken-attribute"].error
    assert "has no module 'modules.sd_hijack'" in status["broken-module"].error
    assert {script.title() for script in application.scripts.scripts} >= {"Test always on", "Test twice", "X/Y/Z plot"}


def test_preload_flag_install_and_settings(loaded):
    application, folder = loaded
    assert application.extensions[0].name == "broken-attribute"  # sorted folder order
    assert (folder / "installed.txt").read_text() == "x"  # install.py ran once
    from modules.compat.a1111 import shared

    assert shared.cmd_opts.test_ext_word == "otter"
    assert shared.opts.test_ext_suffix == "from settings"
    assert shared.opts.samples_format == application.options.samples_format


def test_every_hook_acts_on_the_job(loaded, context):
    application, folder = loaded
    tab = application.scripts.tab(False)
    script = tab.find("test always on")
    calls(folder)
    bound = tab.bind(always_on={id(script): tab.arguments(script, [True, True])})
    result = bound.execute(tiny_request(n_iter=2, seed=7), application.service.context)
    assert result.prompts == ["a red fox, otter from settings"] * 2
    assert parse_infotext(result.infotexts[0])["Test ext"] == "otter"
    assert [event[0] for event in calls(folder)] == [
        "before_process",
        "process",
        "before_process_batch",
        "process_batch",
        "postprocess_batch",
        "postprocess_batch_list",
        "postprocess_image",
        "before_process_batch",
        "process_batch",
        "postprocess_batch",
        "postprocess_batch_list",
        "postprocess_image",
        "postprocess",
    ]
    plain = tab.bind().execute(
        tiny_request(seed=7, prompt="a red fox, otter from settings"), application.service.context
    )
    assert np.array_equal(pixels(result.images[0]), pixels(plain.images[0])[:, ::-1])


def test_selectable_extension_script_uses_process_images(loaded):
    application, _ = loaded
    tab = application.scripts.tab(False)
    twice = tab.find_selectable("TEST TWICE")
    result = tab.bind(selected=(twice, tab.arguments(twice, [3]))).execute(tiny_request(), application.service.context)
    assert [parse_infotext(text)["Seed"] for text in result.infotexts] == ["100", "101", "102"]
    always_on = tab.find("test always on")
    enabled = {id(always_on): {"arg0": True, "arg1": False}}
    both = tab.bind(selected=(twice, tab.arguments(twice, [2])), always_on=enabled)
    result = application.service.submit(tiny_request(), scripts=both).future.result()
    prompts = [parse_infotext(text)["Prompt"] for text in result.infotexts]
    assert prompts == ["a red fox, otter run 0", "a red fox, otter run 1"]  # p.override_settings, per pass


def test_callbacks_are_called(loaded):
    _, folder = loaded
    calls(folder)
    script_callbacks.app_started_callback(None, object())
    script_callbacks.ui_tabs_callback()
    assert calls(folder) == [["app_started", "object"], ["ui_tabs"]]


def test_module_name_collisions_both_sides(loaded):
    """Easel's modules.processing and modules.scripts stay Easel's; extension code gets A1111's."""
    import modules.processing
    import modules.scripts

    assert hasattr(modules.processing, "processing") and not hasattr(modules.processing, "process_images")
    assert not hasattr(modules.scripts, "AlwaysVisible")
    assert compat_import("modules.processing", fromlist=("process_images",)).process_images
    assert compat_import("modules", fromlist=("scripts",)).scripts.AlwaysVisible is not None
    from modules.processing.processing import process  # Easel's own import still works after extensions load

    assert callable(process)


def callback_calls(folder: Path, kind: str | None = None) -> list[list]:
    """What scripts/test_callbacks.py recorded (and forget it), optionally only one kind."""
    path = folder / "callbacks.jsonl"
    found = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []
    path.unlink(missing_ok=True)
    return [event for event in found if kind is None or event[0] == kind]


def test_on_model_loaded_gets_the_loaded_model(loaded):
    application, folder = loaded
    callback_calls(folder)
    application.models.unload()
    model = application.models.ensure_loaded()
    assert callback_calls(folder) == [["model_loaded", "tiny", model.short_hash, False]]


def test_image_saved_callbacks_can_change_what_is_saved(loaded):
    application, folder = loaded
    callback_calls(folder)
    result = application.service.submit(tiny_request(save_images=True, prompt="a saved fox")).future.result()
    saved = result.saved_paths[0]
    events = callback_calls(folder)
    assert [event for event in events if event[0].endswith("image_saved")] == [
        ["before_image_saved", saved.name, "a saved fox", 64],
        ["image_saved", saved.name, True, "before"],
    ]
    with Image.open(saved) as image:
        assert image.info["test_ext"] == "before"
        assert image.info["parameters"].endswith(", Saved by: test-ext")


@pytest.mark.parametrize("backend", ["diffusers", "original"])
def test_cfg_callbacks_get_a1111_arguments_on_both_backends(loaded, backend):
    application, folder = loaded
    application.models.ensure_loaded()
    callback_calls(folder)
    application.service.submit(tiny_request(batch_size=2, steps=3, sampling_backend=backend)).future.result()
    events = callback_calls(folder)
    denoiser = [event for event in events if event[0] == "cfg_denoiser"]
    # A1111's state.sampling_step: the last finished step's index (0 before the first finishes)
    assert [event[1:3] for event in denoiser] == [[0, 3], [0, 3], [1, 3]]
    x_rows, text_rows, uncond_rows, sigma_rows = denoiser[0][3][0], denoiser[0][4][0], denoiser[0][5][0], denoiser[0][6]
    assert (x_rows, text_rows, uncond_rows, sigma_rows) == (4, 2, 2, [4])  # cond rows then uncond rows
    assert denoiser[0][7] is True
    assert [event[3][0] for event in events if event[0] == "cfg_denoised"] == [4, 4, 4]
    assert [event[3][0] for event in events if event[0] == "cfg_after_cfg"] == [2, 2, 2]


@pytest.mark.parametrize("backend", ["diffusers", "original"])
def test_cfg_after_cfg_result_is_used(loaded, backend):
    """The extension zeroes the guided prediction: then the prompt no longer matters."""
    application, folder = loaded
    from modules.compat.a1111 import shared

    def image(prompt: str) -> np.ndarray:
        request = tiny_request(prompt=prompt, seed=3, sampling_backend=backend)
        return pixels(application.service.submit(request).future.result().images[0])

    assert not np.array_equal(image("a red fox"), image("a blue whale"))
    shared.opts.test_ext_zero_guidance = True
    try:
        zeroed = image("a red fox")
        assert np.array_equal(zeroed, image("a blue whale"))
        assert np.array_equal(zeroed, image("a red fox AND a blue whale"))  # AND (diffusers: its own UNet wrapper)
    finally:
        shared.opts.test_ext_zero_guidance = False
    callback_calls(folder)


def test_on_infotext_pasted_changes_png_info_parameters(loaded):
    application, folder = loaded
    from modules.api.images import ImageLimits, encode_png
    from modules.api.routes import png_info

    callback_calls(folder)
    encoded = encode_png(Image.new("RGB", (8, 8)), "a fox\nSteps: 7, Sampler: Euler, Seed: 1")
    answer = png_info(encoded, ImageLimits(), application.infotext_pasted)
    assert answer.parameters["Test pasted"] == "yes" and answer.parameters["Steps"] == "7"
    assert callback_calls(folder) == [["infotext_pasted", "7"]]


def test_on_script_unloaded_runs_before_restart(loaded, monkeypatch):
    application, folder = loaded
    import webui

    callback_calls(folder)
    started = []
    monkeypatch.setattr(webui.os, "execv", lambda *arguments: started.append(arguments))
    restarting = SimpleNamespace(before_restart=application.before_restart, service=SimpleNamespace(shutdown=list))
    webui.restart_process(restarting)
    assert callback_calls(folder) == [["script_unloaded"]] and len(started) == 1


def test_on_infotext_pasted_runs_on_ui_paste_and_its_changes_fill_the_controls(loaded):
    application, folder = loaded
    from modules.ui.handlers import fields_from_infotext

    callback_calls(folder)
    text = "a fox\nSteps: 7, Sampler: Euler, Seed: 1"
    listeners = [*application.infotext_pasted, lambda infotext, parameters: parameters.update(Steps="11")]
    assert fields_from_infotext(text, listeners)["steps"] == 11
    assert callback_calls(folder) == [["infotext_pasted", "7"]]


def test_extension_settings_are_on_the_settings_tab(loaded):
    """The settings an extension adds get a page of the Settings tab (its section's title); Apply saves them."""
    import gradio as gr

    from modules.compat.a1111 import shared
    from modules.ui.settings import apply_settings, create_settings_tab

    application, _ = loaded
    with gr.Blocks() as blocks:
        create_settings_tab(application)
    by_id = {getattr(block, "elem_id", None): block for block in blocks.blocks.values()}
    assert isinstance(by_id["setting_test_ext_suffix"], gr.Textbox)
    assert isinstance(by_id["setting_test_ext_zero_guidance"], gr.Checkbox)
    assert "Test extension" in by_id["settings_page_choice"].choices[-2]
    assert "1 setting changed: Suffix" in apply_settings(application, {"test_ext_suffix": "from the tab"})
    try:
        assert shared.opts.test_ext_suffix == "from the tab"
        assert "not applied" in apply_settings(application, {"test_ext_zero_guidance": "maybe"})
    finally:
        shared.opts.test_ext_suffix = "from settings"


def test_an_extension_script_ui_keeps_its_layout_and_events_on_the_page(loaded):
    """The page calls the extension's ui() where the script goes: its accordion and row stay, its own .change
    event is wired, and the components it returned are the script's arguments."""
    import gradio as gr

    from modules.ui.common import Controls
    from modules.ui.scripts_ui import build_scripts

    application, _ = loaded
    tab = application.scripts.tab(False)
    with gr.Blocks() as blocks:
        controls = Controls("txt2img")
        widgets = build_scripts(controls, tab)
    enabled, flip = controls.components["script:test always on:arg0"], controls.components["script:test always on:arg1"]
    assert isinstance(enabled, gr.Checkbox) and enabled.label == "Enabled"
    ancestors, parent = [], enabled.parent
    while parent is not None:
        ancestors.append(parent)
        parent = parent.parent
    assert any(isinstance(block, gr.Accordion) and block.label == "Test" for block in ancestors)
    assert any(type(block).__name__ == "FormRow" for block in ancestors)
    events = [fn for fn in blocks.fns.values() if (enabled._id, "change") in fn.targets]
    assert len(events) == 1 and [output._id for output in events[0].outputs] == [flip._id]
    script = tab.find("test always on")
    bound = widgets.bind({"script:test always on:arg0": True, "script:test always on:arg1": False})
    assert dict(bound.always_on)[script] == {"arg0": True, "arg1": False}


def test_ui_components_render_as_the_gradio_widgets_they_extend():
    """The browser picks a component by its block name: A1111's FormRow must render as a row, not "formrow"."""
    import gradio as gr

    from modules.compat.a1111 import ui_components

    with gr.Blocks():
        names = {
            ui_components.FormRow().get_block_name(),
            ui_components.ResizeHandleRow().get_block_name(),
        }
        assert names == {"row"}
        assert ui_components.FormColumn().get_block_name() == "column"
        assert ui_components.FormGroup().get_block_name() == "group"
        assert ui_components.ToolButton(value="x").get_block_name() == "button"
        assert ui_components.DropdownMulti(choices=["a"]).get_block_name() == "dropdown"
        assert ui_components.InputAccordion(False, label="On").get_block_name() == "checkbox"


def test_image_saved_callbacks_see_a_scripts_grid(loaded):
    """X/Y/Z plot's grid is saved through the same saving code: the callbacks get its file name and a p."""
    application, folder = loaded
    tab = application.scripts.tab(False)
    xyz = tab.find_selectable("x/y/z plot")
    callback_calls(folder)
    bound = tab.bind((xyz, tab.arguments(xyz, [4, "1,2"])))
    result = application.service.submit(tiny_request(prompt="a grid fox"), scripts=bound).future.result()
    saved = callback_calls(folder, "before_image_saved")
    assert result.grid_path is not None and saved == [["before_image_saved", result.grid_path.name, "a grid fox", 128]]


def test_on_image_grid_can_change_the_grid_layout(loaded):
    """A callback setting cols=1 (rows = the image count) gives a one-column grid of the job's images."""
    application, folder = loaded
    from modules.compat.a1111 import shared

    callback_calls(folder)
    request = tiny_request(batch_size=4, steps=1, save_images=False)
    default = application.service.submit(request).future.result()
    assert default.grid.size == (128, 128)
    assert callback_calls(folder, "image_grid") == [["image_grid", 4, 2, 2]]
    shared.opts.test_ext_grid_one_column = True
    try:
        single = application.service.submit(request).future.result()
    finally:
        shared.opts.test_ext_grid_one_column = False
    assert single.grid.size == (64, 256)
    for index, image in enumerate(single.images):
        assert np.array_equal(pixels(single.grid.crop((0, 64 * index, 64, 64 * (index + 1)))), pixels(image))


def test_extras_saves_fire_the_image_saved_callbacks(loaded):
    """Extras saves go through the same listeners (A1111's postprocessing saves with images.save_image, p None)."""
    application, folder = loaded
    from modules.processing.extras import ExtrasRequest, sources_from_images

    callback_calls(folder)
    source = Image.new("RGB", (32, 24), (200, 30, 30))
    source.info["parameters"] = "a red square\nSteps: 3, Sampler: Euler, Seed: 5, Size: 32x24"
    request = ExtrasRequest(upscaling_resize=2, extras_upscaler_1="Lanczos")
    result = application.extras().run(request, sources_from_images([source]))
    [saved] = result.saved_paths
    assert callback_calls(folder) == [
        ["before_image_saved", saved.name, None, 64],
        ["image_saved", saved.name, True, "before"],
    ]
    with Image.open(saved) as image:
        assert image.info["test_ext"] == "before"
        assert image.info["parameters"].endswith("Size: 32x24, Saved by: test-ext")
        assert image.info["extras"] == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"


def test_on_extra_noise_can_replace_the_extra_noise(loaded):
    """The original backend's img2img extra noise: the callback sees (noise, x, xi); zeroing the noise gives the
    image made without extra noise."""
    application, folder = loaded
    from modules.compat.a1111 import shared

    def image(extra: float) -> np.ndarray:
        request = tiny_img2img(seed=3, sampling_backend="original", override_settings={"img2img_extra_noise": extra})
        return pixels(application.service.submit(request).future.result().images[0])

    callback_calls(folder)
    plain, noisy = image(0.0), image(0.5)
    assert callback_calls(folder, "extra_noise") == [["extra_noise", [1, 4, 8, 8], [1, 4, 8, 8], [1, 4, 8, 8]]]
    assert not np.array_equal(plain, noisy)
    shared.opts.test_ext_zero_extra_noise = True
    try:
        zeroed = image(0.5)
    finally:
        shared.opts.test_ext_zero_extra_noise = False
    assert np.array_equal(zeroed, plain)


def test_on_before_token_counter_changes_what_the_ui_counts(loaded):
    """The UI's counter handlers hand (prompt, steps, styles, is_positive) to the callback and count what it
    leaves: a callback doubling the prompt doubles the count."""
    application, folder = loaded
    from modules.compat.a1111 import shared
    from modules.ui.app import create_ui

    blocks = create_ui(application)
    by_id = {block.elem_id: block for block in blocks.blocks.values() if getattr(block, "elem_id", None)}
    handlers = {}
    for fn in blocks.fns.values():
        for output in fn.outputs:
            if output.elem_id in ("txt2img_token_counter", "txt2img_negative_token_counter"):
                handlers[output.elem_id] = fn.fn
    count, count_negative = handlers["txt2img_token_counter"], handlers["txt2img_negative_token_counter"]
    assert by_id["txt2img_token_counter"].value == "0/75"
    callback_calls(folder)
    assert count("a red fox", 12, ["Oil"]) == "3/75"
    assert count_negative("blurry", 12, []) == "1/75"
    assert callback_calls(folder) == [
        ["before_token_counter", "a red fox", 12, ["Oil"], True],
        ["before_token_counter", "blurry", 12, [], False],
    ]
    shared.opts.test_ext_count_twice = True
    try:
        assert count("a red fox", 12, []) == "6/75"
    finally:
        shared.opts.test_ext_count_twice = False
    callback_calls(folder)

"""Test extensions written as A1111 extensions are (not a test module): one exercising every hook and every called
callback (``scripts/test_callbacks.py`` records each callback with its arguments in ``callbacks.jsonl``), broken
ones, and a local git repository to install from."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

TEST_SCRIPT = """
import json
import os

import gradio as gr
from PIL import Image

import modules.scripts as scripts
from modules import script_callbacks, shared
from modules.processing import Processed, process_images
from modules.ui_components import FormRow

RECORD = os.path.join(scripts.basedir(), "calls.jsonl")


def record(*event):
    with open(RECORD, "a", encoding="utf-8") as file:
        file.write(json.dumps([str(part) for part in event]) + "\\n")


def on_ui_settings():
    section = ("test-ext", "Test extension")
    suffix = shared.OptionInfo("from settings", "Suffix", section=section, infotext="Test suffix").info("x")
    shared.opts.add_option("test_ext_suffix", suffix)


script_callbacks.on_ui_settings(on_ui_settings)
script_callbacks.on_app_started(lambda demo, app: record("app_started", type(app).__name__))
script_callbacks.on_ui_tabs(lambda: record("ui_tabs") or [])
script_callbacks.on_infotext_pasted(lambda text, params: record("infotext_pasted", params.get("Test ext")))


class AlwaysOn(scripts.Script):
    def title(self):
        return "Test always on"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        with gr.Accordion("Test", open=False), FormRow():
            enabled = gr.Checkbox(label="Enabled", value=False)
            flip = gr.Checkbox(label="Flip", value=False, interactive=False)
        self.infotext_fields = [(enabled, "Test enabled")]
        enabled.change(fn=lambda value: gr.update(interactive=value), inputs=enabled, outputs=flip)
        return [enabled, flip]

    def before_process(self, p, enabled, flip):
        record("before_process", enabled, p.steps)

    def process(self, p, enabled, flip):
        record("process", enabled, len(p.all_prompts))
        if enabled:
            word = shared.cmd_opts.test_ext_word
            p.all_prompts = [f"{prompt}, {word} {shared.opts.test_ext_suffix}" for prompt in p.all_prompts]
            p.extra_generation_params["Test ext"] = word

    def before_process_batch(self, p, enabled, flip, **kwargs):
        record("before_process_batch", kwargs["batch_number"], kwargs["seeds"][0])

    def process_batch(self, p, enabled, flip, **kwargs):
        record("process_batch", kwargs["batch_number"])

    def postprocess_batch(self, p, enabled, flip, **kwargs):
        record("postprocess_batch", kwargs["batch_number"], len(kwargs["images"]))

    def postprocess_batch_list(self, p, pp, enabled, flip, **kwargs):
        record("postprocess_batch_list", len(pp.images))

    def postprocess_image(self, p, pp, enabled, flip):
        record("postprocess_image", pp.image.size[0])
        if flip:
            pp.image = pp.image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)

    def postprocess(self, p, processed, enabled, flip):
        record("postprocess", len(processed.images), processed.all_seeds[0])


class Twice(scripts.Script):
    def title(self):
        return "Test twice"

    def ui(self, is_img2img):
        return [gr.Slider(minimum=1, maximum=3, step=1, value=2, label="Count")]

    def run(self, p, count):
        images, infotexts = [], []
        for index in range(int(count)):
            p.seed = 100 + index
            p.override_settings["test_ext_suffix"] = f"run {index}"  # an extension setting, for this pass only
            processed = process_images(p)
            images += processed.images
            infotexts += processed.infotexts
        return Processed(p, images, 100, infotexts[0], infotexts=infotexts)
"""

CALLBACKS_SCRIPT = """
import json
import os

import torch

import modules.scripts as scripts
from modules import script_callbacks, shared

RECORD = os.path.join(scripts.basedir(), "callbacks.jsonl")


def record(*event):
    with open(RECORD, "a", encoding="utf-8") as file:
        file.write(json.dumps(list(event)) + "\\n")


def rows(value):
    return None if value is None else list(value.shape)


def on_model_loaded(sd_model):
    record("model_loaded", sd_model.sd_checkpoint_info.name, sd_model.sd_model_hash, sd_model.is_sdxl)


def on_before_image_saved(params):
    params.pnginfo["test_ext"] = "before"
    params.pnginfo["parameters"] += ", Saved by: test-ext"
    prompt = params.p.prompt if params.p is not None else None  # Extras saves have no p, as in A1111
    record("before_image_saved", os.path.basename(params.filename), prompt, params.image.size[0])


def on_image_saved(params):
    name, written = os.path.basename(params.filename), os.path.exists(params.filename)
    record("image_saved", name, written, params.pnginfo["test_ext"])


def on_cfg_denoiser(params):
    record(
        "cfg_denoiser", params.sampling_step, params.total_sampling_steps, rows(params.x), rows(params.text_cond),
        rows(params.text_uncond), rows(params.sigma), params.denoiser is not None,
    )


def on_cfg_denoised(params):
    record("cfg_denoised", params.sampling_step, params.total_sampling_steps, rows(params.x))


def on_cfg_after_cfg(params):
    record("cfg_after_cfg", params.sampling_step, params.total_sampling_steps, rows(params.x))
    if shared.opts.test_ext_zero_guidance:
        params.x = torch.zeros_like(params.x)


def on_image_grid(params):
    record("image_grid", len(params.imgs), params.cols, params.rows)
    if shared.opts.test_ext_grid_one_column:
        params.cols, params.rows = 1, len(params.imgs)


def on_extra_noise(params):
    record("extra_noise", rows(params.noise), rows(params.x), rows(params.xi))
    if shared.opts.test_ext_zero_extra_noise:
        params.noise = torch.zeros_like(params.noise)


def on_before_token_counter(params):
    record("before_token_counter", params.prompt, params.steps, params.styles, params.is_positive)
    if shared.opts.test_ext_count_twice:
        params.prompt = f"{params.prompt} {params.prompt}"


def on_infotext_pasted(infotext, params):
    params["Test pasted"] = "yes"
    record("infotext_pasted", params.get("Steps"))


def on_script_unloaded():
    record("script_unloaded")


def on_ui_settings():
    section = ("test-ext", "Test extension")
    shared.opts.add_option("test_ext_zero_guidance", shared.OptionInfo(False, "Zero guidance", section=section))
    shared.opts.add_option("test_ext_zero_extra_noise", shared.OptionInfo(False, "Zero extra noise", section=section))
    shared.opts.add_option("test_ext_count_twice", shared.OptionInfo(False, "Count prompts twice", section=section))
    shared.opts.add_option("test_ext_grid_one_column", shared.OptionInfo(False, "One-column grids", section=section))


script_callbacks.on_model_loaded(on_model_loaded)
script_callbacks.on_before_image_saved(on_before_image_saved)
script_callbacks.on_image_saved(on_image_saved)
script_callbacks.on_cfg_denoiser(on_cfg_denoiser)
script_callbacks.on_cfg_denoised(on_cfg_denoised)
script_callbacks.on_cfg_after_cfg(on_cfg_after_cfg)
script_callbacks.on_image_grid(on_image_grid)
script_callbacks.on_extra_noise(on_extra_noise)
script_callbacks.on_before_token_counter(on_before_token_counter)
script_callbacks.on_infotext_pasted(on_infotext_pasted)
script_callbacks.on_script_unloaded(on_script_unloaded)
script_callbacks.on_ui_settings(on_ui_settings)
"""

PRELOAD = """
def preload(parser):
    parser.add_argument("--test-ext-word", type=str, default="badger", help="a word the test extension adds")
"""

INSTALL = """
from pathlib import Path
marker = Path(__file__).parent / "installed.txt"
marker.write_text(marker.read_text() + "x" if marker.exists() else "x")
print("test extension installed")
"""


def write_test_extension(folder: Path, name: str = "test-ext") -> Path:
    """An A1111-style extension: preload flag, install.py, metadata.ini, a script file, javascript and style."""
    root = folder / name
    (root / "scripts").mkdir(parents=True)
    (root / "javascript").mkdir()
    (root / "scripts" / "test_script.py").write_text(textwrap.dedent(TEST_SCRIPT), encoding="utf-8")
    (root / "scripts" / "test_callbacks.py").write_text(CALLBACKS_SCRIPT, encoding="utf-8")
    (root / "preload.py").write_text(PRELOAD, encoding="utf-8")
    (root / "install.py").write_text(INSTALL, encoding="utf-8")
    (root / "metadata.ini").write_text("[Extension]\nName = test-ext\n", encoding="utf-8")
    (root / "javascript" / "test.js").write_text("window.testExtensionLoaded = true;\n", encoding="utf-8")
    (root / "style.css").write_text(".test-ext-marker { color: #123456; }\n", encoding="utf-8")
    return root


def write_broken_extensions(folder: Path) -> None:
    """A syntax error, a missing attribute, a module Easel does not provide; each beside a working file."""
    broken = {
        "broken-syntax": "def nope(:\n",
        "broken-attribute": "from modules.shared import no_such_thing\n",
        "broken-module": "from modules import sd_hijack\n",
    }
    for name, source in broken.items():
        (folder / name / "scripts").mkdir(parents=True)
        (folder / name / "scripts" / "bad.py").write_text(source, encoding="utf-8")


def git(folder: Path, *arguments: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=master", *arguments]
    return subprocess.run(command, cwd=folder, check=True, capture_output=True, text=True).stdout.strip()


def make_git_extension(folder: Path, name: str = "git-ext") -> Path:
    """A local git repository holding a small extension (one always-on script), one commit."""
    root = folder / name
    (root / "scripts").mkdir(parents=True)
    source = (
        "from modules import scripts\n\n\nclass Git(scripts.Script):\n    def title(self):\n        return 'Git ext'\n"
    )
    source += "\n    def show(self, is_img2img):\n        return scripts.AlwaysVisible\n"
    (root / "scripts" / "git_ext.py").write_text(source, encoding="utf-8")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "first")
    return root

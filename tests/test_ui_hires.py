"""Hires fix and Restore faces controls: requests from control values, infotext paste back, the built UI, and the
Extras tab's handler."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from modules.application import Application
from modules.cmd_args import build_parser
from modules.postprocess.latent_upscale import LATENT_UPSCALE_MODES
from modules.processing.extras import Extras
from modules.processing.processing import process
from modules.processing.requests import Txt2ImgRequest
from modules.ui import handlers
from modules.ui.app import SENT_FIELDS, create_ui
from modules.ui.extras import BATCH_FOLDER, BATCH_UPLOADS, SINGLE_IMAGE, run_extras_job

BASE_VALUES = {
    "prompt": "a castle",
    "negative_prompt": "fog",
    "steps": 2.0,
    "sampler_name": "Euler",
    "scheduler": "Automatic",
    "cfg_scale": 7.0,
    "width": 64.0,
    "height": 64.0,
    "seed": 3,
    "batch_size": 1.0,
    "n_iter": 1.0,
    "clip_skip": 1.0,
    "restore_faces": False,
}
HIRES_VALUES = {
    "enable_hr": True,
    "hr_upscaler": "Lanczos",
    "hr_second_pass_steps": 3.0,
    "denoising_strength": 0.45,
    "hr_scale": 1.5,
    "hr_resize_x": 0.0,
    "hr_resize_y": 0.0,
    "hr_checkpoint_name": handlers.USE_SAME_CHECKPOINT,
    "hr_sampler_name": handlers.USE_SAME_SAMPLER,
    "hr_scheduler": handlers.USE_SAME_SCHEDULER,
    "hr_prompt": "",
    "hr_negative_prompt": "",
}
HIRES_REQUEST_FIELDS = (*handlers.HIRES_FIELDS, "restore_faces")


def hires_fields(request: Txt2ImgRequest) -> dict:
    return {name: getattr(request, name) for name in HIRES_REQUEST_FIELDS}


def test_hires_controls_build_the_request() -> None:
    request = handlers.build_txt2img_request({**BASE_VALUES, **HIRES_VALUES, "restore_faces": True})
    assert request.enable_hr and request.restore_faces
    assert (request.hr_upscaler, request.hr_second_pass_steps, request.hr_scale) == ("Lanczos", 3, 1.5)
    assert isinstance(request.hr_second_pass_steps, int) and request.denoising_strength == 0.45
    assert (request.hr_sampler_name, request.hr_scheduler, request.hr_checkpoint_name) == (None, None, None)
    overridden = handlers.build_txt2img_request(
        {
            **BASE_VALUES,
            **HIRES_VALUES,
            "hr_sampler_name": "DPM++ 2M",
            "hr_scheduler": "Karras",
            "hr_resize_x": 128.0,
            "hr_prompt": "a castle, detailed",
        }
    )
    assert (overridden.hr_sampler_name, overridden.hr_scheduler) == ("DPM++ 2M", "Karras")
    assert overridden.hr_resize_x == 128 and overridden.hires_size() == (128, 128)
    assert overridden.hr_prompt == "a castle, detailed"
    assert not handlers.build_txt2img_request(BASE_VALUES).enable_hr


def test_restore_faces_reaches_img2img_requests() -> None:
    image = Image.new("RGB", (64, 64))
    values = {**BASE_VALUES, "restore_faces": True, "init_image": image, "denoising_strength": 0.5}
    assert handlers.build_img2img_request(values).restore_faces


def test_a1111_hires_infotext_fills_the_controls() -> None:
    text = (
        "a castle\nNegative prompt: fog\nSteps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, "
        "Seed: 1, Face restoration: CodeFormer, Size: 512x512, Denoising strength: 0.45, Hires upscale: 2, "
        "Hires steps: 10, Hires upscaler: R-ESRGAN 4x+, Hires sampler: DPM++ 2M Karras, Version: v1.10.1"
    )
    fields = handlers.fields_from_infotext(text)
    assert fields["enable_hr"] and fields["restore_faces"]
    assert (fields["hr_scale"], fields["hr_second_pass_steps"], fields["hr_upscaler"]) == (2.0, 10, "R-ESRGAN 4x+")
    assert (fields["hr_resize_x"], fields["hr_resize_y"]) == (0, 0)
    assert (fields["hr_sampler_name"], fields["hr_scheduler"]) == ("DPM++ 2M", "Karras")
    assert fields["hr_checkpoint_name"] == handlers.USE_SAME_CHECKPOINT
    assert fields["hr_prompt"] == "" and fields["denoising_strength"] == 0.45


def test_infotext_without_hires_turns_the_controls_off() -> None:
    img2img_text = "a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64, Denoising strength: 0.6"
    fields = handlers.fields_from_infotext(img2img_text)
    assert fields["enable_hr"] is False and fields["restore_faces"] is False
    assert "hr_scale" not in fields and "hr_sampler_name" not in fields
    resized = handlers.fields_from_infotext(img2img_text + ", Hires resize: 128x96, Hires upscaler: Latent")
    assert resized["enable_hr"] and (resized["hr_resize_x"], resized["hr_resize_y"]) == (128, 96)
    assert resized["hr_sampler_name"] == handlers.USE_SAME_SAMPLER
    assert resized["hr_scheduler"] == handlers.USE_SAME_SCHEDULER


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {
            "hr_upscaler": "Latent (nearest)",
            "hr_scale": 1.0,
            "hr_resize_x": 96.0,
            "hr_resize_y": 80.0,
            "hr_sampler_name": "DPM++ 2M",
            "hr_scheduler": "Exponential",  # not DPM++ 2M's default (Karras), which is written as "Automatic"
            "hr_prompt": "a castle, detailed",
            "hr_negative_prompt": "fog, haze",
        },
    ],
)
def test_generated_infotext_pasted_back_restores_the_hires_controls(hires_context, changes) -> None:
    values = {**BASE_VALUES, **HIRES_VALUES, **changes}
    request = handlers.build_txt2img_request(values).model_copy(update={"save_images": False})
    result = process(request, hires_context)
    fields = handlers.fields_from_infotext(result.infotexts[0])
    # "Hires resize" replaces "Hires upscale" in the infotext (as A1111), so the scale slider keeps its value then
    restored = set(HIRES_REQUEST_FIELDS) - ({"hr_scale"} if request.hr_resize_x else set())
    assert {name for name in fields if name in SENT_FIELDS} >= restored
    pasted = handlers.build_txt2img_request({**BASE_VALUES, **fields})
    assert {name: hires_fields(pasted)[name] for name in restored} == {
        name: hires_fields(request)[name] for name in restored
    }
    assert pasted.hires_size() == request.hires_size()


# --- the built UI -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def application(tmp_path_factory: pytest.TempPathFactory) -> Application:
    data_dir = tmp_path_factory.mktemp("ui-data")
    return Application.create(build_parser().parse_args(["--data-dir", str(data_dir)]))


def components_by_id(blocks: gr.Blocks) -> dict[str, gr.components.Component]:
    return {block.elem_id: block for block in blocks.blocks.values() if getattr(block, "elem_id", None)}


def choice_values(dropdown: gr.Dropdown) -> list[str]:
    return [value for _, value in dropdown.choices]


def test_ui_has_hires_restore_faces_and_extras_controls(application: Application) -> None:
    found = components_by_id(create_ui(application))
    upscalers = choice_values(found["txt2img_hr_upscaler"])
    assert upscalers[: len(LATENT_UPSCALE_MODES)] == list(LATENT_UPSCALE_MODES)
    assert {"None", "Lanczos", "Nearest"} <= set(upscalers)
    assert choice_values(found["txt2img_hr_sampler_name"])[0] == handlers.USE_SAME_SAMPLER
    assert choice_values(found["txt2img_hr_scheduler"])[0] == handlers.USE_SAME_SCHEDULER
    assert found["txt2img_hr_checkpoint_name"].value == handlers.USE_SAME_CHECKPOINT
    assert found["txt2img_hires_fix"].label == "Hires. fix"
    for tab in ("txt2img", "img2img", "inpaint"):
        assert found[f"{tab}_restore_faces"].label == "Restore faces"
    assert "Lanczos" in choice_values(found["extras_upscaler_1"])
    assert found["extras_upscaler_2_visibility"].value == 0.0


def test_extras_tab_handler_runs_and_reports(application: Application, tmp_path: Path) -> None:
    extras = Extras(application.postprocessor, application.options, application.paths.data_dir)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8), mode="RGB")
    values = {"image": image, "extras_upscaler_1": "Lanczos", "upscaling_resize": 2.0, "resize_mode": 0}
    view = run_extras_job(extras, SINGLE_IMAGE, values)
    assert [shown.size for shown in view.images] == [(64, 48)]
    assert view.infotext == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"
    assert "1 image done" in view.status and "extras-images" in view.status
    missing = run_extras_job(extras, SINGLE_IMAGE, {**values, "image": None})
    assert "Upload an image" in missing.status and "easel-error" in missing.status
    no_folder = run_extras_job(extras, BATCH_FOLDER, {**values, "input_dir": "absent"})
    assert "input directory not found" in no_folder.status
    image.save(tmp_path / "upload.png")
    batch = run_extras_job(extras, BATCH_UPLOADS, {**values, "image_batch": [str(tmp_path / "upload.png")]})
    assert [shown.size for shown in batch.images] == [(64, 48)]
    faces = run_extras_job(extras, SINGLE_IMAGE, {**values, "gfpgan_visibility": 1.0})
    assert "GFPGAN" in faces.status and "easel-error" in faces.status

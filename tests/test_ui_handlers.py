"""UI handlers as plain functions: requests from control values, masks, messages, gallery state, infotext."""

from __future__ import annotations

import pytest
from PIL import Image
from pydantic import ValidationError

from modules.models.errors import CorruptCheckpointError
from modules.processing.job import JobProgress
from modules.processing.processing import ProcessingError, ProcessingResult
from modules.processing.requests import MaskedContent, ResizeMode
from modules.ui import handlers
from modules.ui.messages import InputError, error_message, progress_text, status_html

TXT2IMG_VALUES = {
    "prompt": "a cat",
    "negative_prompt": "blurry",
    "steps": 2.0,
    "sampler_name": "Euler a",
    "scheduler": "Automatic",
    "cfg_scale": 6.5,
    "width": 64.0,
    "height": 96.0,
    "seed": 42,
    "batch_size": 1.0,
    "n_iter": 2.0,
    "clip_skip": 2.0,
}


def editor_value(size: tuple[int, int] = (64, 64), painted: tuple[int, int, int, int] | None = None) -> dict:
    background = Image.new("RGBA", size, (10, 200, 30, 255))
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    if painted:
        layer.paste((255, 255, 255, 255), painted)
    return {"background": background, "layers": [layer], "composite": background}


def inpaint_values(**changes: object) -> dict:
    return {
        **TXT2IMG_VALUES,
        "denoising_strength": 0.5,
        "resize_mode": "Just resize",
        "mask_blur": 0.0,
        "mask_mode": "Inpaint masked",
        "inpainting_fill": "latent noise",
        "inpaint_area": "Whole picture",
        "inpaint_full_res_padding": 32.0,
        "editor": editor_value(painted=(8, 8, 24, 24)),
        "mask_upload": None,
        **changes,
    }


def test_txt2img_request_takes_slider_floats_as_ints() -> None:
    request = handlers.build_txt2img_request(TXT2IMG_VALUES)
    assert (request.steps, request.width, request.height, request.n_iter, request.clip_skip) == (2, 64, 96, 2, 2)
    assert isinstance(request.steps, int)
    assert (request.prompt, request.negative_prompt, request.sampler_name, request.cfg_scale) == (
        "a cat",
        "blurry",
        "Euler a",
        6.5,
    )


def test_width_not_multiple_of_8_gives_a_readable_message() -> None:
    with pytest.raises(ValidationError) as caught:
        handlers.build_txt2img_request({**TXT2IMG_VALUES, "width": 100})
    message = error_message(caught.value)
    assert message == "Width: must be a multiple of 8 (got 100); try 96"
    assert "Traceback" not in message


def test_steps_out_of_range_names_the_control() -> None:
    with pytest.raises(ValidationError) as caught:
        handlers.build_txt2img_request({**TXT2IMG_VALUES, "steps": 500})
    assert error_message(caught.value).startswith("Sampling steps: Input should be less than or equal to 150")
    assert "(got 500)" in error_message(caught.value)


def test_img2img_without_image_asks_for_one() -> None:
    with pytest.raises(InputError, match="Upload an image"):
        handlers.build_img2img_request({**TXT2IMG_VALUES, "init_image": None, "resize_mode": "Just resize"})


def test_img2img_request_maps_resize_mode_label() -> None:
    image = Image.new("RGB", (80, 80))
    request = handlers.build_img2img_request(
        {**TXT2IMG_VALUES, "init_image": image, "resize_mode": "Resize and fill", "denoising_strength": 0.3}
    )
    assert request.resize_mode is ResizeMode.RESIZE_AND_FILL
    assert request.denoising_strength == 0.3
    assert request.init_image is image


def test_inpaint_mask_comes_from_the_painted_layer() -> None:
    request = handlers.build_inpaint_request(inpaint_values())
    assert request.init_image.mode == "RGB"  # opaque RGBA from the editor loses nothing
    assert request.mask.mode == "L"
    assert request.mask.getbbox() == (8, 8, 24, 24)
    assert request.inpainting_fill is MaskedContent.LATENT_NOISE
    assert not request.inpaint_full_res and not request.inpainting_mask_invert


def test_inpaint_options_map_to_request_fields() -> None:
    request = handlers.build_inpaint_request(
        inpaint_values(inpaint_area="Only masked", mask_mode="Inpaint not masked", inpainting_fill="fill")
    )
    assert request.inpaint_full_res and request.inpainting_mask_invert
    assert request.inpainting_fill is MaskedContent.FILL


def test_inpaint_keeps_real_transparency_for_processing_to_note() -> None:
    value = editor_value(painted=(0, 0, 8, 8))
    value["background"].putpixel((40, 40), (0, 0, 0, 0))
    request = handlers.build_inpaint_request(inpaint_values(editor=value))
    assert request.init_image.mode == "RGBA"


def test_inpaint_without_mask_or_outpaint_says_what_to_do() -> None:
    with pytest.raises(InputError, match="Paint the area"):
        handlers.build_inpaint_request(inpaint_values(editor=editor_value()))


def test_uploaded_mask_wins_over_the_painted_one() -> None:
    upload = Image.new("L", (32, 32), 0)
    request = handlers.build_inpaint_request(inpaint_values(mask_upload=upload))
    assert request.mask is upload


def test_outpaint_grows_the_canvas_and_masks_the_new_area() -> None:
    request = handlers.build_inpaint_request(
        inpaint_values(editor=editor_value(), outpaint_left=16, outpaint_right=0, outpaint_up=0, outpaint_down=8)
    )
    assert (request.width, request.height) == (64 + 16, 96 + 8)
    assert request.init_image.size == (80, 104)
    assert request.mask.getpixel((0, 50)) == 255  # grown on the left
    assert request.mask.getpixel((60, 50)) == 0  # the original area is kept


def test_unknown_choice_label_is_an_input_error() -> None:
    with pytest.raises(InputError, match="Masked content"):
        handlers.build_inpaint_request(inpaint_values(inpainting_fill="sparkles"))


def test_error_messages_never_show_tracebacks() -> None:
    assert error_message(ProcessingError("Unknown sampler 'x'")) == "Unknown sampler 'x'"
    corrupt = CorruptCheckpointError(__import__("pathlib").Path("/m/bad.safetensors"), "header too short")
    assert error_message(corrupt) == "checkpoint /m/bad.safetensors is damaged or not a checkpoint: header too short"
    assert error_message(RuntimeError("boom")) == "RuntimeError: boom"


def test_status_html_escapes_user_text() -> None:
    html = status_html("<script>x</script>\nsecond", "error")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "easel-error" in html and "<br>" in html


def test_progress_text_for_queue_and_steps() -> None:
    assert progress_text(None, 1) == "In queue: next"
    assert progress_text(None, 3) == "In queue: 2 jobs ahead"
    assert progress_text(JobProgress(), 0).startswith("Starting")
    assert progress_text(JobProgress(job_count=2, sampling_steps=4), 0) == "Image 1/2, step 0/4 - 0%"
    running = JobProgress(
        job_no=0,
        job_count=2,
        sampling_step=3,
        sampling_steps=20,
        progress=0.075,
        eta_seconds=65.2,
        textinfo="Image 1/2, step 3/20",
    )
    assert progress_text(running, 0) == "Image 1/2, step 3/20 - 8% - ETA 1m 05s"


def test_gallery_puts_the_grid_first_with_the_first_infotext() -> None:
    images = [Image.new("RGB", (8, 8), color) for color in ("red", "blue")]
    result = ProcessingResult(images=images, infotexts=["one", "two"], seeds=[5, 6], grid=Image.new("RGB", (16, 8)))
    gallery = handlers.gallery_from_result(result, show_grid=True)
    assert gallery.infotexts == ["one", "one", "two"]
    assert gallery.seeds == [5, 5, 6]
    assert [image.info["parameters"] for image in gallery.images] == ["one", "one", "two"]
    assert images[0].info.get("parameters") is None  # the result's images are not changed
    assert handlers.gallery_from_result(result, show_grid=False).seeds == [5, 6]


def test_selection_gives_infotext_and_seed() -> None:
    state = {"infotexts": ["a", "b"], "seeds": [10, 11], "selected": 1}
    assert handlers.selected_infotext(state, 1) == "b"
    assert handlers.selected_infotext(state, 7) == ""
    assert handlers.selected_seed(state) == 11
    assert handlers.selected_seed({}, fallback=-1) == -1


def test_fields_from_infotext_split_legacy_sampler_names() -> None:
    text = "a dog\nNegative prompt: ugly\nSteps: 12, Sampler: DPM++ 2M Karras, CFG scale: 5, Seed: 7, Size: 64x128"
    fields = handlers.fields_from_infotext(text)
    assert fields["prompt"] == "a dog" and fields["negative_prompt"] == "ugly"
    assert (fields["steps"], fields["cfg_scale"], fields["seed"]) == (12, 5.0, 7)
    assert (fields["width"], fields["height"]) == (64, 128)
    assert (fields["sampler_name"], fields["scheduler"]) == ("DPM++ 2M", "Karras")


def test_fields_from_infotext_drop_unknown_sampler() -> None:
    fields = handlers.fields_from_infotext("x\nSteps: 3, Sampler: Nonexistent, Seed: 1, Size: 64x64")
    assert "sampler_name" not in fields and fields["steps"] == 3
    assert handlers.fields_from_infotext("  ") == {}


def sketch_value(size: tuple[int, int] = (64, 64)) -> dict:
    """A green image with a red stroke painted in the box (8, 8)-(24, 24) on the layer."""
    background = Image.new("RGBA", size, (10, 200, 30, 255))
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    layer.paste((255, 0, 0, 255), (8, 8, 24, 24))
    return {"background": background, "layers": [layer], "composite": Image.alpha_composite(background, layer)}


def test_sketch_colours_are_part_of_the_init_image() -> None:
    value = sketch_value()
    request = handlers.build_img2img_request(
        {**TXT2IMG_VALUES, "mode": handlers.SKETCH_MODE, "sketch": value, "init_image": None}
    )
    assert request.init_image.mode == "RGB"
    assert request.init_image.getpixel((10, 10)) == (255, 0, 0)
    assert request.init_image.getpixel((40, 40)) == (10, 200, 30)
    assert request.mask is None


def test_sketch_without_composite_lays_the_layers_over_the_background() -> None:
    value = {**sketch_value(), "composite": None}
    request = handlers.build_img2img_request({**TXT2IMG_VALUES, "mode": handlers.SKETCH_MODE, "sketch": value})
    assert request.init_image.getpixel((10, 10)) == (255, 0, 0)


def test_sketch_mode_without_an_image_asks_for_one() -> None:
    with pytest.raises(InputError, match="Sketch editor"):
        handlers.build_img2img_request({**TXT2IMG_VALUES, "mode": handlers.SKETCH_MODE, "sketch": None})


def test_inpaint_sketch_masks_the_strokes_and_keeps_their_colours() -> None:
    request = handlers.build_inpaint_request(
        inpaint_values(mode=handlers.INPAINT_SKETCH_MODE, inpaint_sketch=sketch_value(), mask_alpha=0, editor=None)
    )
    assert request.mask.getbbox() == (8, 8, 24, 24)
    assert request.mask.getpixel((10, 10)) == 255
    assert request.init_image.getpixel((16, 16)) == (255, 0, 0)
    assert request.init_image.getpixel((40, 40)) == (10, 200, 30)


def test_inpaint_sketch_mask_transparency_dims_the_mask_and_blends_the_colour() -> None:
    request = handlers.build_inpaint_request(
        inpaint_values(mode=handlers.INPAINT_SKETCH_MODE, inpaint_sketch=sketch_value(), mask_alpha=50)
    )
    assert request.mask.getpixel((16, 16)) == 127
    red, green, _ = request.init_image.getpixel((16, 16))
    assert 120 < red < 140 and 90 < green < 110  # half red, half green


def test_inpaint_sketch_without_strokes_says_what_to_do() -> None:
    value = {**sketch_value(), "layers": []}
    value["composite"] = value["background"]
    with pytest.raises(InputError, match="Paint the area"):
        handlers.build_inpaint_request(inpaint_values(mode=handlers.INPAINT_SKETCH_MODE, inpaint_sketch=value))

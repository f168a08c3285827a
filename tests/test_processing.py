"""The processing core on the tiny model: determinism, diffusers parity, batches, interrupt/skip, inpaint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from modules.backends.diffusers_backend.schedulers import build_scheduler
from modules.processing.infotext import parse_infotext, read_infotext
from modules.processing.inputs import outpaint_request
from modules.processing.processing import ProcessingError, process
from modules.processing.requests import Img2ImgRequest, MaskedContent
from tests.helpers import StopAtStep, pixels
from tests.helpers import tiny_request as txt2img


def test_same_request_and_seed_give_identical_files(context, tmp_path):
    request = txt2img(save_images=True)
    first = process(request, context)
    second = process(request, context)
    assert first.saved_paths[0] != second.saved_paths[0]
    assert first.saved_paths[0].read_bytes() == second.saved_paths[0].read_bytes()
    assert np.array_equal(pixels(first.images[0]), pixels(second.images[0]))


def test_another_seed_gives_another_image(context):
    one = process(txt2img(seed=1), context).images[0]
    two = process(txt2img(seed=2), context).images[0]
    assert np.abs(pixels(one) - pixels(two)).mean() > 1.0


def test_batch_equals_single_runs_with_consecutive_seeds(context):
    batch = process(txt2img(batch_size=2, seed=77), context)
    assert batch.seeds == [77, 78]
    for image, seed in zip(batch.images, (77, 78), strict=True):
        single = process(txt2img(seed=seed), context).images[0]
        # Batched and single convolutions may round differently on the CPU; at most 1/255 apart.
        assert np.abs(pixels(image) - pixels(single)).max() <= 1


def test_batch_count_times_size_uses_seed_plus_i(context):
    result = process(txt2img(batch_size=2, n_iter=2, seed=10, steps=1), context)
    assert result.seeds == [10, 11, 12, 13]
    assert len(result.images) == 4
    assert [parse_infotext(text)["Seed"] for text in result.infotexts] == ["10", "11", "12", "13"]


def test_random_seed_is_drawn_and_recorded(context):
    result = process(txt2img(seed=-1, steps=1), context)
    assert 0 <= result.seeds[0] < 4294967294
    assert parse_infotext(result.infotexts[0])["Seed"] == str(result.seeds[0])


def test_equals_plain_diffusers_call(context, manager):
    request = txt2img(sampler_name="Euler a", steps=4, cfg_scale=6.5, seed=99)
    easel_image = process(request, context).images[0]
    model = manager.get()
    plain = StableDiffusionPipeline(**{**model.pipeline.components})
    plain.scheduler = build_scheduler(model.scheduler_config, "Euler a", "Automatic")
    plain.set_progress_bar_config(disable=True)
    generator = [torch.Generator("cpu").manual_seed(99)]
    plain_image = plain(
        prompt=["a red fox"],
        negative_prompt=["blurry"],
        num_inference_steps=4,
        guidance_scale=6.5,
        width=64,
        height=64,
        generator=generator,
    ).images[0]
    assert np.array_equal(pixels(easel_image), pixels(plain_image))


def test_infotext_is_saved_in_png_and_parses_back(context):
    request = txt2img(
        save_images=True,
        prompt="a (red) fox, 3:2 ratio",
        cfg_scale=7.5,
        clip_skip=2,
        sampler_name="DPM++ 2M",
        scheduler="Karras",
    )
    result = process(request, context)
    saved = Image.open(result.saved_paths[0])
    text = read_infotext(saved)
    assert text == result.infotexts[0]
    parsed = parse_infotext(text)
    assert parsed["Prompt"] == "a (red) fox, 3:2 ratio"
    assert parsed["Negative prompt"] == "blurry"
    assert parsed["Steps"] == "3" and parsed["Sampler"] == "DPM++ 2M" and parsed["CFG scale"] == "7.5"
    assert parsed["Seed"] == "1234" and parsed["Size-1"] == "64" and parsed["Size-2"] == "64"
    assert parsed["Clip skip"] == "2"
    assert parsed["Model hash"] == context.models.current.short_hash
    assert parsed["Schedule type"] == "Automatic"  # Karras is DPM++ 2M's default, written as A1111 does
    assert saved.size == (64, 64)
    assert result.saved_paths[0].name.endswith("-1234.png")
    assert result.saved_paths[0].parent.parent.name == "txt2img-images"


def test_interrupt_at_step_k_returns_early_with_an_image(context):
    full = process(txt2img(steps=6), context).images[0]
    control = StopAtStep(2)
    result = process(txt2img(steps=6, n_iter=2), context, control)
    assert result.interrupted
    assert len(result.images) == 1, "the second image of the batch count is not started"
    assert control.steps_seen == [1, 2], "no step runs after the interrupt"
    assert np.abs(pixels(result.images[0]) - pixels(full)).mean() > 0.5


def test_skip_moves_on_to_the_next_image(context):
    control = StopAtStep(1, action="skip")
    result = process(txt2img(steps=4, n_iter=2, seed=500), context, control)
    assert not result.interrupted
    assert len(result.images) == 2
    second_alone = process(txt2img(steps=4, seed=501), context).images[0]
    assert np.array_equal(pixels(result.images[1]), pixels(second_alone))
    first_alone = process(txt2img(steps=4, seed=500), context).images[0]
    assert not np.array_equal(pixels(result.images[0]), pixels(first_alone))


def test_unknown_sampler_is_a_clear_error(context):
    with pytest.raises(ProcessingError, match="sampler"):
        process(txt2img(sampler_name="Nonexistent sampler"), context)


def photo(size=(64, 64)) -> Image.Image:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(array)


def img2img(**fields) -> Img2ImgRequest:
    base = {
        "prompt": "a cat",
        "steps": 4,
        "width": 64,
        "height": 64,
        "seed": 5,
        "sampler_name": "Euler",
        "init_image": photo(),
        "denoising_strength": 0.6,
        "save_images": False,
    }
    return Img2ImgRequest(**{**base, **fields})


def test_img2img_resizes_and_records_denoising(context):
    result = process(img2img(init_image=photo((96, 48)), resize_mode=1), context)
    assert result.images[0].size == (64, 64)
    assert parse_infotext(result.infotexts[0])["Denoising strength"] == "0.6"


def test_img2img_accepts_rgba_and_16_bit_images(context):
    rgba = photo().convert("RGBA")
    sixteen = Image.fromarray((np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16), mode="I;16")
    for image in (rgba, sixteen, photo().convert("L")):
        result = process(img2img(init_image=image), context)
        assert result.images[0].mode == "RGB"


def half_mask(size=(64, 64)) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, (size[0] // 2, 0, size[0], size[1]))
    return mask


@pytest.mark.parametrize("fill", list(MaskedContent))
def test_inpaint_leaves_unmasked_pixels_unchanged(context, fill):
    source = photo()
    result = process(
        img2img(
            init_image=source,
            mask=half_mask(),
            mask_blur=0,
            inpainting_fill=fill,
            denoising_strength=1.0 if fill >= 2 else 0.75,
        ),
        context,
    )
    out = pixels(result.images[0])
    assert np.array_equal(out[:, :32], pixels(source)[:, :32])
    assert np.abs(out[:, 40:] - pixels(source)[:, 40:]).mean() > 1.0


def test_inpaint_only_masked_region_keeps_the_rest(context):
    source = photo((128, 128))
    mask = Image.new("L", (128, 128), 0)
    mask.paste(255, (80, 80, 112, 112))
    result = process(
        img2img(
            init_image=source,
            mask=mask,
            mask_blur=0,
            inpaint_full_res=True,
            inpaint_full_res_padding=8,
            width=64,
            height=64,
        ),
        context,
    )
    out = pixels(result.images[0])
    assert out.shape[:2] == (128, 128)
    assert np.array_equal(out[:64, :], pixels(source)[:64, :])
    assert np.abs(out[80:112, 80:112] - pixels(source)[80:112, 80:112]).mean() > 1.0


def test_inpaint_invert_mask_changes_the_other_side(context):
    source = photo()
    result = process(img2img(init_image=source, mask=half_mask(), mask_blur=0, inpainting_mask_invert=True), context)
    out = pixels(result.images[0])
    assert np.array_equal(out[:, 32:], pixels(source)[:, 32:])


def test_outpaint_grows_the_canvas(context):
    request = outpaint_request(img2img(mask=None, denoising_strength=1.0, mask_blur=0), left=16, right=0, up=8, down=24)
    assert (request.width, request.height) == (80, 96)
    result = process(request, context)
    out = result.images[0]
    assert out.size == (80, 96)
    original = pixels(photo())
    assert np.array_equal(pixels(out)[8:72, 16:80], original)
    assert np.abs(pixels(out)[80:, :] - pixels(request.init_image)[80:, :]).mean() > 1.0


def test_inpainting_checkpoint_is_used_as_such(inpaint_context):
    model = inpaint_context.models.ensure_loaded()
    assert model.is_inpainting
    text = process(txt2img(steps=2), inpaint_context).images[0]
    assert text.size == (64, 64)
    source = photo()
    result = process(img2img(init_image=source, mask=half_mask(), mask_blur=0), inpaint_context)
    assert np.array_equal(pixels(result.images[0])[:, :32], pixels(source)[:, :32])
    latent = process(
        img2img(
            init_image=source,
            mask=half_mask(),
            mask_blur=0,
            denoising_strength=1.0,
            inpainting_fill=MaskedContent.LATENT_NOTHING,
        ),
        inpaint_context,
    )
    assert latent.images[0].size == (64, 64)


def test_saving_settings_name_the_files_of_a_job(context):
    """The filename and directory patterns get the run's values (seed, sampler, model, prompt before styles)."""
    options = context.options
    options.samples_filename_pattern = "[seed]-[sampler]-[model_name]-[prompt_no_styles]"
    options.directories_filename_pattern = "[model_name]"
    options.save_txt = True
    try:
        result = process(txt2img(save_images=True, seed=5, batch_size=2), context)
    finally:
        options.samples_filename_pattern = ""
        options.directories_filename_pattern = "[date]"
        options.save_txt = False
    first, second = result.saved_paths
    assert first.parent.name == "tiny" and first.name.endswith("-5-Euler-tiny-a red fox.png")
    assert second.name.endswith("-6-Euler-tiny-a red fox.png")
    assert first.with_suffix(".txt").read_text(encoding="utf-8") == result.infotexts[0] + "\n"  # A1111 adds a newline

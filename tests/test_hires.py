"""Hires fix on the tiny model: sizes, both upscaler paths, infotext round trip, interrupt keeps pass one."""

from __future__ import annotations

import pytest

from modules.processing.infotext import infotext_to_request_fields, parse_infotext
from modules.processing.processing import ProcessingError, process
from modules.processing.requests import Txt2ImgRequest
from tests.helpers import StopAtStep, pixels, tiny_request

HIRES = {"prompt": "a castle", "negative_prompt": "", "steps": 2, "seed": 3, "enable_hr": True, "hr_scale": 1.5}


def hires_request(**fields) -> Txt2ImgRequest:
    return tiny_request(**{**HIRES, "denoising_strength": 0.5, **fields})


@pytest.mark.parametrize("upscaler", ["Latent", "Latent (bicubic antialiased)", "Lanczos", "Nearest"])
def test_hires_output_has_the_upscaled_size(hires_context, upscaler):
    result = process(hires_request(hr_upscaler=upscaler), hires_context)
    assert result.images[0].size == (96, 96)
    parsed = parse_infotext(result.infotexts[0])
    assert parsed["Hires upscaler"] == upscaler
    assert parsed["Hires upscale"] == "1.5"
    assert parsed["Size-1"] == "64", "Size stays the first pass size, as A1111 writes it"


def test_hires_resize_to_and_overrides_round_trip(hires_context):
    request = hires_request(
        hr_resize_x=128,
        hr_resize_y=0,
        hr_second_pass_steps=3,
        hr_sampler_name="DPM++ 2M",
        hr_prompt="a castle, detailed",
        hr_negative_prompt="fog",
        hr_upscaler="Lanczos",
    )
    result = process(request, hires_context)
    assert result.images[0].size == (128, 128)
    parsed = parse_infotext(result.infotexts[0])
    assert parsed["Hires resize-1"] == "128" and parsed["Hires resize-2"] == "128"
    assert parsed["Hires steps"] == "3"
    assert parsed["Hires sampler"] == "DPM++ 2M"
    assert parsed["Hires prompt"] == "a castle, detailed"
    assert parsed["Hires negative prompt"] == "fog"
    assert parsed["Denoising strength"] == "0.5"
    fields = infotext_to_request_fields(parsed)
    assert fields["denoising_strength"] == 0.5 and fields["width"] == 64


def test_hires_second_pass_changes_the_image(hires_context):
    plain = process(hires_request(enable_hr=False), hires_context).images[0]
    upscaled = process(hires_request(hr_upscaler="Nearest", denoising_strength=0.0), hires_context).images[0]
    refined = process(hires_request(hr_upscaler="Nearest", denoising_strength=0.6), hires_context).images[0]
    assert pixels(upscaled).shape == pixels(refined).shape == (96, 96, 3)
    assert pixels(plain).shape == (64, 64, 3)
    assert abs(pixels(upscaled) - pixels(refined)).mean() > 1.0


def test_interrupt_during_the_first_pass_keeps_its_image(hires_context):
    control = StopAtStep(1)
    result = process(hires_request(steps=3), hires_context, control)
    assert result.interrupted
    assert result.images[0].size == (64, 64)


def test_unknown_hires_upscaler_is_a_clear_error_before_sampling(hires_context):
    with pytest.raises(ProcessingError, match="unknown hires upscaler"):
        process(hires_request(hr_upscaler="No Such Upscaler"), hires_context)


def test_restore_faces_without_weights_is_a_clear_error(hires_context):
    with pytest.raises(ProcessingError, match="face restoration failed"):
        process(hires_request(enable_hr=False, restore_faces=True), hires_context)


def test_prompt_editing_spans_both_passes(hires_context):
    # "when" between 1 and 2 is a fraction of the hires steps (A1111): the first pass sees "castle" only.
    first_pass_only = process(hires_request(enable_hr=False, prompt="a castle"), hires_context).images[0]
    edited = process(hires_request(enable_hr=False, prompt="a [castle:tower:1.5]"), hires_context).images[0]
    assert (pixels(first_pass_only) == pixels(edited)).all()
    fields = {"hr_second_pass_steps": 4, "denoising_strength": 0.9, "cfg_scale": 12.0}
    # Step 2 of 2 base steps: the first pass is all "castle", the whole hires pass "tower".
    result = process(hires_request(prompt="a [castle:tower:2]", **fields), hires_context)
    expected = process(hires_request(prompt="a castle", hr_prompt="a tower", **fields), hires_context)
    plain = process(hires_request(prompt="a castle", **fields), hires_context)
    assert (pixels(result.images[0]) == pixels(expected.images[0])).all()
    assert abs(pixels(result.images[0]) - pixels(plain.images[0])).mean() > 0.1

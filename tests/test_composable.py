"""AND (composable diffusion) on the tiny model, with A1111's arithmetic."""

from __future__ import annotations

import numpy as np

from modules.processing.processing import process
from modules.processing.requests import Img2ImgRequest, Txt2ImgRequest

from .test_processing import photo, pixels


def generate(context, prompt: str, **fields):
    base = {
        "prompt": prompt,
        "steps": 3,
        "width": 64,
        "height": 64,
        "seed": 21,
        "sampler_name": "Euler",
        "save_images": False,
    }
    return process(Txt2ImgRequest(**{**base, **fields}), context).images[0]


def test_and_differs_from_either_part(context):
    both = pixels(generate(context, "a red cube AND a blue sphere"))
    cube = pixels(generate(context, "a red cube"))
    sphere = pixels(generate(context, "a blue sphere"))
    assert np.abs(both - cube).mean() > 0.5
    assert np.abs(both - sphere).mean() > 0.5


def test_half_weights_of_the_same_prompt_equal_the_prompt(context):
    # A1111 adds weight * cfg * (cond - uncond) per part, so "a :0.5 AND a :0.5" is exactly "a"
    # (and "a AND a" doubles the guidance, as it does in A1111).
    single = pixels(generate(context, "a lighthouse"))
    halves = pixels(generate(context, "a lighthouse :0.5 AND a lighthouse :0.5"))
    assert np.abs(single - halves).max() <= 1
    doubled = pixels(generate(context, "a lighthouse AND a lighthouse"))
    same_as_double_cfg = pixels(generate(context, "a lighthouse", cfg_scale=14.0))
    assert np.abs(doubled - same_as_double_cfg).max() <= 1


def test_and_works_in_a_batch_with_prompt_editing_and_img2img(context):
    result = process(
        Txt2ImgRequest(
            prompt="a [cat:dog:2] AND a hat :0.7",
            steps=3,
            width=64,
            height=64,
            seed=3,
            batch_size=2,
            sampler_name="Euler",
            save_images=False,
        ),
        context,
    )
    assert len(result.images) == 2
    image = process(
        Img2ImgRequest(
            prompt="a cat AND a dog",
            init_image=photo(),
            width=64,
            height=64,
            steps=4,
            seed=1,
            sampler_name="Euler",
            save_images=False,
        ),
        context,
    ).images[0]
    assert image.size == (64, 64)

"""Kandinsky 2.2 inpainting: the checkpoint's prior with the inpainting decoder folder listed beside it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from modules.models.detection import ModelArchitecture
from modules.processing.infotext import parse_infotext
from modules.processing.processing import ProcessingError, process
from tests.helpers import pixels, tiny_img2img

REQUEST = {"checkpoint": "kandinsky22", "sampler_name": "DDIM", "steps": 3, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def kandinsky_context(tmp_path_factory):
    from modules.backends.diffusers_backend import DiffusersBackend
    from modules.models.service import ModelService
    from modules.options import Options
    from modules.paths import DataPaths
    from modules.processing.processing import ProcessingContext
    from modules.tiny_model import build_tiny_pipeline, write_diffusers
    from tests.helpers import make_manager

    paths = DataPaths.create(tmp_path_factory.mktemp("kandinsky-data"))
    paths.ensure()
    for architecture in (ModelArchitecture.KANDINSKY22, ModelArchitecture.KANDINSKY22_INPAINT):
        write_diffusers(build_tiny_pipeline(architecture=architecture), paths.checkpoints_dir / architecture.value)
    return ProcessingContext(ModelService(make_manager(paths)), DiffusersBackend(), Options(), paths)


def init_and_mask() -> tuple[Image.Image, Image.Image]:
    init = Image.fromarray(np.random.default_rng(3).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    return init, mask


@pytest.mark.slow
def test_inpaint_repaints_the_masked_half_with_the_inpainting_decoder(kandinsky_context) -> None:
    init, mask = init_and_mask()
    fields = {**REQUEST, "init_image": init, "mask": mask, "seed": 11, "denoising_strength": 1.0}
    result = process(tiny_img2img(**fields, negative_prompt="blurry"), kandinsky_context)
    image = pixels(result.images[0])
    assert result.images[0].size == (64, 64)
    assert np.abs(image[:, 40:] - pixels(init)[:, 40:]).mean() < np.abs(image[:, :24] - pixels(init)[:, :24]).mean()
    model = kandinsky_context.models.current
    inpaint = model.pipeline_for(model_task("inpaint"))
    assert type(inpaint).__name__ == "KandinskyV22InpaintCombinedPipeline"
    assert inpaint.unet.config.in_channels == 9 and inpaint.prior_prior is model.pipeline.prior_prior
    other = process(tiny_img2img(**{**fields, "seed": 12}, negative_prompt="blurry"), kandinsky_context)
    assert np.abs(pixels(other.images[0])[:, :24] - image[:, :24]).max() > 0  # the seed draws the repainted part
    batch = process(tiny_img2img(**{**fields, "seed": 10}, batch_size=2, negative_prompt="blurry"), kandinsky_context)
    assert np.abs(pixels(batch.images[1]) - image).max() <= 1
    parsed = parse_infotext(result.infotexts[0])
    assert parsed["Model"] == "kandinsky22" and str(parsed["Seed"]) == "11" and parsed["Sampler"] == "DDIM"
    partial = process(tiny_img2img(**fields | {"denoising_strength": 0.5}), kandinsky_context)
    assert any("denoising strength is not applied" in note for note in partial.notes)


def model_task(name: str):
    from modules.models.manager import Task

    return Task(name)


def test_the_inpainting_decoder_alone_is_refused(kandinsky_context) -> None:
    init, mask = init_and_mask()
    with pytest.raises(ProcessingError, match=r"inpainting decoder: load the Kandinsky 2\.2"):
        process(
            tiny_img2img(**{**REQUEST, "checkpoint": "kandinsky22-inpaint", "init_image": init, "mask": mask}),
            kandinsky_context,
        )

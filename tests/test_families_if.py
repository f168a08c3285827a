"""DeepFloyd IF: stage I with the stage II found beside it, through processing (pixel-space cascade)."""

from __future__ import annotations

import numpy as np
import pytest

from modules.models.detection import ModelArchitecture
from modules.processing.infotext import parse_infotext
from modules.processing.processing import ProcessingError, process
from tests.helpers import pixels, tiny_img2img, tiny_request

IF_REQUEST = {"checkpoint": "if-i", "sampler_name": "DDIM", "steps": 2, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def if_context(tmp_path_factory):
    from modules.backends.diffusers_backend import DiffusersBackend
    from modules.models.service import ModelService
    from modules.options import Options
    from modules.paths import DataPaths
    from modules.processing.processing import ProcessingContext
    from modules.tiny_model import build_tiny_pipeline, write_diffusers
    from tests.helpers import make_manager

    paths = DataPaths.create(tmp_path_factory.mktemp("if-data"))
    paths.ensure()
    for name, architecture in (("if-i", ModelArchitecture.DEEPFLOYD_IF), ("if-ii", ModelArchitecture.DEEPFLOYD_IF_II)):
        write_diffusers(build_tiny_pipeline(architecture=architecture), paths.checkpoints_dir / name)
    return ProcessingContext(ModelService(make_manager(paths)), DiffusersBackend(), Options(), paths)


@pytest.mark.slow
def test_stage_one_and_two_make_the_requested_size(if_context) -> None:
    result = process(tiny_request(**IF_REQUEST, seed=41, negative_prompt="blurry"), if_context)
    assert [image.size for image in result.images] == [(64, 64)]
    assert len(if_context.models.current.stages) == 1  # stage II was found beside stage I and loaded with it
    parsed = parse_infotext(result.infotexts[0])
    assert parsed["Model"] == "if-i" and parsed["Sampler"] == "DDIM" and parsed["Size-1"] == "64"
    assert not any("stage I's" in note for note in result.notes)


@pytest.mark.slow
def test_a_batch_image_equals_its_seed_alone(if_context) -> None:
    batch = process(tiny_request(**IF_REQUEST, batch_size=2, seed=40, negative_prompt="blurry"), if_context)
    single = process(tiny_request(**IF_REQUEST, seed=41, negative_prompt="blurry"), if_context)
    assert np.abs(pixels(batch.images[1]) - pixels(single.images[0])).max() <= 1
    assert np.abs(pixels(batch.images[0]) - pixels(batch.images[1])).max() > 0


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"width": 80}, "multiples of 32"),
        ({"sampler_name": "Euler"}, "DDIM sampler only"),
        ({"checkpoint": "if-ii"}, "upscaling stage: load the DeepFloyd IF stage I model"),
    ],
)
def test_what_if_refuses(if_context, request_fields, message) -> None:
    with pytest.raises(ProcessingError, match=message):
        process(tiny_request(**{**IF_REQUEST, **request_fields}), if_context)


def test_img2img_is_refused_with_the_tasks_if_offers(if_context) -> None:
    with pytest.raises(ProcessingError, match="cannot run img2img in Easel; it offers txt2img"):
        process(tiny_img2img(**IF_REQUEST), if_context)

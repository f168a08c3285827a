"""DeepFloyd IF: stage I with the stage II found beside it, through processing (pixel-space cascade)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

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


def init_image(seed: int = 3) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8))


@pytest.mark.slow
def test_img2img_follows_the_init_image_with_the_denoising_strength(if_context) -> None:
    init = init_image()
    fields = {**IF_REQUEST, "init_image": init, "steps": 4, "seed": 7}
    light = process(tiny_img2img(**fields, denoising_strength=0.25), if_context)
    strong = process(tiny_img2img(**fields, denoising_strength=1.0), if_context)
    assert light.images[0].size == (64, 64)
    assert (
        np.abs(pixels(light.images[0]) - pixels(init)).mean() < np.abs(pixels(strong.images[0]) - pixels(init)).mean()
    )
    batch = process(tiny_img2img(**{**fields, "seed": 6}, denoising_strength=0.6, batch_size=2), if_context)
    single = process(tiny_img2img(**fields, denoising_strength=0.6), if_context)
    assert np.abs(pixels(batch.images[1]) - pixels(single.images[0])).max() <= 1
    assert str(parse_infotext(light.infotexts[0])["Denoising strength"]) == "0.25"
    with pytest.raises(ProcessingError, match="runs no step"):
        process(tiny_img2img(**fields, denoising_strength=0.2), if_context)


@pytest.mark.slow
def test_inpaint_changes_the_masked_half_more_than_the_kept_half(if_context) -> None:
    init = init_image()
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    fields = {**IF_REQUEST, "init_image": init, "mask": mask, "steps": 4, "seed": 7, "denoising_strength": 1.0}
    inpainted = pixels(process(tiny_img2img(**fields), if_context).images[0])
    kept = np.abs(inpainted[:, 40:] - pixels(init)[:, 40:]).mean()
    assert kept < np.abs(inpainted[:, :24] - pixels(init)[:, :24]).mean()


@pytest.fixture(scope="module")
def if3_context(tmp_path_factory):
    """Stages I, II and III (the SD x4 upscaler) listed together."""
    from modules.backends.diffusers_backend import DiffusersBackend
    from modules.models.service import ModelService
    from modules.options import Options
    from modules.paths import DataPaths
    from modules.processing.processing import ProcessingContext
    from modules.tiny_model import build_tiny_pipeline, write_diffusers
    from tests.helpers import make_manager

    paths = DataPaths.create(tmp_path_factory.mktemp("if3-data"))
    paths.ensure()
    stages = (
        ("if-i", ModelArchitecture.DEEPFLOYD_IF),
        ("if-ii", ModelArchitecture.DEEPFLOYD_IF_II),
        ("if-iii", ModelArchitecture.DEEPFLOYD_IF_III),
    )
    for name, architecture in stages:
        write_diffusers(build_tiny_pipeline(architecture=architecture), paths.checkpoints_dir / name)
    return ProcessingContext(ModelService(make_manager(paths)), DiffusersBackend(), Options(), paths)


@pytest.mark.slow
def test_stage_three_enlarges_stage_two_four_times(if3_context) -> None:
    fields = {**IF_REQUEST, "width": 128, "height": 128, "negative_prompt": "blurry"}
    first = process(tiny_request(**fields, seed=3), if3_context)
    assert [image.size for image in first.images] == [(128, 128)]
    assert [type(stage).__name__ for stage in if3_context.models.current.stages] == [
        "IFSuperResolutionPipeline",
        "StableDiffusionUpscalePipeline",
    ]
    again = process(tiny_request(**fields, seed=3), if3_context)
    other = process(tiny_request(**fields, seed=4), if3_context)
    assert np.array_equal(pixels(first.images[0]), pixels(again.images[0]))
    assert np.abs(pixels(first.images[0]) - pixels(other.images[0])).max() > 0
    with pytest.raises(ProcessingError, match="multiples of 128"):
        process(tiny_request(**IF_REQUEST), if3_context)
    with pytest.raises(ProcessingError, match="upscaling stage: load the DeepFloyd IF stage I model"):
        process(tiny_request(**{**IF_REQUEST, "checkpoint": "if-iii"}), if3_context)

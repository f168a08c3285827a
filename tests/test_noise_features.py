"""A1111's noise features end to end on both backends: variation seed, seed resize, RNG source, ENSD, infotext."""

from __future__ import annotations

import numpy as np
import pytest

from modules.backends.registry import backend_names, create_backend
from modules.processing.infotext import infotext_to_request_fields, parse_infotext
from modules.processing.processing import ProcessingContext, process
from modules.processing.requests import Txt2ImgRequest
from tests.helpers import TINY_REQUEST, pixels, tiny_request


@pytest.fixture(scope="module", params=backend_names())
def noise_context(request, context) -> ProcessingContext:
    return ProcessingContext(
        models=context.models, backend=create_backend(request.param), options=context.options, paths=context.paths
    )


@pytest.fixture(scope="module")
def original(context) -> ProcessingContext:
    return ProcessingContext(
        models=context.models, backend=create_backend("original"), options=context.options, paths=context.paths
    )


def image_bytes(request: Txt2ImgRequest, context: ProcessingContext) -> bytes:
    return process(request, context).images[0].tobytes()


def test_variation_strength_zero_is_no_variation_and_one_is_the_variation_seed(noise_context):
    plain = image_bytes(tiny_request(seed=10), noise_context)
    assert image_bytes(tiny_request(seed=10, subseed=99, subseed_strength=0.0), noise_context) == plain
    varied = image_bytes(tiny_request(seed=10, subseed=99, subseed_strength=0.3), noise_context)
    assert varied != plain
    # Euler draws nothing after the initial noise: strength 1 is the variation seed's own image
    assert image_bytes(tiny_request(seed=10, subseed=99, subseed_strength=1.0), noise_context) == image_bytes(
        tiny_request(seed=99), noise_context
    )


def test_with_a_variation_strength_the_batch_keeps_the_seed_and_counts_subseeds(noise_context):
    batch = process(tiny_request(seed=10, subseed=50, subseed_strength=0.4, batch_size=2), noise_context)
    assert batch.seeds == [10, 10] and batch.subseeds == [50, 51]
    single = process(tiny_request(seed=10, subseed=51, subseed_strength=0.4), noise_context).images[0]
    assert np.abs(pixels(batch.images[1]) - pixels(single)).max() <= 1
    assert "Variation seed: 51, Variation seed strength: 0.4" in batch.infotexts[1]


def test_resizing_the_seed_from_the_same_size_is_no_resize(noise_context):
    plain = image_bytes(tiny_request(seed=3), noise_context)
    assert image_bytes(tiny_request(seed=3, seed_resize_from_w=64, seed_resize_from_h=64), noise_context) == plain
    resized = process(tiny_request(seed=3, seed_resize_from_w=48, seed_resize_from_h=80), noise_context)
    assert resized.images[0].tobytes() != plain and "Seed resize from: 48x80" in resized.infotexts[0]


def test_ensd_changes_only_samplers_that_draw_noise_after_the_first_step(original):
    def differs(sampler: str) -> bool:
        plain = image_bytes(tiny_request(sampler_name=sampler, seed=8), original)
        delta = tiny_request(sampler_name=sampler, seed=8, override_settings={"eta_noise_seed_delta": 31337})
        return image_bytes(delta, original) != plain

    assert differs("Euler a") and differs("DPM2 a")
    assert not differs("Euler") and not differs("DPM++ 2M") and not differs("DPM++ 2M SDE")


def test_rng_source_changes_the_noise_and_is_written(original):
    plain = process(tiny_request(seed=4), original)
    nv = process(tiny_request(seed=4, override_settings={"randn_source": "NV"}), original)
    assert nv.images[0].tobytes() != plain.images[0].tobytes()
    assert "RNG: NV" in nv.infotexts[0] and "RNG" not in plain.infotexts[0]


def test_the_infotext_round_trip_gives_the_same_image(original):
    """Variation seed, seed resize, ENSD, RNG, Eta and the sampler are written with A1111's keys and read back."""
    request = tiny_request(
        sampler_name="Euler a",
        seed=12,
        subseed=34,
        subseed_strength=0.25,
        seed_resize_from_w=48,
        seed_resize_from_h=48,
        eta=0.7,
        override_settings={"eta_noise_seed_delta": 31337, "randn_source": "CPU"},
    )
    first = process(request, original)
    text = first.infotexts[0]
    for key in ("Variation seed: 34", "Seed resize from: 48x48", "ENSD: 31337", "RNG: CPU", "Eta: 0.7"):
        assert key in text
    fields = infotext_to_request_fields(parse_infotext(text))
    settings = fields.pop("override_settings")
    assert settings["eta_noise_seed_delta"] == 31337 and settings["eta_ancestral"] == 0.7
    pasted = Txt2ImgRequest(**{**fields, "save_images": False, "override_settings": settings})
    assert pasted.sampling_backend == "original"
    assert image_bytes(pasted, original) == first.images[0].tobytes()
    assert image_bytes(Txt2ImgRequest(**{**TINY_REQUEST, "seed": 12}), original) != first.images[0].tobytes()

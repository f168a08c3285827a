"""Property-based fuzz of txt2img/img2img bodies against a real server: no input gives a 5xx.

Values are drawn so that every valid combination stays tiny (64x64, at most 2 steps and 2 images).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api_support import (
    ApiServer,
    centre_mask,
    copy_checkpoints,
    gradient_image,
    png_base64,
    start_api_server,
    write_tiny_checkpoints,
)

JUNK = st.one_of(
    st.none(),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
SIDES = st.one_of(st.sampled_from([64, 0, -64, 65, 100_000, 2**40]), JUNK)
SMALL_COUNTS = st.one_of(st.sampled_from([1, 2, 0, -1, 5000]), JUNK)
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), JUNK)
SAMPLERS = st.one_of(st.sampled_from(["Euler", "Euler a", "DPM++ 2M Karras", "k_euler", "", "nope"]), JUNK)
OVERRIDES = st.one_of(
    st.none(),
    st.dictionaries(
        st.sampled_from(["sd_model_checkpoint", "CLIP_stop_at_last_layers", "samples_save", "sd_vae", "zzz"]),
        st.one_of(st.integers(-3, 30), st.text(max_size=6), st.booleans(), st.none()),
        max_size=3,
    ),
    st.text(max_size=4),
)
COMMON = {
    "prompt": st.one_of(st.text(max_size=30), JUNK),
    "negative_prompt": st.one_of(st.text(max_size=10), JUNK),
    "seed": st.one_of(st.integers(min_value=-(2**70), max_value=2**70), JUNK),
    "steps": st.one_of(st.sampled_from([1, 2, 0, -5, 10_000]), JUNK),
    "width": SIDES,
    "height": SIDES,
    "batch_size": SMALL_COUNTS,
    "n_iter": SMALL_COUNTS,
    "cfg_scale": FLOATS,
    "sampler_name": SAMPLERS,
    "scheduler": st.one_of(st.sampled_from(["Automatic", "Karras", "karras", "Align Your Steps", "x"]), JUNK),
    "subseed_strength": FLOATS,
    "override_settings": OVERRIDES,
    "styles": st.one_of(st.lists(st.text(max_size=4), max_size=2), JUNK),
    "alwayson_scripts": st.one_of(st.just({}), JUNK),
    "infotext": st.one_of(st.text(max_size=40), st.none()),
    "unknown_field": JUNK,
}
IMAGES = st.sampled_from(
    [
        png_base64(gradient_image(64)),
        png_base64(gradient_image(8)),
        "data:image/png;base64," + png_base64(centre_mask()),
        "not base64",
        "aGVsbG8=",
        "",
        "http://localhost/x.png",
    ]
)
IMG2IMG = {
    "init_images": st.one_of(st.lists(IMAGES, max_size=2), JUNK),
    "mask": st.one_of(IMAGES, JUNK),
    "denoising_strength": FLOATS,
    "resize_mode": st.one_of(st.integers(-2, 5), JUNK),
    "inpainting_fill": st.one_of(st.integers(-2, 5), JUNK),
    "mask_blur": st.one_of(st.integers(-5, 100), JUNK),
    "inpaint_full_res": st.one_of(st.booleans(), JUNK),
    "inpaint_full_res_padding": st.one_of(st.integers(-5, 300), JUNK),
}


REQUIRED = ("width", "height", "steps")  # always drawn: A1111's defaults (512x512, 50 steps) are too slow here


def bodies(fields: dict) -> st.SearchStrategy[dict]:
    required = {name: fields[name] for name in REQUIRED}
    optional = {name: value for name, value in fields.items() if name not in REQUIRED}
    return st.fixed_dictionaries(required, optional=optional)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    root = tmp_path_factory.mktemp("api-fuzz")
    write_tiny_checkpoints(root / "checkpoints", names=("tiny",))
    copy_checkpoints(root / "checkpoints", root / "data")
    running: ApiServer = start_api_server(root / "data")
    yield running.client()
    running.stop()


def post(client: httpx.Client, route: str, body: dict) -> httpx.Response:
    """JSON with NaN/Infinity allowed (Python clients send them; httpx's own encoder refuses them)."""
    content = json.dumps(body, allow_nan=True)
    return client.post(route, content=content, headers={"content-type": "application/json"})


def check(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text[:2000]
    if response.status_code >= 400:
        assert set(response.json()) == {"error", "detail", "body", "errors"}


FUZZ_SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ_SETTINGS
@given(body=bodies(COMMON))
def test_txt2img_bodies_never_give_5xx(client: httpx.Client, body: dict) -> None:
    check(post(client, "/sdapi/v1/txt2img", body))


@FUZZ_SETTINGS
@given(body=bodies({**COMMON, **IMG2IMG}))
def test_img2img_bodies_never_give_5xx(client: httpx.Client, body: dict) -> None:
    check(post(client, "/sdapi/v1/img2img", body))


@settings(max_examples=50, deadline=None)
@given(raw=st.one_of(st.binary(max_size=64), st.text(max_size=64).map(str.encode)))
def test_malformed_json_is_4xx(client: httpx.Client, raw: bytes) -> None:
    response = client.post("/sdapi/v1/txt2img", content=raw, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500 or response.status_code == 200

"""The extension's API over HTTP: /controlnet/* routes, alwayson_scripts.controlnet, and webuiapi's
ControlNetUnit unchanged against the server (webui.py's composition served by uvicorn)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image

from modules.processing.infotext import parse_infotext
from modules.tiny_model import build_tiny_controlnet
from tests.api_support import (
    SMALL,
    ApiServer,
    copy_checkpoints,
    decode_png,
    png_base64,
    start_api_server,
    write_tiny_checkpoints,
)

CONTROLNET = "control_tiny_canny"


def shapes() -> Image.Image:
    array = np.zeros((64, 64, 3), dtype=np.uint8)
    array[16:48, 8:40] = (250, 200, 30)
    array[8:24, 40:60] = (30, 90, 250)
    return Image.fromarray(array)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_pipeline) -> Iterator[ApiServer]:
    root = tmp_path_factory.mktemp("api-controlnet")
    write_tiny_checkpoints(root / "checkpoints", ("tiny",))
    copy_checkpoints(root / "checkpoints", root / "data")
    build_tiny_controlnet(tiny_pipeline.unet, seed=5).save_pretrained(
        root / "data" / "models" / "ControlNet" / CONTROLNET
    )
    running = start_api_server(root / "data")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: ApiServer) -> httpx.Client:
    return server.client()


def test_listing_routes_answer_in_the_extension_shapes(client: httpx.Client) -> None:
    assert client.get("/controlnet/version").json() == {"version": 3}
    models = client.get("/controlnet/model_list").json()["model_list"]
    assert len(models) == 1 and models[0].startswith(f"{CONTROLNET} [")
    modules = client.get("/controlnet/module_list").json()
    assert modules["module_list"][:3] == ["none", "invert", "canny"]
    assert modules["module_detail"]["canny"]["sliders"][1] == {
        "name": "Low Threshold",
        "value": 100,
        "min": 1,
        "max": 255,
        "step": 1.0,
    }
    types = client.get("/controlnet/control_types").json()["control_types"]
    assert types["Canny"]["model_list"] == ["None", models[0]] and types["Canny"]["default_option"] == "canny"
    assert client.get("/controlnet/settings").json() == {"control_net_unit_count": 3}


def test_detect_runs_the_preprocessor(client: httpx.Client) -> None:
    body = {
        "controlnet_module": "canny",
        "controlnet_input_images": [png_base64(shapes())],
        "controlnet_processor_res": 64,
    }
    answer = client.post("/controlnet/detect", json=body).json()
    edges = np.asarray(decode_png(answer["images"][0]))
    assert answer["info"] == "Success" and edges.shape == (64, 64, 3) and set(np.unique(edges)) == {0, 255}
    unknown = client.post("/controlnet/detect", json={**body, "controlnet_module": "nope"})
    assert unknown.status_code == 422 and unknown.json()["detail"] == "Module not available"


def test_alwayson_unit_changes_the_image_and_is_written_to_the_infotext(client: httpx.Client) -> None:
    base = {"prompt": "a fox", "seed": 7, "sampler_name": "Euler", **SMALL}
    plain = client.post("/sdapi/v1/txt2img", json=base).json()
    unit = {
        "enabled": True,
        "module": "canny",
        "model": CONTROLNET,
        "image": png_base64(shapes()),
        "processor_res": 64,
        "threshold_a": 50,
        "threshold_b": 150,
    }
    controlled = client.post("/sdapi/v1/txt2img", json={**base, "alwayson_scripts": {"controlnet": {"args": [unit]}}})
    assert controlled.status_code == 200, controlled.text
    answer = controlled.json()
    assert not np.array_equal(np.asarray(decode_png(answer["images"][0])), np.asarray(decode_png(plain["images"][0])))
    entry = parse_infotext(json.loads(answer["info"])["infotexts"][0])["ControlNet 0"]
    assert entry.startswith(f"Module: canny, Model: {CONTROLNET} [") and "Threshold A: 50.0" in entry
    missing = client.post(
        "/sdapi/v1/txt2img", json={**base, "alwayson_scripts": {"ControlNet": {"args": [{**unit, "model": "absent"}]}}}
    )
    assert missing.status_code >= 400 and "ControlNet model not found" in missing.text


@pytest.mark.slow
def test_webuiapi_controlnet_unit_works_unchanged_against_webui_py(tmp_path, tiny_pipeline) -> None:
    """webuiapi's ControlNetUnit (its to_dict, its routes) against ``webui.py --api`` in its own process."""
    webuiapi = pytest.importorskip("webuiapi", reason="webuiapi is not installed (requirements-test.txt)")
    from modules.models.checkpoint_writer import write_single_file
    from tests.browser_support import running_webui, webui_environment

    data = tmp_path / "data"
    (data / "models" / "Stable-diffusion").mkdir(parents=True)
    write_single_file(tiny_pipeline, data / "models" / "Stable-diffusion" / "tiny.safetensors")
    build_tiny_controlnet(tiny_pipeline.unet, seed=5).save_pretrained(data / "models" / "ControlNet" / CONTROLNET)
    with running_webui(tmp_path, ["--api"], webui_environment()) as (url, _):
        address = urlsplit(url)
        api = webuiapi.WebUIApi(host=address.hostname, port=address.port, sampler="Euler", steps=2)
        model = api.controlnet_model_list()[0]
        assert "canny" in api.controlnet_module_list() and api.controlnet_version() == 3
        detected = api.controlnet_detect([shapes()], module="canny", processor_res=64, threshold_a=50, threshold_b=150)
        assert detected.image.size == (64, 64) and detected.info == "Success"
        # webuiapi's txt2img keeps its units in a shared default dict: the plain call passes its own empty one
        plain = api.txt2img(prompt="a fox", seed=7, width=64, height=64, alwayson_scripts={})
        unit = webuiapi.ControlNetUnit(
            image=shapes(),
            module="canny",
            model=model,
            processor_res=64,
            threshold_a=50,
            threshold_b=150,
            control_mode=2,
            pixel_perfect=True,
        )
        result = api.txt2img(prompt="a fox", seed=7, width=64, height=64, controlnet_units=[unit])
    assert result.image.size == (64, 64)
    assert not np.array_equal(np.asarray(result.image), np.asarray(plain.image))
    entry = parse_infotext(result.info["infotexts"][0])["ControlNet 0"]
    assert entry.startswith(f"Module: canny, Model: {model}, Weight: 1.0, Resize Mode: Resize and Fill")
    assert entry.endswith("Pixel Perfect: True, Control Mode: ControlNet is more important")

"""FLUX.1 through the real HTTP API: sd-models lists the family, txt2img generates, PNG info round-trips, and what
the family refuses comes back as a 4xx with its message."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from modules.models.detection import ModelArchitecture
from tests.api_support import decode_png, start_api_server

OTHER_FAMILIES = (
    ModelArchitecture.SD3,
    ModelArchitecture.KANDINSKY22,
    ModelArchitecture.DEEPFLOYD_IF,
    ModelArchitecture.DEEPFLOYD_IF_II,
)
FLUX_JOB = {"prompt": "a red fox", "width": 64, "height": 64, "steps": 2, "sampler_name": "Euler", "seed": 5}


@pytest.fixture(scope="module")
def flux_server(tmp_path_factory):
    from modules.tiny_model import build_tiny_pipeline, write_diffusers

    data_dir = tmp_path_factory.mktemp("flux-api") / "data"
    write_diffusers(
        build_tiny_pipeline(architecture=ModelArchitecture.FLUX), data_dir / "models" / "Stable-diffusion" / "flux"
    )
    write_diffusers(build_tiny_pipeline(), data_dir / "models" / "Stable-diffusion" / "tiny-sd")
    for architecture in OTHER_FAMILIES:
        folder = data_dir / "models" / "Stable-diffusion" / architecture.value
        write_diffusers(build_tiny_pipeline(architecture=architecture), folder)
    server = start_api_server(data_dir)
    yield server
    server.stop()


def test_sd_models_lists_each_checkpoint_with_its_family(flux_server) -> None:
    items = flux_server.client().get("/sdapi/v1/sd-models").json()
    families = {item["model_name"]: (item["family"], item["family_name"]) for item in items}
    assert families == {
        "flux": ("flux", "FLUX.1"),
        "tiny-sd": ("sd1", "SD 1.x"),
        "sd3": ("sd3", "Stable Diffusion 3.5"),
        "kandinsky22": ("kandinsky22", "Kandinsky 2.2"),
        "deepfloyd-if": ("deepfloyd-if", "DeepFloyd IF"),
        "deepfloyd-if-ii": ("deepfloyd-if-ii", "DeepFloyd IF stage II"),
    }


def test_flux_txt2img_over_http_and_png_info_round_trip(flux_server) -> None:
    client = flux_server.client()
    body = {**FLUX_JOB, "override_settings": {"sd_model_checkpoint": "flux"}, "batch_size": 2, "save_images": True}
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    images = [decode_png(text) for text in result["images"]][-2:]  # after the grid
    assert [image.size for image in images] == [(64, 64), (64, 64)]
    info = json.loads(result["info"])
    assert info["all_seeds"] == [5, 6]
    assert "Model: flux" in info["infotexts"][0]
    saved = sorted((flux_server.data_dir / "outputs" / "txt2img-images").rglob("*.png"))
    assert len(saved) == 2
    parsed = client.post("/sdapi/v1/png-info", json={"image": base64.b64encode(saved[0].read_bytes()).decode()}).json()
    assert parsed["info"] == info["infotexts"][0]
    # The parameters read back from the PNG make the same image again.
    again = {**FLUX_JOB, "seed": int(parsed["parameters"]["Seed"]), "steps": int(parsed["parameters"]["Steps"])}
    again_body = {**again, "override_settings": {"sd_model_checkpoint": parsed["parameters"]["Model"]}}
    repeated = decode_png(client.post("/sdapi/v1/txt2img", json=again_body).json()["images"][0])
    assert np.abs(np.asarray(repeated, dtype=int) - np.asarray(images[0], dtype=int)).max() <= 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"negative_prompt": "blurry"}, "takes no negative prompt"),
        ({"sampler_name": "DPM++ 2M"}, "Euler sampler only"),
        ({"override_settings": {"sd_model_checkpoint": "flux", "CLIP_stop_at_last_layers": 2}}, "CLIP skip does not"),
    ],
)
def test_flux_refusals_are_bad_requests_with_their_message(flux_server, fields: dict, message: str) -> None:
    body = {**FLUX_JOB, "override_settings": {"sd_model_checkpoint": "flux"}, **fields}
    response = flux_server.client().post("/sdapi/v1/txt2img", json=body)
    assert 400 <= response.status_code < 500
    assert message in response.text


@pytest.mark.parametrize(
    ("checkpoint", "fields"),
    [
        ("sd3", {"negative_prompt": "blurry"}),
        ("kandinsky22", {"sampler_name": "DDIM"}),
        ("deepfloyd-if", {"sampler_name": "DDIM"}),
    ],
)
def test_every_family_generates_over_http(flux_server, checkpoint: str, fields: dict) -> None:
    body = {**FLUX_JOB, **fields, "override_settings": {"sd_model_checkpoint": checkpoint}}
    response = flux_server.client().post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    assert decode_png(response.json()["images"][0]).size == (64, 64)
    assert f"Model: {checkpoint}" in json.loads(response.json()["info"])["infotexts"][0]


def test_sd_models_reads_no_weights(flux_server) -> None:
    """Listing families reads model_index.json and configs only: the loaded model stays what it was."""
    before = flux_server.application.models.current
    flux_server.client().get("/sdapi/v1/sd-models")
    assert flux_server.application.models.current is before


@pytest.mark.parametrize(
    ("checkpoint", "sampler"),
    [("kandinsky22", "DDIM"), ("deepfloyd-if", "DDIM"), ("sd3", "Euler"), ("flux", "Euler"), ("tiny-sd", "Euler")],
)
def test_a_request_naming_no_sampler_gets_the_family_s_first(flux_server, checkpoint: str, sampler: str) -> None:
    """No sampler_name and no sampler_index: a family with its own samplers runs its first (an SD model gets A1111's
    API default, Euler)."""
    body = {key: value for key, value in FLUX_JOB.items() if key != "sampler_name"}
    body["override_settings"] = {"sd_model_checkpoint": checkpoint}
    response = flux_server.client().post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    infotext = json.loads(response.json()["info"])["infotexts"][0]
    assert f"Sampler: {sampler}," in infotext and f"Model: {checkpoint}" in infotext


def test_no_sampler_follows_the_default_checkpoint_s_family(flux_server) -> None:
    """Without an override the request runs on the checkpoint setting's model: its family gives the sampler."""
    application = flux_server.application
    previous = application.options.sd_model_checkpoint
    application.update_options(sd_model_checkpoint="kandinsky22")
    try:
        body = {key: value for key, value in FLUX_JOB.items() if key != "sampler_name"}
        response = flux_server.client().post("/sdapi/v1/txt2img", json=body)
    finally:
        application.update_options(sd_model_checkpoint=previous)
    assert response.status_code == 200, response.text
    infotext = json.loads(response.json()["info"])["infotexts"][0]
    assert "Sampler: DDIM," in infotext and "Model: kandinsky22" in infotext


@pytest.mark.parametrize("named", [{"sampler_name": "Euler"}, {"sampler_index": "Euler"}])
def test_an_explicit_sampler_the_family_does_not_run_is_refused(flux_server, named: dict) -> None:
    body = {key: value for key, value in FLUX_JOB.items() if key != "sampler_name"}
    body.update(named, override_settings={"sd_model_checkpoint": "kandinsky22"})
    response = flux_server.client().post("/sdapi/v1/txt2img", json=body)
    assert 400 <= response.status_code < 500
    assert "Kandinsky 2.2 runs with the DDIM sampler only" in response.text

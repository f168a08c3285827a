"""FLUX.1 single files through the real HTTP API: sd-models lists them as the FLUX.1 family; a ComfyUI all-in-one
file and a BFL transformer-only file (its VAE and encoders from the listed diffusers folder) generate the same image,
bit for bit, as the diffusers folder they were written from; a .ckpt FLUX file is a 4xx with its reason."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from modules.models.checkpoint_writer import write_config_folder
from modules.models.detection import ModelArchitecture
from modules.models.registry import sidecar_config_dir
from tests.api_support import decode_png, start_api_server
from tests.flux_single_file import bfl_transformer, write_flux_checkpoint, write_flux_transformer_file

FLUX_JOB = {"prompt": "a red fox", "width": 64, "height": 64, "steps": 2, "sampler_name": "Euler", "seed": 5}


@pytest.fixture(scope="module")
def flux_files_server(tmp_path_factory):
    """The tiny FLUX.1 as a diffusers folder, an all-in-one file and a transformer-only file; each file has a
    ``<stem>.config`` sidecar (the tiny sizes: configs/ describes the full-size model)."""
    from modules.tiny_model import build_tiny_pipeline, write_diffusers

    data_dir = tmp_path_factory.mktemp("flux-files") / "data"
    checkpoints = data_dir / "models" / "Stable-diffusion"
    pipeline = build_tiny_pipeline(architecture=ModelArchitecture.FLUX, seed=7)
    write_diffusers(pipeline, checkpoints / "flux-folder")
    for path in (
        write_flux_checkpoint(pipeline, checkpoints / "flux-aio.safetensors"),
        write_flux_transformer_file(pipeline, checkpoints / "flux1-dev-tiny.safetensors"),
    ):
        write_config_folder(pipeline, sidecar_config_dir(path))
    torch.save(
        {key: value.clone() for key, value in bfl_transformer(pipeline.transformer).items()},
        checkpoints / "flux-old.ckpt",
    )
    server = start_api_server(data_dir)
    yield server
    server.stop()


def generate(server, checkpoint: str) -> np.ndarray:
    body = {**FLUX_JOB, "override_settings": {"sd_model_checkpoint": checkpoint}}
    response = server.client().post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    assert f"Model: {checkpoint}" in json.loads(response.json()["info"])["infotexts"][0]
    return np.asarray(decode_png(response.json()["images"][0]), dtype=np.int16)


def test_sd_models_lists_flux_single_files_with_their_family(flux_files_server) -> None:
    items = flux_files_server.client().get("/sdapi/v1/sd-models").json()
    families = {item["model_name"]: item["family"] for item in items}
    assert families["flux-aio"] == families["flux1-dev-tiny"] == families["flux-folder"] == "flux"
    assert {item["family_name"] for item in items if item["family"] == "flux"} == {"FLUX.1"}


@pytest.mark.parametrize("checkpoint", ["flux-aio", "flux1-dev-tiny"])
def test_flux_single_file_generates_what_its_diffusers_folder_does(flux_files_server, checkpoint: str) -> None:
    from_folder = generate(flux_files_server, "flux-folder")
    from_file = generate(flux_files_server, checkpoint)
    assert from_file.shape == (64, 64, 3) and from_file.std() > 0
    assert np.array_equal(from_file, from_folder)


def test_flux_pickle_file_is_a_bad_request_with_the_reason(flux_files_server) -> None:
    body = {**FLUX_JOB, "override_settings": {"sd_model_checkpoint": "flux-old"}}
    response = flux_files_server.client().post("/sdapi/v1/txt2img", json=body)
    assert 400 <= response.status_code < 500
    assert "Easel loads FLUX.1 single files from .safetensors only" in response.text

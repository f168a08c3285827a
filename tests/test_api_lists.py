"""The /sdapi/v1 listings with real content (LoRA, embeddings, VAE, styles, upscalers, face restorers), the refresh
routes, extras with a model upscaler, and the API settings (image URLs, body limit); a real server on loopback."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from safetensors.torch import save_file

from modules.models.ldm_keys import convert_vae
from modules.paths import DataPaths
from modules.postprocess.latent_upscale import LATENT_UPSCALE_MODES
from modules.tiny_model import build_tiny_pipeline
from tests.api_support import (
    SMALL,
    ApiServer,
    copy_checkpoints,
    decode_png,
    gradient_image,
    png_base64,
    start_api_server,
    write_tiny_checkpoints,
)
from tests.helpers import kohya_lora

UPSCALER_FILE = "realesr-animevideov3.pth"
UPSCALER_NAME = "R-ESRGAN AnimeVideo"  # A1111's name for that file
STYLES_CSV = 'name,prompt,negative_prompt\nfoxy,"a fox, {prompt}",blurry\nplain,sunny day,\n'


def write_network_files(paths: DataPaths) -> None:
    """A LoRA with kohya metadata, a usable (32-wide) and an unusable (768-wide) embedding, a VAE, styles.csv."""
    metadata = {"ss_output_name": "foxy_alias", "ss_tag_frequency": json.dumps({"1_fox": {"fox": 3, "red": 1}})}
    save_file(kohya_lora(), str(paths.lora_dir / "foxy.safetensors"), metadata=metadata)
    save_file({"emb_params": torch.randn(2, 32)}, str(paths.embeddings_dir / "tinyneg.safetensors"))
    save_file({"emb_params": torch.randn(3, 768)}, str(paths.embeddings_dir / "bigneg.safetensors"))
    vae = build_tiny_pipeline(seed=11).vae
    save_file(convert_vae(vae.state_dict(), vae.config), str(paths.vae_dir / "other-vae.safetensors"))
    paths.styles_file.write_text(STYLES_CSV, encoding="utf-8")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, testdata: Path) -> Iterator[ApiServer]:
    root = tmp_path_factory.mktemp("api-lists")
    write_tiny_checkpoints(root / "checkpoints", ("tiny",))
    copy_checkpoints(root / "checkpoints", root / "data")
    paths = DataPaths.create(root / "data")
    paths.ensure()
    write_network_files(paths)
    (paths.models_dir / "RealESRGAN").mkdir(parents=True, exist_ok=True)
    shutil.copy(testdata / "upscalers" / UPSCALER_FILE, paths.models_dir / "RealESRGAN" / UPSCALER_FILE)
    running = start_api_server(root / "data")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: ApiServer) -> httpx.Client:
    return server.client()


def test_loras_list_name_alias_path_and_metadata(client: httpx.Client, server: ApiServer) -> None:
    items = client.get("/sdapi/v1/loras").json()
    assert len(items) == 1
    item = items[0]
    assert set(item) == {"name", "alias", "path", "metadata"}
    assert item["name"] == "foxy" and item["alias"] == "foxy_alias"
    assert Path(item["path"]) == server.application.paths.lora_dir / "foxy.safetensors"
    assert item["metadata"]["ss_tag_frequency"] == {"1_fox": {"fox": 3, "red": 1}}  # decoded, as A1111


def test_refresh_loras_finds_a_new_file(client: httpx.Client, server: ApiServer) -> None:
    added = server.application.paths.lora_dir / "added.safetensors"
    save_file(kohya_lora(seed=3), str(added))
    try:
        assert "added" not in [item["name"] for item in client.get("/sdapi/v1/loras").json()]
        assert client.post("/sdapi/v1/refresh-loras").json() is None
        assert "added" in [item["name"] for item in client.get("/sdapi/v1/loras").json()]
    finally:
        added.unlink()
        client.post("/sdapi/v1/refresh-loras")


def test_sd_vae_lists_files_and_refreshes(client: httpx.Client, server: ApiServer) -> None:
    vae_dir = server.application.paths.vae_dir
    assert client.get("/sdapi/v1/sd-vae").json() == [
        {"model_name": "other-vae.safetensors", "filename": str(vae_dir / "other-vae.safetensors")}
    ]
    shutil.copy(vae_dir / "other-vae.safetensors", vae_dir / "second.safetensors")
    try:
        assert client.post("/sdapi/v1/refresh-vae").json() is None
        names = [item["model_name"] for item in client.get("/sdapi/v1/sd-vae").json()]
        assert names == ["other-vae.safetensors", "second.safetensors"]
    finally:
        (vae_dir / "second.safetensors").unlink()
        client.post("/sdapi/v1/refresh-vae")


def test_embeddings_loaded_and_skipped_for_the_loaded_model(client: httpx.Client) -> None:
    assert client.get("/sdapi/v1/embeddings").json() == {"loaded": {}, "skipped": {}}  # no model loaded yet
    assert client.post("/sdapi/v1/txt2img", json={"prompt": "a fox", **SMALL}).status_code == 200
    assert client.post("/sdapi/v1/refresh-embeddings").json() is None
    body = client.get("/sdapi/v1/embeddings").json()
    blank = {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None}
    assert body["loaded"] == {"tinyneg": {**blank, "shape": 32, "vectors": 2}}
    assert body["skipped"] == {"bigneg": {**blank, "shape": 768, "vectors": 3}}


def test_prompt_styles_come_from_styles_csv(client: httpx.Client) -> None:
    assert client.get("/sdapi/v1/prompt-styles").json() == [
        {"name": "foxy", "prompt": "a fox, {prompt}", "negative_prompt": "blurry"},
        {"name": "plain", "prompt": "sunny day", "negative_prompt": ""},
    ]


def test_upscalers_and_realesrgan_models_list_the_model_file(client: httpx.Client, server: ApiServer) -> None:
    path = str(server.application.paths.models_dir / "RealESRGAN" / UPSCALER_FILE)
    upscalers = {item["name"]: item for item in client.get("/sdapi/v1/upscalers").json()}
    assert list(upscalers)[:3] == ["None", "Lanczos", "Nearest"]
    assert upscalers["Lanczos"]["model_path"] is None
    model = upscalers[UPSCALER_NAME]
    assert model == {
        "name": UPSCALER_NAME,
        "model_name": "RealESRGAN",
        "model_path": path,
        "model_url": None,
        "scale": 4,
    }
    assert upscalers["R-ESRGAN 4x+"]["model_path"].startswith("https://")  # known, not downloaded: its URL
    realesrgan = {item["name"]: item for item in client.get("/sdapi/v1/realesrgan-models").json()}
    assert realesrgan[UPSCALER_NAME] == {"name": UPSCALER_NAME, "path": path, "scale": 4}
    assert "ESRGAN_4x" not in realesrgan and "Lanczos" not in realesrgan


def test_face_restorers_and_latent_modes(client: httpx.Client, server: ApiServer) -> None:
    models_dir = server.application.paths.models_dir
    assert client.get("/sdapi/v1/face-restorers").json() == [
        {"name": "CodeFormer", "cmd_dir": str(models_dir / "Codeformer")},
        {"name": "GFPGAN", "cmd_dir": str(models_dir / "GFPGAN")},
    ]
    modes = [item["name"] for item in client.get("/sdapi/v1/latent-upscale-modes").json()]
    assert modes == list(LATENT_UPSCALE_MODES) and "Latent (bicubic antialiased)" in modes


def test_extra_single_image_with_a_model_upscaler(client: httpx.Client) -> None:
    by = client.post(
        "/sdapi/v1/extra-single-image",
        json={"image": png_base64(gradient_image(32)), "upscaler_1": UPSCALER_NAME, "upscaling_resize": 2},
    )
    assert by.status_code == 200, by.text
    image = decode_png(by.json()["image"])
    assert image.size == (64, 64)
    assert image.info["postprocessing"] == f"Postprocess upscale by: 2, Postprocess upscaler: {UPSCALER_NAME}"
    to = client.post(
        "/sdapi/v1/extra-batch-images",
        json={
            "imageList": [{"data": png_base64(gradient_image(32)), "name": "a.png"}] * 2,
            "resize_mode": 1,
            "upscaling_resize_w": 100,
            "upscaling_resize_h": 60,
            "upscaler_1": UPSCALER_NAME,
            "upscaler_2": "Lanczos",
            "extras_upscaler_2_visibility": 0.5,
        },
    )
    assert to.status_code == 200, to.text
    assert [decode_png(item).size for item in to.json()["images"]] == [(100, 60), (100, 60)]
    assert "Postprocess upscaler 2: Lanczos" in to.json()["html_info"]


def test_extras_refuses_bad_values_and_huge_results(client: httpx.Client) -> None:
    image = png_base64(gradient_image(32))
    bad = client.post("/sdapi/v1/extra-single-image", json={"image": image, "upscaler_1": "Lanczos", "resize_mode": 3})
    assert bad.status_code == 400 and "resize_mode" in bad.json()["detail"]
    huge = client.post(
        "/sdapi/v1/extra-single-image",
        json={"image": image, "upscaler_1": "Lanczos", "resize_mode": 1, "upscaling_resize_w": 16000},
    )
    assert huge.status_code == 400 and "8192" in huge.json()["detail"]


def test_api_settings_image_urls_and_body_limit(client: httpx.Client, server: ApiServer) -> None:
    """api_enable_requests lets URLs through to the address check; api_max_body_mb sets the 413 limit, live."""
    url_body = {"init_images": ["http://127.0.0.1:9/a.png"], **SMALL}
    off = client.post("/sdapi/v1/img2img", json=url_body)
    assert off.status_code == 400 and "not fetched" in off.json()["detail"]
    application = server.application
    try:
        application.update_options(api_enable_requests=True)
        on = client.post("/sdapi/v1/img2img", json=url_body)
        assert on.status_code == 400 and "local or private" in on.json()["detail"]
        application.update_options(api_max_body_mb=1)
        big = client.post("/sdapi/v1/png-info", json={"image": "A" * (1024 * 1024 + 10)})
        assert big.status_code == 413
    finally:
        application.update_options(api_enable_requests=False, api_max_body_mb=64)
    assert client.post("/sdapi/v1/png-info", json={"image": "A" * (1024 * 1024 + 10)}).status_code != 413


def test_sd_vae_override_applies_to_the_request_only(client: httpx.Client, server: ApiServer) -> None:
    def generate(override: dict) -> dict:
        body = {"prompt": "a fox", "seed": 4, **SMALL, "override_settings": override}
        response = client.post("/sdapi/v1/txt2img", json=body)
        assert response.status_code == 200, response.text
        return json.loads(response.json()["info"])

    other = generate({"sd_vae": "other-vae.safetensors"})
    assert "override_settings.sd_vae" not in other.get("unsupported_fields", [])
    assert "VAE: other-vae.safetensors" in other["infotexts"][0]
    assert server.application.options.sd_vae == "Automatic"
    plain = generate({})
    assert "VAE: " not in plain["infotexts"][0]
    missing = client.post("/sdapi/v1/txt2img", json={**SMALL, "override_settings": {"sd_vae": "nope.safetensors"}})
    assert missing.status_code == 200 and "VAE 'nope.safetensors' not found" in " ".join(
        json.loads(missing.json()["info"])["notes"]
    )

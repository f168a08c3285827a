"""The /sdapi/v1 routes on a real server (uvicorn on loopback, real HTTP) over the tiny checkpoints."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from modules.api.models import Txt2ImgBody
from modules.api.translate import TranslationContext, translate_txt2img
from modules.processing.infotext import parse_infotext, read_infotext
from tests.api_support import (
    SMALL,
    ApiServer,
    centre_mask,
    copy_checkpoints,
    decode_png,
    gradient_image,
    png_base64,
    start_api_server,
    write_tiny_checkpoints,
)

LIST_ROUTES = {
    "samplers": ("name", "aliases", "options"),
    "schedulers": ("name", "label", "aliases", "default_rho", "need_inner_model"),
    "upscalers": ("name", "model_name", "model_path", "model_url", "scale"),
    "sd-models": ("title", "model_name", "hash", "sha256", "filename", "config"),
}
# Empty here: features Easel does not have, and folders this server has no files in (tests/test_api_lists.py
# fills them).
EMPTY_LIST_ROUTES = ("sd-vae", "hypernetworks", "prompt-styles", "loras", "extensions")
POST_NULL_ROUTES = ("refresh-checkpoints", "refresh-loras", "refresh-embeddings", "refresh-vae")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    root = tmp_path_factory.mktemp("api-routes")
    write_tiny_checkpoints(root / "checkpoints")
    copy_checkpoints(root / "checkpoints", root / "data")
    running = start_api_server(root / "data")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: ApiServer) -> httpx.Client:
    return server.client()


def info_of(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"images", "parameters", "info"}
    return json.loads(body["info"])


@pytest.mark.parametrize("route", sorted(LIST_ROUTES))
def test_list_routes_have_a1111_item_keys(client: httpx.Client, route: str) -> None:
    items = client.get(f"/sdapi/v1/{route}").json()
    assert items, route
    for item in items:
        assert set(LIST_ROUTES[route]) <= set(item), (route, item)


def test_samplers_and_models_list_what_easel_has(client: httpx.Client) -> None:
    names = [item["name"] for item in client.get("/sdapi/v1/samplers").json()]
    assert {"Euler a", "Euler", "DPM++ 2M"} <= set(names)
    models = [item["model_name"] for item in client.get("/sdapi/v1/sd-models").json()]
    assert models == ["tiny", "tiny2"]
    assert [item["name"] for item in client.get("/sdapi/v1/upscalers").json()][:3] == ["None", "Lanczos", "Nearest"]


@pytest.mark.parametrize("route", EMPTY_LIST_ROUTES)
def test_features_not_built_answer_empty_lists(client: httpx.Client, route: str) -> None:
    response = client.get(f"/sdapi/v1/{route}")
    assert response.status_code == 200
    assert response.json() == []


def test_dict_routes(client: httpx.Client) -> None:
    assert client.get("/sdapi/v1/embeddings").json() == {"loaded": {}, "skipped": {}}
    scripts = client.get("/sdapi/v1/scripts").json()
    assert scripts["txt2img"] == ["prompt matrix", "prompts from file or textbox", "x/y/z plot", "controlnet"]
    memory = client.get("/sdapi/v1/memory").json()
    assert set(memory["ram"]) == {"free", "used", "total"} and "cuda" in memory
    flags = client.get("/sdapi/v1/cmd-flags").json()
    assert flags["api"] is True and flags["nowebui"] is True and isinstance(flags["data_dir"], str)
    progress = client.get("/sdapi/v1/progress").json()
    assert set(progress) >= {"progress", "eta_relative", "state", "current_image", "textinfo"}
    assert set(progress["state"]) >= {"job_count", "job_no", "sampling_step", "sampling_steps", "interrupted"}
    assert client.get("/internal/pending-tasks").json() == {"size": 0, "tasks": []}
    assert client.post("/internal/progress", json={"id_task": "nope"}).json()["completed"] is False


@pytest.mark.parametrize("route", POST_NULL_ROUTES)
def test_refresh_routes(client: httpx.Client, route: str) -> None:
    response = client.post(f"/sdapi/v1/{route}")
    assert response.status_code == 200 and response.json() is None


def test_txt2img_png_carries_infotext_that_parses_back(client: httpx.Client, server: ApiServer) -> None:
    response = client.post(
        "/sdapi/v1/txt2img",
        json={"prompt": "a red cube", "negative_prompt": "blurry", "seed": 42, "sampler_name": "Euler", **SMALL},
    )
    info = info_of(response)
    body = response.json()
    assert body["parameters"]["prompt"] == "a red cube" and body["parameters"]["sampler_name"] == "Euler"
    image = decode_png(body["images"][0])
    assert image.size == (64, 64)
    parsed = parse_infotext(read_infotext(image))
    assert parsed["Prompt"] == "a red cube" and parsed["Negative prompt"] == "blurry"
    assert parsed["Seed"] == "42" and parsed["Steps"] == "2" and parsed["Sampler"] == "Euler"
    assert info["all_seeds"] == [42] and info["seed"] == 42 and info["sd_model_name"] == "tiny"
    assert info["infotexts"][0] == read_infotext(image)
    assert info["unsupported_fields"] == [] and info["version"].startswith("Easel")
    # A1111's default save_images is false: nothing was written
    assert not list((server.data_dir / "outputs").rglob("*-42.png"))


def test_batch_without_saving_returns_no_grid(client: httpx.Client) -> None:
    """A1111: do_not_save_grid = not save_images, so a batch of 2 that is not saved returns 2 images, no grid."""
    response = client.post("/sdapi/v1/txt2img", json={"seed": 7, "batch_size": 2, **SMALL})
    info = info_of(response)
    images = response.json()["images"]
    assert len(images) == 2 and info["index_of_first_image"] == 0
    assert [decode_png(image).size for image in images] == [(64, 64), (64, 64)]
    assert info["all_seeds"] == [7, 8] and len(info["infotexts"]) == 2


def test_saved_batch_returns_grid_first_when_options_say_so(client: httpx.Client) -> None:
    response = client.post("/sdapi/v1/txt2img", json={"seed": 7, "batch_size": 2, "save_images": True, **SMALL})
    info = info_of(response)
    images = response.json()["images"]
    assert len(images) == 3 and info["index_of_first_image"] == 1
    assert decode_png(images[0]).size == (128, 64)
    assert info["all_seeds"] == [7, 8] and len(info["infotexts"]) == 3


def test_img2img_with_mask_and_png_info(client: httpx.Client, server: ApiServer) -> None:
    body = {
        "init_images": [png_base64(gradient_image())],
        "mask": png_base64(centre_mask()),
        "denoising_strength": 0.6,
        "inpainting_fill": 1,
        "mask_blur": 2,
        "prompt": "inpaint",
        "seed": 3,
        "save_images": True,
        **SMALL,
    }
    response = client.post("/sdapi/v1/img2img", json=body)
    info = info_of(response)
    encoded = response.json()["images"][0]
    assert response.json()["parameters"]["init_images"] is None  # include_init_images is false
    image = decode_png(encoded)
    corner = image.convert("RGB").getpixel((0, 0))
    assert corner == gradient_image().getpixel((0, 0))  # outside the mask the original pixels stay
    assert info["denoising_strength"] == 0.6 and info["is_using_inpainting_conditioning"] is True
    png_info = client.post("/sdapi/v1/png-info", json={"image": "data:image/png;base64," + encoded}).json()
    assert png_info["parameters"]["Denoising strength"] == "0.6" and png_info["parameters"]["Prompt"] == "inpaint"
    assert set(png_info) == {"info", "items", "parameters"}
    saved = list((server.data_dir / "outputs" / "img2img-images").rglob("*-3.png"))
    assert len(saved) == 1 and read_infotext(_open(saved[0])) == png_info["info"]


def _open(path: Path):
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return image


def test_png_info_of_an_image_without_infotext(client: httpx.Client) -> None:
    answer = client.post("/sdapi/v1/png-info", json={"image": png_base64(gradient_image())}).json()
    assert answer == {"info": "", "items": {}, "parameters": {}}


def test_unsupported_fields_are_reported_not_pretended(client: httpx.Client) -> None:
    response = client.post(
        "/sdapi/v1/txt2img",
        json={
            "seed": 1,
            "tiling": True,
            "override_settings": {"sd_noise_schedule": "Zero Terminal SNR"},
            "some_future_field": 1,
            **SMALL,
        },
    )
    unsupported = info_of(response)["unsupported_fields"]
    for name in ("tiling",):
        assert name in unsupported
    assert "override_settings.sd_noise_schedule" in unsupported
    assert not any("some_future_field" in name for name in unsupported)


def test_noise_fields_are_used_and_reported(client: httpx.Client) -> None:
    """Variation seed, seed resize, eta / s_* and the sampler settings are applied, not listed as unsupported."""
    body = {
        "seed": 5,
        "subseed": 70,
        "subseed_strength": 0.5,
        "seed_resize_from_w": 48,
        "seed_resize_from_h": 48,
        "eta": 0.5,
        "s_churn": 0.1,
        "s_noise": 1.0,
        "batch_size": 2,
        "override_settings": {"eta_noise_seed_delta": 31337, "randn_source": "CPU"},
        **SMALL,
    }
    info = info_of(client.post("/sdapi/v1/txt2img", json=body))
    assert info["unsupported_fields"] == []
    assert info["all_seeds"] == [5, 5] and info["all_subseeds"] == [70, 71]
    assert info["subseed_strength"] == 0.5 and info["seed_resize_from_w"] == 48
    text = info["infotexts"][0]
    for expected in ("Variation seed: 70", "Variation seed strength: 0.5", "Seed resize from: 48x48", "RNG: CPU"):
        assert expected in text


def test_a1111_full_default_body_is_accepted(client: httpx.Client) -> None:
    body = {
        "prompt": "",
        "negative_prompt": "",
        "styles": [],
        "seed": -1,
        "subseed": -1,
        "subseed_strength": 0,
        "seed_resize_from_h": -1,
        "seed_resize_from_w": -1,
        "sampler_name": "Euler a",
        "scheduler": "Automatic",
        "batch_size": 1,
        "n_iter": 1,
        "cfg_scale": 7,
        "restore_faces": False,
        "tiling": False,
        "do_not_save_samples": False,
        "do_not_save_grid": False,
        "eta": None,
        "s_min_uncond": 0,
        "s_churn": 0,
        "s_tmax": 0,
        "s_tmin": 0,
        "s_noise": 1,
        "override_settings": {},
        "override_settings_restore_afterwards": True,
        "sampler_index": "Euler",
        "script_args": [],
        "send_images": True,
        "save_images": False,
        "alwayson_scripts": {},
        "enable_hr": False,
        "hr_upscaler": None,
        **SMALL,
    }
    info = info_of(client.post("/sdapi/v1/txt2img", json=body))
    assert info["sampler_name"] == "Euler a" and 0 <= info["seed"] < 2**32


def test_override_settings_apply_to_that_request_only(client: httpx.Client) -> None:
    options_before = client.get("/sdapi/v1/options").json()
    overridden = info_of(
        client.post(
            "/sdapi/v1/txt2img",
            json={"seed": 9, "override_settings": {"sd_model_checkpoint": "tiny2"}, **SMALL},
        )
    )
    assert overridden["sd_model_name"] == "tiny2"
    following = info_of(client.post("/sdapi/v1/txt2img", json={"seed": 9, **SMALL}))
    assert following["sd_model_name"] == "tiny"
    assert following["sd_model_hash"] != overridden["sd_model_hash"]
    assert client.get("/sdapi/v1/options").json() == options_before


def test_clip_skip_override_becomes_a_request_field(server: ApiServer) -> None:
    application = server.application
    context = TranslationContext(application.options, application.registry)
    body = Txt2ImgBody(override_settings={"CLIP_stop_at_last_layers": 2, "samples_save": False}, save_images=True)
    translation = translate_txt2img(body, context)
    assert translation.request.clip_skip == 2 and translation.request.save_images is False
    assert application.options.CLIP_stop_at_last_layers == 1 and application.options.samples_save is True
    assert translate_txt2img(Txt2ImgBody(), context).request.clip_skip == 1


def test_infotext_field_fills_what_the_body_leaves_out(client: httpx.Client) -> None:
    infotext = "from infotext\nSteps: 2, Sampler: Euler, CFG scale: 5, Seed: 77, Size: 64x64"
    info = info_of(client.post("/sdapi/v1/txt2img", json={"infotext": infotext, "cfg_scale": 6}))
    assert info["prompt"] == "from infotext" and info["seed"] == 77 and info["cfg_scale"] == 6.0
    assert info["width"] == 64 and info["steps"] == 2


@pytest.mark.parametrize(
    ("body", "status", "named"),
    [
        ({"steps": "many"}, 422, "steps"),
        ({"width": [64]}, 422, "width"),
        ({"steps": -1}, 400, "steps"),
        ({"width": 0}, 400, "width"),
        ({"width": 100000, "height": 64}, 400, "width"),
        ({"width": 65}, 400, "width"),
        ({"sampler_name": "Not A Sampler"}, 400, "Not A Sampler"),
        ({"scheduler": "nope"}, 400, "nope"),
        ({"override_settings": {"sd_model_checkpoint": "missing-model"}}, 404, "missing-model"),
        ({"cfg_scale": 1e9}, 400, "cfg_scale"),
    ],
)
def test_bad_txt2img_input_is_a_clear_4xx(client: httpx.Client, body: dict, status: int, named: str) -> None:
    response = client.post("/sdapi/v1/txt2img", json={**SMALL, **body})
    assert response.status_code == status, response.text
    answer = response.json()
    assert set(answer) == {"error", "detail", "body", "errors"}
    assert named in answer["errors"]


@pytest.mark.parametrize(
    ("init", "status"),
    [
        ("not base64 at all!", 400),
        ("aGVsbG8gd29ybGQ=", 400),  # base64 of text, not an image
        ("", 400),
        ("http://127.0.0.1:1/secret.png", 400),
        ("http://169.254.169.254/latest/meta-data", 400),
    ],
)
def test_bad_img2img_images_are_refused(client: httpx.Client, init: str, status: int) -> None:
    response = client.post("/sdapi/v1/img2img", json={"init_images": [init], **SMALL})
    assert response.status_code == status, response.text
    assert "init_images" in response.json()["errors"]


def test_img2img_without_init_image(client: httpx.Client) -> None:
    response = client.post("/sdapi/v1/img2img", json=SMALL)
    assert response.status_code == 400 and "init_images" in response.json()["errors"]


def test_extras_single_and_batch(client: httpx.Client) -> None:
    single = client.post(
        "/sdapi/v1/extra-single-image",
        json={"image": png_base64(gradient_image()), "upscaler_1": "Lanczos", "upscaling_resize": 2},
    )
    assert single.status_code == 200 and decode_png(single.json()["image"]).size == (128, 128)
    batch = client.post(
        "/sdapi/v1/extra-batch-images",
        json={
            "imageList": [{"data": png_base64(gradient_image()), "name": "a.png"}],
            "resize_mode": 1,
            "upscaling_resize_w": 96,
            "upscaling_resize_h": 80,
            "upscaler_1": "Nearest",
        },
    ).json()
    assert decode_png(batch["images"][0]).size == (96, 80) and "Postprocess upscaler: Nearest" in batch["html_info"]
    unknown = client.post(
        "/sdapi/v1/extra-single-image", json={"image": png_base64(gradient_image()), "upscaler_1": "no-such-upscaler"}
    )
    assert unknown.status_code == 400 and "no-such-upscaler" in unknown.json()["detail"]
    # known but not downloaded, with downloads off (tests run offline): a 404 that says where the file goes
    absent = client.post(
        "/sdapi/v1/extra-single-image", json={"image": png_base64(gradient_image()), "upscaler_1": "R-ESRGAN 4x+"}
    )
    assert absent.status_code == 404 and "RealESRGAN_x4plus.pth" in absent.json()["detail"]
    faces = client.post(
        "/sdapi/v1/extra-single-image", json={"image": png_base64(gradient_image()), "gfpgan_visibility": 1}
    )
    assert faces.status_code == 404 and "GFPGAN" in faces.json()["detail"]


def test_options_post_validates_and_saves(client: httpx.Client, server: ApiServer) -> None:
    assert client.post("/sdapi/v1/options", json={"samples_format": "jpg", "not_a_setting": 1}).status_code == 200
    assert client.get("/sdapi/v1/options").json()["samples_format"] == "jpg"
    bad = client.post("/sdapi/v1/options", json={"show_progress_every_n_steps": "often"})
    assert bad.status_code == 400 and "show_progress_every_n_steps" in bad.json()["errors"]
    client.post("/sdapi/v1/options", json={"samples_format": "png"})
    assert json.loads((server.data_dir / "config.json").read_text())["samples_format"] == "png"


def test_unload_and_reload_checkpoint(client: httpx.Client, server: ApiServer) -> None:
    assert client.post("/sdapi/v1/unload-checkpoint").status_code == 200
    assert server.application.models.current is None
    assert client.post("/sdapi/v1/reload-checkpoint").status_code == 200
    assert server.application.models.current is not None


def test_openapi_lists_the_routes(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for route in ("txt2img", "img2img", "png-info", "progress", "options", "sd-models", "extra-single-image"):
        assert f"/sdapi/v1/{route}" in paths
    assert "/internal/progress" in paths


@pytest.mark.parametrize(
    ("mask", "backend"), [(False, "diffusers"), (False, "original"), (True, "diffusers"), (True, "original")]
)
def test_several_init_images_are_one_batch_slot_each(client: httpx.Client, mask: bool, backend: str) -> None:
    """A1111: batch size becomes the number of init images, image i starts from init image i (so it equals image i
    of a batch of 2 made from that image alone: same seeds, same batch shape), and more images than the batch size
    is an error."""
    first, second = gradient_image(), gradient_image().transpose(Image.Transpose.ROTATE_180)
    common = {"denoising_strength": 0.7, "prompt": "slots", "seed": 40, **SMALL}
    common["override_settings"] = {"sd_sampling_backend": backend}
    if mask:
        common.update(mask=png_base64(centre_mask()), inpainting_fill=1)
    both = {"init_images": [png_base64(first), png_base64(second)], "batch_size": 4, **common}
    response = client.post("/sdapi/v1/img2img", json=both)
    info = info_of(response)
    assert info["all_seeds"] == [40, 41] and len(response.json()["images"]) == 2
    together = [decode_png(image).convert("RGB") for image in response.json()["images"]]
    assert together[0].tobytes() != together[1].tobytes()
    for index, init in enumerate((first, second)):
        if mask:  # outside the mask each image keeps its own init image's pixels
            assert together[index].getpixel((0, 0)) == init.getpixel((0, 0))
            assert together[index].getpixel((63, 63)) == init.getpixel((63, 63))
        else:
            alone = {**common, "init_images": [png_base64(init)], "batch_size": 2}
            single = client.post("/sdapi/v1/img2img", json=alone)
            assert decode_png(single.json()["images"][index]).convert("RGB").tobytes() == together[index].tobytes()

    too_many = client.post("/sdapi/v1/img2img", json={**both, "batch_size": 1})
    assert too_many.status_code == 400
    assert "bad number of images passed: 2; expecting 1 or less" in too_many.text

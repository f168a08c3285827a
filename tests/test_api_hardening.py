"""A LAN-shared server that holds (issue 20): caps on what one request may ask, settings only the admin changes,
no 500 for what a user can cause, and auth on every route when logins are set."""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from modules.api.images import MAX_PNG_TEXT_BYTES
from modules.processing.infotext import MAX_INFOTEXT_CHARS
from modules.processing.requests import MAX_AND_PARTS, MAX_PROMPT_CHARS
from tests.api_support import SMALL, ApiServer, copy_checkpoints, start_api_server, write_tiny_checkpoints

ALICE = ("alice", "alice-pass")
BOB = ("bob", "bob-pass")
ADMIN = ("root-admin", "admin-pass")
LOGINS = ",".join(":".join(login) for login in (ALICE, BOB, ADMIN))


def ui_mounter(application, gradio_logins):
    from modules.ui.app import mount_ui

    return functools.partial(mount_ui, application=application, auth=list(gradio_logins))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """API and UI behind logins (alice, bob and an admin), a 200 kB body limit."""
    checkpoints = tmp_path_factory.mktemp("hardening-checkpoints")
    write_tiny_checkpoints(checkpoints, names=("tiny",))
    data = tmp_path_factory.mktemp("hardening") / "data"
    copy_checkpoints(checkpoints, data)
    flags = ["--api-auth", LOGINS, "--gradio-auth", LOGINS, "--admin-user", ADMIN[0]]
    running = start_api_server(data, flags, ui=True, max_body_bytes=200_000, mount_ui=ui_mounter)
    yield running
    running.stop()


def png_with_text(chunks: dict[str, str], compressed: bool = True) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value, zip=compressed)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "gray").save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def base64_of(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")


# --- 1. parsing caps --------------------------------------------------------------------------------------------


def test_png_info_over_the_infotext_cap_is_413(server: ApiServer) -> None:
    data = png_with_text({"parameters": "a" * (MAX_INFOTEXT_CHARS + 1)})
    assert len(data) < 2_000  # a small request carrying a large compressed text
    response = server.client(ALICE).post("/sdapi/v1/png-info", json={"image": base64_of(data)})
    assert response.status_code == 413, response.text
    assert str(MAX_INFOTEXT_CHARS) in response.json()["errors"]


def test_png_text_chunks_are_capped_before_they_are_inflated(server: ApiServer) -> None:
    chunk = "x" * 900_000
    data = png_with_text({f"k{index}": chunk for index in range(MAX_PNG_TEXT_BYTES // len(chunk) + 1)})
    assert len(data) < 20_000
    response = server.client(ALICE).post("/sdapi/v1/png-info", json={"image": base64_of(data)})
    assert response.status_code == 413, response.text
    assert "text chunks" in response.json()["errors"]
    fine = server.client(ALICE).post("/sdapi/v1/png-info", json={"image": base64_of(png_with_text({"k": chunk}))})
    assert fine.status_code == 200


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"prompt": "a" * (MAX_PROMPT_CHARS + 1)}, "limit is 32768"),
        ({"negative_prompt": "a" * (MAX_PROMPT_CHARS + 1)}, "negative_prompt"),
        ({"prompt": "a cat \ud800 dog"}, "lone surrogate"),
        ({"prompt": " AND ".join(["a"] * (MAX_AND_PARTS + 1))}, "AND parts"),
        ({"n_iter": 1000, "batch_size": 64}, "n_iter x batch_size"),
        ({"width": 4096, "height": 4096, "steps": 150}, "step-pixels"),
        ({"enable_hr": True, "width": 4096, "height": 4096, "hr_scale": 8}, "target size"),
        ({"enable_hr": True, "hr_scale": 4, "hr_resize_x": 4096, "hr_resize_y": 4096, "steps": 150}, "hires"),
    ],
)
def test_oversized_requests_are_a_clear_4xx(server: ApiServer, body: dict, named: str) -> None:
    content = json.dumps({**SMALL, **body}).encode()  # json.dumps keeps a lone surrogate as its \\ud800 escape
    response = server.client(ALICE).post(
        "/sdapi/v1/txt2img", content=content, headers={"content-type": "application/json"}
    )
    assert 400 <= response.status_code < 500, response.text
    assert named in response.json()["errors"]


# --- 3. settings ------------------------------------------------------------------------------------------------


def saved_settings(server: ApiServer) -> dict:
    path = server.application.paths.config_file
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def test_only_the_admin_changes_settings(server: ApiServer) -> None:
    refused = server.client(BOB).post("/sdapi/v1/options", json={"api_max_body_mb": 4096, "samples_save": False})
    assert refused.status_code == 403, refused.text
    assert "--admin-user" in refused.json()["errors"]
    assert server.application.options.api_max_body_mb != 4096
    assert saved_settings(server).get("api_max_body_mb") != 4096
    allowed = server.client(ADMIN).post("/sdapi/v1/options", json={"jpeg_unknown_key": 1, "grid_save": False})
    assert allowed.status_code == 200, allowed.text
    assert server.application.options.grid_save is False
    server.client(ADMIN).post("/sdapi/v1/options", json={"grid_save": True})


def test_settings_tab_apply_is_admin_only(server: ApiServer) -> None:
    from modules.ui.settings import apply_settings

    refused = apply_settings(server.application, {"grid_save": False}, user=BOB[0])
    assert "Settings not applied" in refused and "--admin-user" in refused
    assert server.application.options.grid_save is True
    applied = apply_settings(server.application, {"grid_save": False}, user=ADMIN[0])
    assert "1 setting changed" in applied
    apply_settings(server.application, {"grid_save": True}, user=ADMIN[0])


def test_others_still_override_settings_per_request(server: ApiServer) -> None:
    body = {**SMALL, "steps": 1, "override_settings": {"CLIP_stop_at_last_layers": 2}}
    response = server.client(BOB).post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    assert "Clip skip: 2" in response.json()["info"]


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"outdir_samples": "/etc"}, "absolute"),
        ({"outdir_txt2img_samples": "../other-login"}, "leaves the data dir"),
        ({"outdir_extras_samples": "outputs/../../x"}, "leaves the data dir"),
        ({"samples_format": "bmp"}, "not one of png"),  # gif is a format since the saving settings
        ({"default_sampler": "Not A Sampler"}, "Not A Sampler"),
        ({"default_scheduler": "nope"}, "nope"),
        ({"face_restoration_model": "RestoreAll"}, "RestoreAll"),
        ({"sd_vae": "missing.safetensors"}, "missing.safetensors"),
    ],
)
def test_bad_setting_values_are_a_4xx_and_never_persist(server: ApiServer, changes: dict, named: str) -> None:
    before = saved_settings(server)
    response = server.client(ADMIN).post("/sdapi/v1/options", json=changes)
    assert response.status_code == 400, response.text
    assert named in response.json()["errors"]
    assert saved_settings(server) == before
    key = next(iter(changes))
    assert getattr(server.application.options, key) != changes[key]


def test_folder_setting_inside_the_data_dir_is_accepted(server: ApiServer) -> None:
    response = server.client(ADMIN).post("/sdapi/v1/options", json={"outdir_extras_samples": "outputs/shared-extras"})
    assert response.status_code == 200, response.text
    assert saved_settings(server)["outdir_extras_samples"] == "outputs/shared-extras"


def test_listen_locks_folder_settings_unless_the_operator_opens_them(tmp_path: Path) -> None:
    from modules.cmd_args import build_parser
    from modules.settings_policy import SettingsPolicy, SettingsRefusedError

    def policy(*flags: str) -> SettingsPolicy:
        return SettingsPolicy.from_args(build_parser().parse_args(list(flags)), tmp_path)

    assert not policy().folders_locked
    assert policy("--listen").folders_locked
    assert policy("--hide-ui-dir-config").folders_locked
    assert not policy("--listen", "--enable-insecure-dir-access").folders_locked
    with pytest.raises(SettingsRefusedError, match="--hide-ui-dir-config"):
        policy("--listen").check({"outdir_samples": "outputs/x"}, user=None)
    policy("--listen", "--enable-insecure-dir-access").check({"outdir_samples": "outputs/x"}, user=None)
    with pytest.raises(SettingsRefusedError, match="absolute"):
        policy().check({"outdir_samples": str(tmp_path.parent)}, user=None)
    policy("--allow-outside-data-dir").check({"outdir_samples": str(tmp_path.parent)}, user=None)


# --- 2. Extras > Batch from Directory ---------------------------------------------------------------------------


def run_batch_folder(server: ApiServer, input_dir: str, output_dir: str = "", *flags: str):
    from modules.cmd_args import build_parser
    from modules.processing.extras import Extras
    from modules.settings_policy import SettingsPolicy
    from modules.ui.extras import BATCH_FOLDER, run_extras_job

    application = server.application
    extras = Extras(application.postprocessor, application.options, application.paths.data_dir)
    folders = SettingsPolicy.from_args(build_parser().parse_args(list(flags)), application.paths.data_dir)
    values = {"input_dir": input_dir, "output_dir": output_dir, "extras_upscaler_1": "Lanczos", "upscaling_resize": 1}
    return run_extras_job(extras, BATCH_FOLDER, values, folders)


def test_batch_from_directory_stays_inside_the_data_dir(server: ApiServer, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    Image.new("RGB", (8, 8), "red").save(outside / "secret.png")
    inbox = server.data_dir / "inbox"
    inbox.mkdir(exist_ok=True)
    Image.new("RGB", (8, 8), "blue").save(inbox / "mine.png")

    for refused_input in (str(outside), "/etc", "../" * 8 + "etc", "inbox/../../x"):
        view = run_batch_folder(server, refused_input)
        assert "easel-error" in view.status and not view.images, refused_input
        assert "data dir" in view.status or "absolute" in view.status
    written = run_batch_folder(server, "inbox", str(outside))
    assert "easel-error" in written.status and list(outside.iterdir()) == [outside / "secret.png"]

    done = run_batch_folder(server, "inbox", "outputs/batch-out")
    assert "easel-error" not in done.status, done.status
    assert [path.name for path in (server.data_dir / "outputs" / "batch-out").iterdir()] == ["mine.png"]
    anywhere = run_batch_folder(server, str(outside), "", "--allow-outside-data-dir")
    assert len(anywhere.images) == 1


def test_listen_turns_server_folders_off_unless_allowed(server: ApiServer) -> None:
    refused = run_batch_folder(server, "inbox", "", "--listen")
    assert "server folders are off" in refused.status and "--enable-insecure-dir-access" in refused.status
    hidden = run_batch_folder(server, "inbox", "", "--hide-ui-dir-config")
    assert "server folders are off" in hidden.status
    (server.data_dir / "inbox").mkdir(exist_ok=True)
    Image.new("RGB", (8, 8), "blue").save(server.data_dir / "inbox" / "mine.png")
    allowed = run_batch_folder(server, "inbox", "outputs/batch-listen", "--listen", "--enable-insecure-dir-access")
    assert "easel-error" not in allowed.status, allowed.status


# --- 4. body limit on every route; 5. auth on the docs and on Gradio's open routes ---------------------------------


def test_body_limit_covers_the_gradio_routes(server: ApiServer) -> None:
    client = server.client(auth=None)
    declared = client.post("/gradio_api/reset", content=b"x" * 300_000)
    assert declared.status_code == 413, declared.text

    def chunks() -> Iterator[bytes]:
        for _ in range(30):
            yield b"x" * 10_000

    streamed = client.post("/gradio_api/queue/join", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/redoc"])
def test_api_docs_need_a_login(server: ApiServer, path: str) -> None:
    assert server.client(auth=None).get(path).status_code == 401
    answer = server.client(BOB).get(path)
    assert answer.status_code == 200
    assert "/sdapi/v1/txt2img" in answer.text if path == "/openapi.json" else "<html" in answer.text.lower()


def test_gradio_cancel_reset_and_startup_events_need_the_ui_login(server: ApiServer) -> None:
    anonymous = server.client(auth=None, timeout=30)
    cancel_body = {"session_hash": "x", "fn_index": 0, "event_id": "y"}
    assert anonymous.post("/gradio_api/cancel", json=cancel_body).status_code == 401
    assert anonymous.post("/gradio_api/reset", json={"session_hash": "x", "fn_index": 0}).status_code == 401
    assert anonymous.get("/gradio_api/startup-events").status_code == 401
    logged_in = server.client(auth=None, timeout=30)
    assert logged_in.post("/login", data={"username": ALICE[0], "password": ALICE[1]}).status_code == 200
    assert logged_in.get("/gradio_api/startup-events").status_code == 200
    assert logged_in.post("/gradio_api/reset", json={"session_hash": "x", "fn_index": 0}).status_code != 401


# --- 5. what one login learns about another; refresh routes -----------------------------------------------------


def test_force_task_id_of_another_login_is_neither_confirmed_nor_taken(server: ApiServer) -> None:
    body = {**SMALL, "steps": 1, "force_task_id": "alice-task-1"}
    assert server.client(ALICE).post("/sdapi/v1/txt2img", json=body).status_code == 200
    answer = server.client(BOB).post("/sdapi/v1/txt2img", json=body)
    assert answer.status_code == 200, answer.text
    assert server.application.service.job("alice-task-1").owner == ALICE[0]
    seen_by_bob = server.client(BOB).post("/internal/progress", json={"id_task": "alice-task-1"}).json()
    assert seen_by_bob["completed"] is False and seen_by_bob["textinfo"] == "Waiting..."
    seen_by_alice = server.client(ALICE).post("/internal/progress", json={"id_task": "alice-task-1"}).json()
    assert seen_by_alice["completed"] is True


def test_cmd_flags_hide_the_admin_name(server: ApiServer) -> None:
    flags = server.client(BOB).get("/sdapi/v1/cmd-flags").json()
    assert flags["admin_user"] == "<hidden>"
    assert ADMIN[0] not in json.dumps(flags)


def test_upscaler_folders_have_a_refresh_route(server: ApiServer) -> None:
    client = server.client(ALICE)
    folder = server.data_dir / "models" / "ESRGAN"
    folder.mkdir(parents=True, exist_ok=True)
    assert "4x_added_later" not in [item["name"] for item in client.get("/sdapi/v1/upscalers").json()]
    (folder / "4x_added_later.safetensors").write_bytes(b"not really weights")
    assert client.post("/sdapi/v1/refresh-upscalers").status_code == 200
    assert "4x_added_later" in [item["name"] for item in client.get("/sdapi/v1/upscalers").json()]
    assert server.client(auth=None).post("/sdapi/v1/refresh-upscalers").status_code == 401


def test_atomic_json_writes_fsync_before_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from modules import options as options_module

    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(options_module.os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(options_module.os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    options_module.write_json_atomic(tmp_path / "config.json", {"a": 1})
    assert calls == ["fsync", "replace"]
    assert json.loads((tmp_path / "config.json").read_text()) == {"a": 1}


def write_damaged_embeddings(folder: Path) -> None:
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty-file.safetensors").write_bytes(b"")
    (folder / "garbage.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}" + b"\x00" * 64)
    (folder / "huge-header.safetensors").write_bytes((10**12).to_bytes(8, "little") + b"{}")
    (folder / "garbage.pt").write_bytes(b"PK\x03\x04 not a zip at all")
    save_file({"emb_params": torch.tensor(1.0)}, folder / "scalar.safetensors")
    save_file({"emb_params": torch.zeros(0, 32)}, folder / "no-vectors.safetensors")
    save_file({"emb_params": torch.zeros(2, 3, 0)}, folder / "zero-width.safetensors")
    torch.save([1, 2, 3], folder / "a-list.pt")
    save_file({"emb_params": torch.zeros(1, 32)}, folder / "good-one.safetensors")


def test_damaged_embedding_files_do_not_break_the_embeddings_route(server: ApiServer) -> None:
    client = server.client(ALICE)
    assert client.post("/sdapi/v1/txt2img", json={**SMALL, "steps": 1}).status_code == 200  # a model is loaded
    write_damaged_embeddings(server.data_dir / "embeddings")
    assert client.post("/sdapi/v1/refresh-embeddings").status_code == 200
    answer = client.get("/sdapi/v1/embeddings")
    assert answer.status_code == 200, answer.text
    listing = answer.json()
    assert "good-one" in listing["loaded"]
    assert {"garbage", "scalar", "a-list", "empty-file"} <= set(listing["skipped"])
    generated = client.post("/sdapi/v1/txt2img", json={**SMALL, "steps": 1, "prompt": "garbage scalar good-one"})
    assert generated.status_code == 200, generated.text


# --- 5. user-caused failures are a 4xx with a message -----------------------------------------------------------


class CreatesMarker:
    """Unpickling this calls ``open(marker, "w")``: the file appears only if the pickle's code runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def write_malicious_pickle(path: Path, marker: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": {"weight": torch.ones(2)}, "payload": CreatesMarker(marker)}, path)


def test_pickle_only_diffusers_component_is_a_4xx(server: ApiServer, tmp_path: Path) -> None:
    import shutil

    marker = tmp_path / "ran"
    source = server.data_dir / "models" / "Stable-diffusion" / "tiny"
    folder = server.data_dir / "models" / "Stable-diffusion" / "pickled"
    shutil.copytree(source, folder)
    for weights in (folder / "text_encoder").glob("*.safetensors"):
        weights.unlink()
    write_malicious_pickle(folder / "text_encoder" / "pytorch_model.bin", marker)
    client = server.client(ALICE)
    assert client.post("/sdapi/v1/refresh-checkpoints").status_code == 200
    try:
        body = {**SMALL, "steps": 1, "override_settings": {"sd_model_checkpoint": "pickled"}}
        response = client.post("/sdapi/v1/txt2img", json=body)
        assert 400 <= response.status_code < 500, response.text
        assert "pickled" in response.json()["errors"]
        assert not marker.exists()
    finally:
        shutil.rmtree(folder)
        client.post("/sdapi/v1/refresh-checkpoints")
    assert client.post("/sdapi/v1/txt2img", json={**SMALL, "steps": 1}).status_code == 200


@pytest.mark.parametrize(
    ("folder", "file_name", "field"),
    [
        ("GFPGAN", "GFPGANv1.4.pth", "gfpgan_visibility"),
        ("Codeformer", "codeformer-v0.1.0.pth", "codeformer_visibility"),
    ],
)
def test_unsafe_face_restorer_files_are_a_4xx(
    server: ApiServer, tmp_path: Path, folder: str, file_name: str, field: str
) -> None:
    from tests.api_support import gradient_image, png_base64

    marker = tmp_path / "ran"
    write_malicious_pickle(server.data_dir / "models" / folder / file_name, marker)
    body = {"image": png_base64(gradient_image(32)), field: 1.0, "upscaling_resize": 1}
    response = server.client(ALICE).post("/sdapi/v1/extra-single-image", json=body)
    assert response.status_code == 400, response.text
    assert file_name in response.json()["errors"]
    assert not marker.exists()


def add_test_route(server: ApiServer, path: str, endpoint) -> None:
    """A route added to the running app, ahead of the UI mounted at "/"."""
    app = server.running.server.config.app
    app.add_api_route(path, endpoint)
    app.router.routes.insert(0, app.router.routes.pop())


def test_disk_full_is_a_507_with_the_message(server: ApiServer) -> None:
    from modules.processing.saving import ImageSaveError, save_error

    full_device = Path("/dev/full")  # every write to it fails with ENOSPC
    if not full_device.exists():
        pytest.skip("/dev/full is absent on this system")
    try:
        with full_device.open("wb", buffering=0) as device:
            device.write(b"x")
    except OSError as error:
        disk_full = save_error(error, Path("outputs/00001-1.png"))

    def save_fails() -> None:
        raise disk_full

    add_test_route(server, "/test-disk-full", save_fails)
    response = server.client(auth=None).get("/test-disk-full")
    assert response.status_code == 507
    assert response.json()["errors"].startswith("disk full: could not save outputs/00001-1.png")
    assert isinstance(disk_full, ImageSaveError) and disk_full.disk_full


def test_params_txt_on_a_full_disk_does_not_fail_the_job(tmp_path: Path) -> None:
    from modules.processing.saving import write_params_txt

    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where params.txt's folder should be")
    assert write_params_txt(blocked / "params.txt", "a cat\nSteps: 20") is False
    assert write_params_txt(tmp_path / "params.txt", "a cat\nSteps: 20") is True


def test_a_500_keeps_the_keep_alive_connection(server: ApiServer) -> None:
    import socket
    from urllib.parse import urlsplit

    def fails() -> None:
        raise RuntimeError("an unexpected failure")

    add_test_route(server, "/test-unexpected", fails)
    address = urlsplit(server.url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        answers = []
        for _ in range(2):
            connection.sendall(f"GET /test-unexpected HTTP/1.1\r\nHost: {address.hostname}\r\n\r\n".encode())
            answers.append(read_response(connection))
    assert [answer.split(b"\r\n", 1)[0] for answer in answers] == [b"HTTP/1.1 500 Internal Server Error"] * 2
    assert b"an unexpected failure" in answers[1]


def read_response(connection) -> bytes:
    """One HTTP/1.1 response with a content-length body (what the test routes answer)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        assert chunk, "the server closed the connection"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        chunk = connection.recv(65536)
        assert chunk, "the server closed the connection"
        body += chunk
    return head + b"\r\n\r\n" + body


def test_ui_shows_the_request_caps_as_sentences() -> None:
    from pydantic import ValidationError

    from modules.processing.requests import Txt2ImgRequest
    from modules.ui.messages import validation_message

    with pytest.raises(ValidationError) as too_many:
        Txt2ImgRequest(n_iter=1000, batch_size=8)
    assert validation_message(too_many.value) == (
        "n_iter x batch_size: 1000 x 8 = 8000 images; the limit is 1000 per request"
    )
    with pytest.raises(ValidationError) as too_long:
        Txt2ImgRequest(prompt="a" * (MAX_PROMPT_CHARS + 1))
    assert (
        validation_message(too_long.value) == f"Prompt: is {MAX_PROMPT_CHARS + 1} characters long; the limit is 32768"
    )


def test_vae_card_changes_the_setting_for_the_admin_only(server: ApiServer) -> None:
    from modules.ui.extra_networks import run_action

    before = server.application.options.sd_vae
    refused = run_action(server.application, "vae\nNone", user=BOB[0])
    assert refused.startswith("SD VAE not changed") and "--admin-user" in refused
    assert server.application.options.sd_vae == before
    assert run_action(server.application, "vae\nNone", user=ADMIN[0]) == "SD VAE: None"
    assert server.application.options.sd_vae == "None"
    run_action(server.application, f"vae\n{before}", user=ADMIN[0])

"""Serving safely: Basic auth on every API route, UI login, no path traversal, 413 limits, CORS, subpath, TLS."""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modules.cmd_args import build_parser
from modules.server import ServerOptions, server_options_from_args, warn_about_exposure
from tests.api_support import ApiServer, copy_checkpoints, png_base64, start_api_server, write_tiny_checkpoints
from tests.helpers import REPO_ROOT

API_LOGIN = ("alice", "s3cret-pass")
SECRET = "easel-secret-token-7f3a"
GET_ROUTES = (
    "progress",
    "options",
    "cmd-flags",
    "samplers",
    "schedulers",
    "upscalers",
    "latent-upscale-modes",
    "sd-models",
    "sd-vae",
    "hypernetworks",
    "face-restorers",
    "realesrgan-models",
    "prompt-styles",
    "embeddings",
    "loras",
    "memory",
    "scripts",
    "script-info",
    "extensions",
)
POST_ROUTES = (
    "txt2img",
    "img2img",
    "png-info",
    "interrupt",
    "skip",
    "options",
    "refresh-checkpoints",
    "refresh-loras",
    "refresh-embeddings",
    "refresh-vae",
    "unload-checkpoint",
    "reload-checkpoint",
    "extra-single-image",
    "extra-batch-images",
)


def ui_mounter(application, gradio_logins):
    from modules.ui.app import mount_ui

    return functools.partial(mount_ui, application=application, auth=list(gradio_logins))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("security-checkpoints")
    write_tiny_checkpoints(folder, names=("tiny",))
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, checkpoints: Path) -> Iterator[ApiServer]:
    """UI mounted without a UI login (to reach gradio's file routes), API behind --api-auth, small body limit."""
    data = tmp_path_factory.mktemp("security") / "data"
    copy_checkpoints(checkpoints, data)
    (data / "secret.txt").write_text(SECRET)
    flags = ["--api-auth", ":".join(API_LOGIN), "--cors-allow-origins", "http://good.example"]
    running = start_api_server(data, flags, ui=True, max_body_bytes=200_000, mount_ui=ui_mounter)
    yield running
    running.stop()


@pytest.mark.parametrize("route", GET_ROUTES)
def test_get_routes_need_the_login(server: ApiServer, route: str) -> None:
    anonymous = server.client(auth=None).get(f"/sdapi/v1/{route}")
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Basic")
    wrong = server.client(auth=("alice", "wrong")).get(f"/sdapi/v1/{route}")
    assert wrong.status_code == 401
    assert server.client().get(f"/sdapi/v1/{route}").status_code == 200


@pytest.mark.parametrize("route", POST_ROUTES)
def test_post_routes_need_the_login(server: ApiServer, route: str) -> None:
    anonymous = server.client(auth=None).post(f"/sdapi/v1/{route}", json={})
    assert anonymous.status_code == 401
    assert server.client(auth=("bob", API_LOGIN[1])).post(f"/sdapi/v1/{route}", json={}).status_code == 401


def test_internal_routes_need_the_login(server: ApiServer) -> None:
    assert server.client(auth=None).get("/internal/pending-tasks").status_code == 401
    assert server.client(auth=None).post("/internal/progress", json={"id_task": "x"}).status_code == 401
    assert server.client().get("/internal/pending-tasks").status_code == 200


def test_cmd_flags_hide_the_logins(server: ApiServer) -> None:
    flags = server.client().get("/sdapi/v1/cmd-flags").json()
    assert flags["api_auth"] == "<hidden>" and API_LOGIN[1] not in str(flags)


def test_ui_is_served_beside_the_api(server: ApiServer) -> None:
    page = server.client(auth=None).get("/")
    assert page.status_code == 200 and "gradio" in page.text.lower()


def traversal_paths(data_dir: Path) -> list[str]:
    secret = data_dir / "secret.txt"
    config = data_dir / "config.json"
    relative = "../" * 12 + str(secret).lstrip("/")
    encoded = "%2e%2e/" * 12 + str(secret).lstrip("/")
    double = "%252e%252e/" * 12 + str(secret).lstrip("/")
    targets = [str(secret), str(config), relative, encoded, double, "/etc/passwd", "../../../../etc/passwd"]
    targets.append(str(REPO_ROOT / "pyproject.toml"))
    targets.append("pyproject.toml")
    paths = []
    for target in targets:
        for route in ("/gradio_api/file=", "/file=", "/gradio_api/file/", "/static/", "/assets/"):
            paths.append(route + target)
    paths.append("/gradio_api/file=..%2f..%2f..%2f..%2fetc%2fpasswd")
    paths.append("/assets/..%2f..%2f..%2f..%2fetc%2fpasswd")
    return paths


def test_no_path_traversal_through_file_routes(server: ApiServer) -> None:
    client = server.client(auth=None)
    config_text = (server.data_dir / "config.json").read_text() if (server.data_dir / "config.json").exists() else None
    for path in traversal_paths(server.data_dir):
        response = client.get(path)
        assert SECRET not in response.text, path
        assert "root:x:0:0" not in response.text, path
        assert "[tool.ruff]" not in response.text, path
        if config_text:
            assert response.text != config_text, path
        assert response.status_code != 200 or not response.content.strip() or "<html" in response.text.lower(), path


def test_gradio_proxy_does_not_reach_local_addresses(server: ApiServer) -> None:
    client = server.client(auth=None)
    for path in ("/gradio_api/proxy=" + server.url + "/sdapi/v1/options", "/proxy=http://169.254.169.254/"):
        response = client.get(path)
        assert response.status_code >= 400, path


def test_body_over_the_limit_is_413(server: ApiServer) -> None:
    client = server.client()
    big = {"image": "A" * 300_000}
    response = client.post("/sdapi/v1/png-info", json=big)
    assert response.status_code == 413 and "limit" in response.json()["errors"]

    def chunks() -> Iterator[bytes]:
        yield b'{"image": "'
        for _ in range(30):
            yield b"A" * 10_000
        yield b'"}'

    chunked = client.post("/sdapi/v1/png-info", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    small = client.post("/sdapi/v1/png-info", json={"image": png_base64_small()})
    assert small.status_code == 200


def png_base64_small() -> str:
    from tests.api_support import gradient_image

    return png_base64(gradient_image(16))


def test_cors_allows_only_the_given_origin(server: ApiServer) -> None:
    client = server.client(auth=None)
    headers = {"Access-Control-Request-Method": "POST"}
    good = client.options("/sdapi/v1/txt2img", headers={**headers, "Origin": "http://good.example"})
    assert good.headers.get("access-control-allow-origin") == "http://good.example"
    bad = client.options("/sdapi/v1/txt2img", headers={**headers, "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in bad.headers


def test_ui_login_when_gradio_auth_is_set(tmp_path: Path, checkpoints: Path) -> None:
    copy_checkpoints(checkpoints, tmp_path / "data")
    running = start_api_server(tmp_path / "data", ["--gradio-auth", "ui:pw"], ui=True, mount_ui=ui_mounter)
    try:
        anonymous = running.client(auth=None, timeout=30)
        assert anonymous.get("/config").status_code == 401
        assert anonymous.get("/gradio_api/info").status_code == 401
        assert anonymous.get("/internal/pending-tasks").status_code == 401
        login = anonymous.post("/login", data={"username": "ui", "password": "pw"})
        assert login.status_code == 200
        assert anonymous.get("/config").status_code == 200
    finally:
        running.stop()


def test_subpath_serves_everything_under_it(tmp_path: Path, checkpoints: Path) -> None:
    copy_checkpoints(checkpoints, tmp_path / "data")
    running = start_api_server(tmp_path / "data", ["--subpath", "/easel/"])
    try:
        client = running.client(auth=None, timeout=30)
        assert running.url.endswith("/easel")
        assert client.get("/sdapi/v1/samplers").status_code == 200
        root = httpx.get(running.url.removesuffix("/easel") + "/sdapi/v1/samplers")
        assert root.status_code == 404
    finally:
        running.stop()


def test_tls(tmp_path: Path, checkpoints: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    copy_checkpoints(checkpoints, tmp_path / "data")
    running = start_api_server(tmp_path / "data", ["--tls-keyfile", str(key), "--tls-certfile", str(cert)])
    try:
        assert running.url.startswith("https://")
        response = httpx.get(running.url + "/sdapi/v1/samplers", verify=False)
        assert response.status_code == 200
    finally:
        running.stop()


def test_serving_flags() -> None:
    def options_for(*argv: str) -> ServerOptions:
        return server_options_from_args(build_parser().parse_args(list(argv)), (), ())

    assert options_for().port == 7860 and options_for("--nowebui").port == 7861
    assert options_for("--nowebui").api and not options_for().api and options_for("--api").ui
    assert options_for("--listen").host == "0.0.0.0"
    assert len(warn_about_exposure(options_for("--listen", "--api"))) == 2
    assert warn_about_exposure(options_for("--api")) == []
    with pytest.raises(ValueError, match="go together"):
        options_for("--tls-keyfile", "k.pem")

"""Shared helpers for the API tests: a real server on a free loopback port over tiny checkpoints."""

from __future__ import annotations

import base64
import io
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from PIL import Image

from modules.api.images import ImageLimits
from modules.application import Application
from modules.cmd_args import build_parser, parse_auth
from modules.server import ServerOptions, create_app, server_options_from_args, uvicorn_config
from tests.helpers import free_port

SMALL = {"width": 64, "height": 64, "steps": 2}


@dataclass
class RunningServer:
    """A server started in a thread; ``stop()`` ends it."""

    server: uvicorn.Server
    thread: threading.Thread
    url: str

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def start_in_thread(app: FastAPI, options: ServerOptions, start_timeout: float = 60.0) -> RunningServer:
    """uvicorn with webui.py's configuration (``uvicorn_config``), in a daemon thread; waits until it serves."""
    server = uvicorn.Server(uvicorn_config(app, options))
    thread = threading.Thread(target=server.run, name="easel-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"server did not start on {options.host}:{options.port}")
        time.sleep(0.05)
    return RunningServer(server, thread, f"{options.scheme}://{options.host}:{options.port}{options.subpath}")


def write_tiny_checkpoints(folder: Path, names: Sequence[str] = ("tiny", "tiny2")) -> None:
    """Diffusers folders of the tiny model; each name gets other random weights (seed = its index)."""
    from modules.tiny_model import build_tiny_pipeline, write_diffusers

    folder.mkdir(parents=True, exist_ok=True)
    for seed, name in enumerate(names):
        write_diffusers(build_tiny_pipeline(seed=seed), folder / name)


def copy_checkpoints(source: Path, data_dir: Path) -> None:
    target = data_dir / "models" / "Stable-diffusion"
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        shutil.copytree(item, target / item.name)


@dataclass
class ApiServer:
    running: RunningServer
    application: Application
    data_dir: Path
    default_auth: tuple[str, str] | None = None
    clients: list[httpx.Client] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.running.url

    def client(self, auth: tuple[str, str] | str | None = "default", timeout: float = 300.0) -> httpx.Client:
        chosen = self.default_auth if auth == "default" else auth
        client = httpx.Client(base_url=self.url, auth=chosen, timeout=timeout)
        self.clients.append(client)
        return client

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        self.running.stop()
        self.application.service.shutdown()


def start_api_server(
    data_dir: Path,
    flags: Sequence[str] = (),
    ui: bool = False,
    max_body_bytes: int | None = None,
    image_limits: ImageLimits | None = None,
    mount_ui: Any = None,
) -> ApiServer:
    """webui.py's composition, in-process: Application + one FastAPI app served by uvicorn in a thread."""
    port = free_port()
    argv = ["--data-dir", str(data_dir), "--port", str(port), "--api", *flags]
    if not ui:
        argv.append("--nowebui")
    args = build_parser().parse_args(argv)
    gradio_logins = tuple(parse_auth(args.gradio_auth, args.gradio_auth_path))
    api_logins = tuple(parse_auth(args.api_auth))
    options = server_options_from_args(args, gradio_logins, api_logins, image_limits)
    if max_body_bytes is not None:
        from dataclasses import replace

        options = replace(options, max_body_bytes=max_body_bytes)
    application = Application.create(args)
    app = create_app(application, options, mount_ui(application, gradio_logins) if mount_ui else None)
    running = start_in_thread(app, options)
    return ApiServer(running, application, data_dir, default_auth=api_logins[0] if api_logins else None)


def png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_png(text: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(text)))
    image.load()
    return image


def gradient_image(size: int = 64) -> Image.Image:
    image = Image.new("RGB", (size, size))
    image.putdata([(x * 4 % 256, y * 4 % 256, 128) for y in range(size) for x in range(size)])
    return image


def centre_mask(size: int = 64) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    return mask

"""End to end in a real browser: webui.py on a free port, driven through Playwright and Debian's chromium.

The server starts with no checkpoint (the UI must say what to do), then the tiny model is put into
models/Stable-diffusion, Refresh lists it, and a txt2img run saves a PNG whose infotext is checked.
Set EASEL_BROWSER_SCREENSHOTS=<folder> to keep screenshots of the pages.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers import REPO_ROOT, free_port

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SERVER_START_SECONDS = 240
GENERATION_SECONDS = 180


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium); the browser test needs it")
    return path


def wait_until_serving(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"webui.py exited with {process.returncode}:\n{log.read_text(errors='replace')[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    pytest.fail(f"webui.py did not answer within {SERVER_START_SECONDS} s:\n{log.read_text(errors='replace')[-4000:]}")


@contextmanager
def running_webui(tmp_path: Path, arguments: list[str], environment: dict[str, str]) -> Iterator[tuple[str, Path]]:
    """webui.py on a free port with a fresh data folder, stopped afterwards; yields (url, data folder)."""
    data_dir = tmp_path / "data"
    port = free_port()
    log = tmp_path / "webui.log"
    command = [sys.executable, "webui.py", "--data-dir", str(data_dir), "--port", str(port), *arguments]
    with log.open("w") as log_file:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=environment, stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(url, process, log)
        yield url, data_dir
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """webui.py offline with an empty data folder; yields (url, data folder)."""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    with running_webui(tmp_path, [], environment) as served:
        yield served


def choose(page, elem_id: str, value: str) -> None:
    """Pick a dropdown option by typing it and clicking the listed option."""
    box = page.locator(f"#{elem_id} input")
    box.click()
    box.fill(value)
    page.get_by_role("option", name=value, exact=True).click()


def add_tiny_checkpoint(tiny_pipeline, checkpoints_dir: Path, staging: Path) -> None:
    """Write the single file (with its config folder) aside, then move it in, so no scan sees half a file."""
    from modules.models.checkpoint_writer import write_single_file

    staging.mkdir(parents=True, exist_ok=True)
    write_single_file(tiny_pipeline, staging / "tiny.safetensors")
    for item in sorted(staging.iterdir()):
        shutil.move(str(item), checkpoints_dir / item.name)


def set_number(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def screenshot(page, name: str) -> None:
    folder = os.environ.get("EASEL_BROWSER_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name), full_page=True)


def test_txt2img_in_the_browser(server: tuple[str, Path], tmp_path: Path, tiny_pipeline) -> None:
    executable = chromium_path()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    url, data_dir = server
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.wait_for_selector("#txt2img_generate", timeout=60_000)

            message = page.locator("#checkpoint_message")
            sync_api.expect(message).to_contain_text("No checkpoint found")
            sync_api.expect(message).to_contain_text(str(data_dir / "models" / "Stable-diffusion"))
            screenshot(page, "no-checkpoint.png")

            add_tiny_checkpoint(tiny_pipeline, data_dir / "models" / "Stable-diffusion", tmp_path / "staging")
            page.click("#refresh_checkpoints")
            sync_api.expect(page.locator("#setting_sd_model_checkpoint input")).to_have_value(
                "tiny.safetensors", timeout=30_000
            )
            sync_api.expect(message).not_to_contain_text("No checkpoint found")

            page.locator("#txt2img_prompt textarea").fill("a lighthouse in the browser test")
            set_number(page, "txt2img_width", 64)
            set_number(page, "txt2img_height", 64)
            set_number(page, "txt2img_steps", 2)
            page.click("#txt2img_generate")
            page.wait_for_selector("#txt2img_gallery img", timeout=GENERATION_SECONDS * 1000)
            infotext_shown = page.locator("#txt2img_infotext textarea").input_value()
            screenshot(page, "txt2img-after-generate.png")
        finally:
            browser.close()

    saved = sorted((data_dir / "outputs" / "txt2img-images").glob("*/*.png"))
    assert len(saved) == 1, saved
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", saved[0].parent.name)  # outputs/txt2img-images/YYYY-MM-DD/
    with Image.open(saved[0]) as image:
        infotext = image.info["parameters"]
    assert infotext.startswith("a lighthouse in the browser test\n")
    assert "Steps: 2," in infotext and "Size: 64x64" in infotext
    assert infotext_shown == infotext

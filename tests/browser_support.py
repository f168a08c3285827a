"""Helpers of the browser tests (tests/test_browser*.py): webui.py on a free port, headless chromium through
Playwright, and the small page actions they share. Set EASEL_BROWSER_SCREENSHOTS=<folder> to keep screenshots."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO_ROOT, free_port

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
VIEWPORT = {"width": 1400, "height": 1000}


def webui_environment(**extra: str) -> dict[str, str]:
    """The environment of a test server: offline, no analytics."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", **extra}


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium); the browser test needs it")
    return path


def sync_api() -> Any:
    """playwright.sync_api, or a skip when playwright is not installed."""
    return pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


@contextmanager
def browser_page(
    url: str | None = None, width: int = VIEWPORT["width"], height: int = VIEWPORT["height"], init_script: str = ""
) -> Iterator[Any]:
    """A page of headless chromium (closed afterwards); with ``url``, opened there once the UI has loaded."""
    executable = chromium_path()
    api = sync_api()
    with api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            if init_script:
                page.add_init_script(init_script)
            if url is not None:
                page.goto(url)
                page.wait_for_selector("#txt2img_generate", timeout=60_000)
            yield page
        finally:
            browser.close()


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


def choose(page: Any, elem_id: str, value: str) -> None:
    """Pick a dropdown option by typing it and clicking the listed option."""
    box = page.locator(f"#{elem_id} input")
    box.click()
    box.fill(value)
    page.get_by_role("option", name=value, exact=True).click()


def dropdown_options(page: Any, elem_id: str) -> list[str]:
    """The options a dropdown lists now (opened, read, closed again)."""
    box = page.locator(f"#{elem_id} input")
    box.click()
    options = page.locator(f"#{elem_id} [role=option]")
    options.first.wait_for(timeout=10_000)
    texts = [text.split("\n")[-1].strip() for text in options.all_inner_texts()]  # after the selected one's ✓
    box.press("Escape")
    options.first.wait_for(state="hidden", timeout=10_000)
    return texts


def add_tiny_checkpoint(tiny_pipeline: Any, checkpoints_dir: Path, staging: Path) -> None:
    """Write the single file (with its config folder) aside, then move it in, so no scan sees half a file."""
    from modules.models.checkpoint_writer import write_single_file

    staging.mkdir(parents=True, exist_ok=True)
    write_single_file(tiny_pipeline, staging / "tiny.safetensors")
    for item in sorted(staging.iterdir()):
        shutil.move(str(item), checkpoints_dir / item.name)


def set_number(page: Any, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def screenshot(page: Any, name: str) -> None:
    folder = os.environ.get("EASEL_BROWSER_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name), full_page=True)

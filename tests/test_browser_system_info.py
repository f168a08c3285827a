"""The System info tab in a real browser: the information shown, and a benchmark run that fills the table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser_support import CHROMIUM_ARGS, chromium_path
from tests.helpers import REPO_ROOT, free_port

pytestmark = pytest.mark.browser

START_SECONDS = 240
BENCHMARK_SECONDS = 300


@pytest.fixture
def served(tmp_path: Path, tiny_pipeline) -> Iterator[tuple[str, Path]]:
    """webui.py offline over a data folder holding the tiny checkpoint; yields (url, data folder)."""
    from modules.models.checkpoint_writer import write_single_file

    data_dir = tmp_path / "data"
    checkpoints = data_dir / "models" / "Stable-diffusion"
    checkpoints.mkdir(parents=True)
    write_single_file(tiny_pipeline, checkpoints / "tiny.safetensors")
    port = free_port()
    log = tmp_path / "webui.log"
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    command = [sys.executable, "webui.py", "--data-dir", str(data_dir), "--port", str(port), "--opt-channelslast"]
    with log.open("w") as log_file:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=environment, stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"webui.py did not serve:\n{log.read_text(errors='replace')[-4000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(1)
        yield url, data_dir
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


def scroll_to_text(code, text: str, steps: int = 60) -> bool:
    """The code view draws only the lines in sight (CodeMirror): wheel the page down over it until ``text`` is
    drawn."""
    page = code.page
    code.scroll_into_view_if_needed()
    box = code.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, min(box["y"] + 50, 900))
    for _ in range(steps):
        if text in (code.text_content() or ""):
            return True
        page.mouse.wheel(0, 300)
        page.wait_for_timeout(100)
    return text in (code.text_content() or "")


def test_system_info_tab_and_benchmark(served: tuple[str, Path]) -> None:
    executable = chromium_path()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    url, data_dir = served
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.get_by_role("tab", name="System info").click()
            code = page.locator("#system_info_json")
            sync_api.expect(code).to_contain_text('"diffusers": "0.42.1"', timeout=60_000)
            assert scroll_to_text(code, '"opt_channelslast": true'), "the flags show --opt-channelslast"
            page.locator("#benchmark_steps input[type=number]").fill("1")
            page.click("#benchmark_run")
            status = page.locator("#benchmark_status")
            sync_api.expect(status).to_contain_text("Benchmark done: 6 runs", timeout=BENCHMARK_SECONDS * 1000)
            table = page.locator("#benchmark_table")
            for text in ("channels_last", "tiny", "512", "256"):
                sync_api.expect(table).to_contain_text(text)
            sync_api.expect(code).to_contain_text('"compute_applied": [', timeout=30_000)
        finally:
            browser.close()
    history = json.loads((data_dir / "benchmarks.json").read_text(encoding="utf-8"))
    assert sorted({(row["width"], row["batch_size"]) for row in history}) == [
        (256, 1),
        (256, 2),
        (256, 4),
        (512, 1),
        (512, 2),
        (512, 4),
    ]
    assert all(row["its"] > 0 and row["model"] == "tiny" for row in history)

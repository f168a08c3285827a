"""In a real browser: the Models tab searches a local fake hub, shows a table, downloads a diffusers pipeline with
progress, and the new model appears in the checkpoint dropdown.

webui.py runs as tests/test_browser.py runs it, with ``HF_ENDPOINT`` pointed at tests/hub_server.py's fake hub on
127.0.0.1 (huggingface_hub reads it at import; Easel's HubClient uses the library's endpoint) and offline mode
off. So that nothing else can leave the machine, every HTTP(S) proxy variable names a closed local port and only
127.0.0.1 bypasses it. Set EASEL_BROWSER_SCREENSHOTS=<folder> to keep screenshots.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from modules.hub.client import RepoFile
from modules.hub.files import select_pipeline_files
from tests.browser_support import browser_page, running_webui, screenshot
from tests.hub_server import FakeHub, FakeRepo, serve_hub, tiny_pipeline_files

pytestmark = pytest.mark.browser

REPO_ID = "tester/tiny-sd"
DOWNLOAD_SECONDS = 120
CLOSED_PORT_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens, a stray request fails at once
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DIFFUSERS_OFFLINE")


@pytest.fixture
def hub(tmp_path: Path, tiny_pipeline) -> Iterator[tuple[FakeHub, threading.Event]]:
    """The fake hub with the tiny pipeline and a decoy; the pipeline's last weight file stalls until the event."""
    folder = tmp_path / "tiny-sd"
    tiny_pipeline.save_pretrained(folder, safe_serialization=True)
    files = tiny_pipeline_files(folder)
    chosen = select_pipeline_files([RepoFile(name, len(data)) for name, data in files.items()], fp16=True)
    last_weight = [item.path for item in chosen if item.path.endswith(".safetensors")][-1]
    go_on = threading.Event()
    with serve_hub() as fake:
        fake.add(FakeRepo(REPO_ID, files, "text-to-image", ("diffusers",), downloads=1234, likes=56))
        fake.add(FakeRepo("tester/other-sd", {"model_index.json": b"{}"}, "text-to-image", ("diffusers",)))
        fake.stall_after[f"{REPO_ID}/{last_weight}"] = (len(files[last_weight]) // 2, go_on)
        try:
            yield fake, go_on
        finally:
            go_on.set()


def webui_environment(hub_url: str) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if key not in OFFLINE_VARIABLES}
    proxies = {name: CLOSED_PORT_PROXY for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")}
    proxies |= {name.lower(): value for name, value in proxies.items()}
    return {
        **environment,
        **proxies,
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
        "HF_ENDPOINT": hub_url,
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
    }


@pytest.fixture
def server(tmp_path: Path, hub: tuple[FakeHub, threading.Event]) -> Iterator[tuple[str, Path]]:
    """webui.py online against the fake hub, empty data folder, no default-model download; yields (url, data)."""
    with running_webui(tmp_path, ["--no-download-sd-model"], webui_environment(hub[0].url)) as served:
        yield served


def progress_fraction(page) -> float:
    return float(page.locator("#models_progress progress").first.get_attribute("value") or 0)


def test_search_download_and_pick_the_model_in_the_browser(
    server: tuple[str, Path], hub: tuple[FakeHub, threading.Event]
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    expect = sync_api.expect
    url, data_dir = server
    fake, go_on = hub
    with browser_page(url, height=1300) as page:
        page.get_by_role("tab", name="Models").click()

        page.locator("#models_query input, #models_query textarea").first.fill("tiny")
        page.click("#models_search")
        table = page.locator("#models_table")
        expect(page.locator("#models_search_status")).to_contain_text("1 models", timeout=30_000)
        expect(table).to_contain_text(REPO_ID)
        expect(table).to_contain_text("text-to-image")
        expect(table).to_contain_text("1234")
        expect(table).not_to_contain_text("tester/other-sd")
        searches = [path for method, path, _ in fake.requests if path.startswith("/api/models?")]
        assert searches and "search=tiny" in searches[-1], "the browser's search reached the fake hub"

        first_cell = table.get_by_test_id("cell-0-0")
        expect(first_cell).to_have_text(REPO_ID)
        first_cell.click()
        expect(page.locator("#models_repo textarea, #models_repo input").first).to_have_value(REPO_ID)
        page.click("#models_show_files")
        expect(page.locator("#models_files_summary")).to_contain_text("diffusers pipeline", timeout=30_000)
        expect(page.locator("#models_files")).to_contain_text("unet/diffusion_pytorch_model.safetensors")
        screenshot(page, "models-search.png")

        page.click("#models_download")
        expect(page.locator("#models_download_status")).to_contain_text("Download started", timeout=30_000)
        progress = page.locator("#models_progress")
        expect(progress).to_contain_text(f"{REPO_ID} (diffusers): running", timeout=30_000)
        expect(progress.locator("progress")).to_have_count(1)
        # The first bytes may land a poll after "running" shows: wait for them, then check the bar is partial.
        page.wait_for_function(
            "() => { const bar = document.querySelector('#models_progress progress');"
            " return bar !== null && parseFloat(bar.value) > 0; }",
            timeout=30_000,
        )
        assert 0.0 < progress_fraction(page) < 1.0, "the stalled download shows a partial bar"
        assert re.search(r"\d+(\.\d+)? (?:[KMG]i)?B / \d+(\.\d+)? (?:[KMG]i)?B \(\d+%\)", progress.inner_text())
        screenshot(page, "models-download-running.png")

        go_on.set()
        expect(progress).to_contain_text(f"{REPO_ID} (diffusers): done", timeout=DOWNLOAD_SECONDS * 1000)
        assert progress_fraction(page) == 1.0
        assert (data_dir / "models" / "Diffusers" / "models--tester--tiny-sd" / "snapshots").is_dir()
        assert "ETA" not in progress.inner_text()  # no "ETA - -" once done
        screenshot(page, "models-download-done.png")
        # without Refresh: the top bar and the Checkpoints table follow the new checkpoint
        expect(page.locator("#checkpoint_message")).not_to_contain_text("No checkpoint found", timeout=30_000)
        expect(page.locator("#models_checkpoints")).to_contain_text(REPO_ID, timeout=30_000)

        page.locator("#setting_sd_model_checkpoint input").click()
        expect(page.get_by_role("option", name=REPO_ID)).to_be_visible(timeout=30_000)
        screenshot(page, "models-checkpoint-dropdown.png")

"""Scripts and extensions in a real browser: webui.py with the tiny model and an A1111 test extension installed;
X/Y/Z plot chosen in the Script dropdown makes a saved grid; the extension's own UI (accordion, checkbox, its
.change event) drives its always-on script; the extension's javascript is on the page; the Extensions tab lists it
and a broken extension as failed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.browser_support import (
    CHROMIUM_ARGS,
    GENERATION_SECONDS,
    choose,
    chromium_path,
    set_number,
    wait_until_serving,
)
from tests.extension_support import write_broken_extensions, write_test_extension
from tests.helpers import REPO_ROOT, free_port

pytestmark = pytest.mark.browser


def test_xyz_plot_and_extensions_in_the_browser(tmp_path: Path, tiny_pipeline) -> None:
    executable = chromium_path()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from modules.tiny_model import write_diffusers

    data_dir = tmp_path / "data"
    write_diffusers(tiny_pipeline, data_dir / "models" / "Stable-diffusion" / "tiny")
    write_test_extension(data_dir / "extensions")
    write_broken_extensions(data_dir / "extensions")
    port = free_port()
    log = tmp_path / "webui.log"
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    command = [sys.executable, "webui.py", "--data-dir", str(data_dir), "--port", str(port), "--test-ext-word", "owl"]
    with log.open("w") as log_file:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=environment, stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(url, process, log)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1200})
                page.goto(url)
                page.wait_for_selector("#txt2img_generate", timeout=60_000)
                assert page.evaluate("window.testExtensionLoaded") is True

                page.locator("#txt2img_prompt textarea").fill("a lighthouse")
                set_number(page, "txt2img_width", 64)
                set_number(page, "txt2img_height", 64)
                set_number(page, "txt2img_steps", 2)
                choose(page, "txt2img_script", "X/Y/Z plot")
                choose(page, "script_txt2img_x_y_z_plot_x_type", "Steps")
                page.locator("#script_txt2img_x_y_z_plot_x_values textarea").fill("1,2")
                page.click("#txt2img_generate")
                page.wait_for_selector("#txt2img_gallery img", timeout=GENERATION_SECONDS * 1000)
                infotext_shown = page.locator("#txt2img_infotext textarea").input_value()

                # the extension's own ui(): its accordion, its checkbox and its .change event (Flip turns editable)
                choose(page, "txt2img_script", "None")
                group = page.locator("#script_txt2img_test_always_on_accordion").first
                group.get_by_role("button", name="Test").click()
                flip = group.get_by_role("checkbox", name="Flip")
                sync_api.expect(flip).to_be_visible()
                sync_api.expect(flip).to_be_disabled()
                group.get_by_role("checkbox", name="Enabled").check()
                sync_api.expect(flip).to_be_enabled()
                previous = page.locator("#txt2img_infotext textarea").input_value()
                page.click("#txt2img_generate")
                sync_api.expect(page.locator("#txt2img_infotext textarea")).not_to_have_value(
                    previous, timeout=GENERATION_SECONDS * 1000
                )
                extension_infotext = page.locator("#txt2img_infotext textarea").input_value()

                page.get_by_role("tab", name="Extensions").click()
                table = page.locator("#extensions_table")
                sync_api.expect(table).to_contain_text("test-ext")
                sync_api.expect(table).to_contain_text("SyntaxError")
            finally:
                browser.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)

    assert "Script: X/Y/Z plot" in infotext_shown and "X Type: Steps" in infotext_shown
    assert extension_infotext.startswith("a lighthouse, owl from settings") and "Test ext: owl" in extension_infotext
    grids = sorted((data_dir / "outputs" / "txt2img-grids").rglob("*.png"))
    assert len(grids) == 1, grids
    with Image.open(grids[0]) as grid:
        assert 'X Values: "1,2"' in grid.info["parameters"]
        assert grid.width == 128

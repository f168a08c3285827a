"""End to end in a real browser: webui.py on a free port, driven through Playwright and Debian's chromium.

The server starts with no checkpoint (the UI must say what to do), then the tiny model is put into
models/Stable-diffusion, Refresh lists it, and a txt2img run saves a PNG whose infotext is checked.
Set EASEL_BROWSER_SCREENSHOTS=<folder> to keep screenshots of the pages.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from tests.browser_support import GENERATION_SECONDS, add_tiny_checkpoint, browser_page, screenshot, set_number

pytestmark = pytest.mark.browser


def test_txt2img_in_the_browser(server: tuple[str, Path], tmp_path: Path, tiny_pipeline) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    url, data_dir = server
    with browser_page(url) as page:
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

    saved = sorted((data_dir / "outputs" / "txt2img-images").glob("*/*.png"))
    assert len(saved) == 1, saved
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", saved[0].parent.name)  # outputs/txt2img-images/YYYY-MM-DD/
    with Image.open(saved[0]) as image:
        infotext = image.info["parameters"]
    assert infotext.startswith("a lighthouse in the browser test\n")
    assert "Steps: 2," in infotext and "Size: 64x64" in infotext
    assert infotext_shown == infotext

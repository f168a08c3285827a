"""In a real browser: the Extras tab upscales an uploaded image (Lanczos, no weights) and saves it with the source's
infotext and the extras keys; PNG Info sends a hires infotext to txt2img and the Hires. fix controls follow.

Runs webui.py as tests/test_browser.py does. Set EASEL_BROWSER_SCREENSHOTS=<folder> to keep screenshots.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from tests.browser_support import browser_page, choose, screenshot, set_number

pytestmark = pytest.mark.browser

SOURCE_INFOTEXT = (
    "a lighthouse at dusk\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, Schedule type: Automatic, "
    "CFG scale: 7, Seed: 42, Size: 48x32, Denoising strength: 0.45, Hires upscale: 2, Hires steps: 10, "
    "Hires upscaler: Latent (bicubic), Hires sampler: DPM++ 2M, Version: v1.10.1"
)
RESULT_SECONDS = 120


def source_png(path: Path) -> Path:
    pixels = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", SOURCE_INFOTEXT)
    Image.fromarray(pixels, mode="RGB").save(path, pnginfo=info)
    return path


def test_extras_upscale_and_hires_paste_in_the_browser(server: tuple[str, Path], tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    url, data_dir = server
    source = source_png(tmp_path / "source.png")
    with browser_page(url, height=1100) as page:
        page.get_by_role("tab", name="Extras").click()
        page.locator("#extras_image input[type=file]").set_input_files(str(source))
        page.wait_for_selector("#extras_image img", timeout=30_000)
        choose(page, "extras_upscaler_1", "Lanczos")
        set_number(page, "extras_upscaling_resize", 2)
        page.click("#extras_generate")
        page.wait_for_selector("#extras_gallery img", timeout=RESULT_SECONDS * 1000)
        sync_api.expect(page.locator("#extras_status")).to_contain_text("1 image done")
        shown = page.locator("#extras_infotext textarea").input_value()
        screenshot(page, "extras-after-upscale.png")

        page.get_by_role("tab", name="PNG Info").click()
        page.locator("#pnginfo_image input[type=file]").set_input_files(str(source))
        sync_api.expect(page.locator("#pnginfo_parameters textarea")).to_have_value(SOURCE_INFOTEXT)
        page.click("#pnginfo_send_to_txt2img")
        sync_api.expect(page.locator("#txt2img_enable_hr input")).to_be_checked()
        sync_api.expect(page.locator("#txt2img_hr_upscaler input")).to_have_value("Latent (bicubic)")
        sync_api.expect(page.locator("#txt2img_hr_sampler_name input")).to_have_value("DPM++ 2M")
        sync_api.expect(page.locator("#txt2img_hr_second_pass_steps input[type=number]")).to_have_value("10")
        sync_api.expect(page.locator("#txt2img_hr_scale input[type=number]")).to_have_value("2")
        sync_api.expect(page.locator("#txt2img_hr_checkpoint_name input")).to_have_value("Use same checkpoint")
        screenshot(page, "txt2img-hires-fix-pasted.png")

    assert shown == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"
    saved = sorted((data_dir / "outputs" / "extras-images").glob("*.png"))
    assert [path.name for path in saved] == ["00000.png"]
    with Image.open(saved[0]) as image:
        assert image.size == (96, 64)
        assert image.info["parameters"] == SOURCE_INFOTEXT
        assert image.info["extras"] == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"

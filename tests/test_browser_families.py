"""In a real browser: a tiny FLUX.1 pipeline is listed in the Models tab as FLUX.1, generates in txt2img with its
infotext, and a negative prompt is refused with FLUX's message."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from modules.models.detection import ModelArchitecture
from tests.browser_support import (
    GENERATION_SECONDS,
    browser_page,
    choose,
    running_webui,
    screenshot,
    set_number,
    webui_environment,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def flux_server(tmp_path: Path):
    from modules.tiny_model import build_tiny_pipeline, write_diffusers

    folder = tmp_path / "data" / "models" / "Stable-diffusion" / "flux"
    write_diffusers(build_tiny_pipeline(architecture=ModelArchitecture.FLUX), folder)
    with running_webui(tmp_path, [], webui_environment()) as served:
        yield served


def test_flux_txt2img_and_its_refusal_in_the_browser(flux_server: tuple[str, Path]) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    expect = sync_api.expect
    url, data_dir = flux_server
    with browser_page(url, height=1300) as page:
        expect(page.locator("#setting_sd_model_checkpoint input")).to_have_value("flux", timeout=30_000)
        page.locator("#txt2img_prompt textarea").fill("a (red:1.3) fox")
        set_number(page, "txt2img_width", 64)
        set_number(page, "txt2img_height", 64)
        set_number(page, "txt2img_steps", 2)
        choose(page, "txt2img_sampling", "Euler")
        page.click("#txt2img_generate")
        page.wait_for_selector("#txt2img_gallery img", timeout=GENERATION_SECONDS * 1000)
        expect(page.locator("#txt2img_infotext textarea")).to_have_value(
            re.compile(r"Model: flux"), timeout=GENERATION_SECONDS * 1000
        )
        expect(page.locator("#txt2img_status")).to_contain_text("prompt weights like (word:1.2) are not applied")
        screenshot(page, "flux-txt2img.png")

        page.locator("#txt2img_neg_prompt textarea").fill("blurry")
        page.click("#txt2img_generate")
        expect(page.locator("#txt2img_status")).to_contain_text(
            "FLUX.1 takes no negative prompt", timeout=GENERATION_SECONDS * 1000
        )

        page.get_by_role("tab", name="Models").click()
        expect(page.locator("body")).to_contain_text("FLUX.1", timeout=30_000)

    saved = sorted((data_dir / "outputs" / "txt2img-images").glob("*/*.png"))
    assert len(saved) == 1
    with Image.open(saved[0]) as image:
        assert image.size == (64, 64)
        assert "Sampler: Euler" in image.info["parameters"] and "Model: flux" in image.info["parameters"]

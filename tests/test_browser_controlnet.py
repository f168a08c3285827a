"""ControlNet in the browser: one unit driven from the upload to the result (the preview shows the preprocessor's
map, the job's infotext names the unit's model)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modules.models.checkpoint_writer import write_single_file
from modules.processing.infotext import parse_infotext, read_infotext
from modules.tiny_model import build_tiny_controlnet
from tests.browser_support import (
    GENERATION_SECONDS,
    browser_page,
    choose,
    running_webui,
    screenshot,
    set_number,
    webui_environment,
)

pytestmark = pytest.mark.browser
UNIT = "script_txt2img_controlnet_unit_0"


@pytest.fixture
def served(tmp_path: Path, tiny_pipeline) -> Iterator[tuple[str, Path]]:
    data = tmp_path / "data"
    (data / "models" / "Stable-diffusion").mkdir(parents=True)
    write_single_file(tiny_pipeline, data / "models" / "Stable-diffusion" / "tiny.safetensors")
    build_tiny_controlnet(tiny_pipeline.unet, seed=4).save_pretrained(data / "models" / "ControlNet" / "control_tiny")
    with running_webui(tmp_path, [], webui_environment()) as server:
        yield server


@pytest.mark.slow
def test_a_unit_from_upload_to_result(served: tuple[str, Path], tmp_path: Path) -> None:
    expect = pytest.importorskip("playwright.sync_api", reason="playwright is not installed").expect
    url, data_dir = served
    array = np.zeros((64, 64, 3), dtype=np.uint8)
    array[16:48, 16:48] = 255
    Image.fromarray(array).save(tmp_path / "square.png")
    with browser_page(url, height=1400) as page:
        set_number(page, "txt2img_width", 64)
        set_number(page, "txt2img_height", 64)
        set_number(page, "txt2img_steps", 2)
        page.locator("#script_txt2img_controlnet_accordion").click()
        page.locator(f"#{UNIT}").click()
        page.locator(f"#{UNIT}_enabled input").check()
        page.locator(f"#{UNIT}_image input[type=file]").set_input_files(tmp_path / "square.png")
        expect(page.locator(f"#{UNIT}_image img")).to_be_visible(timeout=30_000)
        choose(page, f"{UNIT}_module", "invert")
        model = page.locator(f"#{UNIT}_model")
        model.locator("input").click()
        page.get_by_role("option", name="control_tiny", exact=False).click()
        page.locator(f"#{UNIT}_preview_button").click()
        expect(page.locator(f"#{UNIT}_preview_image img")).to_be_visible(timeout=60_000)
        page.locator("#txt2img_prompt textarea").fill("a box")
        page.click("#txt2img_generate")
        page.wait_for_selector("#txt2img_gallery img, #txt2img_status .easel-error", timeout=GENERATION_SECONDS * 1000)
        error = page.locator("#txt2img_status .easel-error")
        assert error.count() == 0, error.inner_text()
        screenshot(page, "controlnet-unit.png")
    saved = sorted((data_dir / "outputs" / "txt2img-images").glob("*/*.png"))
    assert len(saved) == 1
    unit = parse_infotext(read_infotext(Image.open(saved[0])))["ControlNet 0"]
    assert unit.startswith("Module: invert, Model: control_tiny [") and "Weight: 1.0" in unit

"""img2img in the browser: a colour stroke painted in Sketch reaches the job's init image (saved by the
save_init_img setting), the Batch tab turns a server folder into outputs with infotext, and "Send to extras"
puts the selected image into Extras."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from modules.models.checkpoint_writer import write_single_file
from modules.processing.infotext import read_infotext
from tests.browser_support import (
    GENERATION_SECONDS,
    browser_page,
    running_webui,
    screenshot,
    set_number,
    webui_environment,
)

pytestmark = pytest.mark.browser

GREEN = (0, 160, 0)
SOURCE_INFOTEXT = "a green field\nNegative prompt: fog\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 64x64"


@pytest.fixture
def served(tmp_path: Path, tiny_pipeline) -> Iterator[tuple[str, Path]]:
    data = tmp_path / "data"
    (data / "models" / "Stable-diffusion").mkdir(parents=True)
    write_single_file(tiny_pipeline, data / "models" / "Stable-diffusion" / "tiny.safetensors")
    (data / "config.json").write_text(json.dumps({"save_init_img": True}), encoding="utf-8")
    (data / "batch_in").mkdir()
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", SOURCE_INFOTEXT)
    Image.new("RGB", (64, 64), GREEN).save(data / "batch_in" / "field.png", pnginfo=info)
    Image.new("RGB", (64, 64), (0, 0, 160)).save(data / "batch_in" / "sea.png")
    with running_webui(tmp_path, [], webui_environment()) as server:
        yield server


def small_img2img(page) -> None:
    set_number(page, "img2img_width", 64)
    set_number(page, "img2img_height", 64)
    set_number(page, "img2img_steps", 2)


def wait_for_images(page, tab: str) -> None:
    """The gallery shows images, or the status an error (then its message fails the test at once)."""
    page.wait_for_selector(f"#{tab}_gallery img, #{tab}_status .easel-error", timeout=GENERATION_SECONDS * 1000)
    error = page.locator(f"#{tab}_status .easel-error")
    assert error.count() == 0, error.inner_text()


def load_into_editor(page, editor: str, image: Path, attempts: int = 3) -> None:
    """Put ``image`` in the image editor and wait until it is on the canvas (the editor's history takes it: Undo is
    enabled). On a loaded machine the editor sometimes drops a file given before its canvas is ready: give it
    again then (painting on an editor without its image paints on nothing)."""
    undo = page.locator(f"#{editor} button[aria-label=Undo]")
    page.locator(f"#{editor} canvas").first.wait_for(state="attached", timeout=60_000)
    for _ in range(attempts):
        page.locator(f"#{editor} input[type=file]").set_input_files(image)
        try:
            undo.wait_for(state="visible", timeout=5_000)
            page.wait_for_function(
                "selector => !document.querySelector(selector).disabled",
                arg=f"#{editor} button[aria-label=Undo]",
                timeout=20_000,
            )
            return
        except Exception:  # Playwright's TimeoutError: the file was dropped, give it again
            continue
    raise AssertionError(f"the image editor #{editor} never showed the uploaded image")


def paint_stroke(page, editor: str) -> None:
    """A horizontal stroke through the middle of the editor's canvas with its default (red) brush."""
    box = page.locator(f"#{editor} canvas").first.bounding_box()
    middle_x, middle_y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(middle_x - 80, middle_y)
    page.mouse.down()
    page.mouse.move(middle_x + 80, middle_y, steps=12)
    page.mouse.up()


def test_sketch_batch_and_send_to_extras(served: tuple[str, Path], tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    expect = sync_api.expect
    url, data_dir = served
    Image.new("RGB", (64, 64), GREEN).save(tmp_path / "green.png")
    with browser_page(url, height=1200) as page:
        page.get_by_role("tab", name="img2img").click()
        page.get_by_role("tab", name="Sketch").click()
        load_into_editor(page, "img2img_sketch", tmp_path / "green.png")
        page.wait_for_timeout(500)
        paint_stroke(page, "img2img_sketch")
        page.wait_for_timeout(1000)
        small_img2img(page)
        page.click("#img2img_generate")
        wait_for_images(page, "img2img")
        screenshot(page, "img2img-sketch.png")
        saved_inits = sorted((data_dir / "outputs" / "init-images").glob("*.png"))

        page.get_by_role("tab", name="Batch").click()
        page.locator("#img2img_batch_input_dir :is(input, textarea)").fill("batch_in")
        page.locator("#img2img_batch_output_dir :is(input, textarea)").fill("batch_out")
        page.get_by_text("PNG info", exact=True).click()
        page.get_by_label("Append png info to prompts").check()
        page.locator("#img2img_prompt textarea").fill("painted")
        page.click("#img2img_generate")
        expect(page.locator("#img2img_status")).to_contain_text("saved in", timeout=GENERATION_SECONDS * 1000)
        screenshot(page, "img2img-batch.png")

        page.click("#img2img_send_to_img2img")  # from the Batch mode: the image and the img2img mode are shown
        expect(page.locator("#img2img_image img")).to_be_visible(timeout=30_000)
        page.click("#img2img_send_to_extras")
        expect(page.locator("#extras_image img")).to_be_visible(timeout=30_000)
        expect(page.get_by_role("tab", name="Single Image")).to_have_attribute("aria-selected", "true")

    assert len(saved_inits) == 1, saved_inits  # the Sketch job's
    pixels = np.asarray(Image.open(saved_inits[0]).convert("RGB")).reshape(-1, 3).astype(int)
    red = (pixels[:, 0] > 180) & (pixels[:, 1] < 90) & (pixels[:, 2] < 90)
    green = (pixels == GREEN).all(axis=1)
    assert red.sum() > 20, "the red stroke is in the init image the job got"
    assert green.sum() > 200, "the rest is the uploaded image (the editor's automatic brush is wide)"

    outputs = sorted(path.name for path in (data_dir / "batch_out").iterdir())
    assert outputs == ["field.png", "sea.png"]
    field_infotext = read_infotext(Image.open(data_dir / "batch_out" / "field.png"))
    assert field_infotext.startswith("painted a green field\n")
    assert read_infotext(Image.open(data_dir / "batch_out" / "sea.png")).startswith("painted\n")

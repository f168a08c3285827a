"""In a real browser, each family's tiny pipeline: the sampler dropdown offers the family's sampler(s) without the
user choosing one, Generate makes an image of the requested size whose infotext names the model, and a refusal of
the family is shown. FLUX.1 is the start checkpoint of its own server (also listed in the Models tab); SD 3.5,
Kandinsky 2.2 and DeepFloyd IF (stage I + II) share one server and are chosen in the top bar, one browser each."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from modules.models.detection import ModelArchitecture
from tests.browser_support import (
    GENERATION_SECONDS,
    browser_page,
    dropdown_options,
    running_webui,
    screenshot,
    set_number,
    sync_api,
    webui_environment,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

GENERATION_MS = GENERATION_SECONDS * 1000
SHARED_FAMILIES = (
    ModelArchitecture.SD3,
    ModelArchitecture.KANDINSKY22,
    ModelArchitecture.DEEPFLOYD_IF,
    ModelArchitecture.DEEPFLOYD_IF_II,
)


def write_family(architecture: ModelArchitecture | None, folder: Path) -> None:
    from modules.tiny_model import build_tiny_pipeline, write_diffusers

    write_diffusers(build_tiny_pipeline(architecture=architecture), folder)


@pytest.fixture
def flux_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    write_family(ModelArchitecture.FLUX, tmp_path / "data" / "models" / "Stable-diffusion" / "flux")
    with running_webui(tmp_path, [], webui_environment()) as served:
        yield served


@pytest.fixture(scope="module")
def families_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """One server with a tiny SD 1.x model (the start checkpoint) and the other families' pipelines."""
    root = tmp_path_factory.mktemp("browser-families")
    checkpoints_dir = root / "data" / "models" / "Stable-diffusion"
    write_family(None, checkpoints_dir / "a-tiny-sd")  # first in the list: loaded at start
    for architecture in SHARED_FAMILIES:
        write_family(architecture, checkpoints_dir / architecture.value)
    with running_webui(root, [], webui_environment()) as served:
        yield served


def expect() -> Any:
    return sync_api().expect


def generate(page: Any, checkpoint: str) -> None:
    """Generate in txt2img and wait for the infotext naming ``checkpoint``."""
    page.click("#txt2img_generate")
    page.wait_for_selector("#txt2img_gallery img", timeout=GENERATION_MS)
    infotext = page.locator("#txt2img_infotext textarea")
    expect()(infotext).to_have_value(re.compile(rf"Model: {re.escape(checkpoint)}"), timeout=GENERATION_MS)


def saved_images(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "outputs" / "txt2img-images").glob("*/*.png"), key=lambda path: path.stat().st_mtime)


def assert_last_image(data_dir: Path, size: tuple[int, int], *texts: str) -> None:
    with Image.open(saved_images(data_dir)[-1]) as image:
        assert image.size == size
        assert all(text in image.info["parameters"] for text in texts), image.info["parameters"]


def small_job(page: Any) -> None:
    set_number(page, "txt2img_width", 64)
    set_number(page, "txt2img_height", 64)
    set_number(page, "txt2img_steps", 2)


def switch_to(page: Any, checkpoint: str, sampler: str | None) -> None:
    """Choose ``checkpoint`` in the top bar; the sampler dropdown follows its family: ``sampler`` only (None: an SD
    model, every sampler)."""
    title = re.compile(rf"^{re.escape(checkpoint)}( \[[0-9a-f]+\])?$")  # a loaded checkpoint's title has its hash
    box = page.locator("#setting_sd_model_checkpoint input")
    box.click()
    box.fill(checkpoint)
    listed = re.compile(rf"{re.escape(checkpoint)}( \[[0-9a-f]+\])?$")  # after the selected one's ✓
    page.locator("#setting_sd_model_checkpoint [role=option]").filter(has_text=listed).first.click()
    expect()(box).to_have_value(title, timeout=GENERATION_MS)
    note = page.locator("#txt2img_sampling")
    if sampler is None:
        expect()(note).not_to_contain_text("only", timeout=30_000)
        return
    expect()(note).to_contain_text(f"runs with {sampler} only", timeout=30_000)
    expect()(page.locator("#txt2img_sampling input")).to_have_value(sampler, timeout=30_000)


def test_flux_txt2img_and_its_refusal_in_the_browser(flux_server: tuple[str, Path]) -> None:
    url, data_dir = flux_server
    with browser_page(url, height=1300) as page:
        expect()(page.locator("#setting_sd_model_checkpoint input")).to_have_value("flux", timeout=30_000)
        # no sampler chosen by the user: the tab lists FLUX.1's only one
        expect()(page.locator("#txt2img_sampling input")).to_have_value("Euler", timeout=30_000)
        assert dropdown_options(page, "txt2img_sampling") == ["Euler"]
        assert dropdown_options(page, "txt2img_scheduler") == ["Automatic"]
        negative = page.locator("#txt2img_neg_prompt textarea")
        expect()(negative).to_have_attribute("placeholder", re.compile("FLUX.1 takes no negative prompt"))
        page.locator("#txt2img_prompt textarea").fill("a (red:1.3) fox")
        small_job(page)
        generate(page, "flux")
        expect()(page.locator("#txt2img_status")).to_contain_text("prompt weights like (word:1.2) are not applied")
        screenshot(page, "flux-txt2img.png")

        negative.fill("blurry")
        page.click("#txt2img_generate")
        expect()(page.locator("#txt2img_status")).to_contain_text(
            "FLUX.1 takes no negative prompt", timeout=GENERATION_MS
        )

        page.get_by_role("tab", name="Models").click()
        expect()(page.locator("body")).to_contain_text("FLUX.1", timeout=30_000)

    assert len(saved_images(data_dir)) == 1
    assert_last_image(data_dir, (64, 64), "Sampler: Euler", "Model: flux")


def test_sd35_offers_euler_and_refuses_clip_skip(families_server: tuple[str, Path]) -> None:
    url, data_dir = families_server
    with browser_page(url, height=1300) as page:
        switch_to(page, "sd3", "Euler")
        assert dropdown_options(page, "txt2img_sampling") == ["Euler"]
        page.locator("#txt2img_prompt textarea").fill("a lighthouse")
        small_job(page)
        generate(page, "sd3")
        assert_last_image(data_dir, (64, 64), "Sampler: Euler", "Model: sd3")

        expect()(page.locator("#txt2img_clip_skip")).to_contain_text("CLIP skip does not apply")
        expect()(page.locator("#setting_CLIP_stop_at_last_layers")).to_contain_text("CLIP skip does not apply")
        set_number(page, "txt2img_clip_skip", 2)
        page.click("#txt2img_generate")
        expect()(page.locator("#txt2img_status")).to_contain_text(
            "CLIP skip does not apply to Stable Diffusion 3.5", timeout=GENERATION_MS
        )
        set_number(page, "txt2img_clip_skip", 1)

        # back to SD: every sampler again, the choice (Euler) kept
        switch_to(page, "a-tiny-sd", None)
        expect()(page.locator("#txt2img_sampling input")).to_have_value("Euler")
        assert len(dropdown_options(page, "txt2img_sampling")) > 10


def test_kandinsky_offers_ddim_and_refuses_a_pasted_sampler(families_server: tuple[str, Path]) -> None:
    url, data_dir = families_server
    with browser_page(url, height=1300) as page:
        switch_to(page, "kandinsky22", "DDIM")
        assert dropdown_options(page, "txt2img_sampling") == ["DDIM"]
        prompt = page.locator("#txt2img_prompt textarea")
        prompt.fill(
            "a red teapot\nSteps: 2, Sampler: Euler a, Schedule type: Karras, CFG scale: 4, Seed: 5, Size: 64x64, "
            "Model: kandinsky22"
        )
        page.click("#txt2img_paste")
        expect()(page.locator("body")).to_contain_text(
            "Kandinsky 2.2 runs with the DDIM sampler only; Euler a does not apply", timeout=30_000
        )
        expect()(prompt).to_have_value("a red teapot")
        expect()(page.locator("#txt2img_sampling input")).to_have_value("DDIM")
        generate(page, "kandinsky22")
        assert_last_image(data_dir, (64, 64), "Sampler: DDIM", "Steps: 2", "Model: kandinsky22")


def test_deepfloyd_if_stage_one_and_two_and_its_refusal(families_server: tuple[str, Path]) -> None:
    url, data_dir = families_server
    with browser_page(url, height=1300) as page:
        switch_to(page, "deepfloyd-if", "DDIM")
        assert dropdown_options(page, "txt2img_sampling") == ["DDIM"]
        page.locator("#txt2img_prompt textarea").fill("a green frog")
        small_job(page)
        generate(page, "deepfloyd-if")
        expect()(page.locator("#txt2img_status")).not_to_contain_text("the images are stage I's")
        assert_last_image(data_dir, (64, 64), "Sampler: DDIM", "Model: deepfloyd-if")

        set_number(page, "txt2img_clip_skip", 3)
        page.click("#txt2img_generate")
        expect()(page.locator("#txt2img_status")).to_contain_text(
            "CLIP skip does not apply to DeepFloyd IF", timeout=GENERATION_MS
        )

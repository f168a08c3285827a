"""The browser helpers of javascript/ in a real browser, keys pressed as a person presses them: Ctrl+Up/Down
weights, Ctrl+Enter, Escape, the paste and clear buttons, hints, the image viewer, generate forever with job-end
notifications, quicksettings (the VAE of the next job), a checkpoint switch without an error pop-up, a
localization file, the settings search and pages, per-setting reset, and the dark theme.

One webui.py (tiny checkpoint and a second VAE already in place) serves the tests of this file.
Set EASEL_BROWSER_SCREENSHOTS=<folder> to keep screenshots."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from safetensors.torch import save_file

from modules.models.checkpoint_writer import write_single_file
from modules.models.ldm_keys import convert_vae
from modules.processing.infotext import parse_infotext
from modules.tiny_model import build_tiny_pipeline
from tests.browser_support import browser_page, choose, running_webui, screenshot, set_number, webui_environment
from tests.helpers import kohya_lora

pytestmark = pytest.mark.browser

GENERATION_MS = 180_000
PASTED = (
    "a lighthouse at dusk\nNegative prompt: fog\n"
    "Steps: 7, Sampler: Euler a, Schedule type: Karras, CFG scale: 4.5, Seed: 1234, Size: 128x192"
)

LOCALIZATION = {"Sampling steps": "Pas d'échantillonnage"}
# The browser's notifications, recorded; the page counts as in the background (no focus).
FAKE_NOTIFICATIONS = """
window.easelNotices = [];
window.Notification = class {
    constructor(title, options) { window.easelNotices.push(options.body); }
    static get permission() { return "granted"; }
    static requestPermission() { return Promise.resolve("granted"); }
};
document.hasFocus = () => false;
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_pipeline) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("page")
    models = root / "data" / "models"
    (models / "Stable-diffusion").mkdir(parents=True)
    (models / "VAE").mkdir(parents=True)
    write_single_file(tiny_pipeline, models / "Stable-diffusion" / "tiny.safetensors")
    write_single_file(tiny_pipeline, models / "Stable-diffusion" / "tiny2.safetensors")
    (models / "Lora").mkdir(parents=True)
    save_file(kohya_lora(), str(models / "Lora" / "gamma_style.safetensors"))
    (root / "data" / "localizations").mkdir()
    (root / "data" / "localizations" / "fr-test.json").write_text(json.dumps(LOCALIZATION), encoding="utf-8")
    settings = {"localization": "fr-test", "browser_notifications": True}
    (root / "data" / "config.json").write_text(json.dumps(settings), encoding="utf-8")
    other = build_tiny_pipeline(seed=11).vae
    save_file(convert_vae(other.state_dict(), other.config), str(models / "VAE" / "other-vae.safetensors"))
    with running_webui(root, [], webui_environment()) as server:
        yield server


@pytest.fixture
def page(served: tuple[str, Path]):
    with browser_page(served[0], init_script=FAKE_NOTIFICATIONS) as page:
        page.wait_for_function("() => opts.keyedit_precision_attention === 0.1", timeout=30_000)
        yield page


def expect():
    return pytest.importorskip("playwright.sync_api").expect


def small_job(page, steps: int = 2, batch_count: int = 1) -> None:
    set_number(page, "txt2img_width", 64)
    set_number(page, "txt2img_height", 64)
    set_number(page, "txt2img_steps", steps)
    set_number(page, "txt2img_n_iter", batch_count)


def put_cursor(box, text: str, offset: int) -> None:
    box.fill(text)
    box.press("Home")
    for _ in range(offset):
        box.press("ArrowRight")


def test_prompt_keys_buttons_hints_and_viewer(page, served: tuple[str, Path]) -> None:
    prompt = page.locator("#txt2img_prompt textarea")
    put_cursor(prompt, "a cat sitting", 3)
    prompt.press("Control+ArrowUp")
    expect()(prompt).to_have_value("a (cat:1.1) sitting")
    prompt.press("Control+ArrowUp")
    expect()(prompt).to_have_value("a (cat:1.2) sitting")
    prompt.press("Control+ArrowDown")
    prompt.press("Control+ArrowDown")
    expect()(prompt).to_have_value("a cat sitting")  # unwrapped at 1.0
    put_cursor(prompt, "x <lora:style:0.8> [old] y", 5)
    prompt.press("Control+ArrowUp")
    expect()(prompt).to_have_value("x <lora:style:0.85> [old] y")
    prompt.press("End")
    for _ in range(4):
        prompt.press("ArrowLeft")
    prompt.press("Control+ArrowDown")
    expect()(prompt).to_have_value("x <lora:style:0.85> (old:0.8) y")

    expect()(page.locator("#txt2img_generate")).to_have_attribute("title", re.compile(r"Ctrl\+Enter"))

    prompt.fill(PASTED)
    page.click("#txt2img_paste")
    expect()(prompt).to_have_value("a lighthouse at dusk", timeout=30_000)
    expect()(page.locator("#txt2img_neg_prompt textarea")).to_have_value("fog")
    expect()(page.locator("#txt2img_steps input[type=number]")).to_have_value("7")
    expect()(page.locator("#txt2img_seed input")).to_have_value("1234")
    expect()(page.locator("#txt2img_height input[type=number]")).to_have_value("192")

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#txt2img_clear_prompt")
    expect()(prompt).to_have_value("")
    expect()(page.locator("#txt2img_neg_prompt textarea")).to_have_value("")

    put_cursor(prompt, "a red cube", 4)
    prompt.press("Control+ArrowUp")
    small_job(page, batch_count=2)
    prompt.press("Control+Enter")
    infotext = page.locator("#txt2img_infotext textarea")
    expect()(infotext).to_have_value(re.compile(r"^a \(red:1\.1\) cube\n"), timeout=GENERATION_MS)
    screenshot(page, "page-after-ctrl-enter.png")

    page.locator("#txt2img_gallery .thumbnail-item").nth(1).click()
    page.locator("#txt2img_gallery [data-testid=detailed-image]").click()
    viewer = page.locator("#lightboxModal")
    expect()(viewer).to_be_visible()
    first = viewer.get_attribute("data-index")
    page.keyboard.press("ArrowRight")
    expect()(viewer).not_to_have_attribute("data-index", first or "")
    zoomed = "zoomed" in (viewer.get_attribute("class") or "")
    page.keyboard.press("z")
    assert ("zoomed" in (viewer.get_attribute("class") or "")) is not zoomed
    page.keyboard.press("Escape")
    expect()(viewer).to_be_hidden()

    small_job(page, steps=150, batch_count=20)
    prompt.press("Control+Enter")
    expect()(page.locator("#txt2img_status")).to_contain_text("%", timeout=GENERATION_MS)  # running
    page.keyboard.press("Escape")
    expect()(page.locator("#txt2img_status")).to_contain_text("interrupted", timeout=GENERATION_MS)


def saved_images(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "outputs" / "txt2img-images").glob("*/*.png"))


def test_generate_forever_makes_jobs_until_cancelled(page, served: tuple[str, Path]) -> None:
    data_dir = served[1]
    before = len(saved_images(data_dir))
    page.locator("#txt2img_prompt textarea").fill("a blue sphere")
    small_job(page)
    page.click("#txt2img_generate", button="right")
    page.click("#txt2img_generate_forever")
    for _ in range(600):
        if len(saved_images(data_dir)) >= before + 3:
            break
        page.wait_for_timeout(500)
    assert len(saved_images(data_dir)) >= before + 3
    page.click("#txt2img_generate", button="right")
    page.click("#txt2img_cancel_generate_forever")
    page.wait_for_function("() => !easelRunningTabs.has('txt2img')", timeout=GENERATION_MS)
    stopped = len(saved_images(data_dir))
    page.wait_for_timeout(3000)  # a new job would have started within 200 ms of the last one's end
    assert len(saved_images(data_dir)) == stopped
    assert page.evaluate("() => easelRunningTabs.size") == 0
    notices = page.evaluate("() => window.easelNotices")
    assert len(notices) >= 3 and set(notices) == {"txt2img: the job has ended"}


def test_quicksettings_settings_page_and_theme(page, served: tuple[str, Path]) -> None:
    url, data_dir = served
    vae = page.locator("#setting_sd_vae input")
    vae.click()
    page.get_by_role("option", name="other-vae.safetensors", exact=True).click()
    page.wait_for_function("() => opts.sd_vae === 'other-vae.safetensors'", timeout=30_000)
    assert json.loads((data_dir / "config.json").read_text())["sd_vae"] == "other-vae.safetensors"
    page.locator("#txt2img_prompt textarea").fill("a green cone")
    small_job(page)
    page.click("#txt2img_generate")
    infotext = page.locator("#txt2img_infotext textarea")
    expect()(infotext).to_have_value(re.compile(r"^a green cone\n"), timeout=GENERATION_MS)
    assert parse_infotext(infotext.input_value())["VAE"] == "other-vae.safetensors"
    expect()(page.locator("#txt2img_steps")).to_contain_text("Pas d'échantillonnage")  # localizations/fr-test.json

    choose(page, "setting_sd_model_checkpoint", "tiny2.safetensors")
    checkpoint = page.locator("#setting_sd_model_checkpoint input")
    expect()(checkpoint).to_have_value(re.compile(r"^tiny2\.safetensors \[[0-9a-f]{10}\]$"), timeout=GENERATION_MS)
    page.wait_for_timeout(1000)
    expect()(page.get_by_text("not in the list of choices")).to_have_count(0)
    assert json.loads((data_dir / "config.json").read_text())["sd_model_checkpoint"].startswith("tiny2.safetensors")

    page.get_by_role("tab", name="Settings").click()
    steps_row = page.locator("#setting_row_default_steps")
    expect()(steps_row).to_be_hidden()  # on the "Defaults" page, not the first one
    page.get_by_label("Defaults", exact=True).check()
    expect()(steps_row).to_be_visible()
    expect()(page.locator("#setting_row_samples_save")).to_be_hidden()
    page.get_by_label("Show all pages", exact=True).check()
    expect()(page.locator("#setting_row_samples_save")).to_be_visible()
    search = page.locator("#settings_search textarea, #settings_search input").first
    search.fill("lightbox")
    expect()(page.locator("#setting_row_js_modal_lightbox")).to_be_visible()
    expect()(steps_row).to_be_hidden()
    search.fill("")
    page.get_by_label("Defaults", exact=True).check()
    steps = page.locator("#setting_default_steps input")
    steps.fill("33")
    page.click("#setting_default_steps_reset")
    expect()(steps).to_have_value("20")

    page.get_by_label("User interface", exact=True).check()
    theme = page.locator("#setting_theme input")
    theme.click()
    page.get_by_role("option", name="Dark", exact=True).click()
    page.click("#settings_apply")
    expect()(page.locator("#settings_status")).to_contain_text("changed", timeout=30_000)
    page.wait_for_function("() => document.body.classList.contains('dark')", timeout=30_000)
    screenshot(page, "settings-dark.png")
    page.goto(url + "?__theme=light")
    page.wait_for_function("() => typeof opts !== 'undefined' && opts.theme === 'Dark'", timeout=60_000)
    assert not page.evaluate("() => document.body.classList.contains('dark')")


def test_cards_under_the_img2img_prompt_insert_into_it(page) -> None:
    page.get_by_role("tab", name="img2img").click()
    prompt = page.locator("#img2img_prompt textarea")
    prompt.fill("a harbour")
    page.click("#img2img_extra_networks")
    cards = page.locator("#img2img_extra_networks_cards .easel-card")
    expect()(cards).to_have_count(1, timeout=30_000)
    cards.first.click()
    expect()(prompt).to_have_value("a harbour <lora:gamma_style:1>")
    page.click("#img2img_extra_networks")
    expect()(page.locator("#img2img_extra_networks_panel")).to_be_hidden()
    page.get_by_role("tab", name="txt2img").click()
    expect()(page.locator("#txt2img_prompt textarea")).not_to_have_value(re.compile("gamma_style"))


def test_alt_enter_skips_and_ctrl_enter_restarts_a_running_job(page) -> None:
    """A1111 v1.10.1's keys while a job runs: Alt+Enter skips to the next image of the batch, Ctrl+Enter
    interrupts the job and starts a new one with the page's current values."""
    prompt = page.locator("#txt2img_prompt textarea")
    status = page.locator("#txt2img_status")
    prompt.fill("the first job")
    small_job(page, steps=150, batch_count=2)
    prompt.press("Control+Enter")
    expect()(status).to_contain_text("Image 1/2", timeout=GENERATION_MS)
    prompt.press("Alt+Enter")
    expect()(status).to_contain_text("Image 2/2", timeout=GENERATION_MS)
    assert "interrupted" not in (status.text_content() or "")

    prompt.fill("the second job")
    small_job(page, steps=2, batch_count=1)
    prompt.press("Control+Enter")
    infotext = page.locator("#txt2img_infotext textarea")
    expect()(infotext).to_have_value(re.compile(r"^the second job\n"), timeout=GENERATION_MS)
    page.wait_for_function("() => !easelRunningTabs.has('txt2img')", timeout=GENERATION_MS)


def test_pasted_sampler_settings_fill_override_settings(page) -> None:
    """A1111's paste: infotext settings that differ from the current ones (ENSD, RNG, Eta) appear in the tab's
    "Override settings" and apply to its next job; a setting equal to the current one is not listed; a removed
    entry no longer applies; an infotext without them hides the box."""
    prompt = page.locator("#txt2img_prompt textarea")
    box = page.locator("#txt2img_override_settings")
    expect()(box).to_be_hidden()
    prompt.fill(
        "a harbour\nSteps: 2, Sampler: Euler a, Schedule type: Automatic, CFG scale: 5, Seed: 77, Size: 64x64, "
        "ENSD: 31337, RNG: CPU, Eta: 0.5, Sigma noise: 1.0"
    )
    page.click("#txt2img_paste")
    expect()(box).to_be_visible(timeout=30_000)
    for entry in ("ENSD: 31337", "RNG: CPU", "Eta: 0.5"):
        expect()(box).to_contain_text(entry)
    expect()(box).not_to_contain_text("Sigma noise")  # 1.0 is the current s_noise
    box.get_by_role("button", name="Remove").nth(2).click()  # the "×" of "Eta: 0.5"
    expect()(box).not_to_contain_text("Eta: 0.5")
    page.click("#txt2img_generate")
    infotext = page.locator("#txt2img_infotext textarea")
    expect()(infotext).to_have_value(re.compile(r"^a harbour\n"), timeout=GENERATION_MS)
    made = parse_infotext(infotext.input_value())
    assert made["ENSD"] == "31337" and made["RNG"] == "CPU" and "Eta" not in made

    prompt.fill("plain\nSteps: 2, Sampler: Euler, CFG scale: 5, Seed: 1, Size: 64x64")
    page.click("#txt2img_paste")
    expect()(box).to_be_hidden(timeout=30_000)

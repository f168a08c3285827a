"""In a real browser: the token counter follows typing (x/75 -> x/150), and styles apply into the prompt boxes
and are saved from them.

Runs webui.py as tests/test_browser.py does (no checkpoint: the counter uses the CLIP tokenizer in configs/).
Set EASEL_BROWSER_SCREENSHOTS=<folder> to keep screenshots.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from modules.prompts.styles import StyleDatabase
from tests.browser_support import browser_page, choose, screenshot

pytestmark = pytest.mark.browser

STYLES_CSV = (
    'name,prompt,negative_prompt\nOil,"oil painting, thick brush strokes",\nNoir,"film noir, {prompt}",colour\n'
)


def test_token_counter_and_styles_in_the_browser(server: tuple[str, Path]) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    expect = sync_api.expect
    url, data_dir = server
    with browser_page(url) as page:
        counter = page.locator("#txt2img_token_counter")
        expect(counter).to_have_text("0/75")

        prompt = page.locator("#txt2img_prompt textarea")
        prompt.click()
        prompt.press_sequentially("fox " * 80)  # key by key, as a person types
        expect(counter).to_have_text("80/150", timeout=30_000)
        page.locator("#txt2img_neg_prompt textarea").press_sequentially("ugly, blurry")
        expect(page.locator("#txt2img_negative_token_counter")).to_have_text("3/75", timeout=30_000)
        screenshot(page, "token-counter.png")

        (data_dir / "styles.csv").write_text(STYLES_CSV, encoding="utf-8")
        page.click("#txt2img_style_refresh")
        prompt.fill("a lighthouse")
        expect(counter).to_have_text("2/75", timeout=30_000)
        choose(page, "txt2img_styles", "Oil")
        choose(page, "txt2img_styles", "Noir")
        page.click("#txt2img_style_apply")
        expect(prompt).to_have_value("film noir, a lighthouse, oil painting, thick brush strokes", timeout=30_000)
        expect(page.locator("#txt2img_neg_prompt textarea")).to_have_value("ugly, blurry, colour")
        expect(counter).to_have_text("12/75", timeout=30_000)  # programmatic changes are counted too
        screenshot(page, "styles-applied.png")

        page.get_by_text("Styles editor").first.click()
        page.locator("#txt2img_style_name textarea").fill("Lighthouse noir")
        page.click("#txt2img_style_create")
        expect(page.locator("#txt2img_style_message")).to_contain_text("Saved style", timeout=30_000)

    saved = StyleDatabase.load(data_dir / "styles.csv")
    assert saved.names() == ["Oil", "Noir", "Lighthouse noir"]
    assert saved.get("Lighthouse noir").prompt == "film noir, a lighthouse, oil painting, thick brush strokes"

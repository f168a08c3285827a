"""The Extra Networks tab in a real browser: cards shown, search filters them, a LoRA card fills the prompt with
its activation text, and the card editor saves <name>.json (A1111's keys) that the next click follows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import save_file

from tests.browser_support import browser_page, screenshot
from tests.helpers import kohya_lora

pytestmark = pytest.mark.browser


def add_loras(data_dir: Path) -> None:
    lora_dir = data_dir / "models" / "Lora"
    (lora_dir / "people").mkdir(parents=True, exist_ok=True)
    save_file(kohya_lora(), str(lora_dir / "alpha_style.safetensors"), metadata={"ss_output_name": "alpha_style"})
    save_file(kohya_lora(seed=4), str(lora_dir / "people" / "beta_face.safetensors"))
    (lora_dir / "people" / "beta_face.json").write_text('{"description": "a face LoRA", "activation text": "betaface"}')


def test_extra_networks_tab(server: tuple[str, Path]) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    url, data_dir = server
    add_loras(data_dir)
    with browser_page(url) as page:
        page.locator("#txt2img_prompt textarea").fill("a castle")
        page.get_by_role("tab", name="Extra Networks").click()
        cards = page.locator("#extra_networks_cards .easel-card")
        sync_api.expect(cards).to_have_count(2, timeout=30_000)
        sync_api.expect(page.locator("#extra_networks_cards")).to_contain_text("a face LoRA")
        screenshot(page, "extra-networks.png")

        search = page.locator("#extra_networks_search textarea, #extra_networks_search input").first
        search.fill("beta")
        search.press("Enter")
        sync_api.expect(cards).to_have_count(1, timeout=30_000)
        sync_api.expect(cards.first).to_contain_text("beta_face")

        cards.first.click()
        prompt = page.locator("#txt2img_prompt textarea")
        # the activation text of beta_face.json follows the tag, as in A1111
        sync_api.expect(prompt).to_have_value("a castle <lora:beta_face:1> betaface", timeout=10_000)

        search.fill("alpha")
        search.press("Enter")
        sync_api.expect(cards).to_have_count(1, timeout=30_000)
        sync_api.expect(cards.first).to_contain_text("alpha_style", timeout=30_000)  # the new search shown
        cards.first.locator(".easel-card-edit").click()
        sync_api.expect(page.locator("#extra_networks_editor")).to_be_visible(timeout=30_000)
        page.locator("#extra_networks_edit_activation textarea").fill("alphastyle")
        weight = page.locator("#extra_networks_edit_weight input")
        weight.fill("0.7")
        page.locator("#extra_networks_edit_notes textarea").fill("from the editor")
        page.click("#extra_networks_edit_save")
        sync_api.expect(page.locator("#extra_networks_edit_message")).to_contain_text("Saved", timeout=30_000)
        # the txt2img tab is not shown: empty its prompt as a script would
        prompt.evaluate("(box) => { box.value = ''; box.dispatchEvent(new Event('input', {bubbles: true})); }")
        cards.first.click()
        sync_api.expect(prompt).to_have_value("<lora:alpha_style:0.7> alphastyle", timeout=10_000)

        # "Insert into" img2img: the next card goes to img2img's prompt, txt2img's stays as it was
        page.locator("#extra_networks_target").get_by_label("img2img").check()
        cards.first.click()
        sync_api.expect(page.get_by_role("tab", name="Extra Networks")).to_have_attribute(
            "aria-selected", "true", timeout=10_000
        )
        page.wait_for_timeout(500)
        page.get_by_role("tab", name="img2img", exact=True).click()
        img2img_prompt = page.locator("#img2img_prompt textarea")
        sync_api.expect(img2img_prompt).to_have_value("<lora:alpha_style:0.7> alphastyle", timeout=10_000)
        page.get_by_role("tab", name="txt2img", exact=True).click()
        sync_api.expect(prompt).to_have_value("<lora:alpha_style:0.7> alphastyle")
    saved = json.loads((data_dir / "models" / "Lora" / "alpha_style.json").read_text(encoding="utf-8"))
    assert saved["activation text"] == "alphastyle" and saved["preferred weight"] == 0.7
    assert saved["notes"] == "from the editor"

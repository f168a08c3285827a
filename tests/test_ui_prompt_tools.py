"""The prompt area's styles buttons and token counters, through their handlers and the built UI."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest

from modules.application import Application
from modules.cmd_args import build_parser
from modules.prompts.conditioning import prompt_encoder_of
from modules.prompts.styles import PromptStyle, StyleDatabase
from modules.ui import handlers, prompt_tools
from modules.ui.app import SENT_FIELDS, create_ui, pasted_fields
from modules.ui.prompt_tools import TokenCounter

REPO = Path(__file__).resolve().parent.parent
TOKENIZER = REPO / "configs" / "sd15" / "tokenizer"
COUNTER_NAMES = ("token_counter", "negative_token_counter")


@pytest.fixture
def database(tmp_path: Path) -> StyleDatabase:
    database = StyleDatabase.load(tmp_path / "styles.csv")
    database.save_style(PromptStyle("Cinematic", "cinematic still of {prompt}, film grain", "cartoon"))
    database.save_style(PromptStyle("Oil", "oil painting", ""))
    return database


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter(None, TOKENIZER)


def test_counter_without_model_grows_by_chunks(counter: TokenCounter) -> None:
    assert prompt_tools.count_text(counter, "", 20) == "0/75"
    assert prompt_tools.count_text(counter, "a red fox", 20) == "3/75"
    assert prompt_tools.count_text(counter, " ".join(["fox"] * 80), 20) == "80/150"
    assert prompt_tools.count_text(counter, " ".join(["fox"] * 160), 20) == "160/225"
    # A1111 counts the longest text of a schedule and leaves extra networks out
    assert counter.count("a [red fox:blue:5] <lora:x:1>", 20) == (3, 75)


def test_counter_uses_the_loaded_models_encoder(tmp_path: Path, tiny_pipeline) -> None:
    from modules.tiny_model import write_diffusers

    write_diffusers(tiny_pipeline, tmp_path / "models" / "Stable-diffusion" / "tiny")
    application = Application.create(build_parser().parse_args(["--data-dir", str(tmp_path)]))
    try:
        counter = TokenCounter(application.models, TOKENIZER)
        assert application.models.current is None
        without_model = counter.count("a (red:1.3) fox, BREAK sitting", 20)
        application.models.ensure_loaded("tiny")
        model = application.models.current
        assert model is not None
        assert counter.count("a (red:1.3) fox, BREAK sitting", 20) == prompt_encoder_of(model).count_tokens(
            "a (red:1.3) fox, BREAK sitting", 20
        )
        assert without_model[1] == 150  # BREAK starts a second chunk
    finally:
        application.service.shutdown()


def test_apply_styles_writes_the_boxes_and_unselects(database: StyleDatabase) -> None:
    prompt, negative, selected = prompt_tools.apply_styles_to_boxes(database, "a fox", "ugly", ["Oil", "Cinematic"])
    assert prompt == "cinematic still of a fox, oil painting, film grain"
    assert negative == "ugly, cartoon"
    assert selected == []
    assert prompt_tools.apply_styles_to_boxes(database, "a fox", "", []) == ("a fox", "", [])


def test_save_edit_delete_handlers(database: StyleDatabase) -> None:
    saved = prompt_tools.save_prompts_as_style(database, "Mine", "my {prompt}", "bad")
    assert not saved.error and saved.names == ["Cinematic", "Oil", "Mine"] and saved.selected == "Mine"
    taken = prompt_tools.save_prompts_as_style(database, "Oil", "x", "")
    assert taken.error and "exists already" in taken.message
    assert prompt_tools.save_prompts_as_style(database, "", "x", "").error

    assert prompt_tools.style_fields(database, "Mine") == ("Mine", "my {prompt}", "bad")
    edited = prompt_tools.edit_style(database, "Mine", "Yours", "your {prompt}", "")
    assert not edited.error and edited.names == ["Cinematic", "Oil", "Yours"]
    assert prompt_tools.edit_style(database, None, "x", "y", "").error

    deleted = prompt_tools.delete_style(database, "Yours")
    assert deleted.names == ["Cinematic", "Oil"] and not deleted.error
    assert prompt_tools.delete_style(database, "Yours").error
    assert StyleDatabase.load(database.path).names() == ["Cinematic", "Oil"]


def test_reload_reports_problems(database: StyleDatabase) -> None:
    with database.path.open("a", encoding="utf-8") as file:
        file.write("lonely\n")
    outcome = prompt_tools.reload_styles(database)
    assert outcome.error and "line 4" in outcome.message
    assert outcome.names == ["Cinematic", "Oil"]


def test_selected_styles_go_into_the_request(database: StyleDatabase) -> None:
    request = handlers.build_txt2img_request({"prompt": "a fox", "styles": ["Oil"], "width": 64, "height": 64})
    assert request.styles == ["Oil"]


def test_paste_selects_found_styles_and_strips_them(database: StyleDatabase) -> None:
    text = (
        "cinematic still of a fox, oil painting, film grain\nNegative prompt: ugly, cartoon\n"
        "Steps: 3, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64"
    )
    fields = pasted_fields(text, database)
    assert fields["styles"] == ["Oil", "Cinematic"]
    assert (fields["prompt"], fields["negative_prompt"]) == ("a fox", "ugly")
    plain = pasted_fields("a cat\nSteps: 3, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64", database)
    assert plain["styles"] == [] and plain["prompt"] == "a cat"  # stale selections are cleared
    assert "styles" in SENT_FIELDS


def test_every_generation_tab_has_styles_and_counters(tmp_path: Path) -> None:
    (tmp_path / "styles.csv").write_text("name,prompt,negative_prompt\nOil,oil painting,\n", encoding="utf-8")
    application = Application.create(build_parser().parse_args(["--data-dir", str(tmp_path)]))
    try:
        blocks = create_ui(application)
    finally:
        application.service.shutdown()
    by_id = {block.elem_id: block for block in blocks.blocks.values() if getattr(block, "elem_id", None)}
    for tab in ("txt2img", "img2img", "inpaint"):
        assert isinstance(by_id[f"{tab}_styles"], gr.Dropdown)
        assert by_id[f"{tab}_styles"].multiselect
        assert [choice[0] for choice in by_id[f"{tab}_styles"].choices] == ["Oil"]
        assert by_id[f"{tab}_token_counter"].value == "0/75"
        assert by_id[f"{tab}_negative_token_counter"].value == "0/75"
        for button in ("style_apply", "style_refresh", "style_create", "style_save", "style_delete"):
            assert isinstance(by_id[f"{tab}_{button}"], gr.Button)
    counters = {by_id[f"{tab}_{name}"] for tab in ("txt2img", "img2img", "inpaint") for name in COUNTER_NAMES}
    counting = [fn for fn in blocks.fns.values() if set(fn.outputs) & counters]
    assert len(counting) == 6
    for fn in counting:  # answered at once beside generation jobs; keystrokes during a count collapse into one
        assert fn.queue is False
        assert fn.trigger_mode == "always_last"
        assert [event for _, event in fn.targets] == ["change"]

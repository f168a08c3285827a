"""Prompt styles: A1111's styles.csv round trip, {prompt} placement, malformed rows, extraction, processing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from modules.cmd_args import build_parser
from modules.paths import DataPaths
from modules.processing.infotext import parse_infotext
from modules.processing.processing import ProcessingError, process
from modules.processing.requests import Txt2ImgRequest
from modules.prompts.styles import (
    PromptStyle,
    StyleDatabase,
    StyleError,
    UnknownStyleError,
    apply_style_texts,
    clean_text,
    parse_styles,
)
from tests import helpers

A1111_FILE = (
    "name,prompt,negative_prompt\r\n"
    '"Cinematic","cinematic still of {prompt}, film grain","cartoon, drawing"\r\n'
    'Oil,"oil painting, thick brush strokes",\r\n'
    'Sharp,"",blurry\r\n'
)


@pytest.fixture
def styles_path(tmp_path: Path) -> Path:
    path = tmp_path / "styles.csv"
    path.write_text(A1111_FILE, encoding="utf-8-sig")
    return path


def test_reads_a1111_file_with_bom(styles_path: Path) -> None:
    database = StyleDatabase.load(styles_path)
    assert database.names() == ["Cinematic", "Oil", "Sharp"]
    assert database.get("Cinematic") == PromptStyle(
        "Cinematic", "cinematic still of {prompt}, film grain", "cartoon, drawing"
    )
    assert database.problems == ()


def test_prompt_placeholder_wraps_and_plain_style_appends(styles_path: Path) -> None:
    database = StyleDatabase.load(styles_path)
    assert database.apply_styles_to_prompt("a fox", ["Cinematic"]) == "cinematic still of a fox, film grain"
    assert database.apply_styles_to_prompt("a fox", ["Oil"]) == "a fox, oil painting, thick brush strokes"
    # the first style is applied first, so the later one wraps it
    assert (
        database.apply_styles_to_prompt("a fox", ["Oil", "Cinematic"])
        == "cinematic still of a fox, oil painting, thick brush strokes, film grain"
    )
    assert database.apply_negative_styles_to_prompt("", ["Cinematic", "Sharp"]) == "cartoon, drawing, blurry"
    assert database.apply_negative_styles_to_prompt("ugly", ["Oil"]) == "ugly"


def test_a1111_cleanup_of_commas_and_spaces() -> None:
    assert apply_style_texts("", ["{prompt}, masterpiece"]) == "masterpiece"
    assert clean_text("a,, b  ,  c,  ") == "a, b , c"
    assert apply_style_texts("a  fox", []) == "a fox"


def test_unknown_style_is_a_clear_error(styles_path: Path) -> None:
    database = StyleDatabase.load(styles_path)
    with pytest.raises(UnknownStyleError, match=r"Unknown style 'Nope'.*Cinematic, Oil, Sharp"):
        database.apply_styles_to_prompt("a fox", ["Nope"])


def test_save_reload_edit_delete_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "styles.csv"
    database = StyleDatabase.load(path)
    assert database.names() == []
    tricky = PromptStyle("Quotes, commas", 'a "quoted" {prompt}, (x:1.2)\nsecond line', "bad, 'hands'")
    database.save_style(tricky)
    database.save_style(PromptStyle("  Plain  ", "plain style"))
    reloaded = StyleDatabase.load(path)
    assert reloaded.names() == ["Quotes, commas", "Plain"]
    assert reloaded.get("Quotes, commas") == tricky
    assert path.read_bytes().startswith(b"\xef\xbb\xbfname,prompt,negative_prompt\r\n")

    reloaded.edit_style("Quotes, commas", PromptStyle("Renamed", "new {prompt}", ""))
    again = StyleDatabase.load(path)
    assert again.names() == ["Renamed", "Plain"]  # the edited style keeps its place
    assert again.apply_styles_to_prompt("fox", ["Renamed", "Plain"]) == "new fox, plain style"

    again.delete_style("Renamed")
    assert StyleDatabase.load(path).names() == ["Plain"]
    assert (tmp_path / "sub" / "styles.csv.bak").exists()  # the previous file is kept, as A1111 does
    assert not [item for item in path.parent.iterdir() if item.suffix == ".tmp"]


def test_save_refuses_taken_or_bad_names(styles_path: Path) -> None:
    database = StyleDatabase.load(styles_path)
    with pytest.raises(StyleError, match="exists already"):
        database.save_style(PromptStyle("Oil", "x"))
    with pytest.raises(StyleError, match="name"):
        database.save_style(PromptStyle("   ", "x"))
    with pytest.raises(StyleError, match="comments"):
        database.save_style(PromptStyle("#hidden", "x"))
    with pytest.raises(StyleError, match="empty"):
        database.save_style(PromptStyle("Empty", " ", ""))
    with pytest.raises(StyleError, match="exists already"):
        database.edit_style("Oil", PromptStyle("Sharp", "x"))
    with pytest.raises(UnknownStyleError):
        database.delete_style("Nope")
    assert StyleDatabase.load(styles_path).names() == ["Cinematic", "Oil", "Sharp"]


def test_malformed_rows_are_reported_and_skipped_nothing_else_lost(tmp_path: Path) -> None:
    text = (
        "name, prompt, negative_prompt\n"
        'Good,"good {prompt}",bad\n'
        '"Broken quote,x,y\n'
        "After,after text,\n"
        "# a comment,x,y\n"
        "lonely\n"
        ",no name,z\n"
        "Too,many,fields,here\n"
        '"Q"x,1,2\n'
        'Multi,"line one\nline two",n\n'
        "\n"
        "Good,second good,\n"
    )
    path = tmp_path / "styles.csv"
    path.write_text(text, encoding="utf-8")
    database = StyleDatabase.load(path)
    assert database.names() == ["Good", "After", "Multi"]
    assert database.get("Good").prompt == "second good"  # A1111: the later row wins
    assert database.get("Multi").prompt == "line one\nline two"
    problems = "\n".join(database.problems)
    for line in (3, 6, 7, 8, 9, 13):
        assert f"styles.csv line {line}:" in problems
    assert "line 5" not in problems  # comments are no problem
    assert len(database.problems) == 6


def test_old_name_text_header_and_bad_header(tmp_path: Path) -> None:
    old = parse_styles("name,text\nOld,old style\n")
    assert old.styles == (PromptStyle("Old", "old style", ""),)
    bad = parse_styles("title,body\nX,y\n")
    assert bad.styles == ()
    assert "header" in bad.problems[0]


def test_extract_styles_undoes_apply(styles_path: Path) -> None:
    database = StyleDatabase.load(styles_path)
    for chosen in (["Cinematic"], ["Oil"], ["Oil", "Cinematic"], ["Cinematic", "Sharp"]):
        prompt = database.apply_styles_to_prompt("a (red:1.2) fox", chosen)
        negative = database.apply_negative_styles_to_prompt("ugly", chosen)
        found, bare_prompt, bare_negative = database.extract_styles_from_prompt(prompt, negative)
        assert found == chosen
        assert (bare_prompt, bare_negative) == ("a (red:1.2) fox", "ugly")
        assert database.apply_styles_to_prompt(bare_prompt, found) == prompt


def test_extract_leaves_unstyled_prompts_alone(styles_path: Path) -> None:
    database = StyleDatabase.load(styles_path)
    assert database.extract_styles_from_prompt("a fox", "ugly") == ([], "a fox", "ugly")
    # the prompt part matches but the negative part does not: no extraction (A1111)
    assert database.extract_styles_from_prompt("cinematic still of a fox, film grain", "ugly")[0] == []


def test_styles_file_flag_and_default_path(tmp_path: Path) -> None:
    assert DataPaths.create(tmp_path).styles_file == tmp_path.resolve() / "styles.csv"
    args = build_parser().parse_args(["--data-dir", str(tmp_path), "--styles-file", str(tmp_path / "my.csv")])
    paths = DataPaths.create(args.data_dir, styles_file=args.styles_file)
    assert paths.styles_file == (tmp_path / "my.csv").resolve()


# --- processing -------------------------------------------------------------------------------------------------


def styled_context(context, tmp_path: Path):
    path = tmp_path / "styles.csv"
    path.write_text(A1111_FILE, encoding="utf-8")
    return dataclasses.replace(context, paths=dataclasses.replace(context.paths, styles_path=path))


def tiny_request(**fields) -> Txt2ImgRequest:
    return helpers.tiny_request(**{"prompt": "", "negative_prompt": "", "steps": 2, "seed": 77, **fields})


def test_styles_reach_the_prompt_and_the_infotext(context, tmp_path: Path) -> None:
    styled = styled_context(context, tmp_path)
    result = process(tiny_request(prompt="a fox", negative_prompt="ugly", styles=["Cinematic", "Sharp"]), styled)
    by_hand = process(
        tiny_request(prompt="cinematic still of a fox, film grain", negative_prompt="ugly, cartoon, drawing, blurry"),
        styled,
    )
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(by_hand.images[0]))
    plain = process(tiny_request(prompt="a fox", negative_prompt="ugly"), styled)
    assert not np.array_equal(np.asarray(result.images[0]), np.asarray(plain.images[0]))
    parameters = parse_infotext(result.infotexts[0])
    assert parameters["Prompt"] == "cinematic still of a fox, film grain"
    assert parameters["Negative prompt"] == "ugly, cartoon, drawing, blurry"
    # pasting the infotext back finds the styles and the prompts the user typed
    database = StyleDatabase.load(styled.paths.styles_file)
    assert database.extract_styles_from_prompt(parameters["Prompt"], parameters["Negative prompt"]) == (
        ["Cinematic", "Sharp"],
        "a fox",
        "ugly",
    )


def test_unknown_style_in_a_request_is_a_processing_error(context, tmp_path: Path) -> None:
    with pytest.raises(ProcessingError, match="Unknown style 'Missing'"):
        process(tiny_request(prompt="a fox", styles=["Missing"]), styled_context(context, tmp_path))

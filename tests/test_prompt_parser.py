"""A1111 prompt syntax: attention, scheduling, AND, extra networks (pure Python, no model)."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modules import prompt_parser
from modules.processing.requests import MAX_PROMPT_CHARS
from modules.prompts.parser import (
    BREAK_SPLIT,
    extract_extra_networks,
    get_learned_conditioning_prompt_schedules,
    get_multicond_prompt_list,
    parse_prompt_attention,
    plan_prompt,
    split_and_prompts,
    split_weight,
)

# A1111's own documented examples (docstrings of modules/prompt_parser.py, webui 1.10)
ATTENTION_EXAMPLES = [
    ("normal text", [["normal text", 1.0]]),
    ("an (important) word", [["an ", 1.0], ["important", 1.1], [" word", 1.0]]),
    ("(unbalanced", [["unbalanced", 1.1]]),
    ("\\(literal\\]", [["(literal]", 1.0]]),
    ("(unnecessary)(parens)", [["unnecessaryparens", 1.1]]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ["a ", 1.0],
            ["house", 1.5730000000000004],
            [" ", 1.1],
            ["on", 1.0],
            [" a ", 1.1],
            ["hill", 0.55],
            [", sun, ", 1.1],
            ["sky", 1.4641000000000006],
            [".", 1.1],
        ],
    ),
]

SCHEDULE_EXAMPLES = [
    ("test", [[10, "test"]]),
    ("a [b:3]", [[3, "a "], [10, "a b"]]),
    ("a [b: 3]", [[3, "a "], [10, "a b"]]),
    ("a [[[b]]:2]", [[2, "a "], [10, "a [[b]]"]]),
    ("[(a:2):3]", [[3, ""], [10, "(a:2)"]]),
    ("a [b : c : 1] d", [[1, "a b  d"], [10, "a  c  d"]]),
    ("a[b:[c:d:2]:1]e", [[1, "abe"], [2, "ace"], [10, "ade"]]),
    ("a [unbalanced", [[10, "a [unbalanced"]]),
    ("a [b:.5] c", [[5, "a  c"], [10, "a b c"]]),
    ("((a][:b:c [d:3]", [[3, "((a][:b:c "], [10, "((a][:b:c d"]]),
    ("[a|(b:1.1)]", [[step, "a" if step % 2 else "(b:1.1)"] for step in range(1, 11)]),
    ("[fe|]male", [[step, "female" if step % 2 else "male"] for step in range(1, 11)]),
    ("[fe|||]male", [[step, "female" if step % 4 == 1 else "male"] for step in range(1, 11)]),
    # A1111's docstring lists "a [{b|d{:.5] c" as scheduled, but its 1.10 grammar rejects "|" outside an
    # alternation, so A1111 really returns the text unscheduled; so do we.
    ("a [{b|d{:.5] c", [[10, "a [{b|d{:.5] c"]]),
]


@pytest.mark.parametrize(("text", "expected"), ATTENTION_EXAMPLES)
def test_attention_matches_a1111_examples(text: str, expected: list) -> None:
    assert parse_prompt_attention(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", [["", 1.0]]),
        ("((a))", [["a", 1.2100000000000002]]),
        ("[a]", [["a", 1 / 1.1]]),
        ("(a:1.0) b", [["a b", 1.0]]),
        ("(a: 1.5 )", [["a", 1.5]]),
        ("a:1.5)", [["a:1.5)", 1.0]]),  # no open bracket: kept as text
        ("a \\\\ b", [["a \\ b", 1.0]]),
        ("a BREAK b", [["a", 1.0], ["BREAK", -1], ["b", 1.0]]),
        ("BREAK", [["", 1.0], ["BREAK", -1], ["", 1.0]]),
        ("aBREAKb (BREAKING)", [["aBREAKb ", 1.0], ["BREAKING", 1.1]]),
        ("(a:1.2.3)", [["a:1.2.3", 1.1]]),  # A1111 raises on this number; we keep it as text
        ("猫 (犬:1.2) ✨", [["猫 ", 1.0], ["犬", 1.2], [" ✨", 1.0]]),
    ],
)
def test_attention_tricky_input(text: str, expected: list) -> None:
    result = parse_prompt_attention(text)
    assert [piece[0] for piece in result] == [piece[0] for piece in expected]
    assert [piece[1] for piece in result] == pytest.approx([piece[1] for piece in expected])


def test_attention_merge_reconstructs_text() -> None:
    assert "".join(str(piece[0]) for piece in parse_prompt_attention("x (y) [z] ((w:0.5))")) == "x y z w"


@pytest.mark.parametrize(("text", "expected"), SCHEDULE_EXAMPLES)
def test_schedules_match_a1111_examples(text: str, expected: list) -> None:
    assert get_learned_conditioning_prompt_schedules([text], 10) == [expected]


@pytest.mark.parametrize(
    ("text", "hires_steps", "expected"),
    [
        ("a [b:.5] c", 10, [[10, "a b c"]]),  # the edit happened in the first pass
        ("a [b:1.5] c", 10, [[5, "a  c"], [10, "a b c"]]),  # 1.5: half-way through the hires pass
        ("a [b:15] c", 10, [[5, "a  c"], [10, "a b c"]]),  # integers count on from the base steps
        ("a [b:5] c", 10, [[10, "a b c"]]),
    ],
)
def test_hires_pass_schedules(text: str, hires_steps: int, expected: list) -> None:
    assert get_learned_conditioning_prompt_schedules([text], 10, hires_steps) == [expected]


def test_first_pass_clamps_a_hires_step_number() -> None:
    assert get_learned_conditioning_prompt_schedules(["a [b:15] c"], 10) == [[[10, "a  c"]]]


def test_old_scheduling_ignores_hires_offsets() -> None:
    assert get_learned_conditioning_prompt_schedules(["a [b:0.5]"], 10, 20, use_old_scheduling=True) == [
        [[5, "a "], [10, "a b"]]
    ]


def test_schedules_keep_order_and_duplicates() -> None:
    result = get_learned_conditioning_prompt_schedules(["x", "a [b:3]", "x"], 10)
    assert result == [[[10, "x"]], [[3, "a "], [10, "a b"]], [[10, "x"]]]
    result[0][0][1] = "changed"
    assert result[2] == [[10, "x"]]  # no shared lists between duplicates


@pytest.mark.parametrize(
    "text",
    ["a | b", "a [b:3] \\", "[[[[[[", "]]]]", "(((a", "[a:b:c:3]", "[a:]", "[:3]", "a [b:1e400] c", "[a:b:-1e400]"],
)
def test_schedule_tricky_input_does_not_raise(text: str) -> None:
    schedule = get_learned_conditioning_prompt_schedules([text], 10)[0]
    assert schedule[-1][0] == 10


def test_deep_nesting_is_plain_text() -> None:
    text = "[" * 3000 + "a:3" + "]" * 3000
    assert get_learned_conditioning_prompt_schedules([text], 10) == [[[10, text]]]


def test_long_prompt_parses_fast() -> None:
    words = ["(masterpiece:1.2)", "[blurry]", "a [cat:dog:0.5]", "((detailed))", "best quality,", "[red|blue] hair"]
    text = " ".join(words[index % len(words)] for index in range(1000))
    start = time.perf_counter()
    schedule = get_learned_conditioning_prompt_schedules([text], 20)[0]
    parse_prompt_attention(text)
    elapsed = time.perf_counter() - start
    assert len(schedule) == 20  # the alternation switches every step
    assert "cat" in schedule[0][1] and "dog" in schedule[-1][1]
    assert elapsed < 30, f"parsing a 1,000-word prompt took {elapsed:.1f} s"  # guards against Earley-like blowup


def test_and_split_with_weights() -> None:
    parts = split_and_prompts("a cat AND a dog :0.8 AND bird: -1.5")
    assert [(part.text, part.weight) for part in parts] == [("a cat", 1.0), (" a dog", 0.8), (" bird", -1.5)]
    assert [part.text for part in split_and_prompts("ANDROID and sand")] == ["ANDROID and sand"]


def test_multicond_prompt_list_a1111_shape() -> None:
    indexes, flat, lookup = get_multicond_prompt_list(["a AND b :2", "b :3 AND c"])
    assert flat == ["a", " b", "b", " c"]
    assert indexes == [[(0, 1.0), (1, 2.0)], [(2, 3.0), (3, 1.0)]]
    assert lookup == {"a": 0, " b": 1, "b": 2, " c": 3}


def test_extra_networks_removed_and_collected() -> None:
    text, tags = extract_extra_networks("a <lora:film grain:0.6:unet=0.3> cat <hypernet:x> <bad tag> <lora:>")
    assert text == "a  cat  <bad tag> <lora:>"
    assert [(tag.kind, tag.name, tag.args, dict(tag.named)) for tag in tags] == [
        ("lora", "film grain", ("0.6",), {"unet": "0.3"}),
        ("hypernet", "x", (), {}),
    ]
    assert tags[0].items == ("film grain", "0.6", "unet=0.3")


def test_plan_prompt_order_networks_and_schedule() -> None:
    plan = plan_prompt("<lora:x:1>a [b:c:2] AND d :0.5", 4)
    assert [tag.name for tag in plan.extra_networks] == ["x"]
    assert [part.weight for part in plan.sub_prompts] == [1.0, 0.5]
    assert [(entry.end_at_step, entry.text) for entry in plan.sub_prompts[0].schedule] == [(2, "a b"), (4, "a c")]
    negative = plan_prompt("x AND y", 4, split_and=False)
    assert [entry.text for entry in negative.sub_prompts[0].schedule] == ["x AND y"]


def test_a1111_import_path() -> None:
    assert prompt_parser.parse_prompt_attention("(a)") == [["a", 1.1]]
    assert prompt_parser.get_learned_conditioning_prompt_schedules(["a [b:3]"], 10, hires_steps=None) == [
        [[3, "a "], [10, "a b"]]
    ]
    assert prompt_parser.re_AND.split("a AND b") == ["a ", " b"]


SYNTAX_PIECES = st.sampled_from([*"ab :[]()|\\1.5-e\n", "BREAK", " AND ", "<lora:x:1>", "é"])


@settings(max_examples=300, deadline=None)
@given(st.lists(SYNTAX_PIECES, max_size=30).map("".join))
def test_never_raises_on_prompt_syntax(text: str) -> None:
    pieces = parse_prompt_attention(text)
    assert all(isinstance(piece[0], str) and isinstance(piece[1], float) for piece in pieces)
    schedule = get_learned_conditioning_prompt_schedules([text], 10, 5)[0]
    assert schedule[-1][0] == 5 and all(1 <= entry[0] <= 5 for entry in schedule)
    plan = plan_prompt(text, 10)
    assert plan.sub_prompts


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_never_raises_on_any_string(text: str) -> None:
    parse_prompt_attention(text)
    get_learned_conditioning_prompt_schedules([text], 7)
    plan_prompt(text, 7, 3)


# --- linear parsing (issue 20): the same results as A1111's regexes, and hostile text parsed quickly ----------

A1111_SUBPROMPT_WEIGHT = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")
A1111_BREAK_SPLIT = re.compile(r"\s*\bBREAK\b\s*", re.DOTALL)
A1111_EXTRA_NETWORK_TAG = re.compile(r"<(\w+):([^>]+)>")
PROMPT_PIECES = st.sampled_from(
    ["a", "b c", " ", "\n", "\t", "\u3000", ":", "1", ".5", "-", "+", "AND", "BREAK", "<", ">", "<lora:x:1>", "(", ")"]
)


@settings(max_examples=500, deadline=None)
@given(st.lists(PROMPT_PIECES, max_size=12).map("".join))
def test_weight_split_matches_a1111_regex(part: str) -> None:
    match = A1111_SUBPROMPT_WEIGHT.search(part)
    assert match is not None
    assert split_weight(part) == match.groups()


@settings(max_examples=500, deadline=None)
@given(st.lists(PROMPT_PIECES, max_size=12).map("".join))
def test_break_and_tags_match_a1111_regexes(text: str) -> None:
    assert BREAK_SPLIT.split(text) == A1111_BREAK_SPLIT.split(text)
    tags: list[tuple[str, str]] = []
    expected = A1111_EXTRA_NETWORK_TAG.sub(lambda match: tags.append(match.groups()) or "", text)
    remaining, found = extract_extra_networks(text)
    assert remaining == expected
    assert [(tag.kind, ":".join(tag.items)) for tag in found] == tags


HOSTILE_PROMPTS = {
    "spaces then a letter": " " * 1_000_000 + "x",
    "a colon between spaces": " " * 500_000 + ":" + " " * 500_000 + "x",
    "unclosed tags": "<a:" * 333_333,
    "digits after a colon": ":" + "1" * 1_000_000 + "x",
    "blank BREAK runs": "  BREAKx" * 125_000,
}


@pytest.mark.timeout(5)  # a guard, not a measure: A1111's regexes take minutes on these
@pytest.mark.parametrize("text", HOSTILE_PROMPTS.values(), ids=HOSTILE_PROMPTS.keys())
def test_megabyte_of_hostile_prompt_parses(text: str) -> None:
    plan = plan_prompt(text, 20)
    assert plan.original == text
    assert [part.weight for part in plan.sub_prompts] == [1.0]
    kept = "".join(str(piece[0]) for piece in parse_prompt_attention(text) if piece[1] != -1)
    assert 0 < len(kept) <= len(text)


@pytest.mark.timeout(5)
def test_megabyte_of_unclosed_brackets_schedules() -> None:
    text = "[a:" * 333_333
    assert get_learned_conditioning_prompt_schedules([text], 20) == [[[20, text]]]


@pytest.mark.timeout(5)
def test_deeply_nested_attention_at_the_prompt_cap_parses() -> None:
    text = "(a" * (MAX_PROMPT_CHARS // 2)
    pieces = parse_prompt_attention(text)
    assert pieces[0][0] == "a" and pieces[0][1] == pytest.approx(1.1)
    assert pieces[-1][1] == float("inf")  # 1.1 ** 16384 overflows, as A1111's Python floats do

"""javascript/edit-attention.js's weight editing as a function, run by Node.js (skipped without it): the cases of
A1111's Ctrl+Up/Down behaviour. tests/test_browser_page.py presses the real keys."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.helpers import REPO_ROOT

# (text, selection start, selection end, up, settings) -> (text, selection start, selection end) or None
CASES = [
    ("a cat sitting", 3, 3, True, {}, ("a (cat:1.1) sitting", 3, 6)),
    ("a (cat:1.1) sitting", 5, 5, True, {}, ("a (cat:1.2) sitting", 3, 6)),
    ("a (cat:1.1) sitting", 5, 5, False, {}, ("a cat sitting", 2, 5)),  # 1.0 unwraps
    ("a (cat) sitting", 4, 4, True, {}, ("a (cat:1.2) sitting", 3, 6)),  # old (emphasis) is 1.1 first
    ("a ((cat)) sitting", 5, 5, False, {}, ("a (cat:1.1) sitting", 3, 6)),  # 1.21 -> 1.2, then down
    ("a [cat] sitting", 4, 4, False, {}, ("a (cat:0.8) sitting", 3, 6)),
    ("a [cat] sitting", 4, 4, True, {}, ("a cat sitting", 2, 5)),
    ("x <lora:style:0.8> y", 8, 8, True, {}, ("x <lora:style:0.85> y", 3, 13)),
    ("x <lora:style:1> y", 8, 8, False, {}, ("x <lora:style:0.95> y", 3, 13)),  # never unwrapped
    ("a big cat, sitting", 2, 9, True, {}, ("a (big cat:1.1), sitting", 3, 10)),  # a selection
    ("a big cat , sitting", 2, 10, True, {}, ("a (big cat:1.1) , sitting", 3, 10)),  # trailing space left out
    ("a cat", 3, 3, True, {"keyedit_precision_attention": 0.05}, ("a (cat:1.05)", 3, 6)),
    ("a-cat sitting", 3, 3, True, {}, ("(a-cat:1.1) sitting", 1, 6)),
    ("a-cat sitting", 3, 3, True, {"keyedit_delimiters": "- "}, ("a-(cat:1.1) sitting", 3, 6)),
    ("", 0, 0, True, {}, None),
    ("a (cat:x) b", 5, 5, True, {}, ("a (cat:x:1.2) b", 3, 8)),  # no number: the block is the text, as A1111
]

RUNNER = """
const fs = require("fs");
global.addEventListener = () => {};
global.HTMLTextAreaElement = function () {};
eval(fs.readFileSync(process.argv[1], "utf8") + "; global.easelEditAttention = easelEditAttention;");
const cases = JSON.parse(fs.readFileSync(0, "utf8"));
const results = cases.map(([text, start, end, up, settings]) => {
    const edit = easelEditAttention(text, start, end, up, settings);
    return edit === null ? null : [edit.text, edit.start, edit.end];
});
process.stdout.write(JSON.stringify(results));
"""


def test_edit_attention_cases() -> None:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("Node.js is not installed; tests/test_browser_page.py covers the keys in a browser")
    script = REPO_ROOT / "javascript" / "edit-attention.js"
    given = json.dumps([case[:5] for case in CASES])
    completed = subprocess.run(
        [node, "-e", RUNNER, str(script)], input=given, capture_output=True, text=True, timeout=60, check=True
    )
    results = json.loads(completed.stdout)
    for case, result in zip(CASES, results, strict=True):
        expected = list(case[5]) if case[5] is not None else None
        assert result == expected, case

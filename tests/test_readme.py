"""The README is the user's first page: every command-line flag is documented there."""

from __future__ import annotations

from pathlib import Path

from modules.cmd_args import build_parser

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_flag_is_in_the_readme():
    text = README.read_text(encoding="utf-8")
    flags = {option for action in build_parser()._actions for option in action.option_strings}
    missing = sorted(flag for flag in flags if flag.startswith("--") and flag != "--help" and f"`{flag}" not in text)
    assert missing == []

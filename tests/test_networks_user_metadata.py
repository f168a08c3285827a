"""A1111's <name>.json beside an extra network: read, merged on save (unknown keys kept), and the text a card
click inserts (preferred weight, activation text, negative text)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modules.networks.user_metadata import (
    lora_prompt,
    negative_prompt,
    read_user_metadata,
    sidecar_path,
    write_user_metadata,
)


def test_save_merges_into_the_json_beside_the_file(tmp_path: Path) -> None:
    lora = tmp_path / "style.v2.safetensors"
    lora.write_bytes(b"weights")
    assert sidecar_path(lora) == tmp_path / "style.v2.json"
    assert read_user_metadata(lora) == {}
    sidecar_path(lora).write_text('{"sd version": "SD1", "description": "old"}', encoding="utf-8")
    saved = write_user_metadata(
        lora, {"description": " new ", "activation text": "stylish", "preferred weight": "0.7", "notes": "n"}
    )
    on_disk = json.loads(sidecar_path(lora).read_text(encoding="utf-8"))
    assert on_disk == saved
    assert on_disk == {
        "sd version": "SD1",
        "description": "new",
        "activation text": "stylish",
        "preferred weight": 0.7,
        "notes": "n",
    }


def test_bad_values_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    lora = tmp_path / "x.safetensors"
    lora.write_bytes(b"weights")
    with pytest.raises(ValueError, match="preferred weight"):
        write_user_metadata(lora, {"preferred weight": "heavy"})
    with pytest.raises(ValueError, match="unknown"):
        write_user_metadata(lora, {"path": "/etc/passwd"})
    assert not sidecar_path(lora).exists()


def test_unreadable_json_reads_as_empty(tmp_path: Path) -> None:
    lora = tmp_path / "x.safetensors"
    lora.write_bytes(b"weights")
    sidecar_path(lora).write_text("[1, 2", encoding="utf-8")
    assert read_user_metadata(lora) == {}


def test_inserted_text_as_a1111() -> None:
    assert lora_prompt("style", {}) == "<lora:style:1>"
    assert lora_prompt("style", {"preferred weight": 0.0}) == "<lora:style:1>"  # 0: not set
    assert lora_prompt("style", {"preferred weight": 0.65, "activation text": "ink, sketch"}) == (
        "<lora:style:0.65> ink, sketch"
    )
    assert negative_prompt({"negative text": "blurry"}) == "(blurry:1)"
    assert negative_prompt({}) == ""

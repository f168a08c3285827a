"""ui-config.json: remembered control values, A1111 keys, atomic writes, broken files."""

from __future__ import annotations

import json
from pathlib import Path

from modules.ui.ui_config import UiConfig, ui_key


def test_round_trip_keeps_other_keys(tmp_path: Path) -> None:
    path = tmp_path / "ui-config.json"
    path.write_text(json.dumps({"extension/Thing/value": 3}), encoding="utf-8")
    config = UiConfig.load(path)
    config.update({ui_key("txt2img", "Prompt"): "a cat", ui_key("txt2img", "Sampling steps"): 2})
    reloaded = UiConfig.load(path)
    assert reloaded.get("txt2img/Prompt/value", "") == "a cat"
    assert reloaded.get("txt2img/Sampling steps/value", 20) == 2
    assert reloaded.get("extension/Thing/value", 0) == 3
    assert [item.name for item in tmp_path.iterdir()] == ["ui-config.json"]  # no temporary file left


def test_missing_and_broken_files_give_defaults(tmp_path: Path) -> None:
    assert UiConfig.load(tmp_path / "absent.json").get("txt2img/Prompt/value", "x") == "x"
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    config = UiConfig.load(broken)
    assert config.get("txt2img/Width/value", 512) == 512
    assert broken.read_text(encoding="utf-8") == "{not json"  # left for the user to look at


def test_value_of_the_wrong_type_is_ignored(tmp_path: Path) -> None:
    config = UiConfig(tmp_path / "ui-config.json", {"a/Width/value": "wide", "a/CFG Scale/value": 7, "a/B/value": 1})
    assert config.get("a/Width/value", 512) == 512
    assert config.get("a/CFG Scale/value", 7.5) == 7  # an int stands for a float
    assert config.get("a/B/value", False) is False  # 1 is not a checkbox value


def test_update_writes_only_on_change(tmp_path: Path) -> None:
    path = tmp_path / "ui-config.json"
    config = UiConfig(path)
    config.update({"t/Seed/value": -1})
    first = path.stat().st_mtime_ns
    path.write_text(json.dumps({"t/Seed/value": -1, "marker": True}), encoding="utf-8")
    config.update({"t/Seed/value": -1})
    assert json.loads(path.read_text(encoding="utf-8"))["marker"] is True
    assert first > 0

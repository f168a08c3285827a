"""A1111's user metadata of an extra network: ``<name>.json`` beside the file, with the keys A1111's card editor
writes ("description", "activation text", "preferred weight", "negative text", "notes", "sd version"), and the
text a card click inserts from it. Keys this editor does not know are kept when it saves."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modules.options import write_json_atomic

logger = logging.getLogger(__name__)

EDITED_KEYS = ("description", "activation text", "preferred weight", "negative text", "notes")


def sidecar_path(path: Path) -> Path:
    """``models/Lora/x.safetensors`` -> ``models/Lora/x.json`` (a folder ``x`` -> ``x.json`` beside it)."""
    stem = path.name[: -len(path.suffix)] if path.suffix and path.is_file() else path.name
    return path.with_name(stem + ".json")


def read_user_metadata(path: Path) -> dict[str, Any]:
    """The JSON object beside ``path``; {} when there is none or it is unreadable (logged)."""
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return {}
    try:
        loaded = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        logger.warning("user metadata unreadable path=%s error=%s", sidecar, error)
        return {}
    return loaded if isinstance(loaded, dict) else {}


def clean_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Text fields stripped; "preferred weight" a number (0 = not set, as A1111); unknown keys refused."""
    unknown = sorted(set(changes) - set(EDITED_KEYS))
    if unknown:
        raise ValueError(f"unknown metadata keys: {', '.join(unknown)}")
    cleaned: dict[str, Any] = {key: str(value or "").strip() for key, value in changes.items()}
    if "preferred weight" in changes:
        try:
            cleaned["preferred weight"] = float(changes["preferred weight"] or 0.0)
        except (TypeError, ValueError) as error:
            raise ValueError(f"preferred weight must be a number, got {changes['preferred weight']!r}") from error
    return cleaned


def write_user_metadata(path: Path, changes: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``changes`` into the JSON beside ``path`` (atomically); returns what the file now holds."""
    data = {**read_user_metadata(path), **clean_changes(changes)}
    write_json_atomic(sidecar_path(path), data)
    logger.info("user metadata saved path=%s", sidecar_path(path))
    return data


def format_weight(weight: float) -> str:
    return f"{weight:g}"


def lora_prompt(name: str, user: Mapping[str, Any]) -> str:
    """``<lora:name:weight>`` (the preferred weight, else 1) followed by the activation text, as A1111 inserts."""
    try:
        weight = float(user.get("preferred weight") or 0.0)
    except (TypeError, ValueError):
        weight = 0.0
    text = f"<lora:{name}:{format_weight(weight) if weight else '1'}>"
    activation = str(user.get("activation text") or "").strip()
    return f"{text} {activation}" if activation else text


def negative_prompt(user: Mapping[str, Any]) -> str:
    """A1111 adds the "negative text" to the negative prompt as ``(text:1)``; "" when there is none."""
    text = str(user.get("negative text") or "").strip()
    return f"({text}:1)" if text else ""

"""Settings that extensions add (A1111's ``shared.opts.add_option``), described without Gradio: the API's
``/options``, the Settings tab and per-request overrides read them; their values are saved in config.json beside
Easel's own settings (whose save keeps keys it does not know, and the other way round here)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modules.options import write_json_atomic

logger = logging.getLogger(__name__)

KINDS = ("checkbox", "number", "slider", "text", "dropdown", "radio", "multiselect")


@dataclass(frozen=True)
class ExtensionSetting:
    """One setting: its key, default, label, the Settings page it goes on, and how it is edited (``kind``)."""

    key: str
    default: Any
    label: str = ""
    section: str = "Extensions"
    kind: str = "text"
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    infotext: str | None = None  # the infotext key that carries this setting (A1111's OptionInfo infotext)

    def convert(self, value: Any) -> Any:
        """A value sent by the API, the UI or a request, as the setting holds it (the default's type); ValueError
        when it is not one."""
        default = self.default
        if self.kind == "multiselect" or isinstance(default, list):
            if isinstance(value, str):
                value = [item.strip() for item in value.split(",") if item.strip()]
            return [str(item) for item in value or []]
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.strip().lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                    raise ValueError(f"{self.key}: expected true or false, got {value!r}")
                return value.strip().lower() in ("true", "1", "yes", "on")
            return bool(value)
        if isinstance(default, int | float) or self.kind in ("slider", "number"):
            number = float(value)
            return int(number) if isinstance(default, int) and number.is_integer() else number
        text = "" if value is None else str(value)
        if self.kind in ("dropdown", "radio") and self.choices and text not in self.choices:
            raise ValueError(f"{self.key}: {text!r} is not one of {', '.join(self.choices)}")
        return text


class ExtensionSettings:
    """Every extension setting with its current value; one lock for changes."""

    def __init__(self, config_file: Path | None = None) -> None:
        self.config_file = config_file
        self.settings: dict[str, ExtensionSetting] = {}
        self.values: dict[str, Any] = {}
        self._saved: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def __contains__(self, key: object) -> bool:
        return key in self.settings

    def add(self, setting: ExtensionSetting) -> None:
        """Register a setting; a value saved in config.json (an earlier run) becomes its value."""
        self.settings[setting.key] = setting
        saved = self._saved_values().get(setting.key)
        if saved is not None and setting.key not in self.values:
            try:
                self.values[setting.key] = setting.convert(saved)
            except (TypeError, ValueError):
                logger.warning("extension setting saved value unreadable key=%s value=%r", setting.key, saved)

    def value(self, key: str, overrides: Mapping[str, Any] | None = None) -> Any:
        """The value for a job whose request overrides some settings (``overrides``), else the saved one."""
        if overrides and key in overrides:
            return overrides[key]
        return self.values.get(key, self.settings[key].default)

    def data(self) -> dict[str, Any]:
        return {key: self.value(key) for key in self.settings}

    def converted(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """``changes`` checked and typed (every key must be an extension setting); ValueError names the first bad."""
        unknown = sorted(set(changes) - set(self.settings))
        if unknown:
            raise ValueError(f"unknown extension settings: {', '.join(unknown)}")
        try:
            return {key: self.settings[key].convert(value) for key, value in changes.items()}
        except TypeError as error:
            raise ValueError(str(error)) from error

    def update(self, changes: Mapping[str, Any]) -> list[str]:
        """Check, apply and save ``changes``; returns the keys whose value changed."""
        typed = self.converted(changes)
        with self._lock:
            changed = [key for key, value in typed.items() if self.value(key) != value]
            self.values.update(typed)
            self._save()
        return changed

    def sections(self) -> list[tuple[str, list[ExtensionSetting]]]:
        """The settings grouped by Settings page, in the order they were added."""
        pages: dict[str, list[ExtensionSetting]] = {}
        for setting in self.settings.values():
            pages.setdefault(setting.section, []).append(setting)
        return list(pages.items())

    def _saved_values(self) -> dict[str, Any]:
        if self._saved is None:
            self._saved = read_json(self.config_file)
        return self._saved

    def _save(self) -> None:
        if self.config_file is None:
            return
        existing = read_json(self.config_file)
        existing.update(self.values)
        write_json_atomic(self.config_file, existing)


def read_json(path: Path | None) -> dict[str, Any]:
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def choices_of(values: Sequence[Any] | None) -> tuple[str, ...]:
    """Choice labels from what an extension gives (strings, or (label, value) pairs as Gradio takes them)."""
    return tuple(str(item[0] if isinstance(item, tuple | list) else item) for item in values or ())


def infotext_overrides(settings: ExtensionSettings, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """A1111's ``infotext_to_setting``: the settings whose infotext key an infotext has, with the written values."""
    return {
        key: parameters[setting.infotext]
        for key, setting in settings.settings.items()
        if setting.infotext and setting.infotext in parameters
    }

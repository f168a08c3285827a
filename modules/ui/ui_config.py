"""ui-config.json: the last values of the UI controls, under A1111's keys ("txt2img/Prompt/value")."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from pathlib import Path

from modules.options import write_json_atomic

logger = logging.getLogger(__name__)


def ui_key(tab: str, label: str) -> str:
    """A1111's key for a control's remembered value."""
    return f"{tab}/{label}/value"


class UiConfig:
    """Remembered control values; read once at start, written atomically after each change."""

    def __init__(self, path: Path, values: Mapping[str, object] | None = None) -> None:
        self.path = path
        self._values: dict[str, object] = dict(values or {})
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path) -> UiConfig:
        """Read the file; a missing one gives no values, a broken one is reported and left as it is."""
        if not path.exists():
            return cls(path)
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, OSError, UnicodeDecodeError) as error:
            logger.error("ui-config unreadable path=%s error=%s; using defaults", path, error)
            return cls(path)
        if not isinstance(values, dict):
            logger.error("ui-config ignored path=%s reason=not-an-object", path)
            return cls(path)
        return cls(path, values)

    def get(self, key: str, default: object) -> object:
        """The remembered value, or ``default`` when there is none or its type does not fit the control."""
        value = self._values.get(key, default)
        if default is not None and not _same_kind(value, default):
            logger.warning("ui-config value ignored key=%s value=%r", key, value)
            return default
        return value

    def update(self, values: Mapping[str, object]) -> None:
        """Remember ``values`` and write the file (keys of other tabs and extensions are kept)."""
        with self._lock:
            changed = {key: value for key, value in values.items() if self._values.get(key) != value}
            if not changed and self.path.exists():
                return
            self._values.update(changed)
            try:
                write_json_atomic(self.path, self._values)
            except OSError as error:
                logger.error("ui-config not saved path=%s error=%s", self.path, error)

    def values(self) -> dict[str, object]:
        with self._lock:
            return dict(self._values)


def _same_kind(value: object, default: object) -> bool:
    """Numbers stand in for numbers (JSON keeps 7 for 7.0); otherwise the types must match."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, int | float):
        return isinstance(value, int | float)
    return isinstance(value, type(default))

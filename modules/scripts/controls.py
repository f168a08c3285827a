"""A script's controls, described without Gradio: the UI layer builds the widgets from them, the API reads their
labels, defaults and ranges (``/script-info``), and positional ``script_args`` are mapped to their names.

Each control has a ``name`` (the key of the script's arguments), a ``label`` (what the user reads) and a default
``value``; ``infotext`` names the infotext key that the control's value is written to and read back from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Control:
    name: str
    label: str
    value: Any = None
    infotext: str | None = None
    visible_for: tuple[str, ...] = ()  # only shown when another control named here is true (UI hint)

    def info(self) -> dict[str, Any]:
        """A1111's ScriptArg shape."""
        return {
            "label": self.label,
            "value": self.value,
            "minimum": None,
            "maximum": None,
            "step": None,
            "choices": None,
        }

    def convert(self, value: Any) -> Any:
        """An API or UI value of this control, as the script reads it; raises ValueError when it is not one."""
        return value


@dataclass(frozen=True)
class Checkbox(Control):
    value: bool = False

    def convert(self, value: Any) -> bool:
        if isinstance(value, str):
            return value.strip().lower() in ("true", "1", "yes", "on")
        return bool(value)


@dataclass(frozen=True)
class Slider(Control):
    value: float = 0
    minimum: float = 0
    maximum: float = 100
    step: float = 1

    def info(self) -> dict[str, Any]:
        return {**super().info(), "minimum": self.minimum, "maximum": self.maximum, "step": self.step}

    def convert(self, value: Any) -> float | int:
        number = float(value)
        return int(number) if float(self.step).is_integer() and float(self.value).is_integer() else number


@dataclass(frozen=True)
class Number(Slider):
    maximum: float | None = None  # type: ignore[assignment]
    minimum: float | None = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Textbox(Control):
    value: str = ""
    lines: int = 1

    def convert(self, value: Any) -> str:
        return "" if value is None else str(value)


@dataclass(frozen=True)
class Dropdown(Control):
    """A choice; ``by_index``: the script receives the choice's index (A1111's ``type="index"``), and the API may
    send the index or the label."""

    choices: Sequence[str] = field(default_factory=tuple)
    by_index: bool = False
    multiselect: bool = False
    choices_from: str | None = None  # the control whose value decides the choices (Script.dynamic_choices)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "choices": list(self.choices)}

    def convert(self, value: Any) -> Any:
        if self.multiselect:
            return [str(item) for item in (value or [])]
        if self.by_index:
            if isinstance(value, str) and not value.lstrip("-").isdigit():
                if value not in self.choices:
                    raise ValueError(f"{self.label}: unknown choice {value!r}")
                return list(self.choices).index(value)
            index = int(value)
            if not 0 <= index < len(self.choices):
                raise ValueError(f"{self.label}: index {index} is out of range 0..{len(self.choices) - 1}")
            return index
        return "" if value is None else str(value)


@dataclass(frozen=True)
class Radio(Dropdown):
    pass


@dataclass(frozen=True)
class Info(Control):
    """A line of explanation (A1111's ``gr.HTML`` in a script's controls): it takes an argument slot, as in A1111,
    so positional API arguments line up; its value is ignored."""

    value: str = ""


@dataclass(frozen=True)
class ImageInput(Control):
    """An image the user uploads (a PIL image, or None)."""

    value: Any = None


@dataclass(frozen=True)
class GroupAction:
    """A button of a group: ``run`` gets the group's values by child name and returns an image to show (a
    preview); a ValueError's message is shown to the user."""

    name: str
    label: str
    run: Callable[[Mapping[str, Any]], Any]


@dataclass(frozen=True)
class Group(Control):
    """Several controls that make one argument: the script receives ``convert({child name: value})``. The UI shows
    them together (one widget each, then the actions' buttons); ``pasted`` reads the group's infotext value back
    into child values."""

    children: tuple[Control, ...] = ()
    actions: tuple[GroupAction, ...] = ()

    def info(self) -> dict[str, Any]:
        return {**super().info(), "value": {child.name: child.info()["value"] for child in self.children}}

    def pasted(self, text: str) -> dict[str, Any]:
        """Child values from the group's infotext entry (none by default)."""
        return {}


def default_arguments(controls: Sequence[Control]) -> dict[str, Any]:
    """Each control's default as the script reads it (a by-index dropdown's default label becomes its index)."""
    return {
        control.name: control.convert(control.value)
        if isinstance(control, Dropdown) and control.by_index
        else control.value
        for control in controls
    }


def positional_arguments(controls: Sequence[Control], values: Sequence[Any]) -> dict[str, Any]:
    """A1111's positional ``script_args`` -> arguments by name: value i goes to control i; missing ones keep their
    defaults; extra values are an error (the client's list does not match this script)."""
    if len(values) > len(controls):
        raise ValueError(f"got {len(values)} arguments, the script has {len(controls)}")
    arguments = default_arguments(controls)
    for control, value in zip(controls, values, strict=False):
        arguments[control.name] = control.convert(value)
    return arguments

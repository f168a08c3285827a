"""A ControlNet unit as the extension's API and infotext describe it (field names, values and aliases are the
sd-webui-controlnet extension's, so its clients work unchanged), parsed without the extension's code."""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from enum import Enum
from typing import Any

from PIL import Image, UnidentifiedImageError


class ControlMode(Enum):
    BALANCED = "Balanced"
    PROMPT = "My prompt is more important"
    CONTROL = "ControlNet is more important"


class ResizeMode(Enum):
    RESIZE = "Just Resize"
    INNER_FIT = "Crop and Resize"
    OUTER_FIT = "Resize and Fill"


class HiresOption(Enum):
    BOTH = "Both"
    LOW_RES_ONLY = "Low res only"
    HIGH_RES_ONLY = "High res only"


# The extension's older names of the same values.
RESIZE_ALIASES = {
    "Inner Fit (Scale to Fit)": "Crop and Resize",
    "Outer Fit (Shrink to Fit)": "Resize and Fill",
    "Scale to Fit (Inner Fit)": "Crop and Resize",
    "Envelope (Outer Fit)": "Resize and Fill",
}
FIELD_ALIASES = {"guidance": "guidance_end", "lowvram": "low_vram", "input_image": "image", "mask_image": "mask"}
# The fields written to the infotext, in the extension's order ("Module: canny, Model: ..., Weight: 1.0, ...").
INFOTEXT_FIELDS = (
    "module",
    "model",
    "weight",
    "resize_mode",
    "processor_res",
    "threshold_a",
    "threshold_b",
    "guidance_start",
    "guidance_end",
    "pixel_perfect",
    "control_mode",
)


class UnitError(ValueError):
    """A unit field the API or the UI gave that cannot be used."""


@dataclass(frozen=True)
class ControlUnit:
    """One unit's settings; ``image`` / ``mask`` are decoded images or None (None: the img2img input)."""

    enabled: bool = False
    module: str = "none"
    model: str = "None"
    weight: float = 1.0
    image: Image.Image | None = None
    mask: Image.Image | None = None
    resize_mode: ResizeMode = ResizeMode.INNER_FIT
    low_vram: bool = False
    processor_res: int = -1
    threshold_a: float = -1
    threshold_b: float = -1
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    pixel_perfect: bool = False
    control_mode: ControlMode = ControlMode.BALANCED
    hr_option: HiresOption = HiresOption.BOTH

    @property
    def active(self) -> bool:
        return self.enabled and self.model not in ("", "None", None)

    def api_fields(self) -> dict[str, Any]:
        """The unit as the API takes it (enums by label; images left out)."""
        values = {item.name: getattr(self, item.name) for item in fields(self) if item.name not in ("image", "mask")}
        return {key: infotext_value(value) if isinstance(value, Enum) else value for key, value in values.items()}

    def serialize(self) -> str:
        """The extension's infotext value: ``Module: canny, Model: name [hash], Weight: 1.0, ...``."""
        values = {display_name(name): infotext_value(getattr(self, name)) for name in INFOTEXT_FIELDS}
        return ", ".join(f"{key}: {value}" for key, value in values.items())


def display_name(field_name: str) -> str:
    return " ".join(word.capitalize() for word in field_name.split("_"))


def field_name(display: str) -> str:
    return "_".join(word.lower() for word in display.split(" "))


def infotext_value(value: Any) -> str:
    return value.value if isinstance(value, Enum) else str(value)


def parse_infotext_value(text: str) -> Any:
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def parse_infotext(text: str) -> ControlUnit:
    """A unit from its infotext value (enabled, no image); raises UnitError on another format."""
    values: dict[str, Any] = {"enabled": True}
    for item in text.split(","):
        key, separator, value = item.strip().partition(": ")
        if not separator:
            raise UnitError(f"ControlNet infotext: cannot read {item.strip()!r}")
        values[field_name(key)] = parse_infotext_value(value)
    return unit_from_dict(values)


def enum_value(kind: type[Enum], value: Any, aliases: Mapping[str, str] | None = None) -> Enum:
    """An enum member from its label, its index (the extension accepts 0, 1, 2) or the member itself."""
    if isinstance(value, kind):
        return value
    members = list(kind)
    if isinstance(value, bool):
        raise UnitError(f"{kind.__name__}: {value!r} is not a choice")
    if isinstance(value, int | float) or (isinstance(value, str) and value.strip().isdigit()):
        index = int(value)
        if 0 <= index < len(members):
            return members[index]
        raise UnitError(f"{kind.__name__}: index {index} is out of range 0..{len(members) - 1}")
    label = (aliases or {}).get(str(value), str(value))
    for member in members:
        if label in (member.value, member.name):
            return member
    raise UnitError(f"{kind.__name__}: unknown value {value!r} (use one of {', '.join(m.value for m in members)})")


def decode_image(value: Any, name: str) -> Image.Image | None:
    """A base64 image (with or without a data: header), a PIL image, or None / "" for none."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, Image.Image):
        return value
    if not isinstance(value, str):
        raise UnitError(f"{name}: expected a base64 image, got {type(value).__name__}")
    data = value.split(",", 1)[1] if value.startswith("data:") else value
    try:
        image = Image.open(io.BytesIO(base64.b64decode(data, validate=False)))
        image.load()
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as error:
        raise UnitError(f"{name}: not a readable image ({error})") from error
    return image


def as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def number(value: Any, name: str, minimum: float | None = None, maximum: float | None = None) -> float:
    try:
        result = float(value)
    except (TypeError, ValueError) as error:
        raise UnitError(f"{name}: {value!r} is not a number") from error
    if (minimum is not None and result < minimum) or (maximum is not None and result > maximum):
        raise UnitError(f"{name}: {result} is outside {minimum}..{maximum}")
    return result


def unit_from_dict(values: Mapping[str, Any]) -> ControlUnit:
    """The extension's ``ControlNetUnit.from_dict``: its field names and aliases; unknown fields are ignored."""
    given = {FIELD_ALIASES.get(key, key): value for key, value in values.items()}
    image = given.get("image")
    if isinstance(image, Mapping):  # the older {"image": ..., "mask": ...} form
        given.setdefault("mask", image.get("mask"))
        image = image.get("image")
    unit = ControlUnit()
    return replace(
        unit,
        enabled=as_bool(given.get("enabled", unit.enabled)),
        module=str(given.get("module") or "none"),
        model=str(given.get("model") or "None"),
        weight=number(given.get("weight", 1.0), "weight", 0.0, 2.0),
        image=decode_image(image, "image"),
        mask=decode_image(given.get("mask"), "mask"),
        resize_mode=enum_value(ResizeMode, given.get("resize_mode", ResizeMode.INNER_FIT), RESIZE_ALIASES),
        low_vram=as_bool(given.get("low_vram", False)),
        processor_res=int(number(given.get("processor_res", -1), "processor_res")),
        threshold_a=number(given.get("threshold_a", -1), "threshold_a"),
        threshold_b=number(given.get("threshold_b", -1), "threshold_b"),
        guidance_start=number(given.get("guidance_start", 0.0), "guidance_start", 0.0, 1.0),
        guidance_end=number(given.get("guidance_end", 1.0), "guidance_end", 0.0, 1.0),
        pixel_perfect=as_bool(given.get("pixel_perfect", False)),
        control_mode=enum_value(ControlMode, given.get("control_mode", ControlMode.BALANCED)),
        hr_option=enum_value(HiresOption, given.get("hr_option", HiresOption.BOTH)),
    )


def as_unit(value: Any) -> ControlUnit:
    """A unit from an API dict, an infotext string or a unit (a script argument's value)."""
    if isinstance(value, ControlUnit):
        return value
    if value is None:
        return ControlUnit()
    if isinstance(value, str):
        return parse_infotext(value) if value.strip() else ControlUnit()
    if isinstance(value, Mapping):
        return unit_from_dict(value)
    if hasattr(value, "__dict__"):  # an object with the extension's fields (its ControlNetUnit, webuiapi's)
        return unit_from_dict(vars(value))
    raise UnitError(f"a ControlNet unit must be an object of fields, got {type(value).__name__}")

"""Requests <-> JSON text for the queue table, losslessly: PIL images (img2img's init image and mask) travel as
PNG in base64, every other field as pydantic dumps it."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import fields, is_dataclass
from enum import Enum
from typing import Any

from PIL import Image

from modules.processing.requests import GenerationRequest

IMAGE_KEY = "$png"


def request_classes() -> dict[str, type[GenerationRequest]]:
    """Every request type by class name (subclasses included), so a stored kind finds its class."""
    found: dict[str, type[GenerationRequest]] = {}
    pending: list[type[GenerationRequest]] = [GenerationRequest]
    while pending:
        current = pending.pop()
        found[current.__name__] = current
        pending.extend(current.__subclasses__())
    return found


def encode_image(image: Image.Image) -> dict[str, str]:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # lossless; level 1: fast, the file is short-lived
    return {IMAGE_KEY: base64.b64encode(buffer.getvalue()).decode("ascii")}


def decode_image(value: dict[str, str]) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(value[IMAGE_KEY])))
    image.load()
    return image


def _encode(value: Any) -> Any:
    """Plain JSON data; PIL images as their PNG, an enum by its value and a dataclass (a script argument such as a
    ControlNet unit) as the dict of its fields: read back as plain data, which the script's control converts."""
    if isinstance(value, Image.Image):
        return encode_image(value)
    if isinstance(value, Enum):
        return _encode(value.value)
    if is_dataclass(value) and not isinstance(value, type):
        return {item.name: _encode(getattr(value, item.name)) for item in fields(value)}
    if isinstance(value, dict):
        return {key: _encode(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(item) for item in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {IMAGE_KEY}:
            return decode_image(value)
        return {key: _decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode(item) for item in value]
    return value


def encode_request(request: GenerationRequest) -> tuple[str, str]:
    """(kind, JSON text) of a request."""
    return type(request).__name__, json.dumps(_encode(request.model_dump()), ensure_ascii=False)


def decode_request(kind: str, text: str) -> GenerationRequest:
    """The request a stored (kind, text) holds; KeyError for a kind this version does not know."""
    return request_classes()[kind].model_validate(_decode(json.loads(text)))


def encode_value(value: Any) -> str:
    """JSON text of plain data that may hold PIL images (a job's script arguments); TypeError when it cannot."""
    return json.dumps(_encode(value), ensure_ascii=False)


def decode_value(text: str) -> Any:
    return _decode(json.loads(text))

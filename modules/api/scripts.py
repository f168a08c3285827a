"""The API's scripts: A1111's ``script_name`` + positional ``script_args`` and ``alwayson_scripts`` mapped to a
job's scripts with arguments by name (at this edge, as ARCHITECTURE.md asks), and ``/scripts``, ``/script-info``.

A1111's rules: names match a script's title in any case; ``script_name`` only names selectable scripts; an unknown
name, or a selectable script in ``alwayson_scripts``, is a 422; missing arguments keep their defaults, and
arguments past a script's controls are ignored (A1111 slices them off)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from PIL import Image

from modules.api.errors import ApiError
from modules.api.models import GenerationBody
from modules.processing.infotext import parse_infotext
from modules.scripts.base import Script, Visibility
from modules.scripts.controls import Control, Group, ImageInput
from modules.scripts.runner import BoundScripts, ScriptCatalogue, ScriptNotFoundError, TabScripts

SELECTABLE_AS_ALWAYS_ON = "Cannot have a selectable script in the always on scripts params"


ImageDecoder = Callable[[str, str], Image.Image]  # (base64 text, field name) -> image, within the API's limits


def group_images(control: Control, value: Any, decode: ImageDecoder | None, field: str) -> Any:
    """A group argument's images (its ImageInput children, e.g. a ControlNet unit's ``image`` and ``mask``)
    decoded with the API's image limits; ``{"image": {"image": ..., "mask": ...}}`` is read as both."""
    if decode is None or not isinstance(control, Group) or not isinstance(value, Mapping):
        return value
    result = dict(value)
    nested = result.get("image")
    if isinstance(nested, Mapping):
        result["image"] = nested.get("image")
        result.setdefault("mask", nested.get("mask"))
    for child in control.children:
        item = result.get(child.name)
        if isinstance(child, ImageInput) and isinstance(item, str) and item.strip():
            result[child.name] = decode(item, f"{field}.{child.name}")
    return result


def script_arguments(
    tab: TabScripts,
    script: Script,
    values: Any,
    from_infotext: Mapping[str, Any] | None = None,
    decode: ImageDecoder | None = None,
) -> dict[str, Any]:
    """The script's arguments: its defaults, then what the request's infotext gave (``from_infotext``), then the
    positional values the client sent (those win); group arguments' images are decoded with ``decode``."""
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise ApiError(f"{script.title()}: args must be a list (got {type(values).__name__})", 422)
    controls = tab.controls_of(script)
    given = [
        group_images(control, value, decode, f"{script.api_name}.args[{index}]")
        for index, (control, value) in enumerate(zip(controls, values, strict=False))
    ]
    try:
        arguments = tab.arguments(script, given)
    except ValueError as error:
        raise ApiError(str(error), 422) from error
    sent = {control.name for control in controls[: len(given)]}
    arguments.update({name: value for name, value in (from_infotext or {}).items() if name not in sent})
    return arguments


def infotext_arguments(tab: TabScripts, script: Script, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """A1111's API ``infotext``: each control with an infotext key (A1111's ``infotext_fields``) found in it gets
    the written value; a value the control cannot take is a 422."""
    found = {}
    for control in tab.controls_of(script):
        if control.infotext and control.infotext in parameters:
            try:
                found[control.name] = control.convert(parameters[control.infotext])
            except (TypeError, ValueError) as error:
                raise ApiError(f"infotext: {script.title()}: {error}", 422) from error
    return found


def find_script(tab: TabScripts, name: str, selectable: bool) -> Script:
    try:
        return tab.find_selectable(name) if selectable else tab.find(name)
    except ScriptNotFoundError as error:
        raise ApiError(str(error), 422) from error


def bind_scripts(body: GenerationBody, tab: TabScripts, decode: ImageDecoder | None = None) -> BoundScripts:
    """The job's scripts from the request body (every always-on script runs, with its defaults when not named).
    A request's ``infotext`` fills the arguments of controls it names (A1111's ``infotext_fields``); the client's
    own ``script_args`` / ``alwayson_scripts`` args win over it."""
    parameters = parse_infotext(body.infotext) if body.infotext else {}
    selected = None
    if body.script_name:
        script = find_script(tab, body.script_name, selectable=True)
        pasted = infotext_arguments(tab, script, parameters)
        selected = (script, script_arguments(tab, script, body.script_args or [], pasted))
    given: dict[int, dict[str, Any]] = {}
    for script in tab.always_on if parameters else []:
        pasted = infotext_arguments(tab, script, parameters)
        if pasted:
            given[id(script)] = {**tab.arguments(script), **pasted}
    for name, entry in (body.alwayson_scripts or {}).items():
        script = find_script(tab, str(name), selectable=False)
        if tab.visibility(script) is Visibility.SELECTABLE:
            raise ApiError(SELECTABLE_AS_ALWAYS_ON, 422)
        if not isinstance(entry, Mapping):
            raise ApiError(f'alwayson_scripts.{name}: give {{"args": [...]}}', 422)
        if "args" in entry:
            pasted = infotext_arguments(tab, script, parameters)
            given[id(script)] = script_arguments(tab, script, entry["args"], pasted, decode)
    return tab.bind(selected, given)


def script_names(catalogue: ScriptCatalogue) -> dict[str, list[str]]:
    """``GET /scripts``: each tab's scripts that have controls, lower-case titles, in load order."""
    return {
        tab_name: [script.api_name for script in catalogue.tab(is_img2img).with_ui()]
        for tab_name, is_img2img in (("txt2img", False), ("img2img", True))
    }


def script_info(catalogue: ScriptCatalogue) -> list[dict[str, Any]]:
    """``GET /script-info``: txt2img entries, then img2img, each with its controls as A1111's ScriptArg."""
    entries = []
    for is_img2img in (False, True):
        tab = catalogue.tab(is_img2img)
        for script in tab.with_ui():
            entries.append(
                {
                    "name": script.api_name,
                    "is_alwayson": tab.visibility(script) is Visibility.ALWAYS_ON,
                    "is_img2img": is_img2img,
                    "args": [control.info() for control in tab.controls_of(script)],
                }
            )
    return entries

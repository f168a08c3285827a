"""The Script dropdown of a generation tab with the chosen script's controls, and the always-on scripts as
accordions. Widgets are built here from the scripts' neutral control descriptions (modules/scripts/controls.py);
a script with its own UI (an A1111 extension's ``ui()``) builds it here instead, with its layout and events. The
values go back to the scripts by control name."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from modules.processing.infotext import parse_infotext
from modules.scripts import controls as script_controls
from modules.scripts.base import Script
from modules.scripts.runner import BoundScripts, TabScripts
from modules.ui.common import Controls

logger = logging.getLogger(__name__)

NO_SCRIPT = "None"
SCRIPT_FIELD = "script_name"
GROUP_SEPARATOR = ":"


def build_widget(control: script_controls.Control, elem_id: str) -> gr.components.Component:
    """One Gradio widget for a script control."""
    label = control.label or None
    if isinstance(control, script_controls.Checkbox):
        return gr.Checkbox(value=control.value, label=label, elem_id=elem_id)
    if isinstance(control, script_controls.Number):
        return gr.Number(
            value=control.value, label=label, minimum=control.minimum, maximum=control.maximum, elem_id=elem_id
        )
    if isinstance(control, script_controls.Slider):
        return gr.Slider(
            control.minimum, control.maximum, value=control.value, step=control.step, label=label, elem_id=elem_id
        )
    if isinstance(control, script_controls.Radio) and not control.multiselect:
        return gr.Radio(list(control.choices), value=control.value, label=label, elem_id=elem_id)
    if isinstance(control, script_controls.Dropdown):
        return gr.Dropdown(
            list(control.choices),
            value=control.value,
            label=label,
            multiselect=control.multiselect,
            allow_custom_value=control.multiselect,
            elem_id=elem_id,
            visible=control.choices_from is None,
        )
    if isinstance(control, script_controls.Textbox):
        return gr.Textbox(value=control.value, label=label, lines=control.lines, elem_id=elem_id)
    if isinstance(control, script_controls.Info):
        return gr.Markdown(control.label, elem_id=elem_id)
    if isinstance(control, script_controls.ImageInput):
        return gr.Image(label=label, type="pil", image_mode="RGB", elem_id=elem_id, height=256)
    raise TypeError(f"no widget for script control {type(control).__name__}")


def widget_value(control: script_controls.Control, text: object) -> Any:
    """A value read from an infotext as the control's widget holds it."""
    if isinstance(control, script_controls.Checkbox):
        return str(text).strip().lower() == "true"
    if isinstance(control, script_controls.Slider):
        return float(str(text))
    return str(text)


def elem_id_of(tab: str, script: Script, name: str) -> str:
    slug = "".join(character if character.isalnum() else "_" for character in script.api_name).strip("_")
    return f"script_{tab}_{slug}_{name}"


@dataclass
class ScriptWidgets:
    """A tab's script widgets; ``bind`` turns the submitted values into the job's scripts."""

    tab: TabScripts
    keys: dict[int, list[tuple[str, str]]] = field(default_factory=dict)  # id(script) -> (control name, field)

    def arguments(self, script: Script, values: Mapping[str, Any]) -> dict[str, Any]:
        given: dict[str, Any] = {}
        for name, key in self.keys.get(id(script), []):
            if key not in values:
                continue
            group, _, child = name.partition(GROUP_SEPARATOR)
            if child:  # a group's child widget: the group's argument is a mapping of its children
                given.setdefault(group, {})[child] = values[key]
            else:
                given[name] = values[key]
        infos = {c.name for c in self.tab.controls_of(script) if isinstance(c, script_controls.Info)}
        return self.tab.arguments(script, {name: value for name, value in given.items() if name not in infos})

    def pasted(self, text: str) -> dict[str, Any]:
        """An infotext's script entries as control values: ``Script: X/Y/Z plot`` chooses the script, and every
        control with an infotext key found in it gets the written value (A1111's ``infotext_fields``)."""
        parsed = parse_infotext(text) if text else {}
        fields: dict[str, Any] = {}
        for script in self.tab.scripts:
            for control in self.tab.controls_of(script):
                if not (control.infotext and control.infotext in parsed):
                    continue
                key = f"script:{script.api_name}:{control.name}"
                if isinstance(control, script_controls.Group):
                    pasted = control.pasted(str(parsed[control.infotext]))
                    fields.update({f"{key}{GROUP_SEPARATOR}{name}": value for name, value in pasted.items()})
                else:
                    fields[key] = widget_value(control, parsed[control.infotext])
        chosen = str(parsed.get("Script", ""))
        if any(script.title() == chosen for script in self.tab.selectable):
            fields[SCRIPT_FIELD] = chosen
        return fields

    def bind(self, values: Mapping[str, Any]) -> BoundScripts:
        chosen = values.get(SCRIPT_FIELD) or NO_SCRIPT
        selected = None
        if chosen != NO_SCRIPT:
            script = next(script for script in self.tab.selectable if script.title() == chosen)
            selected = (script, self.arguments(script, values))
        always_on = {id(script): self.arguments(script, values) for script in self.tab.always_on}
        return self.tab.bind(selected, always_on)


def add_script_controls(
    controls: Controls, tab: TabScripts, script: Script, widgets: ScriptWidgets
) -> list[gr.components.Component]:
    built: dict[str, gr.components.Component] = {}
    keys = []
    own = script.build_ui(tab.is_img2img) if script.own_ui else None  # its own layout and events (A1111 scripts)
    for index, control in enumerate(tab.controls_of(script)):
        if own is None and isinstance(control, script_controls.Group):
            keys += add_group(controls, script, control, built)
            continue
        key = f"script:{script.api_name}:{control.name}"
        elem_id = elem_id_of(controls.tab, script, control.name)
        widget = own[index] if own is not None else build_widget(control, elem_id)
        built[control.name] = widget
        keys.append((control.name, key))
        if not isinstance(control, script_controls.Info):
            controls.add(key, widget, remember=False)
    widgets.keys[id(script)] = keys
    wire_dynamic_choices(tab, script, built)
    return list(built.values())


def add_group(
    controls: Controls, script: Script, group: script_controls.Group, built: dict[str, gr.components.Component]
) -> list[tuple[str, str]]:
    """A group's children in an accordion of their own; each child's key is ``group:child``."""
    keys = []
    with gr.Accordion(group.label, open=False, elem_id=elem_id_of(controls.tab, script, group.name)):
        for child in group.children:
            name = f"{group.name}{GROUP_SEPARATOR}{child.name}"
            key = f"script:{script.api_name}:{name}"
            widget = build_widget(child, elem_id_of(controls.tab, script, f"{group.name}_{child.name}"))
            built[name] = widget
            keys.append((name, key))
            controls.add(key, widget, remember=False)
        inputs = [built[f"{group.name}{GROUP_SEPARATOR}{child.name}"] for child in group.children]
        for action in group.actions:
            add_group_action(controls.tab, script, group, action, inputs)
    return keys


def add_group_action(
    tab: str, script: Script, group: script_controls.Group, action: script_controls.GroupAction, inputs: list[Any]
) -> None:
    """A button that runs ``action`` on the group's current values and shows the image it returns."""
    elem_id = elem_id_of(tab, script, f"{group.name}_{action.name}")
    button = gr.Button(action.label, elem_id=f"{elem_id}_button", size="sm")
    shown = gr.Image(label=action.label, interactive=False, elem_id=f"{elem_id}_image", height=256)
    names = [child.name for child in group.children]

    def run(*values: Any) -> Any:
        try:
            return action.run(dict(zip(names, values, strict=True)))
        except ValueError as error:
            raise gr.Error(str(error)) from error

    button.click(run, inputs=inputs, outputs=shown)


def wire_dynamic_choices(tab: TabScripts, script: Script, built: Mapping[str, gr.components.Component]) -> None:
    """Dropdowns whose choices depend on another control (X/Y/Z plot's values follow the axis type)."""
    for control in tab.controls_of(script):
        if not isinstance(control, script_controls.Dropdown) or control.choices_from not in built:
            continue

        def update(source_value: Any, name: str = control.name) -> Any:
            try:
                choices = script.dynamic_choices(tab.is_img2img, name, source_value)
            except Exception:  # a script's own code: log it, keep the UI working
                logger.exception("script choices failed script=%s control=%s", script.title(), name)
                choices = None
            return gr.update(choices=choices or [], value=[], visible=choices is not None)

        built[control.choices_from].change(
            update, inputs=built[control.choices_from], outputs=built[control.name], show_progress="hidden", queue=False
        )


def build_scripts(controls: Controls, tab: TabScripts) -> ScriptWidgets:
    """Always-on scripts' accordions, then the Script dropdown and each selectable script's controls (shown when
    it is chosen), as A1111 lays them out; the selection is read back with ``ScriptWidgets.bind``."""
    widgets = ScriptWidgets(tab)
    for script in tab.always_on:
        if tab.controls_of(script):
            elem_id = elem_id_of(controls.tab, script, "accordion")
            # A1111 puts an always-on script's own UI in a plain group (its ui() makes its accordion)
            if script.own_ui:
                container = gr.Group(elem_id=elem_id)
            else:
                container = gr.Accordion(script.title(), open=False, elem_id=elem_id)
            with container:
                add_script_controls(controls, tab, script, widgets)
    titles = [NO_SCRIPT, *(script.title() for script in tab.selectable)]
    chooser = controls.add(
        SCRIPT_FIELD,
        gr.Dropdown(titles, value=NO_SCRIPT, label="Script", elem_id=f"{controls.tab}_script"),
        remember=False,
    )
    groups = []
    for script in tab.selectable:
        with gr.Group(visible=False, elem_id=elem_id_of(controls.tab, script, "group")) as group:
            add_script_controls(controls, tab, script, widgets)
        groups.append(group)

    def show_chosen(title: str) -> list[Any]:
        return [gr.update(visible=title == script.title()) for script in tab.selectable]

    chooser.change(show_chosen, inputs=chooser, outputs=groups, show_progress="hidden", queue=False)
    controls.bind_scripts = widgets.bind
    controls.paste_scripts = widgets.pasted
    return widgets

"""The prompt area's extras in every generation tab: token counters, the Styles dropdown and the styles editor."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr

from modules.ui import prompt_tools
from modules.ui.prompt_tools import StyleOutcome

if TYPE_CHECKING:
    from modules.ui.common import Controls, UiContext

# Quick events: answered at once, beside running generation jobs (never queued behind them), no spinner.
QUICK: dict[str, Any] = {"queue": False, "show_progress": "hidden", "api_visibility": "private"}


@dataclass
class StyleEditor:
    """The "Styles editor" accordion."""

    name: gr.Textbox
    save_new: gr.Button
    editing: gr.Dropdown
    style_prompt: gr.Textbox
    style_negative: gr.Textbox
    save_edit: gr.Button
    delete: gr.Button
    message: gr.Markdown


@dataclass
class PromptTools:
    """Counters beside the prompt boxes, the Styles dropdown with its buttons, and the editor."""

    prompt_counter: gr.HTML
    negative_counter: gr.HTML
    styles: gr.Dropdown
    apply: gr.Button
    refresh: gr.Button
    editor: StyleEditor


def build_counter(context: UiContext, elem_id: str, text: object) -> gr.HTML:
    """A counter showing the count of the box's starting text (kept up to date while typing, once wired)."""
    value = prompt_tools.count_text(context.token_counter, str(text or ""), 20)
    return gr.HTML(
        value,
        html_template='<div style="text-align: right; font-size: 0.8em; opacity: 0.8">${value}</div>',
        elem_id=elem_id,
        elem_classes=["easel-token-counter"],
        padding=False,
    )


def build_styles_dropdown(context: UiContext, controls: Controls) -> tuple[gr.Dropdown, gr.Button, gr.Button]:
    tab = controls.tab
    remembered = context.initial(tab, "Styles", [])
    selected = prompt_tools.known_styles(context.styles, remembered if isinstance(remembered, list) else [])
    styles = controls.add(
        "styles",
        gr.Dropdown(
            context.styles.names(),
            value=selected,
            multiselect=True,
            label="Styles",
            # a style deleted in another tab stays selectable here; generating then names it in a clear error
            allow_custom_value=True,
            elem_id=f"{tab}_styles",
        ),
    )
    with gr.Row():
        apply = gr.Button("Apply styles", size="sm", elem_id=f"{tab}_style_apply", min_width=60)
        refresh = gr.Button("Refresh styles", size="sm", elem_id=f"{tab}_style_refresh", min_width=60)
    return styles, apply, refresh


def build_style_editor(context: UiContext, tab: str) -> StyleEditor:
    with gr.Accordion("Styles editor", open=False, elem_id=f"{tab}_styles_editor"):
        with gr.Row(equal_height=True):
            name = gr.Textbox(label="Style name", elem_id=f"{tab}_style_name", scale=3)
            save_new = gr.Button("Save current prompts as a style", elem_id=f"{tab}_style_create", scale=2)
        with gr.Row(equal_height=True):
            editing = gr.Dropdown(
                context.styles.names(), value=None, label="Edit style", elem_id=f"{tab}_style_edit", scale=3
            )
            delete = gr.Button("Delete style", variant="stop", elem_id=f"{tab}_style_delete", scale=1)
        style_prompt = gr.Textbox(
            label="Style prompt ({prompt} marks your prompt)", lines=2, elem_id=f"{tab}_style_prompt"
        )
        style_negative = gr.Textbox(label="Style negative prompt", lines=2, elem_id=f"{tab}_style_negative")
        save_edit = gr.Button("Save changes to the style", elem_id=f"{tab}_style_save")
        message = gr.Markdown(prompt_tools.problems_text(context.styles), elem_id=f"{tab}_style_message")
    return StyleEditor(name, save_new, editing, style_prompt, style_negative, save_edit, delete, message)


def outcome_updates(editor: StyleEditor, styles: gr.Dropdown, outcome: StyleOutcome, selected: Sequence[str]) -> dict:
    """New choices everywhere, the styles still selected, the editor on the outcome's style, the message."""
    if outcome.error:
        gr.Warning(outcome.message)
    return {
        styles: gr.update(choices=outcome.names, value=[name for name in selected or [] if name in outcome.names]),
        editor.editing: gr.update(choices=outcome.names, value=outcome.selected),
        editor.message: outcome.message,
    }


def wire_counters(context: UiContext, controls: Controls, tools: PromptTools) -> None:
    """Recount on every change of a prompt box; "always_last" drops the keystrokes a count is still busy with. The
    steps and the selected styles go with the text (A1111's counter hands them to on_before_token_counter)."""
    steps = controls.components.get("steps")
    inputs_of = {
        tools.prompt_counter: (controls.components["prompt"], True),
        tools.negative_counter: (controls.components["negative_prompt"], False),
    }
    for counter, (box, is_positive) in inputs_of.items():
        box.change(
            counting(context, is_positive, steps is not None),
            inputs=[box, steps, tools.styles] if steps is not None else [box, tools.styles],
            outputs=counter,
            trigger_mode="always_last",
            **QUICK,
        )


def counting(context: UiContext, is_positive: bool, with_steps: bool) -> Callable[..., str]:
    """The handler of one prompt box's counter: (text, steps, styles), or (text, styles) where the tab has no
    steps."""

    def count(text: str, *values: Any) -> str:
        steps_value, styles = (values[0], values[1]) if with_steps else (20, values[0])
        return prompt_tools.count_text(context.token_counter, text, steps_value, styles, is_positive)

    return count


def wire_styles(context: UiContext, controls: Controls, tools: PromptTools) -> None:
    database, editor, styles = context.styles, tools.editor, tools.styles
    prompt, negative = controls.components["prompt"], controls.components["negative_prompt"]
    changed = [styles, editor.editing, editor.message]

    def apply(prompt_text: str, negative_text: str, names: list[str]) -> tuple[str, str, list[str]]:
        try:
            return prompt_tools.apply_styles_to_boxes(database, prompt_text, negative_text, names or [])
        except ValueError as error:
            raise gr.Error(str(error)) from error

    def save_new(name: str, prompt_text: str, negative_text: str, selected: list[str]) -> dict:
        outcome = prompt_tools.save_prompts_as_style(database, name, prompt_text, negative_text)
        return {**outcome_updates(editor, styles, outcome, selected), editor.name: "" if not outcome.error else name}

    def save_edit(old: str | None, name: str, style_prompt: str, style_negative: str, selected: list[str]) -> dict:
        outcome = prompt_tools.edit_style(database, old, name, style_prompt, style_negative)
        renamed = [outcome.selected if item == old and not outcome.error else item for item in selected or []]
        return outcome_updates(editor, styles, outcome, renamed)

    def delete(old: str | None, selected: list[str]) -> dict:
        outcome = prompt_tools.delete_style(database, old)
        updates = outcome_updates(editor, styles, outcome, selected)
        return {**updates, editor.name: "", editor.style_prompt: "", editor.style_negative: ""}

    def refresh(selected: list[str]) -> dict:
        return outcome_updates(editor, styles, prompt_tools.reload_styles(database), selected)

    def list_choices() -> Any:
        # choices only: setting the value here could undo an option the user clicks while this is answered
        return gr.update(choices=database.names())

    tools.apply.click(apply, inputs=[prompt, negative, styles], outputs=[prompt, negative, styles], **QUICK)
    tools.refresh.click(refresh, inputs=styles, outputs=changed, **QUICK)
    styles.focus(list_choices, outputs=styles, **QUICK)
    editor.editing.focus(lambda: gr.update(choices=database.names()), outputs=editor.editing, **QUICK)
    editor.editing.input(
        lambda name: prompt_tools.style_fields(database, name),
        inputs=editor.editing,
        outputs=[editor.name, editor.style_prompt, editor.style_negative],
        **QUICK,
    )
    editor.save_new.click(
        save_new, inputs=[editor.name, prompt, negative, styles], outputs=[*changed, editor.name], **QUICK
    )
    edit_inputs = [editor.editing, editor.name, editor.style_prompt, editor.style_negative, styles]
    editor.save_edit.click(save_edit, inputs=edit_inputs, outputs=changed, **QUICK)
    delete_outputs = [*changed, editor.name, editor.style_prompt, editor.style_negative]
    editor.delete.click(delete, inputs=[editor.editing, styles], outputs=delete_outputs, **QUICK)


def wire_prompt_tools(context: UiContext, controls: Controls, tools: PromptTools) -> None:
    wire_counters(context, controls, tools)
    wire_styles(context, controls, tools)

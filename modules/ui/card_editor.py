"""The card metadata editor of the extra networks panels (A1111's 🛠 on a card): description, activation text,
preferred weight, negative text and notes, saved to ``<name>.json`` beside the file."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr

from modules.application import Application
from modules.networks.user_metadata import read_user_metadata, sidecar_path, write_user_metadata
from modules.ui.messages import status_html

if TYPE_CHECKING:
    from modules.networks.cards import Card

logger = logging.getLogger(__name__)

# Editor field -> A1111's key in <name>.json.
KEYS = {
    "description": "description",
    "activation": "activation text",
    "weight": "preferred weight",
    "negative": "negative text",
    "notes": "notes",
}


@dataclass
class CardEditor:
    column: gr.Column
    target: gr.Textbox
    title: gr.Markdown
    inputs: dict[str, gr.components.Component]
    save: gr.Button
    cancel: gr.Button
    message: gr.HTML

    def fields(self) -> list[gr.components.Component]:
        return [self.column, self.target, self.title, *self.inputs.values(), self.message]

    def open(self, key: str, cards_of: Callable[[str], list[Card]]) -> dict[Any, Any]:
        """The editor shown with the card's current values ("<kind>\\n<subfolder>/<name>")."""
        card = find_card(key, cards_of)
        if card is None:
            return {self.message: status_html(f"No such card: {key.partition(chr(10))[2]}", "error")}
        user = read_user_metadata(card.path)
        values = {field: user.get(name, 0.0 if field == "weight" else "") for field, name in KEYS.items()}
        return {
            self.column: gr.update(visible=True),
            self.target: key,
            self.title: f"### {card.name}\n`{sidecar_path(card.path).name}`",
            **{self.inputs[field]: value for field, value in values.items()},
            self.message: "",
        }


def find_card(key: str, cards_of: Callable[[str], list[Card]]) -> Card | None:
    kind, _, name = key.partition("\n")
    try:
        cards = cards_of(kind)
    except ValueError:
        return None
    return next((card for card in cards if card.entry is not None and f"{card.subfolder}/{card.name}" == name), None)


def build_card_editor(application: Application, prefix: str) -> CardEditor:
    with gr.Column(visible=False, elem_id=f"{prefix}_editor") as column:
        title = gr.Markdown()
        target = gr.Textbox(visible="hidden", elem_id=f"{prefix}_editor_target")
        inputs: dict[str, gr.components.Component] = {
            "description": gr.Textbox(label="Description", lines=2, elem_id=f"{prefix}_edit_description"),
            "activation": gr.Textbox(label="Activation text", elem_id=f"{prefix}_edit_activation"),
            "weight": gr.Number(
                label="Preferred weight (0: the default)", value=0.0, step=0.05, elem_id=f"{prefix}_edit_weight"
            ),
            "negative": gr.Textbox(label="Negative prompt", elem_id=f"{prefix}_edit_negative"),
            "notes": gr.Textbox(label="Notes", lines=3, elem_id=f"{prefix}_edit_notes"),
        }
        with gr.Row():
            save = gr.Button("Save", variant="primary", elem_id=f"{prefix}_edit_save")
            cancel = gr.Button("Cancel", elem_id=f"{prefix}_edit_cancel")
    message = gr.HTML(elem_id=f"{prefix}_edit_message")  # outside: "Saved" stays when the editor closes
    return CardEditor(column, target, title, inputs, save, cancel, message)


def wire_card_editor(
    application: Application,
    editor: CardEditor,
    cards_of: Callable[[str], list[Card]],
    show: Callable[..., tuple[Any, Any, str]],
    panel_inputs: list[gr.components.Component],
    panel_outputs: list[gr.components.Component],
) -> None:
    fields = list(editor.inputs)

    def save(key: str, *values: Any) -> tuple[Any, ...]:
        card = find_card(key, cards_of)
        edited, shown = values[: len(fields)], values[len(fields) :]
        if card is None:
            return gr.skip(), status_html("The card is gone (renamed or deleted?).", "error"), *show(*shown)
        try:
            write_user_metadata(card.path, {KEYS[field]: value for field, value in zip(fields, edited, strict=True)})
        except (ValueError, OSError) as error:
            return gr.skip(), status_html(f"Not saved: {error}", "error"), *show(*shown)
        if application.networks is not None and card.entry is not None:
            application.networks.registry.forget_metadata(card.entry)
        return gr.update(visible=False), status_html(f"Saved {sidecar_path(card.path).name}."), *show(*shown)

    editor.save.click(
        save,
        [editor.target, *editor.inputs.values(), *panel_inputs],
        [editor.column, editor.message, *panel_outputs],
        show_progress="hidden",
        api_visibility="private",
    )
    editor.cancel.click(lambda: gr.update(visible=False), None, editor.column, queue=False, show_progress="hidden")

"""The Extra Networks tab: cards for checkpoints, LoRA, embeddings and VAEs; search, sort, subfolders, refresh.

One HTML block holds the cards (a page of them, so 5,000 files render as fast as 50). Each generation tab has
the same panel under its prompt (the 🎴 button); clicking a LoRA or embedding card appends its tag to that tab's
prompt in the browser (the Extra Networks tab's cards: the tab chosen in its "Insert into"), as A1111 does; a
checkpoint or VAE card sends the
HTML component's "card_action" event to the server, which switches the checkpoint or the SD VAE setting, and a
card's 🛠 opens the metadata editor (modules/ui/card_editor.py).
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from modules.application import Application
from modules.networks.cards import (
    ALL_FOLDERS,
    Card,
    CardKind,
    SortKey,
    card_metadata,
    filter_cards,
    list_cards,
    subfolders,
    thumbnail_data_uri,
)
from modules.networks.user_metadata import lora_prompt, negative_prompt, read_user_metadata
from modules.settings_policy import SettingsRefusedError, settings_policy
from modules.ui import checkpoints
from modules.ui.card_editor import build_card_editor, wire_card_editor

logger = logging.getLogger(__name__)

PAGE_SIZE = 120
INSERT_TARGETS = ("txt2img", "img2img", "inpaint")  # the generation tabs with a prompt box (#<tab>_prompt)
CARD_CSS = """
.easel-cards { display: flex; flex-wrap: wrap; gap: 8px; }
.easel-card { width: 160px; min-height: 200px; border: 1px solid var(--border-color-primary); border-radius: 8px;
  cursor: pointer; overflow: hidden; display: flex; flex-direction: column; background: var(--block-background-fill); }
.easel-card:hover { outline: 2px solid var(--color-accent); }
.easel-card img { width: 160px; height: 160px; object-fit: cover; }
.easel-card .easel-noimage { width: 160px; height: 120px; display: flex; align-items: center; justify-content: center;
  color: var(--body-text-color-subdued); font-size: 0.8em; }
.easel-card .easel-name { font-weight: 600; padding: 4px 6px; word-break: break-all; }
.easel-card .easel-meta { font-size: 0.75em; padding: 0 6px 6px; color: var(--body-text-color-subdued); }
.easel-card { position: relative; }
.easel-card .easel-card-edit { position: absolute; top: 4px; right: 4px; padding: 2px 4px; border-radius: 4px;
  background: var(--block-background-fill); opacity: 0.85; }
"""
# Event delegation on the container: survives every re-render of the cards. PROMPT_ID is filled in per panel (each
# generation tab's panel inserts into its own prompt). Other actions go to the server as gradio's custom
# "card_action" event of the HTML component.
CLICK_JS = """
const fixedPromptId = PROMPT_ID, targetId = TARGET_ID;
element.addEventListener('click', (event) => {
  const card = event.target.closest('.easel-card');
  if (!card) return;
  const edit = event.target.closest('.easel-card-edit');
  if (edit) {
    trigger('card_action', {text: 'edit\\n' + edit.dataset.edit});
    return;
  }
  const action = card.dataset.action, value = card.dataset.value;
  const append = (selector, addition) => {
    const box = document.querySelector(selector);
    if (!box || !addition) return;
    const text = box.value;
    box.value = text + (text && !/\\s$/.test(text) ? ' ' : '') + addition;
    box.dispatchEvent(new Event('input', {bubbles: true}));
  };
  const insert = (promptId) => {
    append('#' + promptId + ' textarea', value);
    append('#' + promptId.replace(/_prompt$/, '_neg_prompt') + ' textarea', card.dataset.negative);
  };
  if (action === 'insert' && fixedPromptId) {
    insert(fixedPromptId);
    return;
  }
  if (action === 'insert') {
    // The Extra Networks tab's cards go to the tab chosen in its "Insert into" radio. Gradio draws a tab's
    // contents the first time it is opened: a tab never opened is opened for a moment, then this one again.
    const chosen = document.querySelector('#' + targetId + ' input:checked');
    const tab = chosen ? chosen.value : 'txt2img';
    const box = () => document.querySelector('#' + tab + '_prompt textarea');
    if (box()) {
      insert(tab + '_prompt');
      return;
    }
    const buttons = [...document.querySelectorAll('#tabs > .tab-wrapper button, #tabs button[role=tab]')];
    const find = (name) => buttons.find((button) => button.textContent.trim() === name);
    const target = find(tab), back = find('Extra Networks');
    if (!target) return;
    target.click();
    const started = Date.now();
    const wait = () => {
      if (box()) {
        insert(tab + '_prompt');
        if (back) back.click();
      } else if (Date.now() - started < 10000) {
        setTimeout(wait, 50);
      }
    };
    wait();
    return;
  }
  trigger('card_action', {text: action + '\\n' + value});
});
"""


def click_js(prompt_id: str | None, target_id: str | None = None) -> str:
    """The cards' click handler: inserts into ``#<prompt_id>``, or (``prompt_id`` None) into the prompt of the
    generation tab chosen in the radio ``#<target_id>``."""
    return CLICK_JS.replace("PROMPT_ID", json.dumps(prompt_id)).replace("TARGET_ID", json.dumps(target_id))


def card_key(card: Card) -> str:
    """What the editor is told to open: the kind and the name with its subfolder."""
    return f"{card.kind.value}\n{card.subfolder}/{card.name}"


def inserted_text(card: Card) -> tuple[str, str]:
    """The prompt and negative prompt text of a click: a LoRA with its preferred weight and activation text, from
    ``<name>.json`` (A1111); other cards their own value."""
    if card.kind is not CardKind.LORA:
        return card.value, ""
    user = read_user_metadata(card.path)
    return lora_prompt(card.name, user), negative_prompt(user)


class CardRenderer:
    """Turns cards into HTML; keeps thumbnails per (path, mtime) so a search re-renders without re-reading."""

    def __init__(self, application: Application) -> None:
        self.application = application
        self.thumbnails: dict[tuple[str, float], str | None] = {}

    def thumbnail(self, card: Card) -> str | None:
        if card.preview is None:
            return None
        key = (str(card.preview), card.mtime)
        if key not in self.thumbnails:
            self.thumbnails[key] = thumbnail_data_uri(card.preview)
        return self.thumbnails[key]

    def card_html(self, card: Card) -> str:
        networks = self.application.networks
        details = card_metadata(card, networks.registry) if networks is not None else None
        lines = []
        if details and details.description:
            lines.append(html.escape(details.description[:160]))
        if details and details.trigger_words:
            lines.append("Triggers: " + html.escape(", ".join(details.trigger_words)))
        if card.subfolder:
            lines.append(html.escape(card.subfolder))
        image = self.thumbnail(card)
        picture = f'<img src="{image}" alt="">' if image else '<div class="easel-noimage">no preview</div>'
        value, negative = inserted_text(card)
        key = html.escape(card_key(card), quote=True)
        edit = (
            f'<span class="easel-card-edit" title="Edit metadata" data-edit="{key}">🛠</span>'
            if card.entry is not None
            else ""
        )
        return (
            f'<div class="easel-card" data-action="{card.action}" data-value="{html.escape(value, quote=True)}"'
            f' data-negative="{html.escape(negative, quote=True)}"'
            f' data-name="{html.escape(card.name, quote=True)}" title="{html.escape(value, quote=True)}">'
            f'{edit}{picture}<div class="easel-name">{html.escape(card.name)}</div>'
            f'<div class="easel-meta">{"<br>".join(lines)}</div></div>'
        )

    def render(self, cards: list[Card]) -> str:
        shown = cards[:PAGE_SIZE]
        body = "".join(self.card_html(card) for card in shown)
        more = (
            f"<p>Showing {len(shown)} of {len(cards)}; search to narrow the list.</p>"
            if len(cards) > len(shown)
            else ""
        )
        empty = "<p>Nothing found.</p>" if not cards else ""
        return f'<div class="easel-cards">{body}</div>{more}{empty}'


@dataclass
class CardsPanel:
    """The cards with their search, sort and folder controls; ``show`` fills them (wire it to what opens them)."""

    inputs: list[gr.components.Component]
    outputs: list[gr.components.Component]
    show: Callable[..., tuple[Any, Any, str]]


def build_cards_panel(
    application: Application, prefix: str, prompt_id: str | None, target_id: str | None = None
) -> CardsPanel:
    """A card panel whose LoRA and embedding cards insert into the box ``#<prompt_id>`` (or, with ``prompt_id``
    None, into the prompt of the tab chosen in the radio ``#<target_id>``)."""
    renderer = CardRenderer(application)
    with gr.Row():
        kinds = [item.value for item in CardKind]
        kind = gr.Radio(kinds, value=CardKind.LORA.value, label="Type", scale=3, elem_id=f"{prefix}_kind")
        search = gr.Textbox(label="Search", placeholder="name, folder", elem_id=f"{prefix}_search", scale=3)
        sort = gr.Dropdown([item.value for item in SortKey], value=SortKey.NAME.value, label="Sort by", scale=1)
        descending = gr.Checkbox(label="Descending", value=False, scale=1)
        folder = gr.Dropdown([ALL_FOLDERS], value=ALL_FOLDERS, label="Subfolder", elem_id=f"{prefix}_folder", scale=2)
        refresh = gr.Button("Refresh", elem_id=f"{prefix}_refresh", scale=1)
    status = gr.Markdown(elem_id=f"{prefix}_status")
    on_load = click_js(prompt_id, target_id)
    cards_html = gr.HTML("", elem_id=f"{prefix}_cards", js_on_load=on_load, css_template=CARD_CSS)

    def cards_of(kind_value: str) -> list[Card]:
        networks = application.networks
        if networks is None:
            return []
        return list_cards(CardKind(kind_value), networks.registry, application.registry)

    def show(kind_value: str, text: str, sort_value: str, reverse: bool, folder_value: str) -> tuple[Any, Any, str]:
        # a panel never drawn yet (hidden under a tab's prompt) sends None for its controls: their defaults then
        kind_value, text = kind_value or CardKind.LORA.value, text or ""
        sort_value, folder_value = sort_value or SortKey.NAME.value, folder_value or ALL_FOLDERS
        every = cards_of(kind_value)
        folders = subfolders(every)
        chosen = folder_value if folder_value in folders else ALL_FOLDERS
        registry = application.networks.registry if application.networks else None
        found = filter_cards(every, text, chosen, SortKey(sort_value), bool(reverse), registry)
        return gr.update(choices=folders, value=chosen), renderer.render(found), f"{len(found)} of {len(every)}"

    def rescan(*values: Any) -> tuple[Any, Any, str]:
        if application.networks is not None:
            application.networks.refresh()
        application.registry.refresh()
        return show(*values)

    inputs = [kind, search, sort, descending, folder]
    outputs = [folder, cards_html, status]
    for trigger in (kind.change, search.change, search.submit, sort.change, descending.change, folder.input):
        trigger(show, inputs, outputs, show_progress="hidden")
    refresh.click(rescan, inputs, outputs)
    editor = build_card_editor(application, prefix)
    wire_card_editor(application, editor, cards_of, show, inputs, outputs)

    def act(event: gr.EventData, request: gr.Request) -> dict[Any, Any]:
        text = str(getattr(event, "text", "") or "")
        kind_name, _, rest = text.partition("\n")
        if kind_name == "edit":
            return editor.open(rest, cards_of)
        return {status: run_action(application, text, request.username if request else None)}

    cards_html.card_action(act, None, [status, *editor.fields()], show_progress="hidden", api_visibility="private")
    return CardsPanel(inputs=inputs, outputs=outputs, show=show)


def create_extra_networks_tab(application: Application, tab: Any = None) -> None:
    """The tab's controls and wiring: cards insert into the prompt of the generation tab chosen in "Insert into".
    ``tab`` (the gr.Tab) loads the cards when it is selected."""
    gr.Radio(
        list(INSERT_TARGETS),
        value=INSERT_TARGETS[0],
        label="Insert into",
        info="the prompt a LoRA or embedding card goes to",
        elem_id="extra_networks_target",
        interactive=True,
    )
    panel = build_cards_panel(application, "extra_networks", None, "extra_networks_target")
    if tab is not None:
        tab.select(panel.show, panel.inputs, panel.outputs)


def build_tab_networks(application: Application, tab: str, toggle: gr.Button) -> None:
    """A1111's panel under a generation tab's prompt: ``toggle`` (🎴) shows or hides it; its cards insert into
    this tab's prompt."""
    with gr.Column(visible=False, elem_id=f"{tab}_extra_networks_panel") as column:
        panel = build_cards_panel(application, f"{tab}_extra_networks", f"{tab}_prompt")
    shown = gr.State(False)

    def flip(is_shown: bool, *values: Any) -> tuple[Any, ...]:
        if is_shown:
            return gr.update(visible=False), False, gr.skip(), gr.skip(), gr.skip()
        return gr.update(visible=True), True, *panel.show(*values)

    toggle.click(
        flip,
        [shown, *panel.inputs],
        [column, shown, *panel.outputs],
        show_progress="hidden",
        api_visibility="private",
    )


def run_action(application: Application, text: str, user: str | None = None) -> str:
    """A checkpoint or VAE card was clicked: switch the checkpoint, or set the SD VAE setting (a global setting:
    the admin's alone when --admin-user is set)."""
    kind, _, value = (text or "").partition("\n")
    if kind == "checkpoint":
        outcome = checkpoints.switch_checkpoint(application, value)
        return outcome.error or f"Checkpoint: {outcome.title}"
    if kind == "vae":
        try:
            settings_policy(application).check({"sd_vae": value}, user)
        except SettingsRefusedError as error:
            return f"SD VAE not changed: {error}"
        application.update_options(sd_vae=value)
        return f"SD VAE: {value}"
    return ""

"""The Extra Networks tab: cards for checkpoints, LoRA, embeddings and VAEs; search, sort, subfolders, refresh.

One HTML block holds the cards (a page of them, so 5,000 files render as fast as 50). Clicking a LoRA or
embedding card appends its tag to the txt2img prompt in the browser (as A1111 does); a checkpoint or VAE card
sends an action through a hidden textbox to the server, which switches the checkpoint or the SD VAE setting.
"""

from __future__ import annotations

import html
import logging
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
from modules.settings_policy import SettingsRefusedError, settings_policy
from modules.ui import checkpoints

logger = logging.getLogger(__name__)

PAGE_SIZE = 120
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
"""
# Event delegation on the container: survives every re-render of the cards.
CLICK_JS = """
element.addEventListener('click', (event) => {
  const card = event.target.closest('.easel-card');
  if (!card) return;
  const action = card.dataset.action, value = card.dataset.value;
  if (action === 'insert') {
    const box = document.querySelector('#txt2img_prompt textarea');
    if (!box) return;
    const text = box.value;
    box.value = text + (text && !/\\s$/.test(text) ? ' ' : '') + value;
    box.dispatchEvent(new Event('input', {bubbles: true}));
    return;
  }
  const hidden = document.querySelector('#extra_networks_action textarea');
  if (!hidden) return;
  hidden.value = action + '\\n' + value + '\\n' + Date.now();
  hidden.dispatchEvent(new Event('input', {bubbles: true}));
});
"""


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
        return (
            f'<div class="easel-card" data-action="{card.action}" data-value="{html.escape(card.value, quote=True)}"'
            f' data-name="{html.escape(card.name, quote=True)}" title="{html.escape(str(card.value), quote=True)}">'
            f'{picture}<div class="easel-name">{html.escape(card.name)}</div>'
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


def create_extra_networks_tab(application: Application, tab: Any = None) -> None:
    """The tab's controls and wiring. ``tab`` (the gr.Tab) loads the cards when it is selected."""
    renderer = CardRenderer(application)
    with gr.Row():
        kind = gr.Radio([item.value for item in CardKind], value=CardKind.LORA.value, label="Type", scale=3)
        search = gr.Textbox(label="Search", placeholder="name, folder", elem_id="extra_networks_search", scale=3)
        sort = gr.Dropdown([item.value for item in SortKey], value=SortKey.NAME.value, label="Sort by", scale=1)
        descending = gr.Checkbox(label="Descending", value=False, scale=1)
        folder = gr.Dropdown(
            [ALL_FOLDERS], value=ALL_FOLDERS, label="Subfolder", elem_id="extra_networks_folder", scale=2
        )
        refresh = gr.Button("Refresh", elem_id="extra_networks_refresh", scale=1)
    status = gr.Markdown(elem_id="extra_networks_status")
    cards_html = gr.HTML("", elem_id="extra_networks_cards", js_on_load=CLICK_JS, css_template=CARD_CSS)
    action = gr.Textbox(visible="hidden", elem_id="extra_networks_action")

    def cards_of(kind_value: str) -> list[Card]:
        networks = application.networks
        if networks is None:
            return []
        return list_cards(CardKind(kind_value), networks.registry, application.registry)

    def show(kind_value: str, text: str, sort_value: str, reverse: bool, folder_value: str) -> tuple[Any, Any, str]:
        every = cards_of(kind_value)
        folders = subfolders(every)
        chosen = folder_value if folder_value in folders else ALL_FOLDERS
        registry = application.networks.registry if application.networks else None
        found = filter_cards(every, text, chosen, SortKey(sort_value), reverse, registry)
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
    if tab is not None:
        tab.select(show, inputs, outputs)

    def act(text: str, request: gr.Request) -> str:
        return run_action(application, text, request.username if request else None)

    action.input(act, [action], [status])


def run_action(application: Application, text: str, user: str | None = None) -> str:
    """A checkpoint or VAE card was clicked: switch the checkpoint, or set the SD VAE setting (a global setting:
    the admin's alone when --admin-user is set)."""
    kind, _, rest = (text or "").partition("\n")
    value = rest.rsplit("\n", 1)[0]
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

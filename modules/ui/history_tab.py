"""The History tab: the saved images of the image history (modules/jobs/history.py), searched and filtered by
prompt words, model, seed, date and favourites; open one, mark it, delete it (file and row), or send it to
txt2img / img2img (PNG Info's send-to) and extras. Each login sees its own images; the admin sees all."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import gradio as gr
from PIL import Image, UnidentifiedImageError

from modules.application import Application
from modules.jobs.history import HistoryImage, HistoryQuery, ImageHistory
from modules.ui.common import owner_of
from modules.ui.messages import status_html
from modules.ui.png_info import PngInfoTab
from modules.ui.queue_panel import is_admin

logger = logging.getLogger(__name__)

THUMBNAIL_SIDE = 256
EXTRAS_IMAGE_ID = "extras_image"  # Extras' single-image input
SHOWN = 100


@dataclass
class HistoryTab:
    png_info: PngInfoTab  # the selected image and its infotext, with the send-to buttons (linked like PNG Info)
    send_to_extras: gr.Button


def parse_day(text: str | None, label: str) -> date | None:
    """ "2026-11-29" -> a date; empty -> None; anything else raises ValueError with a message."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError as error:
        raise ValueError(f"{label}: write the date as YYYY-MM-DD (got {text!r})") from error


def build_query(
    words: str, model: str, seed: float | None, date_from: str, date_to: str, favourites: bool
) -> HistoryQuery:
    return HistoryQuery(
        words=words or "",
        model=model or "",
        seed=int(seed) if seed not in (None, "") else None,
        date_from=parse_day(date_from, "From"),
        date_to=parse_day(date_to, "To"),
        favourites_only=bool(favourites),
        limit=SHOWN,
    )


def viewer(application: Application, request: gr.Request | None) -> str | None:
    """The owner filter of this browser's login: its name, or None for the admin (every image)."""
    owner = owner_of(request)
    return None if is_admin(application, owner) else owner


def caption(image: HistoryImage) -> str:
    when = datetime.fromtimestamp(image.created_at).strftime("%Y-%m-%d %H:%M")
    star = "★ " if image.favourite else ""
    return f"{star}{when} seed {image.seed if image.seed is not None else '-'}"


def thumbnail(image: HistoryImage) -> Image.Image | None:
    try:
        with Image.open(image.path) as opened:
            small = opened.convert("RGB")
    except (OSError, UnidentifiedImageError):
        return None
    small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    return small


def search(history: ImageHistory, query: HistoryQuery, owner: str | None) -> tuple[list[Any], list[int], str]:
    """(gallery items, their ids, status html) for a query."""
    found = history.search(query, owner)
    items, ids = [], []
    for image in found:
        small = thumbnail(image)
        if small is not None:
            items.append((small, caption(image)))
            ids.append(image.id)
    more = " (the newest shown; narrow the search for older ones)" if len(found) >= query.limit else ""
    return items, ids, status_html(f"{len(ids)} image{'s' if len(ids) != 1 else ''}{more}")


def open_image(history: ImageHistory, image_id: int | None, owner: str | None) -> tuple[Image.Image | None, str]:
    """The full image and its infotext; (None, "") when it is not this login's or is gone."""
    image = history.get(image_id, owner) if image_id is not None else None
    if image is None or not image.path.exists():
        return None, ""
    with Image.open(image.path) as opened:
        opened.load()
        return opened.copy(), image.infotext


def create_history_tab(application: Application) -> HistoryTab:
    history = application.history
    assert history is not None, "the application builds the image history"
    with gr.Row():
        words = gr.Textbox(label="Prompt words", elem_id="history_words", scale=3)
        model = gr.Textbox(label="Model", elem_id="history_model", scale=2)
        seed = gr.Number(label="Seed", value=None, precision=0, elem_id="history_seed", scale=1)
        date_from = gr.Textbox(label="From (YYYY-MM-DD)", elem_id="history_from", scale=1)
        date_to = gr.Textbox(label="To (YYYY-MM-DD)", elem_id="history_to", scale=1)
        favourites = gr.Checkbox(label="Favourites only", elem_id="history_favourites", scale=1)
        find = gr.Button("Search", variant="primary", elem_id="history_search", scale=0, min_width=100)
    scan = gr.HTML(elem_id="history_scan")
    status = gr.HTML(elem_id="history_status")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            gallery = gr.Gallery(
                label="Images", columns=6, height=560, format="jpeg", allow_preview=False, elem_id="history_gallery"
            )
        with gr.Column(scale=2):
            image = gr.Image(label="Image", type="pil", interactive=False, height=360, elem_id="history_image")
            infotext = gr.Textbox(label="Parameters", lines=6, interactive=False, elem_id="history_infotext")
            with gr.Row():
                favourite = gr.Button("☆ Favourite / unmark", elem_id="history_favourite")
                delete = gr.Button("Delete", variant="stop", elem_id="history_delete")
            with gr.Row():
                to_txt2img = gr.Button("Send to txt2img", elem_id="history_send_to_txt2img")
                to_img2img = gr.Button("Send to img2img", elem_id="history_send_to_img2img")
                to_extras = gr.Button("Send to extras", elem_id="history_send_to_extras")
    ids = gr.State([])
    selected = gr.State(None)
    timer = gr.Timer(1.0)
    filters = [words, model, seed, date_from, date_to, favourites]

    def results(values: tuple[Any, ...], owner: str | None) -> tuple[Any, Any, str]:
        try:
            query = build_query(*values)
        except ValueError as error:
            return gr.update(), gr.update(), status_html(str(error), "error")
        return search(history, query, owner)

    def run_search(
        words: str, model: str, seed: float | None, date_from: str, date_to: str, favourites: bool, request: gr.Request
    ) -> tuple[Any, Any, str]:
        return results((words, model, seed, date_from, date_to, favourites), viewer(application, request))

    def pick(current_ids: list[int], event: gr.SelectData, request: gr.Request) -> tuple[Any, Any, Any]:
        image_id = current_ids[event.index] if 0 <= event.index < len(current_ids) else None
        picture, text = open_image(history, image_id, viewer(application, request))
        return image_id, picture, text

    def mark(
        image_id: int | None,
        words: str,
        model: str,
        seed: float | None,
        date_from: str,
        date_to: str,
        favourites: bool,
        request: gr.Request,
    ) -> tuple[Any, Any, str]:
        owner = viewer(application, request)
        current = history.get(image_id, owner) if image_id is not None else None
        if current is None:
            return gr.update(), gr.update(), status_html("Pick an image first.", "note")
        history.set_favourite(current.id, owner, not current.favourite)
        return results((words, model, seed, date_from, date_to, favourites), owner)

    def remove(
        image_id: int | None,
        words: str,
        model: str,
        seed: float | None,
        date_from: str,
        date_to: str,
        favourites: bool,
        request: gr.Request,
    ) -> tuple[Any, ...]:
        owner = viewer(application, request)
        if image_id is None or not history.delete(image_id, owner):
            return gr.update(), gr.update(), status_html("Pick an image first.", "note"), gr.update(), gr.update()
        items, found, _ = results((words, model, seed, date_from, date_to, favourites), owner)
        return items, found, status_html("Deleted the file and its history entry."), None, ""

    find.click(run_search, filters, [gallery, ids, status], api_visibility="private")
    words.submit(run_search, filters, [gallery, ids, status], api_visibility="private")
    gallery.select(pick, ids, [selected, image, infotext], show_progress="hidden", api_visibility="private")
    favourite.click(mark, [selected, *filters], [gallery, ids, status], api_visibility="private")
    delete.click(remove, [selected, *filters], [gallery, ids, status, image, infotext], api_visibility="private")
    timer.tick(lambda: history.scan_progress.text(), None, scan, show_progress="hidden", api_visibility="private")
    png_info = PngInfoTab(
        image=image, infotext=infotext, status=status, send_to_txt2img=to_txt2img, send_to_img2img=to_img2img
    )
    return HistoryTab(png_info=png_info, send_to_extras=to_extras)


def link_to_extras(blocks: gr.Blocks, tab: HistoryTab, tabs: gr.Tabs) -> None:
    """ "Send to extras": the selected image goes to Extras' single-image input (found by its elem_id)."""
    target = next(
        (block for block in blocks.blocks.values() if getattr(block, "elem_id", None) == EXTRAS_IMAGE_ID), None
    )
    if target is None:
        logger.warning("history send-to-extras off: no component elem_id=%s", EXTRAS_IMAGE_ID)
        tab.send_to_extras.visible = False
        return

    def send(image: Image.Image | None) -> dict[Any, Any]:
        if image is None:
            gr.Warning("Nothing to send: pick an image first.")
            return {}
        return {target: image, tabs: gr.Tabs(selected="extras")}

    tab.send_to_extras.click(send, tab.png_info.image, [target, tabs], show_progress="hidden", api_visibility="private")

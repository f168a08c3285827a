"""Cards of the Extra Networks tab as plain data: list, search, sort, subfolder filter (no UI code).

Built from the registries' scans only (names, sizes, dates, preview paths), so listing and searching thousands
of files costs milliseconds; descriptions and trigger words are read lazily for the cards actually shown.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal

from PIL import Image

from modules.models.registry import CheckpointRegistry
from modules.networks.registry import NetworkEntry, NetworkMetadata, NetworkRegistry

logger = logging.getLogger(__name__)

THUMBNAIL_SIZE = 192
ALL_FOLDERS = "All"


class CardKind(StrEnum):
    CHECKPOINT = "Checkpoints"
    LORA = "LoRA"
    EMBEDDING = "Textual Inversion"
    VAE = "VAE"


class SortKey(StrEnum):
    NAME = "Name"
    DATE = "Date"
    SIZE = "Size"


CardAction = Literal["insert", "checkpoint", "vae"]


@dataclass(frozen=True)
class Card:
    """One card: what it shows and what clicking it does (insert text, switch checkpoint, choose VAE)."""

    kind: CardKind
    name: str
    subfolder: str
    size: int
    mtime: float
    path: Path
    preview: Path | None
    action: CardAction
    value: str  # the text to insert, the checkpoint title, or the VAE setting value
    entry: NetworkEntry | None = None

    @property
    def search_text(self) -> str:
        return f"{self.name} {self.subfolder}".lower()


def _card_of(kind: CardKind, entry: NetworkEntry) -> Card:
    if kind is CardKind.LORA:
        action, value = "insert", f"<lora:{entry.name}:1>"
    elif kind is CardKind.EMBEDDING:
        action, value = "insert", entry.name
    else:
        action, value = "vae", entry.file_name if entry.path.is_file() else entry.name
    return Card(
        kind, entry.name, entry.subfolder, entry.size, entry.mtime, entry.path, entry.preview, action, value, entry
    )


def checkpoint_cards(registry: CheckpointRegistry) -> list[Card]:
    cards = []
    for info in registry.checkpoints():
        subfolder, _, name = info.name.rpartition("/")
        try:
            mtime = info.path.stat().st_mtime
        except OSError:
            mtime = 0.0
        preview = next((candidate for candidate in _preview_candidates(info.path) if candidate.is_file()), None)
        cards.append(
            Card(
                CardKind.CHECKPOINT,
                name,
                subfolder,
                info.size_bytes,
                mtime,
                info.path,
                preview,
                "checkpoint",
                info.title,
            )
        )
    return cards


def _preview_candidates(path: Path) -> list[Path]:
    stem = path.name[: -len(path.suffix)] if path.is_file() and path.suffix else path.name
    return [path.with_name(stem + ".png"), path.with_name(stem + ".preview.png")]


def list_cards(kind: CardKind, networks: NetworkRegistry, checkpoints: CheckpointRegistry | None) -> list[Card]:
    """Every card of one kind (from the last scan; ``NetworkRegistry.refresh`` rescans)."""
    if kind is CardKind.CHECKPOINT:
        return checkpoint_cards(checkpoints) if checkpoints is not None else []
    registry_kind = {CardKind.LORA: "lora", CardKind.EMBEDDING: "embedding", CardKind.VAE: "vae"}[kind]
    return [_card_of(kind, entry) for entry in networks.entries(registry_kind)]  # type: ignore[arg-type]


def subfolders(cards: Sequence[Card]) -> list[str]:
    return [ALL_FOLDERS, *sorted({card.subfolder for card in cards if card.subfolder})]


def filter_cards(
    cards: Sequence[Card],
    search: str = "",
    subfolder: str = ALL_FOLDERS,
    sort: SortKey = SortKey.NAME,
    descending: bool = False,
    networks: NetworkRegistry | None = None,
) -> list[Card]:
    """Cards whose name/subfolder (or already-read description and trigger words) hold every search word."""
    words = search.lower().split()
    chosen = [
        card
        for card in cards
        if (subfolder in ("", ALL_FOLDERS) or card.subfolder == subfolder or card.subfolder.startswith(subfolder + "/"))
        and all(word in card.search_text or word in _cached_text(card, networks) for word in words)
    ]
    key = {
        SortKey.NAME: lambda card: card.name.lower(),
        SortKey.DATE: lambda card: card.mtime,
        SortKey.SIZE: lambda card: card.size,
    }[SortKey(sort)]
    return sorted(chosen, key=key, reverse=descending)


def _cached_text(card: Card, networks: NetworkRegistry | None) -> str:
    if networks is None or card.entry is None:
        return ""
    found = networks.cached_metadata(card.entry)
    return f"{found.description} {' '.join(found.trigger_words)}".lower() if found else ""


def card_metadata(card: Card, networks: NetworkRegistry) -> NetworkMetadata:
    return networks.metadata(card.entry) if card.entry is not None else NetworkMetadata()


def thumbnail_data_uri(path: Path | None, size: int = THUMBNAIL_SIZE) -> str | None:
    """A small JPEG of a preview image as a data URI (the models folder is never served as files)."""
    if path is None:
        return None
    try:
        with Image.open(path) as image:
            image.thumbnail((size, size))
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="JPEG", quality=80)
    except (OSError, ValueError) as error:
        logger.warning("preview unreadable path=%s error=%s", path, error)
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")

"""Folders of LoRA, embedding and VAE files: fast scans, lazy metadata, hashes on use.

A scan is one ``os.scandir`` walk per folder (sizes and dates come with it, previews are found in the same
listing), so thousands of files list in well under a second. Metadata (``name.json``, safetensors
``__metadata__`` ``ss_*`` keys) is read only when a card or a search asks for it, and kept per (path, mtime).
Hashes are computed when a job uses the file and kept in cache.json through ``HashCache``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from modules.models.hashing import CHUNK_BYTES, HashCache, cache_key, compute_sha256, fingerprint

logger = logging.getLogger(__name__)

NetworkType = Literal["lora", "embedding", "vae"]
SUFFIXES: dict[str, frozenset[str]] = {
    "lora": frozenset({".safetensors", ".pt", ".ckpt"}),
    "embedding": frozenset({".safetensors", ".pt", ".bin"}),
    "vae": frozenset({".safetensors", ".pt", ".ckpt", ".bin"}),
}
PREVIEW_SUFFIXES = (".png", ".preview.png", ".jpg", ".jpeg", ".webp", ".preview.jpg", ".preview.webp")
HEADER_LIMIT = 100 * 1024 * 1024


@dataclass(frozen=True)
class NetworkEntry:
    """One file found in a folder: A1111 name (file stem), subfolder, size, date, preview image."""

    kind: NetworkType
    name: str
    path: Path
    subfolder: str
    size: int
    mtime: float
    preview: Path | None = None

    @property
    def file_name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class NetworkMetadata:
    """What a card shows beside the name."""

    description: str = ""
    trigger_words: tuple[str, ...] = ()
    base_model: str = ""
    alias: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def stem_of(path: Path) -> str:
    return path.name[: -len(path.suffix)] if path.suffix else path.name


def scan_folder(root: Path, kind: NetworkType) -> list[NetworkEntry]:
    """Every network file under ``root`` (subfolders too), one scandir walk, no file opened."""
    entries: list[NetworkEntry] = []
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            with os.scandir(folder) as listing:
                items = list(listing)
        except OSError:
            continue
        names = {item.name for item in items}
        for item in items:
            if item.is_dir():
                if kind == "vae" and os.path.isfile(os.path.join(item.path, "config.json")):
                    entries.append(_folder_entry(root, folder, item))
                else:
                    pending.append(Path(item.path))
                continue
            entry = _entry_for(root, folder, item, names, kind)
            if entry is not None:
                entries.append(entry)
    return entries


def _entry_for(root: Path, folder: Path, item: os.DirEntry, names: set[str], kind: NetworkType) -> NetworkEntry | None:
    path = Path(item.path)
    if path.suffix.lower() not in SUFFIXES[kind]:
        return None
    stem = stem_of(path)
    preview = next((folder / (stem + suffix) for suffix in PREVIEW_SUFFIXES if stem + suffix in names), None)
    stat = item.stat()
    relative = folder.relative_to(root).as_posix()
    return NetworkEntry(kind, stem, path, "" if relative == "." else relative, stat.st_size, stat.st_mtime, preview)


def _folder_entry(root: Path, folder: Path, item: os.DirEntry) -> NetworkEntry:
    """A diffusers VAE folder (config.json + weights) listed as one VAE."""
    relative = folder.relative_to(root).as_posix()
    stat = item.stat()
    return NetworkEntry("vae", item.name, Path(item.path), "" if relative == "." else relative, 0, stat.st_mtime)


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors header (8-byte length + JSON), without reading tensor data."""
    try:
        with path.open("rb") as file:
            (length,) = struct.unpack("<Q", file.read(8))
            if length > HEADER_LIMIT:
                return {}
            header = json.loads(file.read(length))
    except (OSError, ValueError, struct.error):
        return {}
    metadata = header.get("__metadata__", {}) if isinstance(header, dict) else {}
    return {str(key): str(value) for key, value in metadata.items()} if isinstance(metadata, dict) else {}


def trigger_words_from(metadata: dict[str, str], limit: int = 8) -> tuple[str, ...]:
    """The most frequent training tags (``ss_tag_frequency``), as A1111's card shows them."""
    try:
        frequency = json.loads(metadata.get("ss_tag_frequency", "{}"))
    except ValueError:
        return ()
    counts: dict[str, int] = {}
    for tags in frequency.values() if isinstance(frequency, dict) else ():
        for tag, count in tags.items() if isinstance(tags, dict) else ():
            counts[tag.strip()] = counts.get(tag.strip(), 0) + int(count)
    return tuple(sorted(counts, key=lambda tag: -counts[tag])[:limit])


def addnet_hash(path: Path) -> str:
    """A1111's LoRA "addnet" hash: sha256 of the safetensors tensor data (after the header), first 12 hex."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        file.seek(8 + length)
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()[:12]


class NetworkRegistry:
    """The LoRA, embedding and VAE folders; lists refreshed on demand, details read lazily."""

    def __init__(
        self,
        lora_dirs: Sequence[Path],
        embedding_dirs: Sequence[Path],
        vae_dirs: Sequence[Path],
        hash_cache: HashCache | None = None,
    ) -> None:
        self.dirs: dict[NetworkType, tuple[Path, ...]] = {
            "lora": tuple(lora_dirs),
            "embedding": tuple(embedding_dirs),
            "vae": tuple(vae_dirs),
        }
        self.hash_cache = hash_cache
        self._entries: dict[NetworkType, list[NetworkEntry]] = {}
        self._metadata: dict[tuple[Path, float], NetworkMetadata] = {}
        self._lock = threading.Lock()

    def refresh(self, kinds: Iterable[NetworkType] = ("lora", "embedding", "vae")) -> None:
        for kind in kinds:
            found = [entry for folder in self.dirs[kind] for entry in scan_folder(folder, kind)]
            found.sort(key=lambda entry: entry.name.lower())
            self._entries[kind] = found
            logger.info("networks scanned kind=%s count=%d", kind, len(found))

    def entries(self, kind: NetworkType) -> list[NetworkEntry]:
        if kind not in self._entries:
            self.refresh([kind])
        return self._entries[kind]

    def find(self, kind: NetworkType, name: str) -> NetworkEntry | None:
        """By A1111 name (file stem), then case-insensitively, then by file name."""
        entries = self.entries(kind)
        for matches in (
            lambda entry: entry.name == name,
            lambda entry: entry.name.lower() == name.lower(),
            lambda entry: entry.file_name == name,
        ):
            found = next((entry for entry in entries if matches(entry)), None)
            if found is not None:
                return found
        return None

    def metadata(self, entry: NetworkEntry) -> NetworkMetadata:
        """Description and trigger words from ``name.json`` and the safetensors metadata; cached."""
        key = (entry.path, entry.mtime)
        with self._lock:
            cached = self._metadata.get(key)
        if cached is not None:
            return cached
        found = _read_metadata(entry)
        with self._lock:
            self._metadata[key] = found
        return found

    def forget_metadata(self, entry: NetworkEntry) -> None:
        """Read ``name.json`` again next time (the card editor just wrote it)."""
        with self._lock:
            self._metadata.pop((entry.path, entry.mtime), None)

    def cached_metadata(self, entry: NetworkEntry) -> NetworkMetadata | None:
        """Metadata already read (never reads a file): lets a search look into descriptions for free."""
        return self._metadata.get((entry.path, entry.mtime))

    def file_sha256(self, entry: NetworkEntry) -> str:
        """The full-file sha256 (TI hashes, VAE hash), cached in cache.json."""
        if self.hash_cache is None:
            return compute_sha256(entry.path)
        return self.hash_cache.sha256(entry.path, kind=entry.kind)

    def lora_hash(self, entry: NetworkEntry) -> str:
        """The addnet hash of a LoRA (safetensors) or the file sha256's first 12 hex for pickles."""
        if entry.path.suffix.lower() != ".safetensors":
            return self.file_sha256(entry)[:12]
        if self.hash_cache is None:
            return addnet_hash(entry.path)
        cached = self.hash_cache.cached_sha256(entry.path, "lora-addnet")
        if cached is not None:
            return cached
        value = addnet_hash(entry.path)
        stamp = fingerprint(entry.path)
        with self.hash_cache.lock:
            self.hash_cache.store(
                cache_key(entry.path, "lora-addnet"), {"mtime": stamp.mtime, "size": stamp.size, "sha256": value}
            )
        return value


def _read_metadata(entry: NetworkEntry) -> NetworkMetadata:
    user: dict = {}
    sidecar = entry.path.with_name(entry.name + ".json")
    if sidecar.is_file():
        try:
            loaded = json.loads(sidecar.read_text(encoding="utf-8"))
            user = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            logger.warning("network metadata unreadable path=%s", sidecar)
    embedded = read_safetensors_metadata(entry.path) if entry.path.suffix == ".safetensors" else {}
    activation = str(user.get("activation text", "")).strip()
    triggers = tuple(word.strip() for word in activation.split(",") if word.strip()) or trigger_words_from(embedded)
    return NetworkMetadata(
        description=str(user.get("description", "")),
        trigger_words=triggers,
        base_model=str(user.get("sd version", "") or embedded.get("ss_base_model_version", "")),
        alias=embedded.get("ss_output_name", ""),
        extra={key: value for key, value in embedded.items() if key in ("ss_network_dim", "ss_network_alpha")},
    )

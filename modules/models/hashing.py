"""Checkpoint hashes as A1111 shows them, with the sha256 cached in cache.json.

- "Model hash" in infotexts is the first 10 hex digits of the file's sha256 (``short_hash``).
- The legacy 8-hex hash is the sha256 of the 64 KiB at offset 0x100000 (``legacy_model_hash``).
- A diffusers folder has no single file, so its hash is the sha256 of a stream made of, for each weight
  file in sorted relative-path order: the relative path (forward slashes, UTF-8), one NUL byte, then the
  file's bytes. It is stable across machines and changes when any weight file changes; configs and
  tokenizers are not part of it.

The cache keeps A1111's layout, ``{"hashes": {"checkpoint/<path>": {"mtime", "size", "sha256"}}}``, keyed by
the resolved path (so two folders can hold models of the same name); an entry whose size or mtime no
longer matches the file is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modules.options import write_json_atomic

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024
LEGACY_OFFSET = 0x100000
LEGACY_LENGTH = 0x10000
WEIGHT_SUFFIXES = frozenset({".safetensors", ".bin", ".ckpt", ".pt", ".pth"})


def short_hash(sha256: str) -> str:
    """A1111's "Model hash": the first 10 hex digits."""
    return sha256[:10]


def legacy_model_hash(path: Path) -> str:
    """A1111's old 8-hex hash: sha256 of 64 KiB read at offset 1 MiB (of a single file)."""
    with Path(path).open("rb") as file:
        file.seek(LEGACY_OFFSET)
        return hashlib.sha256(file.read(LEGACY_LENGTH)).hexdigest()[:8]


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a diffusers folder, sorted by relative path."""
    files = [item for item in folder.rglob("*") if item.is_file() and item.suffix.lower() in WEIGHT_SUFFIXES]
    return sorted(files, key=lambda item: item.relative_to(folder).as_posix())


def stream_into(digest: Any, path: Path) -> None:
    """Feed a file to a hashlib digest in 1 MiB chunks (never the whole file in memory)."""
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)


def compute_sha256(path: Path) -> str:
    """sha256 of a file, or of a diffusers folder's weight files (see the module docstring); streamed."""
    digest = hashlib.sha256()
    if path.is_dir():
        for item in weight_files(path):
            digest.update(item.relative_to(path).as_posix().encode("utf-8") + b"\0")
            stream_into(digest, item)
    else:
        stream_into(digest, path)
    return digest.hexdigest()


@dataclass(frozen=True)
class Fingerprint:
    """What must stay equal for a cached hash to stay valid."""

    size: int
    mtime: float


def fingerprint(path: Path) -> Fingerprint:
    if path.is_dir():
        stats = [item.stat() for item in weight_files(path)]
        return Fingerprint(
            size=sum(stat.st_size for stat in stats), mtime=max((s.st_mtime for s in stats), default=0.0)
        )
    stat = path.stat()
    return Fingerprint(size=stat.st_size, mtime=stat.st_mtime)


class HashCache:
    """sha256 of checkpoints, computed once per (size, mtime) and kept in ``cache_file``."""

    def __init__(self, cache_file: Path) -> None:
        self.cache_file = Path(cache_file)
        self.lock = threading.Lock()
        self.computed_count = 0  # how many hashes this object computed (not read from the cache)

    def cached_sha256(self, path: Path, kind: str = "checkpoint") -> str | None:
        """The cached hash if it is still valid, without computing anything."""
        entry = self.read_entries().get(cache_key(path, kind))
        if not isinstance(entry, dict):
            return None
        current = fingerprint(Path(path))
        if entry.get("size") != current.size or entry.get("mtime") != current.mtime:
            return None
        sha256 = entry.get("sha256")
        return sha256 if isinstance(sha256, str) else None

    def sha256(self, path: Path, kind: str = "checkpoint") -> str:
        """The sha256 of ``path`` (file or diffusers folder), from the cache when size and mtime match."""
        path = Path(path)
        with self.lock:
            cached = self.cached_sha256(path, kind)
            if cached is not None:
                return cached
            before = fingerprint(path)
            logger.info("hashing checkpoint path=%s size=%d", path, before.size)
            sha256 = compute_sha256(path)
            self.computed_count += 1
            self.store(cache_key(path, kind), {"mtime": before.mtime, "size": before.size, "sha256": sha256})
            return sha256

    def read_entries(self) -> dict:
        return self.read_file().get("hashes", {})

    def read_file(self) -> dict:
        if not self.cache_file.exists():
            return {}
        try:
            data = json.loads(self.cache_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, OSError) as error:
            logger.warning("hash cache unreadable path=%s error=%s; starting empty", self.cache_file, error)
            return {}
        return data if isinstance(data, dict) else {}

    def read_section(self, section: str) -> dict:
        """Another section of cache.json (A1111 keeps several there), empty when absent."""
        value = self.read_file().get(section)
        return value if isinstance(value, dict) else {}

    def store_section(self, section: str, key: str, value: object) -> None:
        with self.lock:
            data = self.read_file()
            entries = data.get(section) if isinstance(data.get(section), dict) else {}
            entries[key] = value
            data[section] = entries
            write_json_atomic(self.cache_file, data)

    def store(self, key: str, entry: dict) -> None:
        """Re-read and merge before the atomic write, so other sections of cache.json survive."""
        data = self.read_file()
        hashes = data.get("hashes") if isinstance(data.get("hashes"), dict) else {}
        hashes[key] = entry
        data["hashes"] = hashes
        write_json_atomic(self.cache_file, data)


def cache_key(path: Path, kind: str) -> str:
    return f"{kind}/{Path(path).resolve().as_posix()}"

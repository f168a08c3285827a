"""The checkpoints on disk: single files and diffusers folders, named and titled as A1111 does."""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from modules.models.errors import CheckpointNotFoundError
from modules.models.hashing import HashCache, legacy_model_hash, short_hash

logger = logging.getLogger(__name__)

CheckpointKind = Literal["single-file", "diffusers"]
# The single-file suffixes A1111 lists in models/Stable-diffusion (no .bin/.pth: those are other models).
LISTED_SUFFIXES = frozenset({".safetensors", ".ckpt", ".pt"})
SIDECAR_SUFFIX = ".config"
TITLE_HASH = re.compile(r"^(?P<name>.*?)\s*\[(?P<hash>[0-9a-fA-F]{8,64})\]$")
HEX = re.compile(r"^[0-9a-fA-F]{8,64}$")
HUB_REPO_PREFIX = "models--"


@dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint. ``name`` is the path relative to its folder without extension, with forward slashes."""

    path: Path
    name: str
    filename: str
    kind: CheckpointKind
    size_bytes: int
    sha256: str | None = None

    @property
    def relative_name(self) -> str:
        """The name with its extension, as A1111's checkpoint titles show it ("sub/model.safetensors")."""
        return self.name + (self.path.suffix if self.kind == "single-file" else "")

    @property
    def short_hash(self) -> str | None:
        return short_hash(self.sha256) if self.sha256 else None

    @property
    def title(self) -> str:
        """A1111's title: "name.safetensors [hash10]" once hashed, else "name.safetensors"."""
        return f"{self.relative_name} [{self.short_hash}]" if self.sha256 else self.relative_name

    def with_sha256(self, sha256: str) -> CheckpointInfo:
        return replace(self, sha256=sha256)


def sidecar_config_dir(checkpoint: Path) -> Path:
    """``models/x.safetensors`` -> ``models/x.config``: a diffusers config folder that overrides detection."""
    return checkpoint.with_name(checkpoint.stem + SIDECAR_SUFFIX)


def is_diffusers_folder(path: Path) -> bool:
    return path.is_dir() and (path / "model_index.json").is_file()


def is_sidecar_config(folder: Path) -> bool:
    """``x.config/`` beside ``x.safetensors`` holds the configs of that file, not a model."""
    if not folder.name.endswith(SIDECAR_SUFFIX):
        return False
    stem = folder.name[: -len(SIDECAR_SUFFIX)]
    return any((folder.parent / (stem + suffix)).is_file() for suffix in LISTED_SUFFIXES)


def describe(path: Path, name: str) -> CheckpointInfo:
    if path.is_dir():
        size = sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
        return CheckpointInfo(path=path, name=name, filename=path.name, kind="diffusers", size_bytes=size)
    return CheckpointInfo(path=path, name=name, filename=path.name, kind="single-file", size_bytes=path.stat().st_size)


def scan_folder(root: Path) -> Iterator[CheckpointInfo]:
    """Single files and diffusers folders under ``root``, subfolders included, hidden entries skipped."""
    for current, dirnames, filenames in os.walk(root, followlinks=True):
        folder = Path(current)
        kept: list[str] = []
        for dirname in sorted(dirnames):
            child = folder / dirname
            if dirname.startswith(".") or is_sidecar_config(child):
                continue
            if dirname.startswith(HUB_REPO_PREFIX):
                yield from scan_hub_repo(child)
                continue  # a huggingface_hub cache entry (models/Diffusers) lists its snapshot
            if is_diffusers_folder(child):
                yield describe(child, child.relative_to(root).as_posix())
                continue  # a model folder is not searched further
            kept.append(dirname)
        dirnames[:] = kept
        for filename in sorted(filenames):
            child = folder / filename
            if filename.startswith(".") or child.suffix.lower() not in LISTED_SUFFIXES:
                continue
            yield describe(child, child.relative_to(root).with_suffix("").as_posix())


def scan_hub_repo(repo_dir: Path) -> Iterator[CheckpointInfo]:
    """``models--org--name/snapshots/<commit>/`` of a huggingface_hub cache, listed as "org/name".

    Only a snapshot with model_index.json counts (the downloader fetches it last, so a partial download is
    never listed); with several, the newest. The size counts each blob once (fp16 aliases share blobs)."""
    snapshots = [folder for folder in (repo_dir / "snapshots").glob("*") if is_diffusers_folder(folder)]
    if not snapshots:
        return
    newest = max(snapshots, key=lambda folder: (folder / "model_index.json").lstat().st_mtime)
    blobs = {item.resolve() for item in newest.rglob("*") if item.is_file()}
    yield CheckpointInfo(
        path=newest,
        name=repo_dir.name.removeprefix(HUB_REPO_PREFIX).replace("--", "/", 1),
        filename=newest.name,
        kind="diffusers",
        size_bytes=sum(blob.stat().st_size for blob in blobs),
    )


def describe_extra(path: Path) -> CheckpointInfo:
    """A checkpoint named by ``--ckpt``: its name is its file name without extension."""
    if not (path.is_file() or is_diffusers_folder(path)):
        raise CheckpointNotFoundError(f"--ckpt {path} is neither a checkpoint file nor a diffusers folder")
    return describe(path, path.stem if path.is_file() else path.name)


class CheckpointRegistry:
    """Lists checkpoints in ``dirs`` plus ``extra_files``; finds them by title, name, file name or hash."""

    def __init__(self, dirs: Sequence[Path], hash_cache: HashCache, extra_files: Sequence[Path] = ()) -> None:
        self.dirs = tuple(Path(folder) for folder in dirs)
        self.extra_files = tuple(Path(item) for item in extra_files)
        self.hash_cache = hash_cache
        self.lock = threading.Lock()
        self.entries: list[CheckpointInfo] = []
        self.scanned = False

    def refresh(self) -> list[CheckpointInfo]:
        """Scan the folders again; hashes already in the cache are filled in, none is computed."""
        found: dict[Path, CheckpointInfo] = {}
        for extra in self.extra_files:
            info = describe_extra(extra)
            found.setdefault(info.path.resolve(), info)
        for root in self.dirs:
            if not root.is_dir():
                logger.debug("checkpoint folder missing path=%s", root)
                continue
            for info in scan_folder(root):
                found.setdefault(info.path.resolve(), info)
        entries = sorted((self.with_cached_hash(info) for info in found.values()), key=sort_key)
        with self.lock:
            self.entries = entries
            self.scanned = True
        logger.info("checkpoints listed count=%d", len(entries))
        return list(entries)

    def checkpoints(self) -> list[CheckpointInfo]:
        """The sorted list, scanning once on first use."""
        if not self.scanned:
            self.refresh()
        with self.lock:
            return list(self.entries)

    def hash_of(self, info: CheckpointInfo) -> str:
        """sha256 of a checkpoint (computed once, then cached); the listed entry gets its title hash."""
        sha256 = self.hash_cache.sha256(info.path)
        with self.lock:
            self.entries = [entry.with_sha256(sha256) if entry.path == info.path else entry for entry in self.entries]
        return sha256

    def find(self, name_or_title: str) -> CheckpointInfo:
        """Resolve a title (with or without hash), name, file name, or sha256 / short / legacy hash."""
        wanted = name_or_title.strip().replace("\\", "/")
        entries = self.checkpoints()
        match = find_by_name(entries, wanted) or self.find_by_hash(entries, wanted)
        if match is None:
            raise CheckpointNotFoundError(
                f"checkpoint {name_or_title!r} not found; {len(entries)} known (see models/Stable-diffusion)"
            )
        return match

    def with_cached_hash(self, info: CheckpointInfo) -> CheckpointInfo:
        cached = self.hash_cache.cached_sha256(info.path)
        return info.with_sha256(cached) if cached else info

    def find_by_hash(self, entries: list[CheckpointInfo], wanted: str) -> CheckpointInfo | None:
        """Hashes known from the cache, and the cheap legacy hash; nothing is hashed in full here."""
        if not HEX.match(wanted):
            return None
        lowered = wanted.lower()
        for entry in entries:
            if entry.sha256 and entry.sha256.startswith(lowered) and len(lowered) >= 10:
                return entry
        if len(lowered) == 8:
            for entry in entries:
                if entry.kind == "single-file" and legacy_model_hash(entry.path) == lowered:
                    return entry
        return None


def find_by_name(entries: list[CheckpointInfo], wanted: str) -> CheckpointInfo | None:
    for entry in entries:
        if wanted == entry.title:
            return entry
    titled = TITLE_HASH.match(wanted)
    bare = titled.group("name") if titled else wanted
    for candidates in (
        [entry for entry in entries if bare in (entry.relative_name, entry.name)],
        [entry for entry in entries if bare in (entry.filename, Path(entry.filename).stem)],
    ):
        if titled:
            hashed = [entry for entry in candidates if entry.short_hash == titled.group("hash").lower()]
            candidates = hashed or candidates
        if candidates:
            return candidates[0]
    return None


def sort_key(info: CheckpointInfo) -> tuple[str, str]:
    return (info.name.lower(), str(info.path))

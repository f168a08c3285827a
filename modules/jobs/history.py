"""The image history: every saved image of a generation job, indexed with its infotext fields, in the queue's
database. Images already in the output folders are indexed by a background scan (at each start: the first one
reads everything, later ones only new files); rows whose file is gone (deleted by hand) drop out."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from modules.jobs.database import Database
from modules.processing.infotext import parse_infotext, read_infotext
from modules.processing.run import ProcessingResult

logger = logging.getLogger(__name__)

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS images (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        path TEXT NOT NULL UNIQUE,
        owner TEXT NOT NULL,        -- the login that queued the job; '' for files found in the folders
        prompt TEXT NOT NULL DEFAULT '',
        negative_prompt TEXT NOT NULL DEFAULT '',
        seed INTEGER,
        model TEXT NOT NULL DEFAULT '',
        sampler TEXT NOT NULL DEFAULT '',
        width INTEGER,
        height INTEGER,
        infotext TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        favourite INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS images_owner ON images (owner, created_at)",
)
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".avif", ".gif"})
MAX_INFOTEXT = 64 * 1024  # longer texts are not parsed (a file in the folders may be hostile)


@dataclass(frozen=True)
class HistoryImage:
    id: int
    path: Path
    owner: str
    prompt: str
    negative_prompt: str
    seed: int | None
    model: str
    sampler: str
    width: int | None
    height: int | None
    infotext: str
    created_at: float
    favourite: bool


@dataclass(frozen=True)
class HistoryQuery:
    """Filters; empty ones do not filter. ``words``: every word must be in the prompt (any case)."""

    words: str = ""
    model: str = ""
    seed: int | None = None
    date_from: date | None = None
    date_to: date | None = None
    favourites_only: bool = False
    limit: int = 200


@dataclass
class ScanProgress:
    """The background scan of the output folders: what the UI shows while it runs."""

    total: int = 0
    done: int = 0
    added: int = 0
    removed: int = 0
    running: bool = False
    finished: threading.Event = field(default_factory=threading.Event, repr=False)

    def text(self) -> str:
        if self.running:
            return f"Indexing existing images: {self.done}/{self.total}"
        return f"Index up to date ({self.added} added, {self.removed} removed at start)" if self.total else ""


def fields_of(text: str) -> dict[str, object]:
    """The indexed columns from an infotext (empty when there is none or it is too long to parse)."""
    if not text or len(text) > MAX_INFOTEXT:
        return {}
    parsed = parse_infotext(text)

    def integer(key: str) -> int | None:
        try:
            return int(str(parsed.get(key)))
        except (TypeError, ValueError):
            return None

    return {
        "prompt": str(parsed.get("Prompt", "")),
        "negative_prompt": str(parsed.get("Negative prompt", "")),
        "seed": integer("Seed"),
        "model": str(parsed.get("Model", "") or ""),
        "sampler": str(parsed.get("Sampler", "") or ""),
        "width": integer("Size-1"),
        "height": integer("Size-2"),
    }


def day_start(day: date) -> float:
    return datetime.combine(day, datetime.min.time()).timestamp()


class ImageHistory:
    """Index, search, favourite and delete saved images; owners see their own, the admin (owner None) all."""

    def __init__(self, database: Database, outputs_dir: Path) -> None:
        self.database = database
        self.outputs_dir = outputs_dir
        self.scan_progress = ScanProgress()
        with database.transaction() as connection:
            for statement in SCHEMA:
                connection.execute(statement)

    # --- indexing ---------------------------------------------------------------------------------------------

    def add(self, path: Path, owner: str, infotext: str, created_at: float | None = None) -> None:
        values = {
            "prompt": "",
            "negative_prompt": "",
            "seed": None,
            "model": "",
            "sampler": "",
            "width": None,
            "height": None,
            **fields_of(infotext),
            "path": str(Path(path).resolve()),
            "owner": owner,
            "infotext": infotext if len(infotext) <= MAX_INFOTEXT else "",
            "created_at": created_at if created_at is not None else time.time(),
        }
        columns = ", ".join(values)
        marks = ", ".join(f":{name}" for name in values)
        with self.database.transaction() as connection:
            connection.execute(f"INSERT OR REPLACE INTO images ({columns}) VALUES ({marks})", values)

    def add_result(self, owner: str, result: ProcessingResult) -> None:
        """The saved images of one job (saved_paths and infotexts are in the same order)."""
        moment = time.time()
        for path, text in zip(result.saved_paths, result.infotexts, strict=False):
            self.add(path, owner, text, moment)

    def start_scan(self) -> threading.Thread:
        """Index the output folders in a background thread (progress in ``scan_progress``)."""
        thread = threading.Thread(target=self.scan, name="easel-history-scan", daemon=True)
        thread.start()
        return thread

    def scan(self) -> ScanProgress:
        progress = self.scan_progress
        progress.running = True
        progress.finished.clear()
        progress.total = progress.done = progress.added = progress.removed = 0
        try:
            progress.removed = self.drop_missing()
            known = {row["path"] for row in self.database.query("SELECT path FROM images")}
            files = [path for path in self._image_files() if str(path) not in known]
            progress.total, progress.done = len(files), 0
            for path in files:
                progress.added += self._index_file(path)
                progress.done += 1
            logger.info("history scan done added=%d removed=%d", progress.added, progress.removed)
        finally:
            progress.running = False
            progress.finished.set()
        return progress

    def _image_files(self) -> Iterable[Path]:
        if not self.outputs_dir.is_dir():
            return []
        return sorted(path.resolve() for path in self.outputs_dir.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES)

    def _index_file(self, path: Path) -> int:
        try:
            with Image.open(path) as image:
                text = read_infotext(image) or ""
            self.add(path, "", text, path.stat().st_mtime)
        except (OSError, UnidentifiedImageError, ValueError) as error:
            logger.info("history skips file path=%s reason=%s", path, error)
            return 0
        return 1

    def drop_missing(self, rows: Iterable[tuple[int, str]] | None = None) -> int:
        """Remove the rows whose file is gone; returns how many."""
        if rows is None:
            rows = [(row["id"], row["path"]) for row in self.database.query("SELECT id, path FROM images")]
        gone = [(image_id,) for image_id, path in rows if not Path(path).exists()]
        if gone:
            with self.database.transaction() as connection:
                connection.executemany("DELETE FROM images WHERE id=?", gone)
        return len(gone)

    # --- reading ---------------------------------------------------------------------------------------------

    def search(self, query: HistoryQuery, owner: str | None) -> list[HistoryImage]:
        """Newest first; rows whose file was deleted by hand are dropped on the way."""
        clauses, parameters = self._where(query, owner)
        sql = f"SELECT * FROM images WHERE {' AND '.join(clauses) or '1'} ORDER BY created_at DESC, id DESC LIMIT ?"
        rows = self.database.query(sql, (*parameters, query.limit))
        images = [self._image(row) for row in rows]
        present = [image for image in images if image.path.exists()]
        if len(present) != len(images):
            self.drop_missing((image.id, str(image.path)) for image in images)
        return present

    @staticmethod
    def _where(query: HistoryQuery, owner: str | None) -> tuple[list[str], list[object]]:
        clauses: list[str] = []
        parameters: list[object] = []
        if owner is not None:
            clauses.append("owner = ?")
            parameters.append(owner)
        for word in query.words.split():
            clauses.append("prompt LIKE ? ESCAPE '\\'")
            escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            parameters.append(f"%{escaped}%")
        if query.model.strip():
            clauses.append("model LIKE ?")
            parameters.append(f"%{query.model.strip()}%")
        if query.seed is not None:
            clauses.append("seed = ?")
            parameters.append(query.seed)
        if query.date_from is not None:
            clauses.append("created_at >= ?")
            parameters.append(day_start(query.date_from))
        if query.date_to is not None:
            clauses.append("created_at < ?")
            parameters.append(day_start(query.date_to + timedelta(days=1)))
        if query.favourites_only:
            clauses.append("favourite = 1")
        return clauses, parameters

    @staticmethod
    def _image(row) -> HistoryImage:
        return HistoryImage(
            id=row["id"],
            path=Path(row["path"]),
            owner=row["owner"],
            prompt=row["prompt"],
            negative_prompt=row["negative_prompt"],
            seed=row["seed"],
            model=row["model"],
            sampler=row["sampler"],
            width=row["width"],
            height=row["height"],
            infotext=row["infotext"],
            created_at=row["created_at"],
            favourite=bool(row["favourite"]),
        )

    def get(self, image_id: int, owner: str | None) -> HistoryImage | None:
        """The image if ``owner`` may see it (None: the admin); another login's id answers as an unknown one."""
        rows = self.database.query(
            "SELECT * FROM images WHERE id=? AND (? IS NULL OR owner=?)", (image_id, owner, owner)
        )
        return self._image(rows[0]) if rows else None

    # --- changing --------------------------------------------------------------------------------------------

    def set_favourite(self, image_id: int, owner: str | None, favourite: bool) -> bool:
        with self.database.transaction() as connection:
            cursor = connection.execute(
                "UPDATE images SET favourite=? WHERE id=? AND (? IS NULL OR owner=?)",
                (int(favourite), image_id, owner, owner),
            )
            return cursor.rowcount == 1

    def delete(self, image_id: int, owner: str | None) -> bool:
        """Delete the file (and its .txt infotext beside it) and the row; False when ``owner`` has no such image."""
        image = self.get(image_id, owner)
        if image is None:
            return False
        for path in (image.path, image.path.with_suffix(".txt")):
            path.unlink(missing_ok=True)
        with self.database.transaction() as connection:
            connection.execute("DELETE FROM images WHERE id=?", (image_id,))
        logger.info("history image deleted id=%d path=%s", image_id, image.path)
        return True

"""One SQLite database file (standard library sqlite3, WAL mode) shared by the job queue and the image history.

One connection, used from several threads under one lock: every statement is short, and one writer at a time is
what SQLite allows anyway.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

IN_MEMORY = ":memory:"


class Database:
    """A sqlite3 connection with a lock; ``transaction()`` commits on success and rolls back on error."""

    def __init__(self, location: Path | str = IN_MEMORY) -> None:
        self.location = str(location)
        if self.location != IN_MEMORY:
            Path(self.location).parent.mkdir(parents=True, exist_ok=True)
        self._connection = sqlite3.connect(self.location, check_same_thread=False, isolation_level=None)
        self._connection.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        if self.location != IN_MEMORY:
            # WAL: readers never wait for the writer; NORMAL: a commit survives a killed process (not a power cut)
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=NORMAL")
        self._connection.execute("PRAGMA busy_timeout=5000")
        logger.info("database open path=%s", self.location)

    @property
    def persistent(self) -> bool:
        return self.location != IN_MEMORY

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                yield self._connection
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")

    def query(self, sql: str, parameters: tuple | dict = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._connection.execute(sql, parameters).fetchall()

    def close(self) -> None:
        with self._lock:
            self._connection.close()

"""The job queue table: every generation job is a row, so a restart finds the queued jobs again.

Fair order between logins (written by hand: no queue library orders by owner rounds): a job gets a *round* when
it is queued, ``max(R + 1, L + 1)`` where R is the round of the last job started and L the highest round among the
same owner's queued or running jobs (none: only R + 1 counts). Jobs start in (round, arrival) order. So each
login's k-th waiting job belongs to round R + k: one login's 100 jobs take rounds R+1..R+100, and another login's
single job, queued later, joins round R+1 (or the next round if that one has started) and waits behind at most one
job of each other login.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from enum import StrEnum

from modules.jobs.codec import decode_request, encode_request
from modules.jobs.database import Database
from modules.processing.processing import ProcessingError
from modules.processing.requests import GenerationRequest

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- arrival order
    id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    kind TEXT NOT NULL,                     -- the request's class name
    request TEXT NOT NULL,                  -- JSON (images as PNG base64)
    prompt TEXT NOT NULL DEFAULT '',        -- shown in the queue lists
    state TEXT NOT NULL,
    round INTEGER NOT NULL,
    queued_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    result_paths TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    scripts TEXT                            -- JSON: the job's scripts with their arguments by name (or NULL)
);
CREATE INDEX IF NOT EXISTS jobs_waiting ON jobs (state, round, seq);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, state);
"""
# Columns added after the first version of the table: (name, declaration), added to an older queue.db on open.
ADDED_COLUMNS = (("scripts", "TEXT"),)
RESTART_REASON = "the server stopped while this job ran"
FINISHED_KEPT = 2000  # finished job rows kept (the images stay in the history table)
TRIM_EVERY = 100  # finished jobs between two trims


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED_STATES = (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class JobRecord:
    """One row: what the queue panel and the API list show."""

    id: str
    number: int
    owner: str
    kind: str
    state: JobState
    round: int
    queued_at: float
    started_at: float | None
    finished_at: float | None
    result_paths: tuple[str, ...]
    error: str | None
    prompt: str
    scripts: str | None = None  # the job's scripts as JSON (modules.generation), None without scripts

    @classmethod
    def from_row(cls, row) -> JobRecord:
        return cls(
            id=row["id"],
            number=row["seq"],
            owner=row["owner"],
            kind=row["kind"],
            state=JobState(row["state"]),
            round=row["round"],
            queued_at=row["queued_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            result_paths=tuple(json.loads(row["result_paths"] or "[]")),
            error=row["error"],
            prompt=row["prompt"],
            scripts=row["scripts"],
        )


class JobStore:
    """Queue operations on the ``jobs`` table; each is one short transaction."""

    def __init__(self, database: Database, keep_finished: int = FINISHED_KEPT, trim_every: int = TRIM_EVERY) -> None:
        self.database = database
        self.keep_finished = keep_finished
        self.trim_every = trim_every
        with database.transaction() as connection:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    connection.execute(statement)
            present = {row["name"] for row in connection.execute("PRAGMA table_info(jobs)")}
            for name, declaration in ADDED_COLUMNS:
                if name not in present:
                    connection.execute(f"ALTER TABLE jobs ADD COLUMN {name} {declaration}")
        self.current_round = self._last_started_round()
        self._finished = 0

    def _last_started_round(self) -> int:
        rows = self.database.query("SELECT MAX(round) FROM jobs WHERE started_at IS NOT NULL")
        return rows[0][0] or 0

    def recover(self) -> list[str]:
        """After a restart: running rows failed (with the reason); returns the queued ids in start order."""
        with self.database.transaction() as connection:
            connection.execute(
                "UPDATE jobs SET state=?, error=?, finished_at=? WHERE state=?",
                (JobState.FAILED, RESTART_REASON, time.time(), JobState.RUNNING),
            )
            self._trim(connection)
        return [row["id"] for row in self.database.query(self._waiting_sql("id"))]

    def _trim(self, connection) -> None:
        """Forget the oldest finished rows beyond ``keep_finished`` (their images stay in the history)."""
        connection.execute(
            "DELETE FROM jobs WHERE state IN (?, ?, ?) AND seq <= "
            "(SELECT seq FROM jobs WHERE state IN (?, ?, ?) ORDER BY seq DESC LIMIT 1 OFFSET ?)",
            (*FINISHED_STATES, *FINISHED_STATES, self.keep_finished),
        )

    @staticmethod
    def _waiting_sql(columns: str) -> str:
        return f"SELECT {columns} FROM jobs WHERE state='queued' ORDER BY round, seq"

    def add(
        self, job_id: str, owner: str, request: GenerationRequest, limit: int = 0, scripts: str | None = None
    ) -> JobRecord:
        """Queue a request (with its scripts as JSON, kept for a restart); QueueFullError when ``owner`` already has
        ``limit`` queued jobs (0: no limit); JobIdInUseError when the id names a job that has not finished."""
        kind, text = encode_request(request)
        with self.database.transaction() as connection:
            existing = connection.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()
            if existing is not None and existing["state"] not in FINISHED_STATES:
                raise JobIdInUseError(f"job id {job_id!r} is already queued or running")
            waiting = connection.execute(
                "SELECT COUNT(*), MAX(round) FROM jobs WHERE owner=? AND state IN ('queued', 'running')", (owner,)
            ).fetchone()
            queued = connection.execute(
                "SELECT COUNT(*) FROM jobs WHERE owner=? AND state='queued'", (owner,)
            ).fetchone()[0]
            if limit and queued >= limit:
                raise QueueFullError(
                    f"queue full: you already have {queued} jobs waiting (limit {limit}); wait or cancel one"
                )
            round_number = max(self.current_round + 1, (waiting[1] or 0) + 1)
            if existing is not None:
                connection.execute("DELETE FROM jobs WHERE id=?", (job_id,))
            connection.execute(
                "INSERT INTO jobs (id, owner, kind, request, prompt, state, round, queued_at, scripts) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, owner, kind, text, request.prompt, JobState.QUEUED, round_number, time.time(), scripts),
            )
            row = connection.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return JobRecord.from_row(row)

    def claim_next(self) -> tuple[JobRecord, GenerationRequest] | None:
        """The next job in fair order, marked running, with its request; None when none waits. A row whose request
        cannot be read (a kind from another version) is failed with the reason and skipped."""
        while True:
            with self.database.transaction() as connection:
                row = connection.execute(self._waiting_sql("*") + " LIMIT 1").fetchone()
                if row is None:
                    return None
                try:
                    request = decode_request(row["kind"], row["request"])
                except (KeyError, ValueError) as error:
                    connection.execute(
                        "UPDATE jobs SET state=?, error=?, finished_at=? WHERE id=?",
                        (JobState.FAILED, f"stored request unreadable: {error}", time.time(), row["id"]),
                    )
                    continue
                connection.execute(
                    "UPDATE jobs SET state=?, started_at=? WHERE id=?", (JobState.RUNNING, time.time(), row["id"])
                )
                self.current_round = max(self.current_round, row["round"])
                row = connection.execute("SELECT * FROM jobs WHERE id=?", (row["id"],)).fetchone()
            return JobRecord.from_row(row), request

    def finish(self, job_id: str, state: JobState, result_paths: list[str] = (), error: str | None = None) -> None:
        with self.database.transaction() as connection:
            connection.execute(
                "UPDATE jobs SET state=?, finished_at=?, result_paths=?, error=? WHERE id=?",
                (state, time.time(), json.dumps(list(result_paths)), error, job_id),
            )
            self._finished += 1
            if self._finished % self.trim_every == 0:
                self._trim(connection)

    def cancel(self, job_id: str, owner: str | None, reason: str) -> bool:
        """Cancel a queued job; ``owner`` None: any owner's (the admin). False when no such queued job is visible."""
        with self.database.transaction() as connection:
            cursor = connection.execute(
                "UPDATE jobs SET state=?, finished_at=?, error=? "
                "WHERE id=? AND state='queued' AND (? IS NULL OR owner=?)",
                (JobState.CANCELLED, time.time(), reason, job_id, owner, owner),
            )
            return cursor.rowcount == 1

    def record(self, job_id: str) -> JobRecord | None:
        rows = self.database.query("SELECT * FROM jobs WHERE id=?", (job_id,))
        return JobRecord.from_row(rows[0]) if rows else None

    def waiting_ids(self) -> list[str]:
        return [row["id"] for row in self.database.query(self._waiting_sql("id"))]

    def position(self, job_id: str) -> int:
        """1-based place among the queued jobs in start order; 0 when the job is not queued."""
        with self.database.transaction() as connection:
            mine = connection.execute("SELECT state, round, seq FROM jobs WHERE id=?", (job_id,)).fetchone()
            if mine is None or mine["state"] != JobState.QUEUED:
                return 0
            ahead = connection.execute(
                "SELECT COUNT(*) FROM jobs WHERE state='queued' AND (round < ? OR (round = ? AND seq < ?))",
                (mine["round"], mine["round"], mine["seq"]),
            ).fetchone()[0]
        return ahead + 1

    def list(self, owner: str | None = None, limit: int = 200) -> list[JobRecord]:
        """Waiting and running jobs in start order, then the latest finished ones; ``owner`` None: everyone's."""
        where = "" if owner is None else "AND owner=:owner"
        live = self.database.query(
            f"SELECT * FROM jobs WHERE state IN ('running', 'queued') {where} "
            "ORDER BY state='queued', round, seq LIMIT :limit",
            {"owner": owner, "limit": limit},
        )
        finished = self.database.query(
            f"SELECT * FROM jobs WHERE state IN ('done', 'failed', 'cancelled') {where} ORDER BY seq DESC LIMIT :limit",
            {"owner": owner, "limit": limit},
        )
        return [JobRecord.from_row(row) for row in (*live, *finished)]


class QueueError(ProcessingError):
    """A queue refusal the caller can act on (a ProcessingError: the UI and the API show its message)."""


class QueueFullError(QueueError):
    """The login already has as many queued jobs as the ``queue_max_jobs_per_user`` setting allows (API: 429)."""


class JobIdInUseError(QueueError):
    """A job id (A1111's force_task_id) that names a queued or running job (API: 409)."""


class JobCancelledError(QueueError):
    """The job was cancelled before it started (by its owner, the admin, or because its client went away)."""

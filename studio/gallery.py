"""The studio's store: every job and every finished generation, in one SQLite file.

A job is queued, then running, then done, failed or cancelled. Done jobs are the gallery.
Several processes and threads may share one store: every call opens its own connection,
the database runs in WAL mode, and claiming the next job is one ``BEGIN IMMEDIATE``
transaction, so two workers can never take the same job.

Files live beside the database under names the store makes (``videos/<id>.mp4``,
``thumbs/<id>.png``, ``elements/<sha256>.png``): nothing a user types ever becomes a path.
No streamlit here; the UI pages and the tests call the same functions.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
import uuid
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HOME_ENV = "STUDIO_HOME"
STATUSES = ("queued", "running", "done", "failed", "cancelled")
KINDS = ("generate", "storyboard")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    status      TEXT NOT NULL,
    prompt      TEXT NOT NULL,      -- what search looks in (a storyboard: its scene prompts)
    seed        INTEGER,
    request     TEXT NOT NULL,      -- JSON: everything needed to run the job again
    created     REAL NOT NULL,
    started     REAL,
    finished    REAL,
    done_steps  INTEGER NOT NULL DEFAULT 0,
    total_steps INTEGER NOT NULL DEFAULT 0,
    cancel      INTEGER NOT NULL DEFAULT 0,
    error       TEXT,
    video       TEXT,               -- file names inside the store's folders, never user text
    sidecar     TEXT,
    thumbnail   TEXT,
    scores      TEXT,               -- JSON
    stage       TEXT                -- JSON: what a running job is doing (set_stage)
);
CREATE INDEX IF NOT EXISTS jobs_status_created ON jobs (status, created);
"""
# columns added since the first schema: (name, SQL type), added to an older store on open
_ADDED_COLUMNS = (("stage", "TEXT"),)


def default_home() -> Path:
    """``$STUDIO_HOME`` if set, else ``~/.local/share/shapes-video-studio``."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env)
    return Path.home() / ".local" / "share" / "shapes-video-studio"


@dataclass
class Job:
    id: str
    kind: str
    status: str
    prompt: str
    seed: int | None
    request: dict[str, Any]
    created: float
    started: float | None = None
    finished: float | None = None
    done_steps: int = 0
    total_steps: int = 0
    cancel: bool = False
    error: str | None = None
    video: str | None = None
    sidecar: str | None = None
    thumbnail: str | None = None
    scores: dict[str, Any] = field(default_factory=dict)
    # while running: {"name": loading | first_frame | clip | windows | encoding, "since": the
    # time it began, "base": done_steps then, and for best-of "candidate" of "candidates"}
    stage: dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.status in ("queued", "running")

    @property
    def fraction(self) -> float:
        return self.done_steps / self.total_steps if self.total_steps else 0.0

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        data = dict(row)
        data["request"] = json.loads(data["request"])
        data["scores"] = json.loads(data["scores"]) if data["scores"] else {}
        data["stage"] = json.loads(data["stage"]) if data.get("stage") else {}
        data["cancel"] = bool(data["cancel"])
        return cls(**data)


class Gallery:
    """The SQLite store at ``home/gallery.sqlite`` and the files beside it."""

    def __init__(self, home: str | Path | None = None):
        self.home = Path(home) if home else default_home()
        for sub in ("videos", "thumbs", "elements"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        self.db_path = self.home / "gallery.sqlite"
        with closing(self._connect()) as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(_SCHEMA)
            have = {row["name"] for row in con.execute("PRAGMA table_info(jobs)")}
            for name, kind in _ADDED_COLUMNS:
                if name not in have:
                    try:
                        con.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
                    except sqlite3.OperationalError:  # another process added it first
                        pass

    # ------------------------------------------------------------------ plumbing
    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        con.row_factory = sqlite3.Row
        return con

    def _execute(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        with closing(self._connect()) as con:
            return con.execute(sql, params).fetchall()

    def path(self, folder: str, name: str | None) -> Path | None:
        """The file a job column names, or None; names come from the store, never users."""
        return self.home / folder / name if name else None

    # ------------------------------------------------------------------ jobs
    def enqueue(self, kind: str, request: dict[str, Any], prompt: str, seed: int | None) -> Job:
        if kind not in KINDS:
            raise ValueError(f"job kind must be one of {KINDS}, got {kind!r}")
        job_id = uuid.uuid4().hex
        self._execute(
            "INSERT INTO jobs (id, kind, status, prompt, seed, request, created) "
            "VALUES (?, ?, 'queued', ?, ?, ?, ?)",
            (job_id, kind, prompt, seed, json.dumps(request), time.time()),
        )
        return self.get(job_id)

    def get(self, job_id: str) -> Job | None:
        rows = self._execute("SELECT * FROM jobs WHERE id = ?", (str(job_id),))
        return Job.from_row(rows[0]) if rows else None

    def queue_position(self, job_id: str) -> int | None:
        """1 = the next job to run; None when the job is not waiting (a job asked to cancel
        never runs, so it neither waits nor counts)."""
        job = self.get(job_id)
        if job is None or job.status != "queued" or job.cancel:
            return None
        rows = self._execute(
            "SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND cancel = 0 AND "
            "(created < ? OR (created = ? AND id < ?))",
            (job.created, job.created, job.id),
        )
        return rows[0][0] + 1

    def claim_next(self) -> Job | None:
        """Atomically take the oldest queued job and mark it running."""
        with closing(self._connect()) as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                row = con.execute(
                    "SELECT id FROM jobs WHERE status = 'queued' AND cancel = 0 "
                    "ORDER BY created, id LIMIT 1"
                ).fetchone()
                if row is not None:
                    con.execute(
                        "UPDATE jobs SET status = 'running', started = ? WHERE id = ?",
                        (time.time(), row["id"]),
                    )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return self.get(row["id"]) if row is not None else None

    def requeue_interrupted(self) -> int:
        """Settle the jobs a worker that died left behind; returns how many were queued again.

        A job its user asked to cancel (running when the worker died, or queued with the
        request: no worker ever takes such a job) is cancelled; a job left running without
        that request goes back to the queue, so nothing the user asked for is lost. Only the
        machine's one worker calls this, while it holds the worker lock, before it runs
        anything: every 'running' job is then one whose worker is gone.
        """
        with closing(self._connect()) as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                con.execute(
                    "UPDATE jobs SET status = 'cancelled', finished = ? "
                    "WHERE cancel = 1 AND status IN ('queued', 'running')",
                    (time.time(),),
                )
                cur = con.execute(
                    "UPDATE jobs SET status = 'queued', started = NULL, done_steps = 0, "
                    "stage = NULL WHERE status = 'running'"
                )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            return cur.rowcount

    def set_progress(self, job_id: str, done: int, total: int) -> bool:
        """Record progress; returns True when the job has been asked to cancel."""
        with closing(self._connect()) as con:
            con.execute(
                "UPDATE jobs SET done_steps = ?, total_steps = ? WHERE id = ?",
                (done, total, job_id),
            )
            row = con.execute("SELECT cancel FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row["cancel"])

    def set_stage(self, job_id: str, stage: dict[str, Any]) -> None:
        """Record what a running job is doing now (:attr:`Job.stage`), for progress lines."""
        self._execute("UPDATE jobs SET stage = ? WHERE id = ?", (json.dumps(stage), job_id))

    def cancel_requested(self, job_id: str) -> bool:
        rows = self._execute("SELECT cancel FROM jobs WHERE id = ?", (job_id,))
        return bool(rows and rows[0]["cancel"])

    def cancel(self, job_id: str) -> Job | None:
        """A queued job is cancelled at once; a running one stops at its next step."""
        now = time.time()
        self._execute(
            "UPDATE jobs SET cancel = 1, "
            "status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END, "
            "finished = CASE WHEN status = 'queued' THEN ? ELSE finished END "
            "WHERE id = ? AND status IN ('queued', 'running')",
            (now, job_id),
        )
        return self.get(job_id)

    def finish(
        self,
        job_id: str,
        status: str,
        *,
        error: str | None = None,
        video: str | None = None,
        sidecar: str | None = None,
        thumbnail: str | None = None,
        scores: dict[str, Any] | None = None,
    ) -> None:
        if status not in ("done", "failed", "cancelled"):
            raise ValueError(f"a job finishes as done, failed or cancelled, got {status!r}")
        self._execute(
            "UPDATE jobs SET status = ?, finished = ?, error = ?, video = ?, sidecar = ?, "
            "thumbnail = ?, scores = ? WHERE id = ?",
            (
                status,
                time.time(),
                error,
                video,
                sidecar,
                thumbnail,
                json.dumps(scores) if scores else None,
                job_id,
            ),
        )

    # ------------------------------------------------------------------ gallery
    def search(
        self,
        text: str = "",
        kind: str | None = None,
        status: str | None = "done",
        limit: int = 50,
        offset: int = 0,
    ) -> list[Job]:
        """Newest first; ``text`` matches anywhere in the prompt, case-insensitively."""
        where, params = _filters(text, kind, status)
        sql = "SELECT * FROM jobs" + where + " ORDER BY created DESC, id LIMIT ? OFFSET ?"
        rows = self._execute(sql, (*params, int(limit), int(offset)))
        return [Job.from_row(r) for r in rows]

    def count(self, text: str = "", kind: str | None = None, status: str | None = "done") -> int:
        """How many jobs :meth:`search` would page through with these filters."""
        where, params = _filters(text, kind, status)
        return self._execute("SELECT COUNT(*) FROM jobs" + where, tuple(params))[0][0]

    def delete(self, job_id: str) -> bool:
        """Remove a finished job and its files; an active job must be cancelled first."""
        job = self.get(job_id)
        if job is None:
            return False
        # the row first, and only if it is still there and finished: of two deletes (or a
        # delete and a re-queue) at once, one removes it and the other is told it is gone
        with closing(self._connect()) as con:  # autocommit: rowcount is this call's own
            removed = con.execute(
                "DELETE FROM jobs WHERE id = ? AND status NOT IN ('queued', 'running')", (job_id,)
            ).rowcount
        if not removed:
            job = self.get(job_id)
            if job is not None and job.active:
                raise ValueError(f"job {job_id} is {job.status}: cancel it before deleting it")
            return False
        for folder, name in (
            ("videos", job.video),
            ("videos", job.sidecar),
            ("thumbs", job.thumbnail),
        ):
            p = self.path(folder, name)
            if p is not None:
                try:
                    p.unlink(missing_ok=True)
                except OSError as exc:  # the row is gone: a file left is logged, not fatal
                    log.warning("could not remove %s of deleted job %s: %s", p, job_id, exc)
        return True


def _filters(text: str, kind: str | None, status: str | None) -> tuple[str, list[Any]]:
    """The WHERE clause of a gallery search and its parameters."""
    where, params = [], []
    if text.strip():
        # LIKE with an escape character: a user's % or _ is matched literally
        escaped = text.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append("prompt LIKE ? ESCAPE '\\'")
        params.append(f"%{escaped}%")
    if kind:
        where.append("kind = ?")
        params.append(kind)
    if status:
        where.append("status = ?")
        params.append(status)
    return (" WHERE " + " AND ".join(where) if where else ""), params

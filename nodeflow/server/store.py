"""The server's memory: jobs, their history and their events, in one SQLite file (WAL).

Every state change of a job and the event that announces it are written in one
transaction, so after a crash the history and the event log agree. A job that
was running when the process died is found in state ``running`` at the next
start and is put back in the queue (`JobStore.recover`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINAL_STATES = (DONE, FAILED, CANCELLED)
CHOICE_WINDOW = 64
"""How many of the oldest queued jobs a worker chooses among (model affinity)."""

Choose = Callable[[list[tuple[str, list[str]]]], str]
"""Picks one job id among queued (id, models) pairs, oldest first."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    number INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    kind TEXT NOT NULL,
    graph TEXT NOT NULL,
    request TEXT,
    outputs TEXT,
    client_id TEXT,
    idempotency_key TEXT UNIQUE,
    submitted REAL NOT NULL,
    started REAL,
    finished REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    error TEXT,
    models TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, number);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT,
    time REAL NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_job ON events (job_id, seq);
"""


@dataclass
class Job:
    """One job as stored: what to run, where it is, what it produced."""

    id: str
    number: int
    state: str
    kind: str
    graph: str
    """The nodeflow graph to run, as graph-file JSON (overrides applied)."""
    request: Any = None
    """What the client sent, when it is not a nodeflow graph (a ComfyUI prompt)."""
    outputs: list[str] | None = None
    client_id: str | None = None
    idempotency_key: str | None = None
    submitted: float = 0.0
    started: float | None = None
    finished: float | None = None
    attempts: int = 0
    result: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    models: list[str] = field(default_factory=list)
    """The model files the graph names (``kind:name``), for model affinity."""

    def to_json(self) -> dict[str, Any]:
        """The job as the native API shows it."""
        timings = {"submitted": self.submitted, "started": self.started, "finished": self.finished}
        if self.started is not None and self.finished is not None:
            timings["seconds"] = round(self.finished - self.started, 6)
        return {
            "id": self.id,
            "number": self.number,
            "state": self.state,
            "kind": self.kind,
            "client_id": self.client_id,
            "idempotency_key": self.idempotency_key,
            "attempts": self.attempts,
            "outputs_requested": self.outputs,
            "timings": timings,
            "files": self.result.get("files", []),
            "values": self.result.get("values", {}),
            "nodes": {k: self.result[k] for k in ("ran", "cached", "skipped", "node_seconds")
                      if k in self.result},
            "error": self.error,
            "worker": self.result.get("worker"),
            "model_loads": self.result.get("loads"),
        }


@dataclass(frozen=True)
class StoredEvent:
    """An event as kept in the log: its number orders every event of the server."""

    seq: int | None
    job_id: str | None
    time: float
    type: str
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "job": self.job_id, "time": self.time, "type": self.type,
                "data": self.data}


class JobStore:
    """Jobs and events in SQLite; safe to use from several threads (one connection, one lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None,
                                   timeout=30.0)
        self._db.row_factory = sqlite3.Row
        # WAL: readers never block the writer; NORMAL: a committed transaction survives the
        # process being killed (only a power cut may lose the last ones).
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        columns = {r["name"] for r in self._db.execute("PRAGMA table_info(jobs)")}
        if "models" not in columns:  # a data folder from before jobs named their models
            self._db.execute("ALTER TABLE jobs ADD COLUMN models TEXT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _event(self, db: sqlite3.Connection, job_id: str | None, type_: str,
               data: dict[str, Any]) -> StoredEvent:
        now = time.time()
        cur = db.execute("INSERT INTO events (job_id, time, type, data) VALUES (?, ?, ?, ?)",
                         (job_id, now, type_, json.dumps(data, default=str)))
        return StoredEvent(cur.lastrowid, job_id, now, type_, data)

    # --- jobs ----------------------------------------------------------------------------
    def submit(self, *, kind: str, graph: str, request: Any = None, outputs: list[str] | None = None,
               client_id: str | None = None, idempotency_key: str | None = None,
               models: list[str] | None = None) -> tuple[Job, StoredEvent | None]:
        """Queue a job; with an idempotency key already used, the existing job (and no event)."""
        with self._tx() as db:
            if idempotency_key is not None:
                row = db.execute("SELECT * FROM jobs WHERE idempotency_key = ?",
                                 (idempotency_key,)).fetchone()
                if row is not None:
                    return _job(row), None
            job_id = str(uuid.uuid4())
            now = time.time()
            cur = db.execute(
                "INSERT INTO jobs (id, state, kind, graph, request, outputs, client_id, "
                "idempotency_key, submitted, models) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, QUEUED, kind, graph, None if request is None else json.dumps(request),
                 None if outputs is None else json.dumps(outputs), client_id, idempotency_key, now,
                 json.dumps(models) if models else None))
            event = self._event(db, job_id, "queued", {"number": cur.lastrowid,
                                                       "client_id": client_id})
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row), event

    def claim(self, worker: str, choose: Choose | None = None) -> tuple[Job, StoredEvent] | None:
        """Take a queued job and mark it running, or None when the queue is empty: the oldest,
        or the one ``choose`` picks among the oldest `CHOICE_WINDOW` (given as (id, models)
        pairs, oldest first)."""
        with self._tx() as db:
            if choose is None:
                row = db.execute("SELECT * FROM jobs WHERE state = ? ORDER BY number LIMIT 1",
                                 (QUEUED,)).fetchone()
            else:
                waiting = [(r["id"], json.loads(r["models"]) if r["models"] else [])
                           for r in db.execute("SELECT id, models FROM jobs WHERE state = ? "
                                               "ORDER BY number LIMIT ?", (QUEUED, CHOICE_WINDOW))]
                row = None
                if waiting:
                    row = db.execute("SELECT * FROM jobs WHERE id = ?",
                                     (choose(waiting),)).fetchone()
            if row is None:
                return None
            now = time.time()
            db.execute("UPDATE jobs SET state = ?, started = ?, attempts = attempts + 1 WHERE id = ?",
                       (RUNNING, now, row["id"]))
            event = self._event(db, row["id"], "started", {"worker": worker,
                                                           "attempt": row["attempts"] + 1})
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (row["id"],)).fetchone()
        return _job(row), event

    def finish(self, job_id: str, state: str, result: dict[str, Any],
               error: dict[str, Any] | None, event_data: dict[str, Any]) -> StoredEvent | None:
        """Record a running job's end and announce it; None if the job is no longer running."""
        assert state in FINAL_STATES
        with self._tx() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row["state"] != RUNNING:
                return None
            db.execute("UPDATE jobs SET state = ?, finished = ?, result = ?, error = ? WHERE id = ?",
                       (state, time.time(), json.dumps(result, default=str),
                        None if error is None else json.dumps(error, default=str), job_id))
            return self._event(db, job_id, {DONE: "finished", FAILED: "failed",
                                            CANCELLED: "cancelled"}[state], event_data)

    def requeue(self, job_id: str, reason: str) -> StoredEvent | None:
        """Put a running job back at its place in the queue (it runs again from the start)."""
        with self._tx() as db:
            cur = db.execute("UPDATE jobs SET state = ?, started = NULL WHERE id = ? AND state = ?",
                             (QUEUED, job_id, RUNNING))
            if cur.rowcount == 0:
                return None
            return self._event(db, job_id, "requeued", {"reason": reason})

    def cancel_queued(self, job_id: str) -> StoredEvent | None:
        """Cancel a job that has not started; None if it is not queued."""
        with self._tx() as db:
            cur = db.execute("UPDATE jobs SET state = ?, finished = ? WHERE id = ? AND state = ?",
                             (CANCELLED, time.time(), job_id, QUEUED))
            if cur.rowcount == 0:
                return None
            return self._event(db, job_id, "cancelled", {"while": "queued"})

    def recover(self) -> list[str]:
        """Jobs left running by a process that died: back to the queue. Returns their ids."""
        with self._tx() as db:
            ids = [r["id"] for r in db.execute("SELECT id FROM jobs WHERE state = ?", (RUNNING,))]
            for job_id in ids:
                db.execute("UPDATE jobs SET state = ?, started = NULL WHERE id = ?", (QUEUED, job_id))
                self._event(db, job_id, "requeued", {"reason": "the server restarted"})
        return ids

    def delete(self, job_id: str) -> bool:
        """Forget a finished job: its history entry and its events."""
        return bool(self.forget([job_id]))

    def expired(self, *, finished_before: float | None = None,
                keep_newest: int | None = None) -> list[str]:
        """Finished jobs that finished before a time, or are not among the newest ones."""
        ids: list[str] = []
        with self._lock:
            if finished_before is not None:
                ids += [r[0] for r in self._db.execute(
                    "SELECT id FROM jobs WHERE state IN (?, ?, ?) AND finished < ?",
                    (*FINAL_STATES, finished_before))]
            if keep_newest is not None:
                ids += [r[0] for r in self._db.execute(
                    "SELECT id FROM jobs WHERE state IN (?, ?, ?) ORDER BY number DESC "
                    "LIMIT -1 OFFSET ?", (*FINAL_STATES, keep_newest))]
        return ids

    def finished_ids(self, *, newest_first: bool = False) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute(
                f"SELECT id FROM jobs WHERE state IN (?, ?, ?) ORDER BY number "
                f"{'DESC' if newest_first else 'ASC'}", FINAL_STATES)]

    def job_ids(self) -> set[str]:
        """Every job the store has, in any state."""
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT id FROM jobs")}

    def forget(self, job_ids: list[str]) -> list[str]:
        """Delete finished jobs and their events (queued or running ones are left alone);
        returns the ids deleted."""
        gone: list[str] = []
        with self._tx() as db:
            for job_id in job_ids:
                cur = db.execute("DELETE FROM jobs WHERE id = ? AND state IN (?, ?, ?)",
                                 (job_id, *FINAL_STATES))
                if cur.rowcount:
                    db.execute("DELETE FROM events WHERE job_id = ?", (job_id,))
                    gone.append(job_id)
        return gone

    def by_key(self, idempotency_key: str) -> Job | None:
        """The job submitted with this idempotency key, if any."""
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE idempotency_key = ?",
                                   (idempotency_key,)).fetchone()
        return _job(row) if row is not None else None

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row is not None else None

    def jobs(self, states: tuple[str, ...], *, limit: int = 100, before: int | None = None,
             newest_first: bool = False) -> list[Job]:
        """Jobs in the given states, ordered by number, paginated with ``before`` (a number)."""
        marks = ",".join("?" * len(states))
        sql = f"SELECT * FROM jobs WHERE state IN ({marks})"
        args: list[Any] = list(states)
        if before is not None:
            sql += " AND number < ?" if newest_first else " AND number > ?"
            args.append(before)
        sql += f" ORDER BY number {'DESC' if newest_first else 'ASC'} LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [_job(r) for r in rows]

    def count(self, states: tuple[str, ...]) -> int:
        marks = ",".join("?" * len(states))
        with self._lock:
            return int(self._db.execute(f"SELECT COUNT(*) FROM jobs WHERE state IN ({marks})",
                                        states).fetchone()[0])

    # --- events --------------------------------------------------------------------------
    def add_event(self, job_id: str | None, type_: str, data: dict[str, Any]) -> StoredEvent:
        with self._tx() as db:
            return self._event(db, job_id, type_, data)

    def events_since(self, seq: int, *, job_id: str | None = None, limit: int = 1000) -> list[StoredEvent]:
        sql = "SELECT * FROM events WHERE seq > ?"
        args: list[Any] = [seq]
        if job_id is not None:
            sql += " AND job_id = ?"
            args.append(job_id)
        sql += " ORDER BY seq LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [StoredEvent(r["seq"], r["job_id"], r["time"], r["type"], json.loads(r["data"]))
                for r in rows]

    def last_seq(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT MAX(seq) FROM events").fetchone()
        return int(row[0] or 0)


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"], number=row["number"], state=row["state"], kind=row["kind"], graph=row["graph"],
        request=json.loads(row["request"]) if row["request"] else None,
        outputs=json.loads(row["outputs"]) if row["outputs"] else None,
        client_id=row["client_id"], idempotency_key=row["idempotency_key"],
        submitted=row["submitted"], started=row["started"], finished=row["finished"],
        attempts=row["attempts"], result=json.loads(row["result"]) if row["result"] else {},
        error=json.loads(row["error"]) if row["error"] else None,
        models=json.loads(row["models"]) if row["models"] else [])

"""The durable job store, on SQLite.

* WAL journal, ``synchronous=FULL`` and a busy timeout, so that concurrent writers (threads and processes)
  wait for each other instead of failing with "database is locked", and so that an acknowledged write
  survives a killed process.
* Every read-modify-write runs inside ``BEGIN IMMEDIATE``: the write lock is taken before the row is read,
  so two writers can never both move a job from the same state.
* A state change and its history event are written in one transaction. A transition that
  :mod:`sparkdock.model.lifecycle` forbids raises :class:`~sparkdock.model.lifecycle.IllegalTransition` and writes
  nothing.
* ``runtime_status`` follows seed 001: it is only updated in INITIALIZING/RUNNING, and it is cleared when a
  job is requeued. Its ``activity`` says what the job is doing now, so it is cleared when the job ends
  (``warning`` and ``error`` stay as the record).
* The schema carries a version (``PRAGMA user_version``) and is migrated forward on open.

One :class:`JobStore` can be shared by threads: each thread gets its own connection.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sparkdock.model import exit_codes
from sparkdock.model.lifecycle import (
    EXIT_CODE_STATES,
    RUNTIME_STATUS_STATES,
    IllegalTransition,
    Kind,
    State,
    check_transition,
    is_terminal,
)
from sparkdock.server.outbox import OutboxMixin

_ID_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"
_ID_LENGTH = 10

#: Forward migrations; index i migrates from version i to i + 1.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE jobs (
        id            TEXT PRIMARY KEY,
        kind          TEXT NOT NULL,
        name          TEXT NOT NULL,
        state         TEXT NOT NULL,
        phase         TEXT,
        exit_code     INTEGER,
        exit_message  TEXT,
        rt_activity   TEXT,
        rt_warning    TEXT,
        rt_error      TEXT,
        endpoints     TEXT,
        spec          TEXT NOT NULL,
        owner         TEXT,
        created_at    TEXT NOT NULL,
        updated_at    TEXT NOT NULL,
        started_at    TEXT,
        ended_at      TEXT,
        attempt       INTEGER NOT NULL DEFAULT 1,
        backend       TEXT,
        backend_state TEXT,
        seq           INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX jobs_state ON jobs(state);
    CREATE INDEX jobs_kind_created ON jobs(kind, created_at);
    CREATE TABLE events (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id      TEXT NOT NULL REFERENCES jobs(id),
        time        TEXT NOT NULL,
        event       TEXT NOT NULL,
        state       TEXT NOT NULL,
        phase       TEXT,
        description TEXT,
        progress    TEXT,
        attempt     INTEGER NOT NULL DEFAULT 1
    );
    CREATE INDEX events_job ON events(job_id, id);
    """,
    # 2: when an interactive cluster was last used (the idle timeout counts from it, across server restarts)
    """
    ALTER TABLE jobs ADD COLUMN last_activity_at TEXT;
    """,
    # 3: the notification outbox (seed 002): deliveries written with the state change that causes them, every
    #    attempt of each, and the webhook signing secrets (the current one, and retired ones still signing)
    """
    CREATE TABLE deliveries (
        id              TEXT PRIMARY KEY,
        job_id          TEXT NOT NULL REFERENCES jobs(id),
        notification    TEXT NOT NULL,
        event           TEXT NOT NULL,
        channel         TEXT NOT NULL,
        url             TEXT NOT NULL,
        payload         TEXT NOT NULL,
        created_at      TEXT NOT NULL,
        status          TEXT NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT,
        delivered_at    TEXT,
        last_error      TEXT
    );
    CREATE INDEX deliveries_pending ON deliveries(status, next_attempt_at);
    CREATE INDEX deliveries_job ON deliveries(job_id);
    CREATE TABLE delivery_attempts (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        delivery_id TEXT NOT NULL REFERENCES deliveries(id),
        number      INTEGER NOT NULL,
        time        TEXT NOT NULL,
        status_code INTEGER,
        latency_ms  INTEGER,
        error       TEXT,
        outcome     TEXT NOT NULL
    );
    CREATE INDEX delivery_attempts_delivery ON delivery_attempts(delivery_id, id);
    CREATE TABLE webhook_secrets (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        secret     TEXT NOT NULL,
        created_at TEXT NOT NULL,
        shown_at   TEXT,
        retired_at TEXT
    );
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)

_UNSET: Any = object()


log = logging.getLogger(__name__)


def utc_text(when: datetime) -> str:
    """A time as ISO 8601 UTC with milliseconds and a ``Z`` (how the store writes every time)."""
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utcnow() -> str:
    """Now, as :func:`utc_text` writes it."""
    return utc_text(datetime.now(UTC))


def parse_time(value: str | None) -> datetime | None:
    """Parse a time written by :func:`utcnow`."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def new_job_id() -> str:
    """A short, unique, URL-safe and DNS-safe id (10 characters from a 32-letter alphabet, 50 bits)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))


class JobNotFound(KeyError):
    """No job with that id."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(job_id)

    def __str__(self) -> str:
        return f"no job with id {self.job_id!r}"


class StorageUnavailable(RuntimeError):
    """The store could not be written (or read): the disk or the file-size limit is full, the database is
    read-only, locked past the busy timeout, or an I/O error occurred. The transaction was rolled back: nothing
    of it was written. The API answers 503 with this message."""


#: SQLite's primary result codes of a store that cannot be used right now (not of a wrong statement)
_UNAVAILABLE_CODES = {
    sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_NOTADB,
}


def _unavailable(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in _UNAVAILABLE_CODES


class InvalidUpdate(ValueError):
    """An update that the state model does not allow (e.g. runtime status of a terminal job)."""


@dataclass
class Job:
    """A job row. :meth:`to_json` gives the public JSON of DESIGN.md."""

    id: str
    kind: Kind
    name: str
    state: State
    phase: str | None
    exit_code: int | None
    exit_message: str | None
    runtime_status: dict[str, str | None]
    endpoints: dict[str, Any] | None
    spec: dict[str, Any]
    owner: str | None
    created_at: str
    updated_at: str
    started_at: str | None
    ended_at: str | None
    attempt: int = 1
    backend: str | None = None
    backend_state: dict[str, Any] = field(default_factory=dict)
    seq: int = 0
    last_activity_at: str | None = None
    """When its cluster was last used (interactive jobs; private: see :meth:`JobStore.set_last_activity`)."""

    @property
    def terminal(self) -> bool:
        """True when the job will never change again."""
        return is_terminal(self.kind, self.state)

    @property
    def flagged(self) -> bool:
        """A RUNNING job whose runtime status has an error (seed 001): shown flagged, never reused."""
        return self.state == State.RUNNING and bool(self.runtime_status.get("error"))

    def to_json(self) -> dict[str, Any]:
        """The public job JSON (never includes backend-private state such as secrets)."""
        return {
            "id": self.id,
            "kind": self.kind.value,
            "name": self.name,
            "state": self.state.value,
            "phase": self.phase,
            "exit_code": self.exit_code,
            "exit_message": self.exit_message,
            "runtime_status": dict(self.runtime_status),
            "endpoints": self.endpoints,
            "spec": self.spec,
            "owner": self.owner,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "attempt": self.attempt,
            "flagged": self.flagged,
            "backend": self.backend,
            "seq": self.seq,
        }

    def to_event_json(self) -> dict[str, Any]:
        """The job JSON of an event message: :meth:`to_json` without ``spec.application.code`` (up to 1 MB,
        sent to every subscriber on every change); ``GET sparkdock/api/jobs/{id}`` has it."""
        data = self.to_json()
        app = self.spec.get("application")
        if isinstance(app, dict) and "code" in app:
            data["spec"] = {**self.spec, "application": {k: v for k, v in app.items() if k != "code"}}
        return data


def _row_to_job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        kind=Kind(row["kind"]),
        name=row["name"],
        state=State(row["state"]),
        phase=row["phase"],
        exit_code=row["exit_code"],
        exit_message=row["exit_message"],
        runtime_status={"activity": row["rt_activity"], "warning": row["rt_warning"], "error": row["rt_error"]},
        endpoints=json.loads(row["endpoints"]) if row["endpoints"] else None,
        spec=json.loads(row["spec"]),
        owner=row["owner"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        attempt=row["attempt"],
        backend=row["backend"],
        backend_state=json.loads(row["backend_state"]) if row["backend_state"] else {},
        seq=row["seq"],
        last_activity_at=row["last_activity_at"],
    )


def _event_json(row: sqlite3.Row) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "id": row["id"],
        "time": row["time"],
        "event": row["event"],
        "state": row["state"],
        "phase": row["phase"],
        "description": row["description"],
        "attempt": row["attempt"],
    }
    if row["progress"]:
        ev["progress"] = json.loads(row["progress"])
    return ev


class JobStore(OutboxMixin):
    """SQLite-backed store of jobs, their history and their notification outbox (:mod:`.outbox`).

    ``listeners`` are called (synchronously, after commit, in the writing thread) with each changed
    :class:`Job`; the manager uses this to publish events. ``planner`` (set by the manager) says which
    notifications a state change triggers; they are written in the transaction of the change.
    """

    def __init__(self, path: str | Path, busy_timeout_ms: int = 30_000) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self.listeners: list[Callable[[Job], None]] = []
        self._migrate()

    # ---- connections --------------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE`` … ``COMMIT``), rolled back whole on any failure, the
        ``COMMIT`` included; a store that cannot be written raises :class:`StorageUnavailable`."""
        try:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            if _unavailable(exc):
                raise self._refused(exc) from exc
            raise
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already (full disk)
                    conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error) and _unavailable(exc):
                raise self._refused(exc) from exc
            raise

    def _refused(self, exc: sqlite3.Error) -> StorageUnavailable:
        log.warning("the job store %s cannot be written: %s", self.path, exc)
        return StorageUnavailable(f"the server cannot write its job store ({exc}); nothing was changed. "
                                  "Free disk space on the server, then try again")

    def close(self) -> None:
        """Close every connection opened by this store."""
        with self._conns_lock:
            for c in self._conns:
                with contextlib.suppress(sqlite3.Error):
                    c.close()
            self._conns.clear()
        self._local = threading.local()

    def _migrate(self) -> None:
        with self._write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"store {self.path} has schema version {version}, newer than this sparkdock "
                    f"({SCHEMA_VERSION}); upgrade sparkdock"
                )
            for v in range(version, SCHEMA_VERSION):
                for stmt in MIGRATIONS[v].split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
                conn.execute(f"PRAGMA user_version={v + 1}")

    def schema_version(self) -> int:
        """The schema version of the open database."""
        return int(self._conn().execute("PRAGMA user_version").fetchone()[0])

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check`` (``"ok"`` when healthy)."""
        return str(self._conn().execute("PRAGMA integrity_check").fetchone()[0])

    # ---- helpers ------------------------------------------------------------------------------------
    def _notify(self, job: Job) -> None:
        for listener in list(self.listeners):
            listener(job)

    @staticmethod
    def _get(conn: sqlite3.Connection, job_id: str) -> Job:
        row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(job_id)
        return _row_to_job(row)

    @staticmethod
    def _insert_event(
        conn: sqlite3.Connection,
        job: Job,
        event: str,
        time: str,
        description: str | None,
        progress: dict[str, Any] | None = None,
        state: str | None = None,
    ) -> None:
        conn.execute(
            "INSERT INTO events (job_id, time, event, state, phase, description, progress, attempt)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                job.id,
                time,
                event,
                state or job.state.value,
                job.phase,
                description,
                json.dumps(progress) if progress is not None else None,
                job.attempt,
            ),
        )

    # ---- writes -------------------------------------------------------------------------------------
    def create(
        self,
        kind: Kind | str,
        spec: dict[str, Any],
        *,
        name: str = "",
        owner: str | None = None,
        backend: str | None = None,
        job_id: str | None = None,
        then: dict[str, Any] | None = None,
    ) -> Job:
        """Create a job in ``UNKNOWN``; its history starts with a ``CREATED`` event. ``then``: the arguments of a
        :meth:`transition` made in the same transaction (the job is created in that state, or not at all)."""
        kind = Kind(kind)
        now = utcnow()
        with self._write() as conn:
            jid = job_id or new_job_id()
            while job_id is None and conn.execute("SELECT 1 FROM jobs WHERE id=?", (jid,)).fetchone():
                jid = new_job_id()
            conn.execute(
                "INSERT INTO jobs (id, kind, name, state, spec, owner, created_at, updated_at, backend, seq)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
                (jid, kind.value, name or jid, State.UNKNOWN.value, json.dumps(spec), owner, now, now, backend),
            )
            job = self._get(conn, jid)
            self._insert_event(conn, job, "CREATED", now, f"{kind.value} job created", state="CREATED")
            if then is not None:
                then = dict(then)
                job = self._move(conn, jid, then.pop("target"), now, **then)
        self._notify(job)
        return job

    def transition(
        self,
        job_id: str,
        target: State | str,
        *,
        phase: str | None = _UNSET,
        description: str | None = None,
        exit_code: int | None = None,
        exit_message: str | None = None,
        expect: set[State] | frozenset[State] | None = None,
        runtime_status: dict[str, str | None] | None = None,
        endpoints: dict[str, Any] | None = _UNSET,
        attempt: int | None = None,
    ) -> Job:
        """Move a job to ``target`` and record the event, in one transaction.

        ``expect``: if given, the job must currently be in one of these states, else
        :class:`IllegalTransition` is raised (a compare-and-set for racing writers).
        Exit codes are required on, and only allowed on, CANCELED/EXECUTOR_ERROR/SYSTEM_ERROR, and must be
        a catalog code of that state for the job's kind.
        """
        now = utcnow()
        with self._write() as conn:
            job = self._move(conn, job_id, target, now, phase=phase, description=description, exit_code=exit_code,
                             exit_message=exit_message, expect=expect, runtime_status=runtime_status,
                             endpoints=endpoints, attempt=attempt)
        self._notify(job)
        return job

    def _move(
        self,
        conn: sqlite3.Connection,
        job_id: str,
        target: State | str,
        now: str,
        *,
        phase: str | None = _UNSET,
        description: str | None = None,
        exit_code: int | None = None,
        exit_message: str | None = None,
        expect: set[State] | frozenset[State] | None = None,
        runtime_status: dict[str, str | None] | None = None,
        endpoints: dict[str, Any] | None = _UNSET,
        attempt: int | None = None,
    ) -> Job:
        """:meth:`transition` inside the caller's transaction."""
        target = State(target)
        job = self._get(conn, job_id)
        _check_move(job, target, expect, exit_code)
        _apply_move(job, target, now, phase=phase, exit_code=exit_code, exit_message=exit_message,
                    runtime_status=runtime_status, endpoints=endpoints, attempt=attempt)
        job.updated_at = now
        job.seq += 1
        conn.execute(
            "UPDATE jobs SET state=?, phase=?, exit_code=?, exit_message=?, rt_activity=?, rt_warning=?,"
            " rt_error=?, endpoints=?, started_at=?, ended_at=?, updated_at=?, attempt=?, seq=?"
            " WHERE id=?",
            (
                job.state.value, job.phase, job.exit_code, job.exit_message,
                job.runtime_status["activity"], job.runtime_status["warning"], job.runtime_status["error"],
                json.dumps(job.endpoints) if job.endpoints is not None else None,
                job.started_at, job.ended_at, job.updated_at, job.attempt, job.seq, job.id,
            ),
        )
        desc = description
        if desc is None and job.exit_message and target in EXIT_CODE_STATES:
            desc = f"exit code {job.exit_code}: {job.exit_message}"
        self._insert_event(conn, job, "STATE", now, desc)
        self._plan(conn, job, target.value, now)
        return job

    def update(
        self,
        job_id: str,
        *,
        phase: str | None = _UNSET,
        activity: str | None = _UNSET,
        warning: str | None = _UNSET,
        error: str | None = _UNSET,
        endpoints: dict[str, Any] | None = _UNSET,
        backend_state: dict[str, Any] | None = _UNSET,
        description: str | None = None,
        progress: dict[str, Any] | None = None,
        event: str | None = None,
    ) -> Job:
        """Update phase, runtime status, endpoints or backend state of a job.

        A history event is recorded when ``description``/``progress`` is given, or when the phase or the
        runtime status changes. Runtime status can only change while INITIALIZING or RUNNING (seed 001).
        """
        now = utcnow()
        with self._write() as conn:
            job = self._get(conn, job_id)
            rt_changes = {
                k: v for k, v in (("activity", activity), ("warning", warning), ("error", error)) if v is not _UNSET
            }
            rt_changes = {k: v for k, v in rt_changes.items() if job.runtime_status.get(k) != v}
            if rt_changes and job.state not in RUNTIME_STATUS_STATES:
                raise InvalidUpdate(
                    f"runtime_status of job {job_id} cannot change while it is {job.state} "
                    "(only while INITIALIZING or RUNNING)"
                )
            phase_changed = phase is not _UNSET and phase != job.phase
            if phase is not _UNSET:
                job.phase = phase
            job.runtime_status.update(rt_changes)
            if endpoints is not _UNSET:
                job.endpoints = endpoints
            if backend_state is not _UNSET:
                job.backend_state = backend_state or {}
            public_change = phase_changed or bool(rt_changes) or endpoints is not _UNSET
            if public_change:
                job.updated_at = now
                job.seq += 1
            conn.execute(
                "UPDATE jobs SET phase=?, rt_activity=?, rt_warning=?, rt_error=?, endpoints=?, backend_state=?,"
                " updated_at=?, seq=? WHERE id=?",
                (
                    job.phase,
                    job.runtime_status["activity"], job.runtime_status["warning"], job.runtime_status["error"],
                    json.dumps(job.endpoints) if job.endpoints is not None else None,
                    json.dumps(job.backend_state) if job.backend_state else None,
                    job.updated_at, job.seq, job.id,
                ),
            )
            if description is not None or progress is not None or phase_changed or rt_changes:
                if event is None:
                    event = "PROGRESS" if progress is not None else ("PHASE" if phase_changed else "RUNTIME_STATUS")
                if description is None:
                    bits = [f"phase {job.phase}"] if phase_changed else []
                    bits += [f"{k}: {v}" if v else f"{k} cleared" for k, v in rt_changes.items()]
                    description = "; ".join(bits)
                self._insert_event(conn, job, event, now, description, progress)
        if public_change or description is not None or progress is not None:
            self._notify(job)
        return job

    def set_last_activity(self, job_id: str, when: str) -> None:
        """Record that the job's cluster was used at ``when`` (a :func:`utcnow` time; an earlier time than the
        stored one is ignored). A private bookkeeping column: no history event, no change of ``seq``."""
        with self._write() as conn:
            conn.execute(
                "UPDATE jobs SET last_activity_at = ? WHERE id = ? AND "
                "(last_activity_at IS NULL OR last_activity_at < ?)", (when, job_id, when))

    def prunable(self, before: str) -> list[str]:
        """The ids of the jobs that ended before ``before`` (a :func:`utcnow` time; ``ended_at`` is set when,
        and only when, a job reaches a terminal state), oldest first."""
        rows = self._conn().execute("SELECT id FROM jobs WHERE ended_at IS NOT NULL AND ended_at < ? "
                                    "ORDER BY ended_at", (before,)).fetchall()
        return [r["id"] for r in rows]

    def delete(self, job_ids: list[str]) -> int:
        """Delete ended jobs, their history and their deliveries, in one transaction (a job that has not ended is
        kept); how many were deleted."""
        deleted = 0
        with self._write() as conn:
            for i in range(0, len(job_ids), 500):
                chunk = job_ids[i:i + 500]
                ended = f"SELECT id FROM jobs WHERE id IN ({','.join('?' * len(chunk))}) AND ended_at IS NOT NULL"
                conn.execute(f"DELETE FROM events WHERE job_id IN ({ended})", chunk)
                self._delete_deliveries(conn, ended, chunk)
                deleted += conn.execute(f"DELETE FROM jobs WHERE id IN ({ended})", chunk).rowcount
        return deleted

    def add_event(
        self, job_id: str, description: str, *, event: str = "INFO", progress: dict[str, Any] | None = None
    ) -> None:
        """Append a free-form history event (e.g. the last log lines of a failed container)."""
        with self._write() as conn:
            job = self._get(conn, job_id)
            self._insert_event(conn, job, event, utcnow(), description, progress)

    # ---- reads --------------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job:
        """The job with that id; raises :class:`JobNotFound`."""
        return self._get(self._conn(), job_id)

    def find(self, job_id: str) -> Job | None:
        """The job with that id, or None."""
        try:
            return self.get(job_id)
        except JobNotFound:
            return None

    def list(
        self,
        *,
        kind: Kind | str | None = None,
        states: list[State | str] | None = None,
        limit: int = 100,
        offset: int = 0,
        oldest_first: bool = False,
        owner: str | None = None,
    ) -> tuple[list[Job], int]:
        """Jobs matching the filters (newest first unless ``oldest_first``), and the total count."""
        where, args = [], []
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        if kind:
            where.append("kind = ?")
            args.append(Kind(kind).value)
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args.extend(State(s).value for s in states)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        conn = self._conn()
        total = conn.execute(f"SELECT count(*) FROM jobs{clause}", args).fetchone()[0]
        order = "ASC" if oldest_first else "DESC"
        rows = conn.execute(
            f"SELECT * FROM jobs{clause} ORDER BY created_at {order}, rowid {order} LIMIT ? OFFSET ?",
            [*args, limit, offset],
        ).fetchall()
        return [_row_to_job(r) for r in rows], int(total)

    def history(self, job_id: str) -> list[dict[str, Any]]:
        """The job's history, oldest first; raises :class:`JobNotFound`."""
        conn = self._conn()
        self._get(conn, job_id)
        rows = conn.execute("SELECT * FROM events WHERE job_id = ? ORDER BY id", (job_id,)).fetchall()
        return [_event_json(r) for r in rows]

    def non_terminal(self) -> list[Job]:
        """Every job that is not in a terminal state, oldest first."""
        jobs, _ = self.list(
            states=[State.UNKNOWN, State.QUEUED, State.INITIALIZING, State.RUNNING, State.CANCELING],
            limit=1_000_000,
            oldest_first=True,
        )
        return jobs


def _check_move(job: Job, target: State, expect: set[State] | frozenset[State] | None,
                exit_code: int | None) -> None:
    """Raise :class:`IllegalTransition` unless ``job`` may move to ``target`` with ``exit_code``: the job is
    in one of ``expect`` (when given), the lifecycle allows the move, and the exit code is one of the
    catalog's for that state and kind (required on CANCELED/EXECUTOR_ERROR/SYSTEM_ERROR, refused elsewhere)."""
    if expect is not None and job.state not in expect:
        raise IllegalTransition(job.kind, job.state, target,
                                f"job {job.id} is {job.state}, expected {', '.join(sorted(expect))}")
    check_transition(job.kind, job.state, target)
    if target not in EXIT_CODE_STATES:
        if exit_code is not None:
            raise IllegalTransition(job.kind, job.state, target, f"{target} carries no exit code")
        return
    if exit_code is None:
        raise IllegalTransition(job.kind, job.state, target, f"{target} needs an exit code")
    if exit_code not in exit_codes.codes_for(target, job.kind):
        raise IllegalTransition(job.kind, job.state, target,
                                f"exit code {exit_code} does not go with {target} for {job.kind.value} jobs")


def _apply_move(job: Job, target: State, now: str, *, phase: Any, exit_code: int | None,
                exit_message: str | None, runtime_status: dict[str, str | None] | None, endpoints: Any,
                attempt: int | None) -> None:
    """Change the job as a move to ``target`` does: state, phase, exit code and message, runtime status
    (cleared on a requeue, the activity emptied at the end), endpoints (an ended interactive job has none),
    start and end times, the attempt. ``phase`` and ``endpoints`` are left alone when ``_UNSET``."""
    requeue = target == State.QUEUED and job.state in (State.INITIALIZING, State.RUNNING)
    job.state = target
    if phase is not _UNSET:
        job.phase = phase
    if target in EXIT_CODE_STATES:
        assert exit_code is not None
        job.exit_code = exit_code
        job.exit_message = exit_message or exit_codes.get(exit_code).format()
    if requeue:
        job.runtime_status = {"activity": None, "warning": None, "error": None}
        job.endpoints = None
    if runtime_status:
        job.runtime_status.update(runtime_status)
    if endpoints is not _UNSET:
        job.endpoints = endpoints
    if attempt is not None:
        job.attempt = attempt
    if target == State.RUNNING and job.started_at is None:
        job.started_at = now
    if target == State.CANCELING:
        job.runtime_status["activity"] = "removing the job's resources"
    if job.terminal:
        job.ended_at = now
        job.runtime_status["activity"] = None  # a finished job does nothing; warning/error stay as record
        if job.kind == Kind.INTERACTIVE:
            job.endpoints = None

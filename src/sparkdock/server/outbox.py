"""The notification outbox of the job store (seed 002): deliveries that can never be lost.

A state change and the deliveries it causes are written in one transaction: :meth:`OutboxMixin._plan` runs inside
the transaction of every move of a job (:meth:`~sparkdock.server.store.JobStore.transition`, and the first state
given to :meth:`~sparkdock.server.store.JobStore.create`), asks the store's ``planner`` which notifications the
event triggers, and inserts one ``pending`` delivery for each. A crash after the commit loses nothing: the
dispatcher (:mod:`sparkdock.server.webhooks.dispatcher`) finds the pending rows at its next start.

A delivery's ``channel`` is ``webhook`` (a POST) or ``email`` (its payload is the message: to, subject, text).
Each delivery keeps its id (the ``webhook-id``, or the email's ``Message-ID``) and its body across attempts;
each attempt is one row of ``delivery_attempts`` and one ``NOTIFICATION`` event of the job's history, written
with the delivery's new status in one transaction. A delivery ends ``delivered`` (a 2xx, an SMTP 250: it is
never sent again) or ``failed`` (a refusal, a 4xx webhook answer, a 5xx SMTP reply, or the retry schedule used
up).

The webhook signing secrets live here too: the current one, and retired ones that still sign during a grace
period after a rotation, so that receivers can switch without losing a delivery.
"""

from __future__ import annotations

import base64
import logging
import secrets
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

#: the statuses of a delivery
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
#: the outcome of one attempt: a 2xx, a failure to retry later, or a final failure
OUTCOMES = ("delivered", "retry", "failed")


@dataclass(frozen=True)
class PlannedDelivery:
    """A delivery the planner asks for: which notification (``job:0`` or ``server:0``), where, and what."""

    notification: str
    channel: str
    url: str
    payload: str


#: ``planner(job, event, fired)``: the deliveries an event of a job triggers; ``fired`` holds the notifications
#: of that job that were already triggered once (a notification that is not persistent fires once).
Planner = Callable[[Any, str, set[str]], list[PlannedDelivery]]


@dataclass
class Delivery:
    """A row of the outbox."""

    id: str
    job_id: str
    notification: str
    event: str
    channel: str
    url: str
    payload: str
    created_at: str
    status: str
    attempts: int
    next_attempt_at: str | None
    delivered_at: str | None
    last_error: str | None
    owner: str | None = None
    """the job's owner (set by :meth:`OutboxMixin.record_attempt`, for the event stream; not a column)"""

    @property
    def server_default(self) -> bool:
        """True for a notification the server adds to every job (its URL is the server's, not the owner's)."""
        return self.notification.startswith("server:")

    @property
    def target(self) -> str:
        """Where it goes, as shown in the history and the logs: a webhook's origin (its path or query may hold a
        secret), an email address (a server default's as its domain only)."""
        if self.channel == "email":
            address = self.url.removeprefix("mailto:")
            return f"…@{address.rpartition('@')[2]}" if self.server_default else address
        return origin(self.url)

    def to_json(self, attempts: list[dict[str, Any]]) -> dict[str, Any]:
        """The public JSON (a server default's URL is shown as its origin only: it may hold a secret; its email
        address as its domain only)."""
        return {
            "id": self.id,
            "notification": self.notification,
            "event": self.event,
            "channel": self.channel,
            "url": self.target if self.server_default else self.url,
            "status": self.status,
            "created_at": self.created_at,
            "next_attempt_at": self.next_attempt_at,
            "delivered_at": self.delivered_at,
            "last_error": self.last_error,
            "attempts": attempts,
        }


def origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL, without user, path or query (which may hold secrets)."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
        host = parts.hostname or ""
    except ValueError:
        return "(invalid URL)"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}"


def new_delivery_id() -> str:
    """A ``webhook-id``: unique, and the same for every attempt of one delivery."""
    return f"msg_{secrets.token_urlsafe(18)}"


def new_secret() -> str:
    """A Standard Webhooks signing secret: ``whsec_`` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _delivery(row: sqlite3.Row) -> Delivery:
    return Delivery(**{k: row[k] for k in row.keys()})  # noqa: SIM118 - sqlite3.Row has no __iter__ of keys


def summary(d: Delivery) -> dict[str, Any]:
    """A delivery's state in an event message (``{"type": "delivery", ...}``): no URL, no payload."""
    return {"id": d.id, "job_id": d.job_id, "notification": d.notification, "event": d.event, "channel": d.channel,
            "status": d.status, "attempts": d.attempts, "next_attempt_at": d.next_attempt_at,
            "last_error": d.last_error}


def _attempt_json(row: sqlite3.Row) -> dict[str, Any]:
    return {"number": row["number"], "time": row["time"], "status_code": row["status_code"],
            "latency_ms": row["latency_ms"], "error": row["error"], "outcome": row["outcome"]}


class OutboxMixin:
    """The outbox part of :class:`~sparkdock.server.store.JobStore` (see the module's docstring)."""

    planner: Planner | None = None
    # the store's own (JobStore): a transaction, this thread's connection, a job row, a history event
    _write: Callable[[], AbstractContextManager[sqlite3.Connection]]
    _conn: Callable[[], sqlite3.Connection]
    _get: Callable[[sqlite3.Connection, str], Any]
    _insert_event: Callable[..., None]

    # ---- written with a state change -------------------------------------------------------------
    def _plan(self, conn: sqlite3.Connection, job: Any, event: str, now: str) -> None:
        """Insert the deliveries that ``event`` of ``job`` triggers, in the caller's transaction. A planner
        that fails is logged and the state change still commits (a job must not be stuck by a notification)."""
        if self.planner is None:
            return
        fired = {r[0] for r in conn.execute("SELECT DISTINCT notification FROM deliveries WHERE job_id = ?",
                                            (job.id,))}
        try:
            planned = self.planner(job, event, fired)
        except Exception:
            log.exception("sparkdock: the notifications of job %s (%s) could not be planned", job.id, event)
            return
        for d in planned:
            conn.execute(
                "INSERT INTO deliveries (id, job_id, notification, event, channel, url, payload, created_at, status,"
                " attempts, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
                (new_delivery_id(), job.id, d.notification, event, d.channel, d.url, d.payload, now, PENDING, now),
            )

    # ---- the dispatcher's reads and writes -------------------------------------------------------
    def pending_deliveries(self, limit: int = 200) -> list[Delivery]:
        """Pending deliveries, the soonest due first."""
        rows = self._conn().execute("SELECT * FROM deliveries WHERE status = ? ORDER BY next_attempt_at, id "
                                    "LIMIT ?", (PENDING, limit)).fetchall()
        return [_delivery(r) for r in rows]

    def record_attempt(
        self,
        delivery_id: str,
        *,
        time: str,
        outcome: str,
        status_code: int | None,
        latency_ms: int | None,
        error: str | None,
        next_attempt_at: str | None,
        history: str,
    ) -> Delivery:
        """Record one attempt of a pending delivery, its new status, and a ``NOTIFICATION`` event in the job's
        history, in one transaction. ``outcome``: ``delivered``, ``retry`` (at ``next_attempt_at``) or
        ``failed``."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {outcome!r}")
        with self._write() as conn:
            row = conn.execute("SELECT * FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
            if row is None:
                raise KeyError(delivery_id)
            d = _delivery(row)
            d.attempts += 1
            d.status = {"delivered": DELIVERED, "retry": PENDING, "failed": FAILED}[outcome]
            d.next_attempt_at = next_attempt_at if outcome == "retry" else None
            d.delivered_at = time if outcome == "delivered" else None
            d.last_error = error
            conn.execute("INSERT INTO delivery_attempts (delivery_id, number, time, status_code, latency_ms, error,"
                         " outcome) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (d.id, d.attempts, time, status_code, latency_ms, error, outcome))
            conn.execute("UPDATE deliveries SET status = ?, attempts = ?, next_attempt_at = ?, delivered_at = ?,"
                         " last_error = ? WHERE id = ?",
                         (d.status, d.attempts, d.next_attempt_at, d.delivered_at, d.last_error, d.id))
            job = self._get(conn, d.job_id)
            d.owner = job.owner
            self._insert_event(conn, job, "NOTIFICATION", time, history,
                               {"delivery": d.id, "attempt": d.attempts, "outcome": outcome,
                                "status_code": status_code, "latency_ms": latency_ms})
        return d

    # ---- reads for the API -----------------------------------------------------------------------
    def deliveries(self, job_id: str) -> list[dict[str, Any]]:
        """The job's deliveries, oldest first, each with its attempts (public JSON)."""
        conn = self._conn()
        rows = conn.execute("SELECT * FROM deliveries WHERE job_id = ? ORDER BY created_at, rowid",
                            (job_id,)).fetchall()
        out = []
        for r in rows:
            attempts = conn.execute("SELECT * FROM delivery_attempts WHERE delivery_id = ? ORDER BY id",
                                    (r["id"],)).fetchall()
            out.append(_delivery(r).to_json([_attempt_json(a) for a in attempts]))
        return out

    @staticmethod
    def _delete_deliveries(conn: sqlite3.Connection, ended: str, ids: list[str]) -> None:
        """Delete the outbox rows of the jobs selected by ``ended`` (a SELECT of ids with ``ids`` as arguments)."""
        conn.execute(f"DELETE FROM delivery_attempts WHERE delivery_id IN "
                     f"(SELECT id FROM deliveries WHERE job_id IN ({ended}))", ids)
        conn.execute(f"DELETE FROM deliveries WHERE job_id IN ({ended})", ids)

    # ---- signing secrets -------------------------------------------------------------------------
    def signing_secrets(self, now: str, since: str) -> list[str]:
        """The secrets that sign a delivery now: the current one (created when there is none yet), then those
        retired after ``since`` (the grace period of a rotation), newest first."""
        query = "SELECT secret FROM webhook_secrets WHERE retired_at IS NULL OR retired_at > ? ORDER BY id DESC"
        current = "SELECT 1 FROM webhook_secrets WHERE retired_at IS NULL"
        if self._conn().execute(current).fetchone() is None:
            with self._write() as conn:
                if conn.execute(current).fetchone() is None:
                    conn.execute("INSERT INTO webhook_secrets (secret, created_at) VALUES (?, ?)",
                                 (new_secret(), now))
        return [r["secret"] for r in self._conn().execute(query, (since,)).fetchall()]

    def reveal_webhook_secret(self, now: str) -> tuple[str, str, bool]:
        """Show a signing secret once: the current one if it was never shown, else a new one that replaces it
        (the old one is retired now and still signs during the grace period). Returns (secret, created_at,
        rotated)."""
        with self._write() as conn:
            row = conn.execute("SELECT * FROM webhook_secrets WHERE retired_at IS NULL").fetchone()
            if row is not None and row["shown_at"] is None:
                conn.execute("UPDATE webhook_secrets SET shown_at = ? WHERE id = ?", (now, row["id"]))
                return row["secret"], row["created_at"], False
            if row is not None:
                conn.execute("UPDATE webhook_secrets SET retired_at = ? WHERE id = ?", (now, row["id"]))
            secret = new_secret()
            conn.execute("INSERT INTO webhook_secrets (secret, created_at, shown_at) VALUES (?, ?, ?)",
                         (secret, now, now))
            return secret, now, row is not None

    def webhook_secret_info(self) -> dict[str, Any]:
        """What is known of the secrets without showing them: when the current one was made, whether it was
        shown, and when the last rotation happened."""
        conn = self._conn()
        row = conn.execute("SELECT created_at, shown_at FROM webhook_secrets WHERE retired_at IS NULL").fetchone()
        last = conn.execute("SELECT max(retired_at) FROM webhook_secrets").fetchone()[0]
        return {
            "created_at": row["created_at"] if row else None,
            "shown": bool(row and row["shown_at"]),
            "rotated_at": last,
        }

"""The notification outbox in the store: written with the state change that causes it, or not at all; which
notifications fire (once, or on every match); pruning; the signing secrets. On a real SQLite store, with the
server's real planner."""

from __future__ import annotations

import json
import logging
import sqlite3

import pytest

from job_helpers import captured_log
from sparkdock.model.lifecycle import Kind, State
from sparkdock.model.specs import parse_notifications
from sparkdock.server.outbox import PlannedDelivery
from sparkdock.server.store import JobStore
from sparkdock.server.webhooks.planner import NotificationPlanner


@pytest.fixture
def store(tmp_path):
    s = JobStore(tmp_path / "jobs.db")
    yield s
    s.close()


def _rows(store: JobStore, sql: str, *args: object) -> list[sqlite3.Row]:
    return store._conn().execute(sql, args).fetchall()


def _spec(*notifications: dict[str, object]) -> dict[str, object]:
    return {"kind": "automated", "notifications": [n.model_dump() for n in parse_notifications(list(notifications))]}


def test_a_delivery_is_written_with_its_state_change_or_not_at_all(store):
    job = store.create(Kind.AUTOMATED, _spec())
    store.planner = lambda job, event, fired: [PlannedDelivery("job:0", "webhook", "http://h/", None)]  # type: ignore
    with pytest.raises(sqlite3.IntegrityError):  # the outbox row cannot be written...
        store.transition(job.id, State.QUEUED)
    assert store.get(job.id).state == State.UNKNOWN  # ...so the state change is not either
    assert [e["event"] for e in store.history(job.id)] == ["CREATED"]
    assert _rows(store, "SELECT * FROM deliveries") == []

    store.planner = lambda job, event, fired: [PlannedDelivery("job:0", "webhook", f"http://h/{event}", "{}")]
    store.transition(job.id, State.QUEUED)
    [row] = _rows(store, "SELECT * FROM deliveries")
    [_, state] = store.history(job.id)
    assert row["event"] == "QUEUED" and row["url"] == "http://h/QUEUED" and row["status"] == "pending"
    assert row["created_at"] == state["time"] == row["next_attempt_at"]  # one transaction, one time


def test_a_planner_that_fails_does_not_stop_the_job(store):
    def broken(job, event, fired):
        raise RuntimeError("a bug")

    store.planner = broken
    job = store.create(Kind.AUTOMATED, _spec())
    with captured_log(logging.getLogger("sparkdock.server.outbox")) as lines:
        store.transition(job.id, State.QUEUED)
    assert store.get(job.id).state == State.QUEUED
    assert any("could not be planned" in line for line in lines)


def test_which_notifications_fire_once_and_which_on_every_match(store):
    store.planner = NotificationPlanner(
        parse_notifications([{"url": "http://server/${EVENT}", "event": "RUNNING", "persistent": True}]),
        lambda: "http://jupyter:8888/base/")
    job = store.create(Kind.AUTOMATED, _spec(
        {"url": "http://h/once", "event": "*"},
        {"url": "http://h/every/${EVENT}", "event": "*", "persistent": True},
        {"url": "http://h/queued-once", "event": "QUEUED"},
        {"url": "http://h/queued-every", "event": "QUEUED", "persistent": True},
        {"url": "http://h/canceled", "event": "CANCELED"},
    ), then={"target": State.QUEUED})
    for target in ("INITIALIZING", "QUEUED", "INITIALIZING", "RUNNING", "COMPLETE"):  # with a requeue
        store.transition(job.id, target)
    rows = _rows(store, "SELECT notification, event, url, payload FROM deliveries ORDER BY created_at, rowid")
    fired = [(r["notification"], r["event"]) for r in rows]
    assert fired.count(("job:0", "QUEUED")) == 1 and [f for f in fired if f[0] == "job:0"] == [("job:0", "QUEUED")]
    assert [r["url"] for r in rows if r["notification"] == "job:1"] == [
        f"http://h/every/{s}" for s in ("QUEUED", "INITIALIZING", "QUEUED", "INITIALIZING", "RUNNING", "COMPLETE")]
    assert fired.count(("job:2", "QUEUED")) == 1 and fired.count(("job:3", "QUEUED")) == 2
    assert not any(n == "job:4" for n, _ in fired)
    assert [r["url"] for r in rows if r["notification"] == "server:0"] == ["http://server/RUNNING"]
    body = json.loads(rows[-1]["payload"])
    assert body["type"] == "job.complete" and body["data"]["job"]["state"] == "COMPLETE"
    assert body["data"]["links"]["job"] == f"http://jupyter:8888/base/sparkdock/api/jobs/{job.id}"


def test_pruning_a_job_deletes_its_deliveries_and_attempts(store):
    store.planner = lambda job, event, fired: [PlannedDelivery("job:0", "webhook", "http://h/", "{}")]
    jobs = [store.create(Kind.AUTOMATED, _spec(), then={"target": State.QUEUED}) for _ in range(2)]
    [first, _second] = store.pending_deliveries()
    store.record_attempt(first.id, time="2026-01-01T00:00:00.000Z", outcome="retry", status_code=500, latency_ms=3,
                         error="HTTP 500", next_attempt_at="2026-01-01T00:00:05.000Z", history="attempt 1")
    ended = jobs[0] if first.job_id == jobs[0].id else jobs[1]
    store.transition(ended.id, State.CANCELING)
    store.transition(ended.id, State.CANCELED, exit_code=14)
    assert store.delete([j.id for j in jobs]) == 1  # the job that has not ended is kept, with its delivery
    assert [r["job_id"] for r in _rows(store, "SELECT job_id FROM deliveries")] == [
        j.id for j in jobs if j.id != ended.id]
    assert _rows(store, "SELECT * FROM delivery_attempts") == []


def test_a_secret_is_shown_once_and_a_rotated_one_signs_during_the_grace_period(store):
    t0, t1, t2 = "2026-01-01T00:00:00.000Z", "2026-01-01T01:00:00.000Z", "2026-01-02T02:00:00.000Z"
    assert store.webhook_secret_info() == {"created_at": None, "shown": False, "rotated_at": None}
    [current] = store.signing_secrets(t0, since=t0)  # made when first needed
    assert current.startswith("whsec_") and store.signing_secrets(t0, since=t0) == [current]
    assert store.reveal_webhook_secret(t0) == (current, t0, False)  # never shown: shown now, not changed
    new, created, rotated = store.reveal_webhook_secret(t1)  # shown already: a new one replaces it
    assert rotated and new != current and created == t1
    assert store.signing_secrets(t1, since=t0) == [new, current]  # within the grace period: both sign
    assert store.signing_secrets(t2, since="2026-01-01T02:00:00.000Z") == [new]  # after it: the new one only
    assert store.webhook_secret_info() == {"created_at": t1, "shown": True, "rotated_at": t1}


def test_a_bad_server_default_is_refused_by_name():
    from sparkdock.model.specs import SpecError

    with pytest.raises(SpecError) as exc:
        parse_notifications([{"url": "http://h/${JOB}", "event": "*"}], "SparkDockApp.default_notifications")
    assert exc.value.fields == ["SparkDockApp.default_notifications.0.url"] and exc.value.status == 400
    assert "unknown template variable ${JOB}" in str(exc.value)


def test_the_events_a_notification_may_name_are_the_states_and_a_star():
    import typing

    from sparkdock.model.specs import NotificationEvent

    assert set(typing.get_args(NotificationEvent)) == {"*"} | {s.value for s in State if s != State.UNKNOWN}

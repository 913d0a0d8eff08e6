"""The durable store: transactions, the lifecycle, runtime status, crashes and concurrent writers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from sparkdock.model.lifecycle import IllegalTransition, Kind, State
from sparkdock.server.store import SCHEMA_VERSION, InvalidUpdate, JobNotFound, JobStore, new_job_id


@pytest.fixture
def store(tmp_path):
    s = JobStore(tmp_path / "jobs.db")
    yield s
    s.close()


def _walk_interactive(store: JobStore, jid: str) -> None:
    for st in ("QUEUED", "INITIALIZING", "RUNNING", "CANCELING", "COMPLETE"):
        store.transition(jid, st)


def test_create_and_history_starts_with_created(store):
    job = store.create(Kind.INTERACTIVE, {"cluster": {"workers": 1}}, name="demo", owner="me")
    assert job.state == State.UNKNOWN and job.name == "demo"
    hist = store.history(job.id)
    assert hist[0]["state"] == "CREATED" and hist[0]["event"] == "CREATED"
    j = job.to_json()
    for key in ("id", "kind", "name", "state", "phase", "exit_code", "exit_message", "runtime_status",
                "endpoints", "spec", "owner", "created_at", "updated_at", "started_at", "ended_at"):
        assert key in j
    assert set(j["runtime_status"]) == {"activity", "warning", "error"}
    assert j["created_at"].endswith("Z")


def test_full_interactive_lifecycle(store):
    job = store.create(Kind.INTERACTIVE, {})
    _walk_interactive(store, job.id)
    job = store.get(job.id)
    assert job.state == State.COMPLETE and job.started_at and job.ended_at and job.exit_code is None
    states = [e["state"] for e in store.history(job.id) if e["event"] in ("CREATED", "STATE")]
    assert states == ["CREATED", "QUEUED", "INITIALIZING", "RUNNING", "CANCELING", "COMPLETE"]


def test_illegal_transition_is_refused_and_not_written(store):
    job = store.create(Kind.INTERACTIVE, {})
    n = len(store.history(job.id))
    with pytest.raises(IllegalTransition):
        store.transition(job.id, State.RUNNING)
    assert store.get(job.id).state == State.UNKNOWN
    assert len(store.history(job.id)) == n


def test_exit_code_rules(store):
    job = store.create(Kind.AUTOMATED, {})
    store.transition(job.id, "QUEUED")
    with pytest.raises(IllegalTransition, match="needs an exit code"):
        store.transition(job.id, "SYSTEM_ERROR")
    with pytest.raises(IllegalTransition, match="does not go with"):
        store.transition(job.id, "SYSTEM_ERROR", exit_code=51)  # an interactive code
    with pytest.raises(IllegalTransition, match="carries no exit code"):
        store.transition(job.id, "INITIALIZING", exit_code=14)
    store.transition(job.id, "CANCELING")
    job = store.transition(job.id, "CANCELED", exit_code=14)
    assert job.exit_code == 14 and job.exit_message == "Job has been aborted by user."


def test_expect_is_a_compare_and_set(store):
    job = store.create(Kind.INTERACTIVE, {})
    store.transition(job.id, "QUEUED", expect={State.UNKNOWN})
    with pytest.raises(IllegalTransition, match="expected"):
        store.transition(job.id, "INITIALIZING", expect={State.UNKNOWN})


def test_runtime_status_seed_001(store):
    job = store.create(Kind.AUTOMATED, {})
    with pytest.raises(InvalidUpdate):
        store.update(job.id, activity="nope")
    store.transition(job.id, "QUEUED")
    store.transition(job.id, "INITIALIZING")
    store.update(job.id, activity="starting", warning="slow")
    store.transition(job.id, "RUNNING")
    job = store.update(job.id, error="stage 3 failed")
    assert job.flagged and job.to_json()["flagged"] is True
    job = store.transition(job.id, "QUEUED", description="requeued")
    assert job.runtime_status == {"activity": None, "warning": None, "error": None}
    assert not job.flagged
    store.transition(job.id, "INITIALIZING")
    store.update(job.id, activity="starting", warning="slow start")
    store.transition(job.id, "RUNNING")
    job = store.transition(job.id, "COMPLETE")
    assert job.runtime_status == {"activity": None, "warning": "slow start", "error": None}


def test_phase_and_progress_events(store):
    job = store.create(Kind.INTERACTIVE, {})
    store.transition(job.id, "QUEUED")
    store.transition(job.id, "INITIALIZING", phase="CreatingContainers")
    store.update(job.id, phase="WaitingForWorkers 1/2", activity="waiting for workers 1/2")
    store.update(job.id, progress={"done": 1, "total": 2}, description="1 of 2")
    events = store.history(job.id)
    assert events[-2]["phase"] == "WaitingForWorkers 1/2"
    assert events[-1]["progress"] == {"done": 1, "total": 2}


def test_list_filters_and_paging(store):
    ids = [store.create(Kind.INTERACTIVE if i % 2 else Kind.AUTOMATED, {}).id for i in range(7)]
    jobs, total = store.list(kind="interactive")
    assert total == 3 and all(j.kind == Kind.INTERACTIVE for j in jobs)
    jobs, total = store.list(limit=2, offset=1)
    assert total == 7 and [j.id for j in jobs] == ids[::-1][1:3]
    store.transition(ids[0], "QUEUED")
    jobs, total = store.list(states=["QUEUED"])
    assert total == 1 and jobs[0].id == ids[0]


def test_unknown_job(store):
    with pytest.raises(JobNotFound):
        store.get("nope")
    with pytest.raises(JobNotFound):
        store.history("nope")


def test_ids_are_short_unique_and_url_safe():
    ids = {new_job_id() for _ in range(20000)}
    assert len(ids) == 20000
    assert all(len(i) == 10 and i.isalnum() and i == i.lower() for i in ids)


def test_schema_version_and_reopen(tmp_path):
    path = tmp_path / "s.db"
    s = JobStore(path)
    job = s.create(Kind.INTERACTIVE, {"a": 1})
    s.close()
    s2 = JobStore(path)
    assert s2.schema_version() == SCHEMA_VERSION
    assert s2.get(job.id).spec == {"a": 1}
    s2.close()


def test_a_version_1_store_is_migrated_with_its_jobs(tmp_path):
    """A store written before last_activity_at existed (schema 1) opens, keeps its jobs, and records use."""
    import sqlite3

    from sparkdock.server.store import MIGRATIONS

    path = tmp_path / "s.db"
    c = sqlite3.connect(path)
    c.executescript(MIGRATIONS[0])
    c.execute("INSERT INTO jobs (id, kind, name, state, spec, created_at, updated_at) VALUES "
              "('oldjob2345', 'interactive', 'old', 'RUNNING', '{}', '2026-01-01T00:00:00.000Z', "
              "'2026-01-01T00:00:00.000Z')")
    c.execute("PRAGMA user_version=1")
    c.commit()
    c.close()
    s = JobStore(path)
    assert s.schema_version() == SCHEMA_VERSION == 3
    old = s.get("oldjob2345")
    assert old.name == "old" and old.last_activity_at is None
    s.set_last_activity("oldjob2345", "2026-01-01T00:00:05.000Z")
    s.set_last_activity("oldjob2345", "2026-01-01T00:00:03.000Z")  # an earlier use does not move it back
    assert s.get("oldjob2345").last_activity_at == "2026-01-01T00:00:05.000Z"
    assert s.get("oldjob2345").seq == old.seq  # bookkeeping: no change published
    s.close()


def test_newer_schema_is_refused(tmp_path):
    import sqlite3

    path = tmp_path / "s.db"
    JobStore(path).close()
    c = sqlite3.connect(path)
    c.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    c.close()
    with pytest.raises(RuntimeError, match="newer"):
        JobStore(path)


def test_concurrent_threads_never_lose_a_transition(store):
    ids = [store.create(Kind.INTERACTIVE, {}).id for _ in range(24)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda j: _walk_interactive(store, j), ids))
    for jid in ids:
        assert store.get(jid).state == State.COMPLETE
        assert len([e for e in store.history(jid) if e["event"] == "STATE"]) == 5


def test_racing_writers_on_one_job_only_one_wins(store):
    job = store.create(Kind.INTERACTIVE, {})
    store.transition(job.id, "QUEUED")
    wins, losses = [], []
    barrier = threading.Barrier(8)

    def attempt():
        barrier.wait()
        try:
            store.transition(job.id, "INITIALIZING", expect={State.QUEUED})
            wins.append(1)
        except IllegalTransition:
            losses.append(1)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(losses) == 7


_WRITER = textwrap.dedent(
    """
    import sys
    from sparkdock.server.store import JobStore
    store = JobStore(sys.argv[1])
    n = int(sys.argv[2])
    for i in range(n):
        job = store.create("automated", {"i": i})
        print("ack", job.id, "UNKNOWN", flush=True)
        for st in ("QUEUED", "INITIALIZING", "RUNNING", "COMPLETE"):
            store.transition(job.id, st)
            store.update(job.id, progress={"i": i}, description="tick") if st == "RUNNING" else None
            print("ack", job.id, st, flush=True)
    """
)


def test_concurrent_processes_never_get_locked(tmp_path):
    db = tmp_path / "p.db"
    JobStore(db).close()
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(db), "15"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert "locked" not in err
    s = JobStore(db)
    jobs, total = s.list(limit=1000)
    assert total == 60 and all(j.state == State.COMPLETE for j in jobs)
    assert s.integrity_check() == "ok"
    s.close()


def test_store_survives_kill_9_mid_write(tmp_path):
    db = tmp_path / "k.db"
    JobStore(db).close()
    acked: dict[str, list[str]] = {}
    deadline = time.monotonic() + 60
    rounds = 0
    while rounds < 12 and time.monotonic() < deadline:
        p = subprocess.Popen([sys.executable, "-c", _WRITER, str(db), "100000"], stdout=subprocess.PIPE, text=True)
        time.sleep(0.4 + 0.07 * rounds)  # let it write a while, at varying points
        os.kill(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "ack":
                acked.setdefault(parts[1], []).append(parts[2])
        rounds += 1
    assert acked, "the writer acknowledged nothing"
    s = JobStore(db)
    assert s.integrity_check() == "ok"
    for jid, states in acked.items():
        job = s.get(jid)  # every acknowledged create is present
        recorded = [e["state"] for e in s.history(jid) if e["event"] in ("CREATED", "STATE")]
        expected = ["CREATED", *states[1:]]
        assert recorded[: len(expected)] == expected, (jid, recorded, expected)
        assert job.state.value == (recorded[-1] if recorded[-1] != "CREATED" else "UNKNOWN")
    s.close()


async def test_a_locked_database_does_not_block_the_event_loop(tmp_path, jp_asyncio_loop):
    """Another process holds the write lock (up to the busy timeout): through AsyncStore the loop goes on
    running other work while the write waits, and the write lands once the lock is released; calls queued on
    the store's thread run in the order they were made."""
    import asyncio
    import sqlite3

    from sparkdock.server.db import AsyncStore

    store = JobStore(tmp_path / "jobs.db", busy_timeout_ms=30_000)
    db = AsyncStore(store)
    job = store.create(Kind.INTERACTIVE, {"cluster": {}})
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the write lock, as another writer would hold it
    try:
        queued = db.queue(store.transition, job.id, State.QUEUED, phase="Queued")
        reported = db.submit(store.update, job.id, phase="Reported", description="after QUEUED")
        turns = 0
        while turns < 200:  # the loop keeps turning while the store's thread waits for the lock
            await asyncio.sleep(0)
            turns += 1
        assert not queued.done() and not reported.done()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert (await queued).state == State.QUEUED
    await asyncio.wrap_future(reported)
    final = await db.get(job.id)
    assert final.phase == "Reported" and [e["phase"] for e in store.history(job.id)][-2:] == ["Queued", "Reported"]
    db.close()
    store.close()


def test_a_job_is_created_in_its_first_state_or_not_at_all(store):
    """``create(then=...)`` makes the job and its first move in one transaction: a move the lifecycle refuses
    leaves no job behind (as a store that cannot be written would: see test_disk_full.py)."""
    job = store.create(Kind.AUTOMATED, {"x": 1}, name="q", then={"target": State.QUEUED, "phase": "Queued"})
    assert (job.state, job.phase) == (State.QUEUED, "Queued")
    assert [e["state"] for e in store.history(job.id)] == ["CREATED", "QUEUED"]
    with pytest.raises(IllegalTransition):
        store.create(Kind.AUTOMATED, {"x": 2}, name="bad", job_id="bad-one", then={"target": State.COMPLETE})
    assert store.find("bad-one") is None
    assert [j.name for j in store.list()[0]] == ["q"]

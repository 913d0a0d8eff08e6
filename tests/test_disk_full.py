"""A server whose disk is full answers 503 with a message, and its store is intact afterwards.

The server runs in a process of its own; its ``RLIMIT_FSIZE`` is lowered to 4 KB while it runs (as the disk
filling up would: the tests run as root, so a chmod'ed folder would prove nothing). Every write of its SQLite
store then fails with "database or disk is full".
"""

from __future__ import annotations

import resource
import sqlite3

from fake_server import fake_server  # noqa: F401
from sparkdock.demo import Server

FULL = 4096


def _jobs(server: Server) -> dict[str, dict]:
    r = server.api("GET", "jobs", params={"limit": 1000})
    assert r.status_code == 200, r.text
    return {j["id"]: j for j in r.json()["jobs"]}


def _wait_state(server: Server, job_id: str, states: set[str]) -> dict:
    import time

    deadline = time.monotonic() + 30
    while True:
        job = server.api("GET", f"jobs/{job_id}").json()
        if job["state"] in states:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def test_a_full_disk_gives_503_and_nothing_half_written(fake_server: Server) -> None:  # noqa: F811
    server = fake_server
    done = server.api("POST", "jobs", json={"kind": "automated", "name": "before",
                                             "application": {"type": "sql", "code": "select 1"}}).json()
    cluster = server.api("POST", "jobs", json={"kind": "interactive", "name": "cluster"}).json()
    _wait_state(server, done["id"], {"COMPLETE"})
    _wait_state(server, cluster["id"], {"RUNNING"})
    history = server.api("GET", f"jobs/{done['id']}/history").json()
    before = _jobs(server)

    pid = server.proc.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (FULL, hard))
    try:
        r = server.api("POST", "jobs", json={"kind": "automated", "name": "during",
                                              "application": {"type": "sql", "code": "select 2"}})
        assert r.status_code == 503, r.text
        message = r.json()["message"]
        assert "cannot write its job store" in message and "nothing was changed" in message, message
        assert "disk" in message, message  # SQLite says "disk I/O error" (EFBIG) or "database or disk is full"

        r = server.api("DELETE", f"jobs/{cluster['id']}")
        assert r.status_code == 503, r.text
        assert "cannot write its job store" in r.json()["message"]
        # reads still work, and show that nothing changed
        assert server.api("GET", f"jobs/{cluster['id']}").json()["state"] == "RUNNING"
        assert set(_jobs(server)) == set(before)
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))

    # the store is intact: same jobs, same history, and a sound database file
    conn = sqlite3.connect(f"file:{server.data / 'jobs.db'}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM jobs WHERE name='during'").fetchone()[0] == 0
    finally:
        conn.close()
    after = _jobs(server)
    assert set(after) == set(before)
    assert after[done["id"]] == before[done["id"]]
    assert server.api("GET", f"jobs/{done['id']}/history").json() == history
    # and the server works again: the same requests now succeed
    r = server.api("POST", "jobs", json={"kind": "automated", "name": "after",
                                          "application": {"type": "sql", "code": "select 3"}})
    assert r.status_code == 201, r.text
    assert _wait_state(server, r.json()["id"], {"COMPLETE"})["state"] == "COMPLETE"
    assert server.api("DELETE", f"jobs/{cluster['id']}").status_code == 202
    assert _wait_state(server, cluster["id"], {"COMPLETE"})["phase"] == "Terminated"

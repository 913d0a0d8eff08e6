"""Webhooks are never lost: a server killed while deliveries wait for their next attempt sends them after its
restart, and sends none again that had succeeded.

Its own server subprocess on the backend interface's test double (``fake_server.py``): the test kills it with
SIGKILL (no clean stop), then starts a new one on the same data folder.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from fake_server import running_fake_server
from webhook_receiver import Receiver

ARGS = ("--SparkDockApp.webhook_allowed_networks=127.0.0.3/32", "--SparkDockApp.webhook_retry_schedule=3",
        "--SparkDockApp.webhook_retry_jitter=0", "--SparkDockApp.allowed_images=fake/ok")


def _job(url: str) -> dict[str, Any]:
    fake = json.dumps({"exit_status": 0})
    return {"kind": "automated", "notifications": [{"url": url, "event": "QUEUED"}],
            "application": {"type": "pyspark", "code": f"# fake: {fake}\nprint(1)"}, "cluster": {"image": "fake/ok"}}


def _deliveries(server: Any, job_id: str) -> list[dict[str, Any]]:
    r = server.api("GET", f"jobs/{job_id}/notifications")
    assert r.status_code == 200, r.text
    return r.json()["deliveries"]


def _once(server: Any, job_id: str, pred: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    """The job's one delivery, once ``pred`` holds for it (polled, with a deadline)."""
    deadline = time.monotonic() + 30
    while True:
        [d] = _deliveries(server, job_id)
        if pred(d):
            return d
        assert time.monotonic() < deadline, f"{what}: {d}"
        time.sleep(0.05)


def test_deliveries_pending_at_a_crash_are_sent_after_the_restart_and_none_twice(tmp_path):
    with Receiver("127.0.0.3") as receiver:
        receiver.script["/a"] = [500, 200]  # the first attempt fails: a retry is due 3 s later
        with running_fake_server(tmp_path, *ARGS) as first:
            a = first.api("POST", "jobs", json=_job(receiver.url("/a"))).json()["id"]
            b = first.api("POST", "jobs", json=_job(receiver.url("/b"))).json()["id"]
            receiver.wait_for(lambda got: {r.path for r in got} == {"/a", "/b"}, "the first attempts")
            pending = _once(first, a, lambda d: bool(d["attempts"]), "the 500 is recorded")
            assert pending["status"] == "pending" and pending["next_attempt_at"], pending
            assert [d["status"] for d in _deliveries(first, b)] == ["delivered"]
            first.proc.kill()  # during the backoff: no clean stop
            first.proc.wait()
        assert [r.status for r in receiver.received] in ([500, 200], [200, 500])

        with running_fake_server(tmp_path, *ARGS) as second:  # the same data folder
            receiver.wait_for(lambda got: len([r for r in got if r.path == "/a"]) == 2, "the retry of /a")
            done = _once(second, a, lambda d: d["status"] != "pending", "the 200 is recorded")
            assert done["status"] == "delivered" and done["id"] == pending["id"]
            assert [(x["outcome"], x["status_code"]) for x in done["attempts"]] == [("retry", 500), ("delivered", 200)]
            [other] = _deliveries(second, b)
            assert other["status"] == "delivered" and len(other["attempts"]) == 1
            # nothing is pending any more: nothing will be sent again
            jobs = second.api("GET", "jobs").json()["jobs"]
            assert all(d["status"] != "pending" for j in jobs for d in _deliveries(second, j["id"]))

        got_a = receiver.at("/a")
        assert [r.status for r in got_a] == [500, 200]
        assert got_a[0].headers["webhook-id"] == got_a[1].headers["webhook-id"] == pending["id"]
        assert got_a[0].body == got_a[1].body  # the same delivery; a fresh timestamp and signature
        assert len(receiver.at("/b")) == 1  # delivered before the crash: never again

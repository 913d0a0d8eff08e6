"""Webhooks on job events (seed 002), end to end: a real Jupyter server (pytest-jupyter, jobs on the backend
interface's test double) POSTs to real HTTP receivers on loopback addresses.

The receivers listen on 127.0.0.3, which the server allows (``webhook_allowed_networks``); 127.0.0.2, 127.0.0.1
(``localhost``) and every other non-public address stay refused, as on a real server. Retries run on a schedule
of fractions of a second.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote

import pytest
import standardwebhooks

import notify_helpers as nh
from client_fixtures import client, run, server_token, server_url  # noqa: F401
from job_helpers import captured_log, until
from sparkdock.model.lifecycle import Kind, State
from sparkdock.model.specs import parse_notifications
from sparkdock.model.templates import VARIABLES
from sparkdock.server.db import AsyncStore
from sparkdock.server.store import JobStore
from sparkdock.server.webhooks import signing
from sparkdock.server.webhooks.dispatcher import DeliveryPolicy, Dispatcher
from sparkdock.server.webhooks.guard import TargetGuard
from sparkdock.server.webhooks.planner import NotificationPlanner
from webhook_receiver import Receiver

PUBLIC_URL = "https://jupyter.example.org/user/alice/"
SCHEDULE = [0.2, 0.4, 0.8]

#: the published Standard Webhooks test vector
VECTOR = {"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
          "timestamp": 1614265330, "body": b'{"test": 2432232314}',
          "signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}


@pytest.fixture
def receiver():
    with Receiver("127.0.0.3") as r:
        yield r


@pytest.fixture
def sparkdock_config(receiver):
    return {"webhook_allowed_networks": ["127.0.0.3/32"], "webhook_retry_schedule": SCHEDULE,
            "webhook_retry_jitter": 0.1, "webhook_timeout": 5.0, "public_url": PUBLIC_URL,
            "default_notifications": [{"url": receiver.url("/server-default?key=s3cr3t"), "event": "COMPLETE"}]}


def test_signatures_reproduce_the_standard_webhooks_test_vector():
    assert signing.sign(VECTOR["secret"], VECTOR["id"], VECTOR["timestamp"], VECTOR["body"]) == VECTOR["signature"]
    assert signing.verify(VECTOR["secret"], VECTOR["id"], str(VECTOR["timestamp"]), VECTOR["body"],
                          f"v1,bm9wZQ== {VECTOR['signature']}")
    assert not signing.verify(VECTOR["secret"], VECTOR["id"], str(VECTOR["timestamp"]), b'{"test": 2432232315}',
                              VECTOR["signature"])
    # and the reference library signs the same thing the same way
    lib = standardwebhooks.Webhook(VECTOR["secret"])
    when = datetime.fromtimestamp(VECTOR["timestamp"], UTC)
    assert lib.sign(VECTOR["id"], when, VECTOR["body"].decode()) == VECTOR["signature"]


async def test_signed_deliveries_with_template_variables_reach_the_receiver(jp_fetch, receiver):
    every = {name: f"${{{name}}}" for name in VARIABLES}
    notifications = [
        {"url": receiver.url("/each/${JOB_ID}?event=${EVENT}&error=${JOB_ERROR}&code=${EXIT_CODE}"), "event": "*",
         "persistent": True},
        {"url": receiver.url("/once"), "event": "*"},
        {"url": receiver.url("/failed"), "event": "EXECUTOR_ERROR", "payload": {"vars": every, "n": [1, "${OWNER}"]}},
        {"url": receiver.url("/never"), "event": "CANCELED"},
    ]
    code, job = await nh.call(jp_fetch, "POST", "jobs", body=nh.job_body("x = 1", exit_status=3, name="nightly load",
                                                                 notifications=notifications))
    assert code == 201, job
    jid = job["id"]
    assert [n["url"] for n in job["spec"]["notifications"]] == [n["url"] for n in notifications]
    deliveries = await nh.settled(jp_fetch, jid, 6)  # QUEUED, INITIALIZING, RUNNING, EXECUTOR_ERROR; once; failed
    code, secret = await nh.call(jp_fetch, "POST", "webhooks", "secret")
    assert code == 200 and secret["secret"].startswith("whsec_") and secret["rotated"] is False
    verifier = standardwebhooks.Webhook(secret["secret"])

    each = sorted(receiver.at(f"/each/{jid}"), key=lambda r: r.json["data"]["job"]["seq"])  # sent concurrently
    assert [parse_qs(r.query)["event"][0] for r in each] == ["QUEUED", "INITIALIZING", "RUNNING", "EXECUTOR_ERROR"]
    last = parse_qs(each[-1].query)
    final = (await nh.call(jp_fetch, "GET", "jobs", jid))[1]
    assert final["state"] == "EXECUTOR_ERROR"
    assert last["code"] == [str(final["exit_code"])] and last["error"] == [final["exit_message"]]
    assert quote(final["exit_message"], safe="") in each[-1].query  # percent-encoded in the URL
    assert "code=&" in each[0].query or each[0].query.endswith("code=")  # no exit code yet: empty
    assert len(receiver.at("/once")) == 1 and receiver.at("/once")[0].json["data"]["event"] == "QUEUED"
    assert receiver.at("/never") == [] and receiver.at("/server-default") == []  # COMPLETE never happened

    ids = set()
    for r in [*each, *receiver.at("/once"), *receiver.at("/failed")]:
        assert r.status == 200
        assert r.headers["content-type"] == "application/json"
        verifier.verify(r.body, r.headers)  # raises if the signature is wrong
        assert signing.verify(secret["secret"], r.headers["webhook-id"], r.headers["webhook-timestamp"], r.body,
                              r.headers["webhook-signature"])
        assert abs(int(r.headers["webhook-timestamp"]) - datetime.now(UTC).timestamp()) < 120
        ids.add(r.headers["webhook-id"])
    assert len(ids) == 6  # one webhook-id per delivery

    body = each[-1].json  # the default body: the job without its code or notifications, and links
    assert body["type"] == "job.executor_error" and body["data"]["event"] == "EXECUTOR_ERROR"
    assert body["data"]["job"]["id"] == jid and body["data"]["job"]["state"] == "EXECUTOR_ERROR"
    assert "code" not in body["data"]["job"]["spec"]["application"]
    assert "notifications" not in body["data"]["job"]["spec"]
    assert body["data"]["links"] == {"job": f"{PUBLIC_URL}sparkdock/api/jobs/{jid}",
                                     "archive": f"{PUBLIC_URL}sparkdock/api/jobs/{jid}/logs"}

    custom = receiver.at("/failed")[0].json  # a payload template, every variable rendered
    assert custom["n"] == [1, "default"]
    assert custom["vars"] == {
        "UUID": jid, "EVENT": "EXECUTOR_ERROR", "JOB_STATUS": "EXECUTOR_ERROR",
        "JOB_URL": f"{PUBLIC_URL}sparkdock/api/jobs/{jid}", "JOB_ID": jid, "JOB_SYSTEM": "fake",
        "JOB_NAME": "nightly load", "JOB_START_TIME": final["started_at"], "JOB_END_TIME": final["ended_at"],
        "JOB_SUBMIT_TIME": final["created_at"], "JOB_ARCHIVE_PATH": f"sparkdock/api/jobs/{jid}/logs",
        "JOB_ARCHIVE_URL": f"{PUBLIC_URL}sparkdock/api/jobs/{jid}/logs", "JOB_ERROR": final["exit_message"],
        "EXIT_CODE": str(final["exit_code"]), "OWNER": "default",
    }

    # the API and the history show every attempt
    assert {d["status"] for d in deliveries} == {"delivered"}
    assert {d["id"] for d in deliveries} == ids
    for d in deliveries:
        [attempt] = d["attempts"]
        assert attempt["outcome"] == "delivered" and attempt["status_code"] == 200
        assert attempt["latency_ms"] >= 0 and d["delivered_at"]
    history = (await nh.call(jp_fetch, "GET", "jobs", jid, "history"))[1]["events"]
    notes = [e for e in history if e["event"] == "NOTIFICATION"]
    assert len(notes) == 6 and all("delivered, HTTP 200" in e["description"] for e in notes)
    assert all("127.0.0.3" in e["description"] and "error=" not in e["description"] for e in notes)  # origin only


async def test_a_rotated_secret_is_shown_once_and_both_sign_during_the_grace_period(jp_fetch, receiver):
    with captured_log(logging.getLogger("tornado.access"), logging.getLogger("ServerApp")) as lines:
        code, first = await nh.call(jp_fetch, "POST", "webhooks", "secret")
        assert code == 200 and first["rotated"] is False
        code, info = await nh.call(jp_fetch, "GET", "webhooks", "secret")
        assert code == 200 and info["shown"] is True and info["rotated_at"] is None and "secret" not in info
        code, second = await nh.call(jp_fetch, "POST", "webhooks", "secret")  # shown already: this one rotates
    assert any("rotated" in line for line in lines)  # said, but never the secret
    assert not any(s["secret"] in line or s["secret"][6:] in line for s in (first, second) for line in lines)
    assert code == 200 and second["rotated"] is True and second["secret"] != first["secret"]
    assert len(base64.b64decode(second["secret"].removeprefix("whsec_"))) == 32
    code, info = await nh.call(jp_fetch, "GET", "webhooks", "secret")
    assert info["rotated_at"] and info["created_at"] == second["created_at"]

    code, job = await nh.call(jp_fetch, "POST", "jobs", body=nh.job_body(notifications=[
        {"url": receiver.url("/rotated"), "event": "QUEUED"}]))
    assert code == 201
    [r] = await asyncio.to_thread(receiver.wait_for, lambda got: any(g.path == "/rotated" for g in got), "/rotated")
    signatures = r.headers["webhook-signature"].split()
    assert len(signatures) == 2  # the new secret's, then the old one's
    for secret in (second["secret"], first["secret"]):
        standardwebhooks.Webhook(secret).verify(r.body, r.headers)
    await nh.settled(jp_fetch, job["id"], 1)


async def test_a_receiver_that_fails_twice_gets_the_third_attempt(jp_fetch, receiver):
    receiver.script["/flaky"] = [500, 500, 200]
    receiver.script["/busy"] = [429, 200]
    receiver.retry_after["/busy"] = "0.5"
    receiver.script["/down"] = [503]
    receiver.script["/gone"] = [404]
    code, job = await nh.call(jp_fetch, "POST", "jobs", body=nh.job_body(notifications=[
        {"url": receiver.url(p), "event": "QUEUED"} for p in ("/flaky", "/busy", "/down", "/gone")]))
    assert code == 201
    jid = job["id"]
    by_url = {d["url"]: d for d in await nh.settled(jp_fetch, jid, 4)}

    flaky = by_url[receiver.url("/flaky")]
    assert flaky["status"] == "delivered"
    assert [(a["outcome"], a["status_code"]) for a in flaky["attempts"]] == [
        ("retry", 500), ("retry", 500), ("delivered", 200)]
    got = receiver.at("/flaky")
    assert [r.status for r in got] == [500, 500, 200]
    assert len({r.headers["webhook-id"] for r in got}) == 1 == len({r.body for r in got})  # one delivery
    assert got[1].at - got[0].at >= SCHEDULE[0] * 0.9 - 0.05 and got[2].at - got[1].at >= SCHEDULE[1] * 0.9 - 0.05

    busy = receiver.at("/busy")  # 429 with Retry-After: 0.5 waits longer than the schedule's 0.2
    assert [r.status for r in busy] == [429, 200] and busy[1].at - busy[0].at >= 0.45
    down = by_url[receiver.url("/down")]  # the schedule used up: failed after 1 + 3 attempts
    assert down["status"] == "failed" and len(down["attempts"]) == len(SCHEDULE) + 1
    assert down["last_error"].startswith("gave up after 4 attempts: HTTP 503")
    gone = by_url[receiver.url("/gone")]  # a 4xx is final
    assert gone["status"] == "failed" and len(gone["attempts"]) == 1 and gone["last_error"].startswith("HTTP 404")

    history = (await nh.call(jp_fetch, "GET", "jobs", jid, "history"))[1]["events"]
    flaky_notes = [e["description"] for e in history if e["event"] == "NOTIFICATION" and "attempt" in
                   e["description"] and e["progress"]["delivery"] == flaky["id"]]
    assert len(flaky_notes) == 3
    assert "HTTP 500" in flaky_notes[0] and "next attempt in" in flaky_notes[0]
    assert "delivered, HTTP 200" in flaky_notes[2]


async def test_a_server_default_fires_for_every_job_and_its_url_stays_hidden(jp_fetch, receiver):
    code, job = await nh.call(jp_fetch, "POST", "jobs", body=nh.job_body())
    assert code == 201
    [d] = await nh.settled(jp_fetch, job["id"], 1, source="server:")
    assert d["notification"] == "server:0" and d["event"] == "COMPLETE" and d["status"] == "delivered"
    assert d["url"] == f"http://127.0.0.3:{receiver.port}"  # the origin only: the query holds a secret
    assert receiver.at("/server-default")[0].query == "key=s3cr3t"
    code, reply = await nh.call(jp_fetch, "GET", "jobs", job["id"], "notifications")
    assert reply["notifications"] == [] and "s3cr3t" not in json.dumps(reply)


async def test_targets_that_are_not_public_are_refused(jp_fetch, receiver):
    with Receiver("127.0.0.2") as inside:  # a service on loopback that webhooks must never reach
        receiver.redirects["/redirect"] = inside.url("/")
        targets = {
            inside.url("/direct"): "refused: 127.0.0.2 is a loopback address",
            "http://169.254.169.254/latest/meta-data/": "refused: 169.254.169.254 is a cloud metadata address",
            f"http://localhost:{inside.port}/by-name": "refused: localhost (it resolves to ",
            f"http://[::ffff:127.0.0.2]:{inside.port}/mapped": "a loopback address",
            "http://10.0.0.1/private": "refused: 10.0.0.1 is a private address",
            receiver.url("/redirect"): "HTTP 302: redirects are not followed (to http://127.0.0.2:",
        }
        code, job = await nh.call(jp_fetch, "POST", "jobs", body=nh.job_body(notifications=[
            {"url": url, "event": "QUEUED"} for url in targets]))
        assert code == 201
        deliveries = await nh.settled(jp_fetch, job["id"], len(targets))
        for d in deliveries:
            assert d["status"] == "failed" and len(d["attempts"]) == 1, d  # never retried
            assert targets[d["url"]] in d["last_error"], d
        assert inside.received == []
        assert [r.status for r in receiver.at("/redirect")] == [302]
    assert TargetGuard(["127.0.0.2/32"]).refusal("127.0.0.2") is None  # what the allowlist is for


@pytest.mark.parametrize(("notification", "field", "words"), [
    ({"url": "http://h/${JOB_IDD}", "event": "*"}, "notifications.0.url", "unknown template variable ${JOB_IDD}"),
    ({"url": "http://h/", "event": "*", "payload": {"t": "${NOPE}"}}, "notifications.0.payload", "${NOPE}"),
    ({"url": "http://h/", "event": "FINISHED"}, "notifications.0.event", "'SYSTEM_ERROR'"),
    ({"url": "ftp://h/x", "event": "*"}, "notifications.0.url", "http:// or https://"),
    # an email address is checked as one; and this server has no SMTP server (tests/test_email.py has one)
    ({"url": "someone@example.org", "event": "*"}, "notifications.0.url",
     "email notifications are not enabled on this server"),
    ({"url": "mailto:someone", "event": "*"}, "notifications.0.url", "not a valid email address"),
    ({"url": "a@example.org, b@example.org", "event": "*"}, "notifications.0.url", "not a valid email address"),
    ({"url": "${OWNER}@example.org", "event": "*"}, "notifications.0.url", "cannot hold template variables"),
    ({"url": "a@example.org", "event": "*", "payload": {"t": 1}}, "notifications.0", "has no payload"),
    ({"url": "http://h/", "event": "*", "persistent": "sometimes"}, "notifications.0.persistent", "boolean"),
    ({"url": "http://h/", "event": "*", "when": "now"}, "notifications.0.when", "unknown field"),
    ({"event": "*"}, "notifications.0.url", "required"),
])
async def test_a_bad_notification_is_a_400_that_names_the_field(jp_fetch, notification, field, words):
    code, reply = await nh.call(jp_fetch, "POST", "jobs", body=nh.job_body(notifications=[notification]))
    assert code == 400, reply
    assert [e["field"] for e in reply["errors"]] == [field], reply
    assert words in reply["errors"][0]["message"], reply
    code, listed = await nh.call(jp_fetch, "GET", "jobs")
    assert listed["total"] == 0


async def test_more_than_ten_notifications_are_refused(jp_fetch):
    code, reply = await nh.call(jp_fetch, "POST", "jobs", body=nh.job_body(notifications=[
        {"url": f"http://h/{i}", "event": "*"} for i in range(11)]))
    assert code == 400 and reply["errors"][0]["field"] == "notifications"


async def test_an_unknown_job_has_no_notifications(jp_fetch):
    code, reply = await nh.call(jp_fetch, "GET", "jobs", "nosuchjob1", "notifications")
    assert code == 404 and "nosuchjob1" in reply["message"]


async def test_the_python_client_sends_notifications_and_reads_the_attempts(client, receiver):  # noqa: F811
    fake = json.dumps({"exit_status": 0})
    job = await run(client.submit, code=f"# fake: {fake}\nprint(1)", cluster={"image": "fake/ok"},
                    notifications=[{"url": receiver.url("/py/${JOB_ID}"), "event": "QUEUED"}])
    [got] = await asyncio.to_thread(receiver.wait_for, lambda got: any(g.path.startswith("/py/") for g in got),
                                    "the client's webhook")
    assert got.path == f"/py/{job.id}"
    standardwebhooks.Webhook(await run(client.webhook_secret)).verify(got.body, got.headers)

    def delivered() -> dict[str, Any]:  # the blocking client, in a thread (the server runs on this loop)
        deadline = time.monotonic() + 30
        while True:
            mine = [d for d in job.notifications() if d["notification"] == "job:0"]
            if mine and mine[0]["status"] == "delivered":
                return mine[0]
            assert time.monotonic() < deadline, f"the delivery is not recorded: {mine}"
            time.sleep(0.05)

    delivery = await run(delivered)
    assert delivery["attempts"][0]["status_code"] == 200


async def test_a_receiver_that_does_not_answer_in_time_is_tried_again(tmp_path):
    """The dispatcher on a real store (no Jupyter server): an attempt is bounded by ``timeout``."""
    store = JobStore(tmp_path / "jobs.db")
    store.planner = NotificationPlanner([], lambda: "http://jupyter/")
    db = AsyncStore(store)
    dispatcher = Dispatcher(db, TargetGuard(["127.0.0.3/32"]), DeliveryPolicy(schedule=(0.2,), jitter=0, timeout=0.5))
    with Receiver("127.0.0.3") as slow:
        release = threading.Event()
        slow.stall["/slow"] = release
        spec = {"notifications": [n.model_dump() for n in parse_notifications([
            {"url": slow.url("/slow"), "event": "QUEUED"}])]}
        job = store.create(Kind.AUTOMATED, spec, then={"target": State.QUEUED})
        task = asyncio.get_running_loop().create_task(dispatcher.run())
        try:
            await until(lambda: store.deliveries(job.id)[0]["status"] == "delivered", "the second attempt", 30)
            [d] = store.deliveries(job.id)
        finally:
            release.set()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            db.close()
            store.close()
    first, second = d["attempts"]
    assert first["outcome"] == "retry" and first["status_code"] is None, first
    assert "Timeout" in first["error"] and "after at most 0.5 s" in first["error"], first
    assert 450 <= first["latency_ms"] < 5000, first  # bounded by the timeout, not by the receiver
    assert second["outcome"] == "delivered" and second["status_code"] == 200


@pytest.mark.parametrize(("settings", "message"), [
    ({"default_notifications": [{"url": "https://h/${JOB_IDD}", "event": "*"}]},
     "SparkDockApp.default_notifications.0.url: unknown template variable ${JOB_IDD}"),
    ({"default_notifications": [{"url": "ops@example.org", "event": "SYSTEM_ERROR"}]},
     "SparkDockApp.default_notifications sends email, but no SMTP server is set (SparkDockApp.smtp_host)"),
    ({"smtp_host": "mail.example.org", "smtp_tls": "none", "smtp_user": "u", "smtp_password_file": "/dev/null/x"},
     "SparkDockApp.smtp_password_file '/dev/null/x' cannot be read"),
], ids=["variable", "email-without-smtp", "password-file"])
def test_a_server_with_a_bad_notification_setting_refuses_to_start(tmp_path, settings, message):
    config = tmp_path / "config"
    config.mkdir()
    (config / "jupyter_server_config.json").write_text(json.dumps({
        "ServerApp": {"jpserver_extensions": {"sparkdock": True}}, "SparkDockApp": settings}))
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(config), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt")}
    out = subprocess.run(
        [sys.executable, "-m", "jupyter_server", "--no-browser", "--port=0", "--allow-root",
         f"--ServerApp.root_dir={tmp_path}", f"--SparkDockApp.data_dir={tmp_path / 'data'}"],
        capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL,
    )
    assert out.returncode != 0, out.stderr[-2000:]
    assert f"sparkdock cannot start: {message}" in out.stderr
    assert "Traceback" not in out.stderr

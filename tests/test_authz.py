"""Who may do what, on a real Jupyter server whose identity provider gives stable names (tests/site_users.py):
the auth matrix of every route and the event stream, owners, admins, and the default provider's one owner.
The lifecycle runs on the test double of the backend interface."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
import tornado.httpclient

from job_helpers import wait_for
from site_users import RolePermissions, TokenUsers, auth
from sparkdock.server.handlers import EventsHandler, default_handlers
from sparkdock.server.outbox import Delivery

H = {"Content-Type": "application/json"}
INTERACTIVE = {"kind": "interactive", "name": "mine", "cluster": {"workers": 1}}


@pytest.fixture
def jp_server_config(jp_server_config):
    """The suite's server, with the site's users and permissions."""
    server = {**jp_server_config["ServerApp"], "identity_provider_class": TokenUsers,
              "authorizer_class": RolePermissions}
    return {**jp_server_config, "ServerApp": server}


async def _call(jp_fetch, method: str, *path: str, user: str | None = None, body=None, headers=None):
    """A request as ``user`` (``None``: alice); returns (status, JSON body or None)."""
    hdrs = {**H, **(auth(user) if user else {}), **(headers or {})}
    r = await jp_fetch("sparkdock", "api", *path, method=method, raise_error=False, headers=hdrs,
                       body=None if body is None and method != "POST" else json.dumps(body or {}),
                       allow_nonstandard_methods=True)
    try:
        return r.code, json.loads(r.body)
    except ValueError:
        return r.code, None


async def _running(jp_fetch, jp_serverapp, user: str | None = None) -> str:
    """A cluster of ``user`` (``None``: alice), RUNNING."""
    code, job = await _call(jp_fetch, "POST", "jobs", user=user, body=INTERACTIVE)
    assert code == 201, job
    await wait_for(jp_serverapp.web_app.settings["sparkdock_manager"], job["id"], "RUNNING", timeout=20)
    return job["id"]


def _routes(job_id: str) -> list[tuple[str, list[str], str]]:
    """Every (method, path, action) of the REST API, from the handlers themselves (a new route is covered)."""
    found = []
    for pattern, handler in default_handlers:
        if handler is EventsHandler:
            continue
        path = re.sub(r"\(\?P<job_id>[^)]*\)", job_id, pattern).strip("/").replace("/?", "")
        parts = path.split("/")[2:]  # after sparkdock/api
        for method in ("get", "post", "delete"):
            if method in vars(handler):
                action = "write" if method != "get" or parts[-1] == "credentials" else "read"
                if parts[0] == "webhooks":  # the server's signing secret: admins only
                    action = "admin"
                found.append((method.upper(), parts, action))
    return found


async def test_the_auth_matrix_of_every_route_and_the_event_stream(jp_fetch, jp_ws_fetch, jp_serverapp):
    jid = await _running(jp_fetch, jp_serverapp)
    routes = _routes(jid)
    assert len(routes) == 16  # jobs GET/POST, job GET/DELETE, status, history, logs, sql, credentials,
    # notifications, webhooks/secret GET/POST, codes, info, cluster-options, openapi.json
    for method, parts, action in routes:
        body = {"statement": "SELECT 1"} if parts[-1] == "sql" else INTERACTIVE
        for who, headers in (("no token", {"Authorization": ""}), ("a wrong token", {"Authorization": "token x"})):
            code, _ = await _call(jp_fetch, method, *parts, body=body, headers=headers)
            assert code in (401, 403), (method, parts, who, code)
        code, reply = await _call(jp_fetch, method, *parts, user="reader", body=body)
        if action == "write":
            assert code == 403, (method, parts, code, reply)
            assert "not authorized" in reply["message"]
        elif action == "admin":  # the reader may read, but is no admin
            assert code == 403, (method, parts, code, reply)
            assert "only an admin" in reply["message"] or "not authorized" in reply["message"]
        else:  # the reader may read, but alice's job is not the reader's to see
            assert code in (200, 404), (method, parts, code, reply)
            assert code == 200 or jid in reply["message"]
    _, job = await _call(jp_fetch, "GET", "jobs", jid)
    assert job["state"] == "RUNNING"  # no refused request changed anything
    for headers in ({"Authorization": ""}, {"Authorization": "token x"}):
        with pytest.raises(tornado.httpclient.HTTPClientError) as exc:
            await jp_ws_fetch("sparkdock", "api", "events", headers=headers)
        assert exc.value.code in (302, 401, 403)
    ws = await jp_ws_fetch("sparkdock", "api", "events", headers=auth("reader"))  # reading events is reading
    ws.close()


async def test_credentials_need_write(jp_fetch, jp_serverapp):
    jid = await _running(jp_fetch, jp_serverapp)
    code, creds = await _call(jp_fetch, "GET", "jobs", jid, "credentials")
    assert code == 200 and creds["sql"]["password"]
    code, reply = await _call(jp_fetch, "GET", "jobs", jid, "credentials", user="reader")
    assert code == 403 and "write" in reply["message"]


async def _messages_until(ws, job_id: str, state: str) -> list[dict]:
    """The job messages a socket receives until ``job_id`` reaches ``state``."""
    seen = []
    while True:
        msg = json.loads(await asyncio.wait_for(ws.read_message(), 20))
        if msg.get("type") == "job":
            seen.append(msg["job"])
            if msg["job"]["id"] == job_id and msg["job"]["state"] == state:
                return seen


async def test_a_user_sees_and_acts_on_their_own_jobs_only_and_an_admin_on_all(jp_fetch, jp_ws_fetch, jp_serverapp):
    bob_ws = await jp_ws_fetch("sparkdock", "api", "events", headers=auth("bob"))
    admin_ws = await jp_ws_fetch("sparkdock", "api", "events", headers=auth("admin"))
    alices = await _running(jp_fetch, jp_serverapp)
    bobs = await _running(jp_fetch, jp_serverapp, user="bob")
    _, job = await _call(jp_fetch, "GET", "jobs", alices)
    assert job["owner"] == "alice"
    # bob's socket got his job's changes and nothing of alice's (hers came first on the bus)
    seen = await _messages_until(bob_ws, bobs, "RUNNING")
    assert {m["id"] for m in seen} == {bobs} and all(m["owner"] == "bob" for m in seen)
    # the admin's socket got both
    seen = await _messages_until(admin_ws, bobs, "RUNNING")
    assert {m["id"] for m in seen} == {alices, bobs}
    # bob cannot list, read, follow, query, take the credentials of, cancel or build on alice's job
    code, listed = await _call(jp_fetch, "GET", "jobs", user="bob")
    assert code == 200 and [j["id"] for j in listed["jobs"]] == [bobs] and listed["total"] == 1
    for parts in (["jobs", alices], ["jobs", alices, "status"], ["jobs", alices, "history"],
                  ["jobs", alices, "logs"], ["jobs", alices, "credentials"], ["jobs", alices, "notifications"]):
        code, reply = await _call(jp_fetch, "GET", *parts, user="bob")
        assert code == 404 and reply["message"] == f"no job with id {alices!r}", (parts, code, reply)
    code, _ = await _call(jp_fetch, "POST", "jobs", alices, "sql", user="bob", body={"statement": "SELECT 1"})
    assert code == 404
    code, _ = await _call(jp_fetch, "DELETE", "jobs", alices, user="bob")
    assert code == 404
    code, reply = await _call(jp_fetch, "POST", "jobs", user="bob", body={
        "kind": "automated", "application": {"type": "sql", "code": "SELECT 1"}, "cluster_job": alices})
    assert code == 422 and reply["errors"][0]["field"] == "cluster_job"
    _, job = await _call(jp_fetch, "GET", "jobs", alices)
    assert job["state"] == "RUNNING"
    # the admin lists both, reads alice's credentials, and terminates her cluster
    code, listed = await _call(jp_fetch, "GET", "jobs", user="admin")
    assert {j["id"] for j in listed["jobs"]} == {alices, bobs}
    code, creds = await _call(jp_fetch, "GET", "jobs", alices, "credentials", user="admin")
    assert code == 200 and creds["lab"]["token"]
    code, _ = await _call(jp_fetch, "DELETE", "jobs", alices, user="admin")
    assert code == 202
    # the webhook signing secret is the admin's, not bob's
    for method in ("GET", "POST"):
        code, reply = await _call(jp_fetch, method, "webhooks", "secret", user="bob", body={})
        assert code == 403 and "only an admin" in reply["message"], (method, code, reply)
    code, reply = await _call(jp_fetch, "GET", "webhooks", "secret", user="admin")
    assert code == 200 and "secret" not in reply
    await _messages_until(admin_ws, alices, "COMPLETE")
    code, listed = await _call(jp_fetch, "GET", "jobs", user="bob")
    assert [j["id"] for j in listed["jobs"]] == [bobs]
    code, _ = await _call(jp_fetch, "DELETE", "jobs", bobs, user="bob")
    assert code == 202
    seen = await _messages_until(bob_ws, bobs, "COMPLETE")
    assert {m["id"] for m in seen} == {bobs}
    bob_ws.close()
    admin_ws.close()


async def test_an_attempt_of_a_notification_is_streamed_only_to_who_sees_the_job(jp_ws_fetch, jp_serverapp):
    """The event stream's delivery messages (the monitor follows them) obey the same owners as job messages.
    The manager publishes them as the dispatcher records each attempt; here it is given the recorded ones."""
    bob_ws = await jp_ws_fetch("sparkdock", "api", "events", headers=auth("bob"))
    admin_ws = await jp_ws_fetch("sparkdock", "api", "events", headers=auth("admin"))
    manager = jp_serverapp.web_app.settings["sparkdock_manager"]
    for owner in ("alice", "bob"):  # alice's first: if bob could see it, it would come before his own
        manager._on_attempt(Delivery(
            id=f"msg_{owner}", job_id=f"job{owner}", notification="job:0", event="COMPLETE", channel="email",
            url="mailto:x@example.org", payload="{}", created_at="", status="delivered", attempts=1,
            next_attempt_at=None, delivered_at=None, last_error=None, owner=owner))

    async def deliveries(ws, until: str) -> list[dict]:
        seen = []
        while not seen or seen[-1]["id"] != until:
            msg = json.loads(await asyncio.wait_for(ws.read_message(), 20))
            if msg.get("type") == "delivery":
                seen.append(msg["delivery"])
        return seen

    seen = await deliveries(bob_ws, "msg_bob")
    assert [d["id"] for d in seen] == ["msg_bob"] and "url" not in seen[0] and "payload" not in seen[0]
    assert [d["id"] for d in await deliveries(admin_ws, "msg_bob")] == ["msg_alice", "msg_bob"]
    bob_ws.close()
    admin_ws.close()


@pytest.mark.parametrize("sparkdock_config", [{"enforce_owners": "off"}])
async def test_owners_can_be_turned_off(jp_fetch, jp_serverapp):
    alices = await _running(jp_fetch, jp_serverapp)
    code, job = await _call(jp_fetch, "GET", "jobs", alices, user="bob")
    assert code == 200 and job["owner"] == "default"
    manager = jp_serverapp.web_app.settings["sparkdock_manager"]
    await manager.cancel(alices, wait=True)


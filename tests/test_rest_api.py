"""The REST contract and the event stream, on a real Jupyter server (pytest-jupyter) with the lifecycle
driven through the backend interface by a test double (real clusters: test_rest_real.py)."""

from __future__ import annotations

import asyncio
import json

import pytest
import tornado.httpclient

from fake_backend import FakeBackend
from job_helpers import until

H = {"Content-Type": "application/json"}


async def _post(jp_fetch, body, path=("sparkdock", "api", "jobs")):
    return await jp_fetch(*path, method="POST", body=json.dumps(body), headers=dict(H), raise_error=False)


async def _get(jp_fetch, *path, **params):
    r = await jp_fetch("sparkdock", "api", *path, params=params or None, raise_error=False)
    return r.code, json.loads(r.body)


async def _wait_state(jp_fetch, job_id, states, timeout=20.0):
    deadline = asyncio.get_event_loop().time() + timeout
    while True:
        code, job = await _get(jp_fetch, "jobs", job_id)
        assert code == 200
        if job["state"] in states:
            return job
        assert asyncio.get_event_loop().time() < deadline, f"{job_id} stuck in {job['state']}"
        await asyncio.sleep(0.05)


async def test_launch_follow_terminate(jp_fetch, jp_ws_fetch):
    ws = await jp_ws_fetch("sparkdock", "api", "events")
    r = await _post(jp_fetch, {"kind": "interactive", "name": "demo", "cluster": {"workers": 2}})
    assert r.code == 201
    job = json.loads(r.body)
    assert r.headers["Location"].endswith(f"/sparkdock/api/jobs/{job['id']}")
    assert job["state"] == "QUEUED" and job["kind"] == "interactive" and job["name"] == "demo"
    for key in ("id", "kind", "name", "state", "phase", "exit_code", "exit_message", "runtime_status",
                "endpoints", "spec", "owner", "created_at", "updated_at", "started_at", "ended_at"):
        assert key in job
    seen = []
    while "RUNNING" not in seen:
        msg = json.loads(await asyncio.wait_for(ws.read_message(), 10))
        assert msg["type"] == "job"
        if msg["job"]["id"] == job["id"] and (not seen or seen[-1] != msg["job"]["state"]):
            seen.append(msg["job"]["state"])
    # created in its first state in one transaction (the history still starts with CREATED, below)
    assert seen == ["QUEUED", "INITIALIZING", "RUNNING"]
    code, running = await _get(jp_fetch, "jobs", job["id"])
    assert running["endpoints"]["sql"]["jdbc_url"].startswith("jdbc:hive2://")
    assert "secret" not in json.dumps(running)  # credentials never leave the server
    code, creds = await _get(jp_fetch, "jobs", job["id"], "credentials")  # the owner may read them
    assert creds["sql"]["password"] == "secret-password" and creds["lab"]["url"].endswith("token=secret-token")
    code, status = await _get(jp_fetch, "jobs", job["id"], "status")
    assert status == {"id": job["id"], "state": "RUNNING", "exit_code": None}
    r = await jp_fetch("sparkdock", "api", "jobs", job["id"], method="DELETE")
    assert r.code == 202 and json.loads(r.body)["state"] in ("CANCELING", "COMPLETE")
    r2 = await jp_fetch("sparkdock", "api", "jobs", job["id"], method="DELETE")  # harmless repeat
    assert r2.code == 202
    done = await _wait_state(jp_fetch, job["id"], {"COMPLETE"})
    assert done["ended_at"] and done["endpoints"] is None
    code, hist = await _get(jp_fetch, "jobs", job["id"], "history")
    states = [e["state"] for e in hist["events"] if e["event"] in ("CREATED", "STATE")]
    assert states == ["CREATED", "QUEUED", "INITIALIZING", "RUNNING", "CANCELING", "COMPLETE"]
    phases = [e["phase"] for e in hist["events"] if e["event"] == "PHASE"]
    assert "WaitingForWorkers 2/2" in phases
    code, logs = await _get(jp_fetch, "jobs", job["id"], "logs", component="master")
    assert code == 200 and "master log" in logs["logs"]
    code, err = await _get(jp_fetch, "jobs", job["id"], "logs", component="nope")
    assert code == 404 and "nope" in err["message"]
    ws.close()


async def test_event_stream_delivers_each_transition_once_in_order(jp_fetch, jp_ws_fetch):
    ws = await jp_ws_fetch("sparkdock", "api", "events")
    r = await _post(jp_fetch, {"kind": "automated", "application": {"type": "pyspark", "code": "print(1)"}})
    jid = json.loads(r.body)["id"]
    states = []
    while not states or states[-1] != "COMPLETE":
        msg = json.loads(await asyncio.wait_for(ws.read_message(), 10))
        if msg["type"] == "job" and msg["job"]["id"] == jid:
            seq = msg["job"]["seq"]
            if not states or states[-1][1] != msg["job"]["state"]:
                states.append((seq, msg["job"]["state"]))
            if msg["job"]["state"] == "COMPLETE":
                break
    names = [s for _, s in states]
    assert names == ["QUEUED", "INITIALIZING", "RUNNING", "COMPLETE"]
    seqs = [q for q, _ in states]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    ws.close()


async def test_an_event_of_a_job_with_1_mb_of_code_is_small(jp_fetch, jp_ws_fetch):
    """Every subscriber gets every change: events carry the job without ``spec.application.code`` (up to 1 MB);
    the REST GET still has it."""
    from sparkdock.model.specs import MAX_CODE_BYTES

    code = "# " + "x" * (MAX_CODE_BYTES - 40) + "\nprint(1)"
    ws = await jp_ws_fetch("sparkdock", "api", "events")
    r = await _post(jp_fetch, {"kind": "automated", "application": {"type": "pyspark", "code": code}})
    assert r.code == 201, r.body
    jid = json.loads(r.body)["id"]
    sizes, state = [], None
    while state != "COMPLETE":
        raw = await asyncio.wait_for(ws.read_message(), 10)
        msg = json.loads(raw)
        if msg["type"] == "job" and msg["job"]["id"] == jid:
            sizes.append(len(raw))
            state = msg["job"]["state"]
            app = msg["job"]["spec"]["application"]
            assert "code" not in app and app["type"] == "pyspark"
    assert len(sizes) >= 5 and max(sizes) < 4096, sizes
    code_, job = await _get(jp_fetch, "jobs", jid)
    assert code_ == 200 and job["spec"]["application"]["code"] == code
    ws.close()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "interactive", "cluster": {"workers": "two"}}, "cluster.workers"),
        ({"kind": "interactive", "cluster": {"workers": -1}}, "cluster.workers"),
        ({"kind": "spaceship"}, "kind"),
        ({"kind": "automated", "application": {"type": "pyspark", "code": "x", "path": "/x"}}, "application"),
        ({"kind": "automated", "application": {"type": "sql", "code": "x"}, "policy": {"retries": -1}},
         "policy.retries"),
        ({"kind": "automated", "application": {"type": "sql", "code": "x"}, "cluster_job": "nosuchjob"},
         "cluster_job"),
    ],
)
async def test_bad_bodies_name_the_field(jp_fetch, body, field):
    r = await _post(jp_fetch, body)
    assert r.code == 422
    data = json.loads(r.body)
    assert field in [e["field"] for e in data["errors"]], data
    assert field in data["message"]


async def test_not_json_huge_and_not_object(jp_fetch):
    r = await jp_fetch("sparkdock", "api", "jobs", method="POST", body="{nope", headers=dict(H), raise_error=False)
    assert r.code == 400 and "JSON" in json.loads(r.body)["message"]
    r = await _post(jp_fetch, {"kind": "automated", "name": "x" * (3 * 1024 * 1024)})
    assert r.code == 413 and "too large" in json.loads(r.body)["message"]
    r = await _post(jp_fetch, [1, 2, 3])
    assert r.code == 422


async def test_unknown_ids_and_bad_queries(jp_fetch):
    for path in (("jobs", "nope"), ("jobs", "nope", "status"), ("jobs", "nope", "history"),
                 ("jobs", "nope", "logs")):
        code, body = await _get(jp_fetch, *path)
        assert code == 404 and "nope" in body["message"]
    r = await jp_fetch("sparkdock", "api", "jobs", "nope", method="DELETE", raise_error=False)
    assert r.code == 404
    code, body = await _get(jp_fetch, "jobs", kind="weird")
    assert code == 400
    code, body = await _get(jp_fetch, "jobs", limit="x")
    assert code == 400 and "limit" in body["message"]


async def test_sql_needs_a_running_interactive_job(jp_fetch):
    r = await _post(jp_fetch, {"kind": "interactive", "cluster": {"image": "fake/slow"}})
    jid = json.loads(r.body)["id"]
    r = await _post(jp_fetch, {"statement": "SELECT 1"}, path=("sparkdock", "api", "jobs", jid, "sql"))
    assert r.code == 409 and "RUNNING" in json.loads(r.body)["message"]
    r = await _post(jp_fetch, {"nope": 1}, path=("sparkdock", "api", "jobs", jid, "sql"))
    assert r.code == 422 and "statement" in json.loads(r.body)["message"]
    await jp_fetch("sparkdock", "api", "jobs", jid, method="DELETE")


async def test_list_filters(jp_fetch):
    for _ in range(2):
        await _post(jp_fetch, {"kind": "automated", "application": {"type": "sql", "code": "SELECT 1"}})
    r = await _post(jp_fetch, {"kind": "interactive"})
    iid = json.loads(r.body)["id"]
    code, body = await _get(jp_fetch, "jobs", kind="interactive")
    assert body["total"] == 1 and body["jobs"][0]["id"] == iid
    code, body = await _get(jp_fetch, "jobs", limit="1", offset="1")
    assert body["total"] == 3 and len(body["jobs"]) == 1
    await _wait_state(jp_fetch, iid, {"RUNNING"})
    code, body = await _get(jp_fetch, "jobs", state="RUNNING")
    assert [j["id"] for j in body["jobs"]] == [iid]
    await jp_fetch("sparkdock", "api", "jobs", iid, method="DELETE")
    await _wait_state(jp_fetch, iid, {"COMPLETE"})


async def test_exit_codes_and_info(jp_fetch):
    code, cat = await _get(jp_fetch, "exit-codes")
    assert code == 200 and {50, 51, 52, 14, 18} <= {e["code"] for e in cat["exit_codes"]}
    code, info = await _get(jp_fetch, "info")
    assert info["backend"] == "fake" and "backend_class" in info["reason"]
    assert info["states"]["RUNNING"]["colour"] == "green"


async def test_failure_codes_and_logs_in_history(jp_fetch):
    r = await _post(jp_fetch, {"kind": "interactive", "cluster": {"image": "fake/fail51"}})
    jid = json.loads(r.body)["id"]
    job = await _wait_state(jp_fetch, jid, {"SYSTEM_ERROR"})
    assert job["exit_code"] == 51 and "No such image" in job["exit_message"]
    assert job["phase"] == "ContainerCannotRun"
    code, hist = await _get(jp_fetch, "jobs", jid, "history")
    assert any("fake log line 2" in (e["description"] or "") for e in hist["events"])
    assert jid in FakeBackend.stopped  # everything the job created is removed
    FakeBackend.engine_down = True
    r = await _post(jp_fetch, {"kind": "interactive"})
    job = await _wait_state(jp_fetch, json.loads(r.body)["id"], {"SYSTEM_ERROR"})
    assert job["exit_code"] == 52 and "fake engine" in job["exit_message"]


ROUTES = [("GET", "jobs"), ("POST", "jobs"), ("GET", "jobs/abc"), ("DELETE", "jobs/abc"), ("GET", "jobs/abc/status"),
          ("GET", "jobs/abc/history"), ("GET", "jobs/abc/logs"), ("POST", "jobs/abc/sql"),
          ("GET", "jobs/abc/credentials"), ("GET", "exit-codes"), ("GET", "info")]


async def test_under_the_default_login_every_caller_is_the_one_owner(jp_fetch, jp_serverapp):
    """jupyter_server's token login names each request without a cookie anew: owners would be random, so they
    are not enforced and every job belongs to ``default``."""
    assert not jp_serverapp.web_app.settings["sparkdock_owners"].enforced
    r = await _post(jp_fetch, {"kind": "interactive"})
    job = json.loads(r.body)
    assert job["owner"] == "default"
    code, listed = await _get(jp_fetch, "jobs")
    assert [j["id"] for j in listed["jobs"]] == [job["id"]]
    code, creds = await _get(jp_fetch, "jobs", job["id"], "credentials")
    assert code in (200, 409)  # visible to the next request (409 until it runs)


async def test_unauthenticated_and_wrong_token_are_refused(jp_fetch):
    for method, route in ROUTES:
        for auth in ("", "token wrong-token"):
            r = await jp_fetch("sparkdock", "api", *route.split("/"), method=method, raise_error=False,
                               body="{}" if method == "POST" else None, allow_nonstandard_methods=True,
                               headers={"Authorization": auth})
            assert r.code in (401, 403), (method, route, auth, r.code)


async def _login_cookie(jp_fetch, jp_serverapp) -> str:
    token = jp_serverapp.identity_provider.token
    r = await jp_fetch("api", "status", params={"token": token}, headers={"Authorization": ""})
    return "; ".join(c.split(";", 1)[0] for c in r.headers.get_list("Set-Cookie"))


async def test_cookie_auth_needs_xsrf_and_same_origin(jp_fetch, jp_serverapp):
    cookie = await _login_cookie(jp_fetch, jp_serverapp)
    # a cookie-authenticated read from the same origin works
    r = await jp_fetch("sparkdock", "api", "jobs", headers={"Authorization": "", "Cookie": cookie})
    assert r.code == 200
    # a cookie-authenticated write without the XSRF token is refused
    r = await jp_fetch("sparkdock", "api", "jobs", method="POST", body=json.dumps({"kind": "interactive"}),
                       raise_error=False, headers={"Authorization": "", "Cookie": cookie})
    assert r.code == 403
    # cross-origin requests riding on the cookie are refused, reads and writes alike
    for method, body in (("GET", None), ("POST", json.dumps({"kind": "interactive"}))):
        r = await jp_fetch("sparkdock", "api", "jobs", method=method, body=body, raise_error=False,
                           headers={"Authorization": "", "Cookie": cookie, "Origin": "http://evil.example.com"})
        assert r.code in (403, 404), (method, r.code)
    code, body = await _get(jp_fetch, "jobs")
    assert body["total"] == 0  # nothing was created by the refused writes


async def test_websocket_refuses_unauthenticated_and_cross_origin(jp_ws_fetch, jp_serverapp, jp_http_port, jp_base_url):
    for auth in ("", "token wrong"):
        with pytest.raises(tornado.httpclient.HTTPClientError) as exc:
            await jp_ws_fetch("sparkdock", "api", "events", headers={"Authorization": auth})
        assert exc.value.code in (302, 401, 403)  # refused (a redirect to the login page)
    # a cookie-authenticated socket (what a browser page opens) from another origin is refused
    token = jp_serverapp.identity_provider.token
    r = await tornado.httpclient.AsyncHTTPClient().fetch(
        f"http://localhost:{jp_http_port}{jp_base_url}api/status?token={token}")
    cookie = "; ".join(c.split(";", 1)[0] for c in r.headers.get_list("Set-Cookie"))
    ws = await jp_ws_fetch("sparkdock", "api", "events", headers={"Authorization": "", "Cookie": cookie})
    ws.close()  # same origin: accepted
    with pytest.raises(tornado.httpclient.HTTPClientError) as exc:
        await jp_ws_fetch("sparkdock", "api", "events",
                          headers={"Authorization": "", "Cookie": cookie, "Origin": "http://evil.example.com"})
    assert exc.value.code in (403, 404)


async def test_listener_of_a_closed_socket_is_removed(jp_fetch, jp_ws_fetch, jp_serverapp):
    manager = jp_serverapp.web_app.settings["sparkdock_manager"]
    ws = await jp_ws_fetch("sparkdock", "api", "events")
    await until(lambda: manager.bus.subscriber_count == 1, "the socket subscribed")
    ws.close()
    await until(lambda: manager.bus.subscriber_count == 0, "the closed socket's listener removed")


def test_every_route_is_authenticated_for_jupyter_server(jp_serverapp):
    """jupyter_server's own check (the one behind JupyterServerAuthWarning) finds no undecorated method."""
    from tornado.routing import PathMatches

    from sparkdock.server.handlers import default_handlers

    web_app = jp_serverapp.web_app
    problems = []
    for pattern, handler in default_handlers:
        problems += web_app._check_handler_auth(PathMatches(pattern), handler)
    assert problems == []

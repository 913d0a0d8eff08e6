"""The full REST contract on real clusters: the local backend (processes), and one run on Docker.

Launch (two workers), follow the events over the WebSocket until RUNNING, query through POST …/sql, read
history and logs, adopt after a simulated server restart (local), survive a restart of the Docker engine
(Docker: the job says the engine does not answer, then it is re-attached and answers SQL); then, with
``health_interval=1`` and ``health_grace=2``, kill one worker (a warning), the other (an error: flagged; on
Docker it is killed for memory and the error says "out of memory"), and the SQL endpoint: the job ends in
SYSTEM_ERROR 50 with the SQL log's last lines in its history, its slot free and nothing left behind.
(Terminating a real cluster through the API is tested by test_notebooks' notebooks.)
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from datetime import datetime
from pathlib import Path

import pytest

from docker_fixtures import docker_image, start_engine, starve_worker, stop_engine  # noqa: F401
from job_helpers import (
    assert_no_secret,
    captured_log,
    cluster_secrets,
    database_dump,
    process_table,
    texts_under,
)
from local_cluster import CANARY_ENV, server_secrets_in_environment
from sparkdock.backends.base import cluster_components
from sparkdock.model.lifecycle import is_terminal
from sparkdock.server.manager import JobManager

H = {"Content-Type": "application/json"}

# A driver that runs through a restart of the Docker engine (it starts just before): a line a second.
OUTAGE_APP = '''
import time
from pyspark.sql import SparkSession

spark = SparkSession.builder.getOrCreate()
print("outage-app: ready", flush=True)
for i in range(6):
    time.sleep(1)
    print(f"outage-app: tick {i}", flush=True)
print("outage-app: done", flush=True)
'''


async def _explain(jp_fetch, job_id: str, lines: int = 20) -> str:
    """The job, its history and the last log lines of each component, read over REST: what a red test says."""
    _, job = await _get(jp_fetch, "jobs", job_id)
    _, hist = await _get(jp_fetch, "jobs", job_id, "history")
    out = [f"job {job_id} is {job.get('state')}, phase {job.get('phase')!r}, exit code {job.get('exit_code')} "
           f"{job.get('exit_message') or ''}", f"runtime_status: {job.get('runtime_status')}", "history:"]
    out += [f"  {e.get('time')} {e.get('state')} {e.get('phase') or ''} {e.get('description') or ''}"
            for e in hist.get("events", [])[-25:]]
    workers = int(((job.get("spec") or {}).get("cluster") or {}).get("workers") or 0)
    for component in cluster_components(workers):
        code, body = await _get(jp_fetch, "jobs", job_id, "logs", component=component, tail=str(lines))
        text = body.get("logs", body) if code == 200 else body
        out += [f"--- last {lines} lines of {component} ({code}):", str(text).rstrip() or "(empty)"]
    return "\n".join(out)


async def _follow_until(ws, job_id: str, target: str, timeout: float, jp_fetch=None) -> list[str]:
    states: list[str] = []
    ended = False  # in a terminal state that is not the target
    deadline = time.monotonic() + timeout
    while target not in states:
        left = deadline - time.monotonic()
        if left <= 0 or ended:
            why = await _explain(jp_fetch, job_id) if jp_fetch is not None else ""
            raise AssertionError(f"{job_id} did not reach {target} in {timeout:g} s; saw {states}\n{why}")
        try:
            msg = json.loads(await asyncio.wait_for(ws.read_message(), left))
        except TimeoutError:
            continue
        if msg.get("type") == "job" and msg["job"]["id"] == job_id:
            st = msg["job"]["state"]
            if not states or states[-1] != st:
                states.append(st)
            ended = st != target and is_terminal(msg["job"]["kind"], st)
    return states


class _Recorded:
    """A WebSocket client that keeps every message it reads: what a subscriber to the event stream saw."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.messages: list[str] = []

    async def read_message(self):
        msg = await self.ws.read_message()
        if msg is not None:
            self.messages.append(msg)
        return msg

    def close(self) -> None:
        self.ws.close()


async def _until_flagged(jp_fetch, job_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, job = await _get(jp_fetch, "jobs", job_id)
        if job["flagged"]:
            return job
        await asyncio.sleep(0.25)
    raise AssertionError(f"{job_id} was not flagged: {job['runtime_status']}")


async def _until_status(jp_fetch, job_id: str, key: str, needle: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, job = await _get(jp_fetch, "jobs", job_id)
        if needle in (job["runtime_status"].get(key) or ""):
            return job
        await asyncio.sleep(0.25)
    raise AssertionError(f"{job_id}: no {key} with {needle!r}: {job['runtime_status']}")


async def _until_history(jp_fetch, job_id: str, event: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, hist = await _get(jp_fetch, "jobs", job_id, "history")
        found = [e for e in hist["events"] if e["event"] == event]
        if found:
            return found[-1]
        await asyncio.sleep(0.25)
    raise AssertionError(f"{job_id}: no {event} event in its history\n{await _explain(jp_fetch, job_id)}")


async def _until_log(jp_fetch, job_id: str, component: str, needle: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, body = await _get(jp_fetch, "jobs", job_id, "logs", component=component)
        if code == 200 and needle in body["logs"]:
            return body["logs"]
        await asyncio.sleep(0.5)
    raise AssertionError(f"{job_id}: {needle!r} not in the {component} log\n{await _explain(jp_fetch, job_id)}")


async def _get(jp_fetch, *path, **params):
    r = await jp_fetch("sparkdock", "api", *path, params=params or None, raise_error=False)
    return r.code, json.loads(r.body)


async def _launch_query_terminate(jp_fetch, jp_ws_fetch, cluster: dict, timeout: float) -> tuple[str, JobManager]:
    ws = _Recorded(await jp_ws_fetch("sparkdock", "api", "events"))
    r = await jp_fetch("sparkdock", "api", "jobs", method="POST", headers=dict(H),
                       body=json.dumps({"kind": "interactive", "name": "real", "cluster": cluster}))
    assert r.code == 201
    jid = json.loads(r.body)["id"]
    states = await _follow_until(ws, jid, "RUNNING", timeout, jp_fetch)
    assert states == ["UNKNOWN", "QUEUED", "INITIALIZING", "RUNNING"][-len(states):]
    code, job = await _get(jp_fetch, "jobs", jid)
    code, creds = await _get(jp_fetch, "jobs", jid, "credentials")  # a secret through the server: never logged
    assert code == 200 and creds["sql"]["password"] and creds["lab"]["token"]
    ep = job["endpoints"]
    assert ep["sql"]["jdbc_url"] == f"jdbc:hive2://{ep['sql']['host']}:{ep['sql']['port']}/default"
    assert ep["lab"]["url"].startswith("http://") and ep["spark_ui"]["url"].startswith("http://")
    r = await jp_fetch("sparkdock", "api", "jobs", jid, "sql", method="POST", headers=dict(H),
                       body=json.dumps({"statement": "SELECT sum(id) AS total FROM range(1000000)"}))
    res = json.loads(r.body)
    assert res["columns"] == ["total"] and res["rows"] == [[499999500000]] and res["truncated"] is False
    r = await jp_fetch("sparkdock", "api", "jobs", jid, "sql", method="POST", headers=dict(H),
                       body=json.dumps({"statement": "SELECT id FROM range(5000)"}))
    capped = json.loads(r.body)
    assert capped["truncated"] is True and capped["row_count"] == capped["limit"] == 1000
    r = await jp_fetch("sparkdock", "api", "jobs", jid, "sql", method="POST", headers=dict(H), raise_error=False,
                       body=json.dumps({"statement": "SELECT * FROM no_such_table"}))
    assert r.code == 400 and "no_such_table" in json.loads(r.body)["message"]
    code, hist = await _get(jp_fetch, "jobs", jid, "history")
    phases = [e["phase"] for e in hist["events"]]
    n = cluster.get("workers", 1)
    for p in ("StartingMaster", f"WaitingForWorkers {n}/{n}", "StartingSQLEndpoint", "StartingLab"):
        assert p in phases, phases
    for comp in ("master", "worker-1", "sql", "lab"):
        code, logs = await _get(jp_fetch, "jobs", jid, "logs", component=comp, tail="50")
        assert code == 200, (comp, logs)
    assert "Master" in (await _get(jp_fetch, "jobs", jid, "logs", component="master"))[1]["logs"]
    body = json.dumps(job) + json.dumps(hist)
    return jid, ws, body


@pytest.mark.spark
@pytest.mark.parametrize("sparkdock_config", [{"backend_class": None, "backend": "local", "health_interval": 1.0,
                                               "health_grace": 2.0}])
async def test_rest_contract_on_a_local_cluster(jp_fetch, jp_ws_fetch, jp_serverapp):
    """Its own cluster: launching one through REST, adopting it, and the health loop seeing its parts die one by
    one until it ends in SYSTEM_ERROR 50 is what is tested."""
    manager: JobManager = jp_serverapp.web_app.settings["sparkdock_manager"]
    with captured_log(jp_serverapp.log) as server_log:
        await _local_contract(jp_fetch, jp_ws_fetch, jp_serverapp, manager, server_log)


async def _local_contract(jp_fetch, jp_ws_fetch, jp_serverapp, manager: JobManager, server_log: list[str]) -> None:
    jid, ws, body = await _launch_query_terminate(jp_fetch, jp_ws_fetch, {"workers": 2, "worker_cores": 1}, 300)
    state = manager.store.get(jid).backend_state
    creds = manager.backend.credentials(jid)
    secrets = cluster_secrets(manager.backend.secrets_dir(jid), creds.get("sql_password"), creds.get("lab_token"))
    assert_no_secret(secrets, {"the job and its history": body, "ps -ef": process_table()})
    # a server restart: the manager goes, a new one adopts the same cluster (same ports, no duplicates)
    ports = manager.store.get(jid).endpoints
    pids = sorted(rec["pid"] for rec in state["processes"].values())
    await manager.stop()
    from sparkdock.backends.local import LocalBackend

    fresh = JobManager(manager.store, LocalBackend(manager.backend.data_dir, manager.backend.instance),
                       manager.bus, manager.config)
    jp_serverapp.web_app.settings["sparkdock_manager"] = fresh
    await fresh.ensure_started()
    adopted = fresh.store.get(jid)
    assert adopted.state.value == "RUNNING" and adopted.endpoints == ports
    assert any(e["event"] == "ADOPTED" for e in fresh.store.history(jid))
    assert sorted(rec["pid"] for rec in adopted.backend_state["processes"].values()) == pids
    r = await jp_fetch("sparkdock", "api", "jobs", jid, "sql", method="POST", headers=dict(H),
                       body=json.dumps({"statement": "SELECT 1 AS one"}))
    assert json.loads(r.body)["rows"] == [[1]]
    # health (the loop checks every second): a dead worker of two is a warning, the last one an error (flagged in
    # the job and in the list), a dead SQL endpoint ends the job in SYSTEM_ERROR 50 after health_grace (2 s)
    ws2 = _Recorded(await jp_ws_fetch("sparkdock", "api", "events"))
    procs = state["processes"]
    os.killpg(procs["worker-1"]["pid"], signal.SIGKILL)
    job = await _until_status(jp_fetch, jid, "warning", "1 of 2 workers stopped", 30)
    assert "worker-1 process" in job["runtime_status"]["warning"] and not job["flagged"]
    os.killpg(procs["worker-2"]["pid"], signal.SIGKILL)
    job = await _until_flagged(jp_fetch, jid, 30)
    assert "all 2 worker(s) stopped" in job["runtime_status"]["error"] and job["state"] == "RUNNING"
    _, listed = await _get(jp_fetch, "jobs", state="RUNNING")
    assert [j["flagged"] for j in listed["jobs"] if j["id"] == jid] == [True]
    os.killpg(procs["sql"]["pid"], signal.SIGKILL)
    await _follow_until(ws2, jid, "SYSTEM_ERROR", 60, jp_fetch)
    _, job = await _get(jp_fetch, "jobs", jid)
    assert job["exit_code"] == 50 and "stopped while running" in job["exit_message"], job
    _, hist = await _get(jp_fetch, "jobs", jid, "history")
    assert any(e["event"] == "LOGS" and e["description"].startswith("last log lines of sql")
               for e in hist["events"])
    _, info = await _get(jp_fetch, "info")
    assert info["clusters_in_use"] == 0
    assert await fresh.backend.list_job_ids() == set()
    # after launch and teardown, no secret in a history row, an event, the job or a log file
    _, job = await _get(jp_fetch, "jobs", jid)
    _, hist = await _get(jp_fetch, "jobs", jid, "history")
    assert not fresh.backend.secrets_dir(jid).exists()
    assert_no_secret(secrets, {"history": json.dumps(hist), "job": json.dumps(job),
                               "events": "\n".join(ws.messages + ws2.messages), "the server log": "\n".join(server_log),
                               **texts_under(fresh.backend.job_dir(jid)), **database_dump(fresh.store.path)})
    assert any("POST" in line for line in server_log)  # the log was captured
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().split()[2] == "Z"  # gone (or a zombie being reaped)
    ws.close()
    ws2.close()
    await fresh.stop()


@pytest.mark.docker
@pytest.mark.parametrize("sparkdock_config", [{"backend_class": None, "backend": "docker", "health_interval": 1.0,
                                               "health_grace": 2.0, "max_log_bytes_per_job": "4m"}])
async def test_rest_contract_on_a_docker_cluster(jp_fetch, jp_ws_fetch, jp_serverapp, docker_image):  # noqa: F811
    """Its own cluster: launching one through REST, and the health loop seeing its parts die one by one until it
    ends in SYSTEM_ERROR 50, is what is tested."""
    manager: JobManager = jp_serverapp.web_app.settings["sparkdock_manager"]
    assert manager.backend.name == "docker"
    with captured_log(jp_serverapp.log) as server_log, server_secrets_in_environment():
        await _docker_contract(jp_fetch, jp_ws_fetch, manager, server_log)


async def _docker_contract(jp_fetch, jp_ws_fetch, manager: JobManager, server_log: list[str]) -> None:
    import docker

    jid, ws, body = await _launch_query_terminate(
        jp_fetch, jp_ws_fetch, {"workers": 2, "worker_memory": "512m"}, 300)
    client = docker.from_env()
    # while it runs, no secret in the job, its history, ps -ef or what docker inspect shows of any container
    creds = manager.backend.credentials(jid)
    secrets = cluster_secrets(manager.backend.secrets_dir(jid), creds.get("sql_password"), creds.get("lab_token"))
    containers = client.containers.list(filters={"label": f"sparkdock.job={jid}"})
    assert len(containers) == 5
    inspected = {f"docker inspect {c.name}": json.dumps(client.api.inspect_container(c.id)) for c in containers}
    assert_no_secret(secrets, {"the job and its history": body, "ps -ef": process_table(), **inspected})
    assert_no_secret(CANARY_ENV, inspected)  # the server's environment reaches no container

    # an automated job on this cluster: its driver container imports sparkdock.spark.errors, the public path
    # of the application errors inside the image, and ends with kernel exit code 4; first it writes 6 MB of
    # output, more than the job's log cap (max_log_bytes_per_job 4m): its log is rotated
    app = {"type": "pyspark", "code": (
        "import sys\n"
        "for i in range(60000):\n    sys.stdout.write(f'bulk {i:05d} ' + 'b' * 90 + '\\n')\n"
        "from sparkdock.spark.errors import IntegrityError, require_outputs\n"
        "raise IntegrityError('integrity check failed: 100 rows, expected 101')\n")}
    r = await jp_fetch("sparkdock", "api", "jobs", method="POST", headers=dict(H), body=json.dumps(
        {"kind": "automated", "name": "errors-import", "application": app, "cluster_job": jid}))
    aid = json.loads(r.body)["id"]
    # (the driver that runs through the engine's restart below starts beside it)
    r = await jp_fetch("sparkdock", "api", "jobs", method="POST", headers=dict(H), body=json.dumps(
        {"kind": "automated", "name": "through-an-outage", "cluster_job": jid, "application": {
            "type": "pyspark", "code": OUTAGE_APP}}))
    through = json.loads(r.body)["id"]
    await _follow_until(ws, aid, "EXECUTOR_ERROR", 180, jp_fetch)
    _, auto = await _get(jp_fetch, "jobs", aid)
    assert auto["exit_code"] == 18 and "kernel exit code: 4" in auto["exit_message"], auto
    _, logs = await _get(jp_fetch, "jobs", aid, "logs", component="driver")
    assert "IntegrityError: integrity check failed: 100 rows" in logs["logs"], logs["logs"][-2000:]
    # rotated under the cap: the oldest output is gone, the newest lines are read across the rotated parts
    assert "bulk 59999 " in logs["logs"] and "bulk 00000 " not in logs["logs"]
    _, tail = await _get(jp_fetch, "jobs", aid, "logs", component="driver", tail="2000")
    assert "IntegrityError" in tail["logs"] and "bulk 59999 " in tail["logs"], tail["logs"][-2000:]
    kept = sorted(manager.backend.job_dir(aid).joinpath("logs").iterdir())
    assert "driver.log.1" in [p.name for p in kept] and sum(p.stat().st_size for p in kept) <= 4 * 1024 * 1024

    # the Docker engine restarts (no other module's cluster runs now): with live-restore the containers keep
    # running; the job says that the engine does not answer, then it is re-attached and answers SQL again, and
    # a driver that ran through the outage is followed again and ends normally, its output whole
    assert client.info()["LiveRestoreEnabled"] is True, "scripts/docker-engine.sh runs dockerd with live-restore"
    await _until_log(jp_fetch, through, "driver", "outage-app: ready", 120)
    client.close()
    stop_engine()
    try:
        job = await _until_status(jp_fetch, jid, "warning", "the Docker engine does not answer", 30)
        assert job["state"] == "RUNNING" and not job["flagged"], job
    finally:
        start_engine()
    note = await _until_history(jp_fetch, jid, "REATTACHED", 60)
    assert "the Docker engine did not answer for" in note["description"] and "(5 of 5 running)" in note["description"]
    _, job = await _get(jp_fetch, "jobs", jid)
    assert job["state"] == "RUNNING" and job["runtime_status"]["warning"] is None, job  # cleared on re-attaching
    r = await jp_fetch("sparkdock", "api", "jobs", jid, "sql", method="POST", headers=dict(H),
                       body=json.dumps({"statement": "SELECT count(*) AS n FROM range(10)"}))
    assert json.loads(r.body)["rows"] == [[10]]
    client = docker.from_env()
    containers = client.containers.list(filters={"label": f"sparkdock.job={jid}"})
    assert len(containers) == 5  # the same containers, still running
    await _follow_until(ws, through, "COMPLETE", 120, jp_fetch)
    _, logs = await _get(jp_fetch, "jobs", through, "logs", component="driver")
    ticks = [line for line in logs["logs"].splitlines() if line.startswith("outage-app: tick")]
    assert ticks == [f"outage-app: tick {i}" for i in range(6)], logs["logs"][-3000:]
    assert "outage-app: done" in logs["logs"], logs["logs"][-3000:]
    _, hist = await _get(jp_fetch, "jobs", through, "history")
    assert "EngineUnavailable" in [e["phase"] for e in hist["events"]], hist  # it was followed through the outage
    said = [e["description"] or "" for e in hist["events"]]
    assert any("warning: the Docker engine does not answer" in d for d in said), said  # a warning while it was down
    _, auto = await _get(jp_fetch, "jobs", through)
    assert auto["runtime_status"]["warning"] is None and auto["exit_code"] is None, auto  # cleared once back

    # health (every second; a container's death also starts a round at once): a dead worker of two is a
    # warning, the last one an error (flagged), a dead SQL endpoint ends the job in SYSTEM_ERROR 50 after
    # health_grace (2 s), its cluster removed
    by_component = {c.labels["sparkdock.component"]: c for c in containers}
    by_component["worker-1"].kill()
    job = await _until_status(jp_fetch, jid, "warning", "1 of 2 workers stopped", 30)
    assert "worker-1 container exited with code 137" in job["runtime_status"]["warning"] and not job["flagged"]
    starve_worker(client, by_component["worker-2"].id)  # killed for memory: the message says so
    job = await _until_flagged(jp_fetch, jid, 60)
    error = job["runtime_status"]["error"]
    assert "all 2 worker(s) stopped" in error and job["state"] == "RUNNING"
    assert "the worker-2 container exited with code 137: out of memory" in error, error
    by_component["sql"].kill()
    await _follow_until(ws, jid, "SYSTEM_ERROR", 60, jp_fetch)
    _, job = await _get(jp_fetch, "jobs", jid)
    assert job["exit_code"] == 50 and job["phase"] == "EndpointLost", job
    assert "sql container exited with code 137" in job["exit_message"], job["exit_message"]
    _, hist = await _get(jp_fetch, "jobs", jid, "history")
    assert any(e["event"] == "LOGS" and e["description"].startswith("last log lines of sql")
               for e in hist["events"])
    assert (await _get(jp_fetch, "info"))[1]["clusters_in_use"] == 0
    try:
        left = client.containers.list(all=True, filters={"label": f"sparkdock.job={jid}"})
        nets = client.networks.list(filters={"label": f"sparkdock.job={jid}"})
        assert left == [] and nets == []
    finally:
        client.close()
    # after teardown: no secret in the job, the history, the events, the logs, the server log or the database
    assert not manager.backend.secrets_dir(jid).exists()
    texts = {"events": "\n".join(ws.messages), "the server log": "\n".join(server_log),
             **database_dump(manager.store.path)}
    for job_id in (jid, aid):
        texts[f"job {job_id}"] = json.dumps((await _get(jp_fetch, "jobs", job_id))[1])
        texts[f"history of {job_id}"] = json.dumps((await _get(jp_fetch, "jobs", job_id, "history"))[1])
        texts.update(texts_under(manager.backend.job_dir(job_id)))
    assert_no_secret(secrets, texts)
    ws.close()


@pytest.mark.spark
@pytest.mark.parametrize("sparkdock_config", [{"backend_class": None, "backend": "local"}])
async def test_idle_timeout_counts_real_use_on_a_local_cluster(jp_fetch, jp_ws_fetch, jp_serverapp):
    """Its own cluster, because being culled for idleness is what is tested (it ends it).

    With ``idle_timeout`` 3 s and no REST use, a statement that runs 4 s over a JDBC session of its own keeps
    the cluster (the Thrift Server says a session is open and a statement runs); an idle lab kernel does not.
    The cluster is culled once nothing was used for 3 s after the statement ended, and the history says why."""
    ws = _Recorded(await jp_ws_fetch("sparkdock", "api", "events"))
    r = await jp_fetch("sparkdock", "api", "jobs", method="POST", headers=dict(H), body=json.dumps(
        {"kind": "interactive", "name": "idle", "cluster": {"workers": 1, "idle_timeout": 3}}))
    jid = json.loads(r.body)["id"]
    await _follow_until(ws, jid, "RUNNING", 300, jp_fetch)
    _, job = await _get(jp_fetch, "jobs", jid)
    _, creds = await _get(jp_fetch, "jobs", jid, "credentials")
    token, lab = creds["lab"]["token"], job["endpoints"]["lab"]["url"].rstrip("/").removesuffix("/lab")
    sql = job["endpoints"]["sql"]
    from sparkdock.server.hiveserver2 import run_statement

    started = time.time()
    statement = asyncio.ensure_future(asyncio.to_thread(  # a session of its own (not REST), sleeping on an executor
        run_statement, sql["host"], int(sql["port"]), "SELECT reflect('java.lang.Thread', 'sleep', bigint(4000))",
        user=creds["sql"]["user"], password=creds["sql"]["password"], limit=10, timeout=120))
    kernel = await asyncio.to_thread(_lab_post, f"{lab}/api/kernels", token)  # started, then left idle
    assert kernel["id"]
    res = await statement
    ended = time.time()
    assert res.rows == [['null']] and ended - started >= 4  # reflect() of a void method
    _, job = await _get(jp_fetch, "jobs", jid)
    assert job["state"] == "RUNNING", await _explain(jp_fetch, jid)  # 4 s without REST use: the statement counted
    await _follow_until(ws, jid, "COMPLETE", 60, jp_fetch)
    _, job = await _get(jp_fetch, "jobs", jid)
    _, hist = await _get(jp_fetch, "jobs", jid, "history")
    assert job["phase"] == "IdleTimeout", job
    why = next(e for e in hist["events"] if e["state"] == "CANCELING")
    assert "idle for" in why["description"] and "(idle_timeout 3 s)" in why["description"], why
    assert "no SQL session or statement, no busy lab kernel" in why["description"], why
    culled = datetime.fromisoformat(why["time"].replace("Z", "+00:00")).timestamp()
    assert culled >= ended + 2.5, (culled, ended)  # 3 s after the statement's end (the watchdog checks every 1 s)
    assert "ended: idle for" in hist["events"][-1]["description"]
    assert (await _get(jp_fetch, "info"))[1]["clusters_in_use"] == 0
    manager: JobManager = jp_serverapp.web_app.settings["sparkdock_manager"]
    assert await manager.backend.list_job_ids() == set()
    ws.close()


def _lab_post(url: str, token: str) -> dict:
    import urllib.request

    req = urllib.request.Request(url, data=b"{}", method="POST", headers={
        "Authorization": f"token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())

"""The Python client against a live Jupyter server with the sparkdock extension (FakeBackend lifecycle)."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import pytest

import sparkdock
from client_fixtures import client, run, server_token, server_url  # noqa: F401
from sparkdock.notebook.client import (
    AuthError,
    AutomatedJob,
    Client,
    Conflict,
    InteractiveJob,
    InvalidSpec,
    JobFailed,
    NotFound,
    SparkdockError,
    WaitTimeout,
)


async def test_launch_wait_history_logs_terminate(client):  # noqa: F811
    job = await run(client.launch_cluster, name="demo", workers=2, worker_memory="512m")
    assert isinstance(job, InteractiveJob) and job.state == "QUEUED" and job.name == "demo"
    await run(job.wait, timeout=20)
    assert job.state == "RUNNING"
    assert client.events().connected.is_set()  # the wait followed the event stream
    assert job.jdbc_url.startswith("jdbc:hive2://") and job.lab_url.startswith("http")
    assert "secret" not in str(job.data)
    events = await run(job.history)
    assert events[0]["event"] == "CREATED"
    assert "WaitingForWorkers 2/2" in [e["phase"] for e in events]
    assert "master log" in await run(job.logs, "master")
    assert "master log" in await run(job.logs)  # default component of a cluster
    # beeline reads the password from a private file: it is not on the command line, where ps shows it
    args = await run(job.beeline_args, "/opt/beeline")
    command = await run(job.beeline_command)
    password = (await run(job.credentials))["sql"]["password"]
    assert password not in command and password not in " ".join(args)
    assert args[:5] == ["/opt/beeline", "-u", job.jdbc_url, "-n", "sparkdock"] and args[5] == "-w"
    password_file = Path(args[6])
    assert password_file.read_text() == password and shlex.split(command)[1:] == args[1:]
    assert password_file.stat().st_mode & 0o777 == 0o600 and password_file.parent.stat().st_mode & 0o777 == 0o700
    await run(job.terminate)
    assert job.state in ("CANCELING", "COMPLETE")
    await run(job.wait, "COMPLETE", timeout=20)
    assert job.state == "COMPLETE" and job.endpoints is None
    assert [j.id for j in await run(client.jobs, kind="interactive")] == [job.id]
    assert await run(client.jobs, state="RUNNING") == []
    assert (await run(client.job, job.id)) is job  # one handle per id


async def test_wait_raises_job_failed_with_catalog_action(client):  # noqa: F811
    job = await run(client.launch_cluster, image="fake/fail51")
    with pytest.raises(JobFailed) as exc:
        await run(job.wait, timeout=20)
    e = exc.value
    assert e.state == "SYSTEM_ERROR" and e.exit_code == 51 and "No such image" in e.exit_message
    assert e.description and e.action and e.action in str(e)
    assert "51" in job.summary() and "action:" in job.summary()
    assert "Exit code 51" in job._repr_html_()


async def test_wait_timeout(client):  # noqa: F811
    job = await run(client.launch_cluster, image="fake/slow")
    t0 = time.monotonic()
    with pytest.raises(WaitTimeout) as exc:
        await run(job.wait, timeout=0.5)
    assert exc.value.state in ("QUEUED", "INITIALIZING") and time.monotonic() - t0 < 5
    assert isinstance(exc.value, TimeoutError)
    await run(job.terminate)
    await run(job.wait, "COMPLETE", timeout=20)


async def test_automated_job_on_a_running_cluster(client):  # noqa: F811
    cluster = await run(client.launch_cluster)
    await run(cluster.wait, timeout=20)
    job = await run(
        client.submit,
        code='# fake: {"output": "hello\\n"}\nprint(1)',
        cluster_job=cluster,
        name="app",
        conf={"spark.x": "1"},
        policy={"retries": 1},
    )
    assert isinstance(job, AutomatedJob)
    await run(job.wait, timeout=20)
    assert job.state == "COMPLETE" and job.exit_code is None
    assert await run(job.logs) == "hello\n"  # the driver's output, as the double's driver wrote it
    bad = await run(
        client.submit, code='# fake: {"exit_status": 1}\nraise SystemExit(1)', cluster_job=cluster.id
    )
    await run(bad.wait, timeout=20, raise_on_error=False)  # the failed job, to look at
    assert bad.failed and bad.exit_code == 18 and (await run(bad.exit_info))["action"]
    with pytest.raises(JobFailed):  # by default a failure raises
        await run(bad.wait, timeout=5)
    await run(cluster.terminate)
    await run(cluster.wait, "COMPLETE", timeout=20)


async def test_typed_errors(client):  # noqa: F811
    with pytest.raises(NotFound) as exc:
        await run(client.job, "nope")
    assert "nope" in exc.value.message and exc.value.status == 404
    with pytest.raises(InvalidSpec) as exc:
        await run(client.launch_cluster, workers=-1)
    assert exc.value.status == 422 and "cluster.workers" in exc.value.fields
    with pytest.raises(InvalidSpec) as exc:
        await run(client.submit, code="x", path="/x")
    assert "application" in exc.value.fields
    cluster = await run(client.launch_cluster, image="fake/slow")
    with pytest.raises(Conflict) as exc:
        await run(cluster.sql, "SELECT 1")
    assert "RUNNING" in exc.value.message
    await run(cluster.terminate)
    assert isinstance(exc.value, SparkdockError)
    bad = Client(client.url, "wrong-token")
    with pytest.raises(AuthError):
        await run(bad.jobs)
    catalog = await run(client.exit_codes)
    assert {50, 51, 52} <= {e["code"] for e in catalog["exit_codes"]}
    info = await run(client.info)
    assert info["backend"] == "fake" and info["states"]["RUNNING"]["hex"]


async def test_polling_fallback_when_the_stream_is_unavailable(client, monkeypatch):  # noqa: F811
    stream = client.events()
    stream.close()
    stream.ws_url = stream.ws_url.replace("/sparkdock/api/events", "/sparkdock/api/no-such-socket")
    stream.start()
    job = await run(client.launch_cluster)
    await run(job.wait, timeout=20)
    assert job.state == "RUNNING" and not stream.connected.is_set()
    await run(job.terminate)


async def test_discovery_from_env(server_url, server_token, monkeypatch):  # noqa: F811
    monkeypatch.setenv("SPARKDOCK_URL", server_url)
    monkeypatch.setenv("SPARKDOCK_TOKEN", server_token)
    c = sparkdock.connect()
    assert c.url == server_url and c.token == server_token
    assert (await run(c.jobs)) == []
    c.close()
    monkeypatch.delenv("SPARKDOCK_URL")
    monkeypatch.delenv("SPARKDOCK_TOKEN")
    monkeypatch.setenv("JPY_PARENT_PID", "999999999")
    with pytest.raises(SparkdockError, match="cannot find the sparkdock server") as err:
        sparkdock.connect()
    assert "SPARKDOCK_URL" in str(err.value)  # the message says how to point the client at a server


async def test_cli(server_url, server_token, monkeypatch, capsys):  # noqa: F811
    from sparkdock.cli import main

    monkeypatch.setenv("SPARKDOCK_URL", server_url)
    monkeypatch.setenv("SPARKDOCK_TOKEN", server_token)
    assert await run(main, ["launch", "--name", "cli", "--worker-memory", "512m", "--wait", "--timeout", "20"]) == 0
    out = capsys.readouterr().out
    assert "launched" in out and "RUNNING" in out
    assert await run(main, ["jobs", "--state", "RUNNING"]) == 0
    out = capsys.readouterr().out
    jid = out.splitlines()[1].split()[0]
    assert "cli" in out and "RUNNING" in out
    assert await run(main, ["terminate", jid, "--wait"]) == 0
    assert "COMPLETE" in capsys.readouterr().out
    assert await run(main, ["exit-codes"]) == 0
    assert "51" in capsys.readouterr().out
    assert await run(main, ["terminate", "nope"]) == 2
    assert "nope" in capsys.readouterr().err

"""The client as a newcomer meets it (issue 36): the server's defaults apply to what is not given, in the client,
the panels and the CLI; ``submit(cluster=handle)``; ``wait()`` raises a typed ``JobFailed`` and has a default
timeout; handles are context managers with their times; timeouts say "timed out".

A live pytest-jupyter server (FakeBackend lifecycle) whose defaults differ from the client's former hard-coded
1 worker / 1 core / 1g, so that a request that carried them would be seen.
"""

from __future__ import annotations

import socket
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

import sparkdock
from client_fixtures import client, run, server_token, server_url  # noqa: F401
from fake_backend import FakeBackend
from sparkdock.notebook.client import (
    AutomatedJob,
    Client,
    ClusterOptions,
    InteractiveJob,
    JobFailed,
    RequestTimeout,
    ServerUnreachable,
    SparkdockError,
    WaitTimeout,
)

DEFAULTS = {"default_workers": 2, "default_worker_cores": 3, "default_worker_memory": "768m", "max_workers": 4,
            "max_worker_cores": 6, "max_worker_memory": "2g", "default_idle_timeout": 600.0}


@pytest.fixture
def sparkdock_config() -> dict[str, object]:
    return dict(DEFAULTS)


def _shape(job: object) -> dict[str, object]:
    return job.data["spec"]["cluster"]  # type: ignore[attr-defined]


def _app(behaviour: str, body: str = "print(1)") -> str:
    return f"# fake: {behaviour}\n{body}"


# ---- the server's options and defaults ---------------------------------------------------------------------
async def test_cluster_options_say_what_the_server_allows_and_its_defaults(client, server_url, server_token,  # noqa: F811
                                                                           monkeypatch, jp_fetch):
    opts = await run(client.cluster_options)
    assert isinstance(opts, ClusterOptions)
    assert opts["workers"] == {"default": 2, "min": 1, "max": 4}
    assert opts["worker_cores"] == {"default": 3, "min": 1, "max": 6}
    assert opts["worker_memory"] == {"default": "768m", "min": "256m", "max": "2g"}
    assert opts["idle_timeout"] == {"default": 600.0} and opts["max_lifetime"] == {"default": None}
    assert "fake/ok" in opts["image"]["allowed"] and "default" in opts["image"]  # None: the backend has no image
    assert opts.defaults["workers"] == 2 and opts.defaults["worker_memory"] == "768m"
    text = repr(opts)
    assert "workers" in text and "1 to 4" in text and "768m" in text and "256m to 2g" in text
    assert "<table>" in opts._repr_html_()
    # the top-level function finds the server as connect() does
    monkeypatch.setenv("SPARKDOCK_URL", server_url)
    monkeypatch.setenv("SPARKDOCK_TOKEN", server_token)
    assert dict(await run(sparkdock.cluster_options)) == dict(opts)
    # the endpoint needs the token like every other
    with pytest.raises(Exception) as denied:
        await jp_fetch("sparkdock", "api", "cluster-options", headers={"Authorization": "token wrong"})
    assert denied.value.code in (401, 403)


async def test_what_the_client_does_not_give_the_server_defaults(client):  # noqa: F811
    plain = await run(client.launch_cluster, image="fake/slow")
    assert _shape(plain)["workers"] == 2 and _shape(plain)["worker_cores"] == 3
    assert _shape(plain)["worker_memory"] == "768m" and _shape(plain)["idle_timeout"] == 600.0
    assert plain.name == plain.id  # the server names a job without a name by its id
    sized = await run(client.launch_cluster, name="big", workers=3, image="fake/slow")
    assert _shape(sized)["workers"] == 3 and _shape(sized)["worker_cores"] == 3 and sized.name == "big"
    ephemeral = await run(client.submit, code=_app('{"gate": "hold-eph"}'))
    assert _shape(ephemeral)["workers"] == 2 and _shape(ephemeral)["worker_memory"] == "768m"
    for job in (plain, sized, ephemeral):
        await run(job.terminate)
    FakeBackend.open_gate("hold-eph")


# ---- submit(cluster=handle) --------------------------------------------------------------------------------
async def test_submit_runs_on_a_cluster_given_as_cluster_or_cluster_job(client):  # noqa: F811
    cluster = await run(client.launch_cluster)
    await run(cluster.wait, timeout=20)
    by_handle = await run(client.submit, code=_app('{"output": "a\\n"}'), cluster=cluster)
    by_id = await run(client.submit, code=_app('{"output": "b\\n"}'), cluster=cluster.id)
    by_job = await run(client.submit, code=_app('{"output": "c\\n"}'), cluster_job=cluster)
    for job in (by_handle, by_id, by_job):
        assert job.data["spec"]["cluster_job"] == cluster.id and job.data["spec"]["cluster"] is None
        await run(job.wait, timeout=20)
        assert job.state == "COMPLETE"
    with pytest.raises(TypeError, match="not both"):
        await run(client.submit, code="x", cluster=cluster, cluster_job=cluster)
    with pytest.raises(TypeError, match="not both"):
        await run(client.submit, code="x", cluster={"workers": 2}, cluster_job=cluster)
    with pytest.raises(TypeError, match=f"{by_job.id} is an automated job"):
        await run(client.submit, code="x", cluster=by_job)
    with pytest.raises(TypeError, match="not int"):
        await run(client.submit, code="x", cluster=3)
    await run(cluster.terminate)
    await run(cluster.wait, "COMPLETE", timeout=20)


# ---- wait() ----------------------------------------------------------------------------------------------
async def test_wait_raises_job_failed_unless_asked_not_to(client):  # noqa: F811
    bad = await run(client.submit, code=_app('{"exit_status": 1, "output": "Traceback: boom\\n"}'),
                    name="bad", cluster={"workers": 1})
    with pytest.raises(JobFailed) as failed:
        await run(bad.wait, timeout=20)
    e = failed.value
    assert isinstance(e, SparkdockError) and e.job is bad
    assert e.state == "EXECUTOR_ERROR" and e.exit_code == 18 and e.exit_message
    assert e.action and e.description and e.action in str(e) and e.exit_message in str(e)
    assert await run(bad.wait, timeout=5, raise_on_error=False) is bad and bad.failed
    assert await run(bad.wait, "EXECUTOR_ERROR", timeout=5) is bad  # a failure asked for is not an error
    with pytest.warns(DeprecationWarning, match="raise_on_error"):
        await run(bad.wait, timeout=5, raise_on_failure=False)
    # a job that ended otherwise than asked: an error, or the handle with raise_on_error=False
    with pytest.raises(JobFailed):
        await run(bad.wait, "RUNNING", timeout=5)
    assert (await run(bad.wait, "RUNNING", timeout=5, raise_on_error=False)).state == "EXECUTOR_ERROR"


async def test_a_cancel_asked_through_the_handle_is_not_a_failure(client, server_url, server_token):  # noqa: F811
    mine = await run(client.submit, code=_app('{"gate": "never-mine"}'))
    await run(mine.wait, "RUNNING", timeout=20)
    assert (await run(lambda: mine.cancel().wait(timeout=20))).state == "CANCELED"
    theirs = await run(client.submit, code=_app('{"gate": "never-theirs"}'))
    await run(theirs.wait, "RUNNING", timeout=20)
    with Client(server_url, server_token) as other:  # someone else cancels it
        await run(lambda: other.job(theirs.id).cancel())
    with pytest.raises(JobFailed) as failed:
        await run(theirs.wait, timeout=20)
    assert failed.value.state == "CANCELED"
    FakeBackend.open_gate("never-mine")
    FakeBackend.open_gate("never-theirs")


async def test_wait_has_a_default_timeout_that_says_timed_out(client):  # noqa: F811
    assert InteractiveJob.default_timeout == 900 and AutomatedJob.default_timeout == 3600
    slow = await run(client.launch_cluster, image="fake/slow")
    slow.default_timeout = 0.3  # the default applies when wait() is not given a timeout
    with pytest.raises(WaitTimeout) as exc:
        await run(slow.wait)
    e = exc.value
    assert isinstance(e, TimeoutError) and e.timeout == 0.3 and e.state in ("QUEUED", "INITIALIZING")
    assert str(e).startswith(f"timed out after 0.3 s waiting for job {slow.id} to be RUNNING: it is still "), e
    assert "timeout=None" in str(e)
    await run(slow.terminate)
    long = await run(client.submit, code=_app('{"gate": "long"}'), policy={"max_runtime": 7200})
    assert long._default_timeout() == 7800  # its policy's max runtime, and 10 minutes to spare
    await run(long.terminate)
    FakeBackend.open_gate("long")


# ---- handles as context managers, and their times ----------------------------------------------------------
async def test_handles_terminate_when_their_with_block_ends(client):  # noqa: F811
    before = datetime.now(UTC)

    def use_cluster() -> InteractiveJob:
        with client.launch_cluster(name="ctx") as cluster:
            cluster.wait(timeout=20)
            assert cluster.started_at is not None and cluster.ended_at is None
        return cluster

    cluster = await run(use_cluster)
    assert cluster.state in ("CANCELING", "COMPLETE")
    await run(cluster.wait, "COMPLETE", timeout=20)
    assert before.replace(microsecond=0) <= cluster.created_at.replace(microsecond=0)
    assert cluster.created_at <= cluster.started_at <= cluster.ended_at
    assert cluster.ended_at.tzinfo is not None

    def fail_inside() -> AutomatedJob:
        job = client.submit(code=_app('{"gate": "ctx-never"}'))
        with pytest.raises(ZeroDivisionError), job:
            job.wait("RUNNING", timeout=20)
            raise ZeroDivisionError("the cell failed")  # it goes on; the job is canceled all the same
        return job

    job = await run(fail_inside)
    assert (await run(job.wait, timeout=20)).state == "CANCELED"  # canceled through the handle: no JobFailed
    FakeBackend.open_gate("ctx-never")


# ---- the panels and the CLI leave out what the user did not change ------------------------------------------
async def test_panels_show_the_server_defaults_and_send_only_what_changed(client):  # noqa: F811
    from sparkdock.notebook.widgets import ClusterPanel, JobSubmitPanel

    panel = await run(ClusterPanel, client)
    assert (panel.workers.value, panel.worker_cores.value, panel.worker_memory.value) == (2, 3, "768m")
    note = panel.form.children[-2].value
    assert "at most 4 workers of 6 cores and 2g" in note, note
    panel.worker_cores.value = 5
    job = await run(panel.launch)
    assert job is not None and "cluster" in job.data["spec"]
    assert (_shape(job)["workers"], _shape(job)["worker_cores"], _shape(job)["worker_memory"]) == (2, 5, "768m")
    await run(job.terminate)
    panel.close()

    submit = await run(JobSubmitPanel, client)
    assert submit.workers.value == 2
    submit.code.value = _app('{"gate": "panel"}')
    job = await run(submit.submit)
    assert job is not None and _shape(job)["workers"] == 2 and _shape(job)["worker_cores"] == 3
    await run(job.terminate)
    FakeBackend.open_gate("panel")
    submit.close()


async def test_cli_launch_leaves_sizes_to_the_server_and_lists_the_options(
        server_url, server_token, client, monkeypatch, capsys):  # noqa: F811
    from sparkdock.cli import main

    monkeypatch.setenv("SPARKDOCK_URL", server_url)
    monkeypatch.setenv("SPARKDOCK_TOKEN", server_token)
    assert await run(main, ["launch", "--image", "fake/slow"]) == 0
    jid = capsys.readouterr().out.split()[1]
    job = await run(client.job, jid)
    assert (_shape(job)["workers"], _shape(job)["worker_cores"], _shape(job)["worker_memory"]) == (2, 3, "768m")
    await run(job.terminate)
    assert await run(main, ["cluster-options"]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["workers"] == ["2", "1", "to", "4"] and rows["worker_memory"] == ["768m", "256m", "to", "2g"]
    assert await run(main, ["launch", "--workers", "9", "--image", "fake/slow"]) == 2
    assert "at most 4 workers (max_workers)" in capsys.readouterr().err


# ---- errors: typed, exported, and a timeout says so --------------------------------------------------------
@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_slow_answer_is_a_timeout_with_its_limit_and_a_closed_port_is_unreachable(silent_port, closed_port):
    with Client(f"http://127.0.0.1:{silent_port}/", timeout=0.4) as slow:
        with pytest.raises(RequestTimeout) as exc:
            slow.info()
        assert isinstance(exc.value, TimeoutError) and exc.value.timeout == 0.4
        assert "timed out" in str(exc.value) and "0.4 s" in str(exc.value) and "cannot reach" not in str(exc.value)
        cluster = InteractiveJob(slow, {"id": "k1", "kind": "interactive", "state": "RUNNING"})
        with pytest.raises(RequestTimeout, match=r"SQL statement on k1 got no answer within 0\.5 s \(timed out\)"):
            cluster.sql("SELECT 1", timeout=0.5)
    with Client(f"http://127.0.0.1:{closed_port}/", timeout=5) as gone, pytest.raises(ServerUnreachable) as exc:
        gone.jobs()
    assert isinstance(exc.value, ConnectionError) and "cannot reach the sparkdock server" in str(exc.value)


def test_every_client_error_is_exported_from_sparkdock() -> None:
    from sparkdock.notebook import errors

    exported = {n for n in errors.__all__ if n[0].isupper()}
    assert exported <= set(sparkdock.__all__) and exported <= set(dir(sparkdock))
    for name in exported:
        assert getattr(sparkdock, name) is getattr(errors, name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        namespace: dict[str, object] = {}
        exec("from sparkdock import *", namespace)
    assert namespace["JobFailed"] is JobFailed and callable(namespace["cluster_options"])

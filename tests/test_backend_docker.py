"""The Docker backend against a real engine and real Spark (``@pytest.mark.docker``).

One module-scoped 2-worker cluster serves most checks (SQL, lab, inspection, logs, adoption, a driver,
the health watcher); its fixture terminates it and checks that nothing is left. The failure cases start
clusters that fail or are cancelled half-way (each needs its own), and run first, so that at most one cluster
runs at a time. The module uses its own installation id, so it never touches another installation's
containers.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import docker
import pytest

import testrun
from docker_fixtures import build_broken_image, docker_image  # noqa: F401 - session fixture
from job_helpers import (
    INTRUDER_APP,
    REFUSED,
    assert_no_secret,
    cluster_secrets,
    process_table,
    registered_apps,
    texts_under,
    unique_job_id,
    until,
)
from sparkdock.backends.base import BackendError, ClusterInfo, StagedApp
from sparkdock.backends.docker import LABEL_INSTANCE, LABEL_JOB, LABEL_ROLE, DockerBackend
from sparkdock.cluster import probes, properties, roles
from sparkdock.model.specs import ClusterSpec

pytestmark = pytest.mark.docker

T = TypeVar("T")
INSTANCE = testrun.instance("docker")
BROKEN_SQL_IMAGE = testrun.image_tag("broken-sql")
NO_SUCH_IMAGE = testrun.image_tag("no-such-tag")


class Phases:
    """A Reporter that records every phase."""

    def __init__(self) -> None:
        self.phases: list[str] = []
        self.progress: list[dict[str, Any]] = []

    def __call__(self, phase: str, activity: str, *, progress: dict[str, Any] | None = None) -> None:
        self.phases.append(phase)
        if progress is not None:
            self.progress.append(progress)


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


@pytest.fixture(scope="module")
def run(loop: asyncio.AbstractEventLoop) -> Any:
    def _run(coro: Coroutine[Any, Any, T], timeout: float = 600) -> T:
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))

    return _run


@pytest.fixture(scope="module")
def dclient(docker_image: str) -> Iterator[docker.DockerClient]:  # noqa: F811
    client = docker.from_env()
    yield client
    # Safety net: nothing of this module's installation survives it.
    flt = {"label": [f"{LABEL_INSTANCE}={INSTANCE}"]}
    for c in client.containers.list(all=True, filters=flt):
        c.remove(force=True)
    for n in client.networks.list(filters=flt):
        n.remove()
    client.close()


def labelled(client: docker.DockerClient, job_id: str | None = None) -> tuple[list[Any], list[Any]]:
    wanted = [f"{LABEL_INSTANCE}={INSTANCE}"] + ([f"sparkdock.job={job_id}"] if job_id else [])
    flt = {"label": wanted}
    return client.containers.list(all=True, filters=flt), client.networks.list(filters=flt)


def assert_nothing_left(client: docker.DockerClient, job_id: str) -> None:
    containers, networks = labelled(client, job_id)
    assert containers == [] and networks == [], (containers, networks)


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory, docker_image: str, dclient: Any, run: Any,  # noqa: F811
            ) -> Iterator[DockerBackend]:
    b = DockerBackend(tmp_path_factory.mktemp("data"), INSTANCE, image=docker_image)
    yield b
    run(b.close())


# ---------------------------------------------------------------------------------------------
# failures (no cluster left behind)
# ---------------------------------------------------------------------------------------------


def test_missing_image_is_51(backend: DockerBackend, dclient: Any, run: Any) -> None:
    """Its own cluster: one whose image cannot be had (nothing of it may be left)."""
    phases = Phases()
    spec = ClusterSpec(workers=1, worker_memory="512m", image=NO_SUCH_IMAGE)
    with pytest.raises(BackendError) as err:
        run(backend.start_cluster("missingimage", spec, phases))
    assert err.value.code == 51
    assert err.value.phase == "ErrImagePull"
    assert NO_SUCH_IMAGE in err.value.detail
    assert phases.phases[:2] == ["CheckingImage", "PullingImage"]
    assert_nothing_left(dclient, "missingimage")


@pytest.mark.parametrize("how", ["argument", "env"])
def test_unreachable_engine_is_52(how: str, tmp_path: Path, run: Any, monkeypatch: pytest.MonkeyPatch,
                                  dclient: Any) -> None:
    if how == "argument":
        b = DockerBackend(tmp_path, INSTANCE, docker_host="unix:///tmp/nonexistent-sparkdock.sock")
    else:
        monkeypatch.setenv("DOCKER_HOST", "unix:///tmp/nonexistent-sparkdock.sock")
        b = DockerBackend(tmp_path, INSTANCE)
    with pytest.raises(BackendError) as err:
        run(b.check())
    assert err.value.code == 52
    assert "nonexistent-sparkdock.sock" in err.value.detail or "No such file" in err.value.detail
    with pytest.raises(BackendError) as err2:
        run(b.start_cluster("noengine", ClusterSpec(workers=1), Phases()))
    assert err2.value.code == 52
    run(b.close())
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    assert_nothing_left(dclient, "noengine")


@pytest.fixture(scope="module")
def broken_sql_image(dclient: docker.DockerClient, docker_image: str) -> Iterator[str]:  # noqa: F811
    """The image, except that the sql role exits at once (built locally: no registry needed)."""
    build_broken_image(dclient, docker_image, "sql", BROKEN_SQL_IMAGE)
    yield BROKEN_SQL_IMAGE
    dclient.images.remove(BROKEN_SQL_IMAGE, force=True)


def test_sql_container_exiting_is_50(backend: DockerBackend, broken_sql_image: str, dclient: Any,
                                     run: Any) -> None:
    """Its own cluster: one whose SQL container exits at once (the broken-sql image)."""
    phases = Phases()
    spec = ClusterSpec(workers=1, worker_memory="512m", image=broken_sql_image)
    t0 = time.monotonic()
    with pytest.raises(BackendError) as err:
        run(backend.start_cluster("brokensql", spec, phases))
    assert err.value.code == 50, err.value.detail
    assert err.value.phase == "CrashLoopBackOff"
    assert err.value.component == "sql"
    assert "exited with code 3" in err.value.detail
    assert "broken on purpose" in (err.value.logs or "")
    assert time.monotonic() - t0 < 120
    assert_nothing_left(dclient, "brokensql")
    # the logs were saved before removal
    saved = backend.job_dir("brokensql") / "logs" / "sql.log"
    assert "broken on purpose" in saved.read_text()
    assert (backend.job_dir("brokensql") / "logs" / "master.log").is_file()


def test_cancellation_removes_everything(backend: DockerBackend, dclient: Any, run: Any,
                                         loop: asyncio.AbstractEventLoop) -> None:
    """Its own cluster: one whose start is cancelled half-way."""
    async def scenario() -> list[str]:
        phases = Phases()
        task = asyncio.ensure_future(backend.start_cluster("cancelled", ClusterSpec(workers=1), phases))
        while "StartingMaster" not in phases.phases:
            await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return phases.phases

    run(scenario())
    assert_nothing_left(dclient, "cancelled")


# ---------------------------------------------------------------------------------------------
# one running cluster
# ---------------------------------------------------------------------------------------------

JOB = "cluster1"


async def _watching(backend: DockerBackend, calls: list[tuple[str, str, bool, str]]) -> asyncio.Future[None]:
    """Start ``backend.watch`` recording into ``calls``; return once it is subscribed to the event stream."""

    async def on_health(job_id: str, component: str, healthy: bool, message: str) -> None:
        calls.append((job_id, component, healthy, message))

    watcher = asyncio.ensure_future(backend.watch(on_health))
    connected = await asyncio.to_thread(backend.watch_connected.wait, 60)
    assert connected, "the watcher did not subscribe to the engine's events in 60 s"
    return watcher


def _terminate_watched(backend: DockerBackend, dclient: docker.DockerClient, image: str, run: Any) -> None:
    """Stop the module cluster (twice: harmless) with the health watcher on. The containers the backend removes
    are not reported: a sentinel container of the installation is killed afterwards, and the engine delivers
    events in order, so once the sentinel's death is reported every earlier event has been seen."""
    calls: list[tuple[str, str, bool, str]] = []

    async def scenario() -> None:
        watcher = await _watching(backend, calls)
        try:
            await backend.stop_cluster(JOB)
            await backend.stop_cluster(JOB)  # harmless
            labels = {LABEL_INSTANCE: INSTANCE, LABEL_JOB: "sentinel", LABEL_ROLE: "master"}
            sentinel = await asyncio.to_thread(dclient.containers.run, image, entrypoint=["sleep", "300"],
                                               labels=labels, detach=True)
            try:
                await asyncio.to_thread(sentinel.kill)
                await until(lambda: any(c[0] == "sentinel" for c in calls), "the sentinel's death reported")
            finally:
                await asyncio.to_thread(sentinel.remove, force=True)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    run(scenario())
    assert [c for c in calls if c[0] != "sentinel"] == []


@pytest.fixture(scope="module")
def cluster(backend: DockerBackend, dclient: Any, run: Any, docker_image: str,  # noqa: F811
            ) -> Iterator[tuple[ClusterInfo, Phases, float]]:
    """The module's 2-worker cluster. When the module ends it is terminated with the watcher on, and nothing
    of it may be left but its logs."""
    phases = Phases()
    t0 = time.monotonic()
    info = run(backend.start_cluster(JOB, ClusterSpec(workers=2, worker_memory="512m"), phases))
    elapsed = time.monotonic() - t0
    try:
        secrets = cluster_secrets(backend.secrets_dir(JOB), info.sql_password, info.lab_token)
        yield info, phases, elapsed
    finally:
        _terminate_watched(backend, dclient, docker_image, run)
    assert_nothing_left(dclient, JOB)
    assert not backend.secrets_dir(JOB).exists()
    logs_dir = backend.job_dir(JOB) / "logs"
    assert_no_secret(secrets, texts_under(logs_dir))
    assert {p.name for p in logs_dir.iterdir()} >= {"master.log", "worker-1.log", "worker-2.log", "sql.log",
                                                    "lab.log"}
    assert "Master" in run(backend.logs(JOB, "master"))
    assert JOB not in run(backend.list_job_ids())


def test_cluster_phases_and_endpoints(cluster: Any) -> None:
    info, phases, elapsed = cluster
    print(f"cluster ready in {elapsed:.1f}s: {phases.phases}")
    for phase in ("CheckingImage", "CreatingContainers", "StartingMaster", "WaitingForWorkers 2/2",
                  "StartingSQLEndpoint", "StartingLab"):
        assert phase in phases.phases
    assert phases.phases.index("StartingMaster") < phases.phases.index("StartingSQLEndpoint")
    ep = info.endpoints
    assert set(ep) == {"sql", "lab", "spark_ui"}
    assert ep["sql"]["host"] == "127.0.0.1"
    assert ep["sql"]["jdbc_url"] == f"jdbc:hive2://127.0.0.1:{ep['sql']['port']}/default"
    assert ep["lab"]["url"].endswith("/lab")
    text = repr(ep)
    assert info.sql_password and info.sql_password not in text
    assert info.lab_token and info.lab_token not in text
    assert info.state["master_url"].startswith("spark://sparkdock-")
    assert info.state["master_url"].endswith(":7077")
    assert info.state["workers"] == 2
    status = probes.master_status(ep["spark_ui"]["url"])
    assert probes.alive_workers(status) == 2


def test_sql_query_and_wrong_password(cluster: Any, backend: DockerBackend, run: Any) -> None:
    """A query over JDBC; meanwhile the Thrift Server says (read inside its container, for the idle timeout)
    that a session is open, and after it when the statement ended."""
    from impala.dbapi import connect

    info, _, _ = cluster
    sql = info.endpoints["sql"]
    before = time.time()
    conn = connect(host=sql["host"], port=sql["port"], auth_mechanism="PLAIN", user=info.sql_user,
                   password=info.sql_password, timeout=120)
    try:
        cur = conn.cursor()
        cur.execute("SELECT count(*) FROM range(1000000)")
        assert cur.fetchall() == [(1000000,)]
        use = run(backend.sql_activity(JOB, info.state))  # (impyla: a cursor is a session)
        assert use.sessions >= 1 and use.in_use, use
        cur.close()
    finally:
        conn.close()
    use = run(backend.sql_activity(JOB, info.state))
    assert (use.sessions, use.running) == (0, 0) and use.last_statement_end >= before - 1, use
    with pytest.raises(probes.SQLAuthError):
        probes.probe_sql(sql["host"], sql["port"], info.sql_user, "wrong-password")


def test_lab_token(cluster: Any, backend: DockerBackend, run: Any) -> None:
    info, _, _ = cluster
    base = info.endpoints["lab"]["url"].removesuffix("lab")
    status = probes.probe_lab(base, info.lab_token)
    assert "started" in status
    with pytest.raises(probes.ProbeError, match="403"):
        probes.probe_lab(base, "not-the-token")
    use = run(backend.lab_activity(info.endpoints["lab"]["url"], info.lab_token))  # no kernel yet: not in use
    assert use.busy_kernels == 0 and use.last_activity is not None and not use.in_use


def test_containers_inspected(cluster: Any, dclient: docker.DockerClient, backend: DockerBackend) -> None:
    info, _, _ = cluster
    secrets = cluster_secrets(backend.secrets_dir(JOB), info.sql_password, info.lab_token)
    containers, networks = labelled(dclient, JOB)
    by_component = {c.labels["sparkdock.component"]: c for c in containers}
    assert set(by_component) == {"master", "worker-1", "worker-2", "sql", "lab"}
    assert len(networks) == 1
    net_labels = networks[0].attrs["Labels"]
    assert net_labels["sparkdock.job"] == JOB and net_labels[LABEL_INSTANCE] == INSTANCE
    published = {"master": "8080/tcp", "sql": "10000/tcp", "lab": "8888/tcp"}
    ncpu = dclient.info()["NCPU"]
    for component, c in by_component.items():
        assert c.name == f"sparkdock-{INSTANCE}-{JOB}-{component}"
        assert c.labels[LABEL_INSTANCE] == INSTANCE
        assert c.labels["sparkdock.job"] == JOB
        assert c.labels["sparkdock.role"] == component.split("-")[0]
        host_config = c.attrs["HostConfig"]
        assert host_config["Memory"] > 0
        assert host_config["PidsLimit"] == backend.pids_limit
        # unprivileged and bounded: a non-root user, no capability, no privilege gained, CPUs limited
        assert c.attrs["Config"]["User"] == "185:185"
        assert host_config["CapDrop"] == ["ALL"] and not host_config["CapAdd"]
        assert host_config["SecurityOpt"] == ["no-new-privileges:true"]
        assert not host_config["Privileged"]
        role = component.split("-")[0]
        assert host_config["NanoCpus"] == int(min(roles.container_cpu_limit(role, 1), ncpu) * 1e9)
        uid, caps, secret_mode = c.exec_run(
            ["sh", "-c", f"id -u; grep CapEff /proc/self/status; stat -c '%u %a' {properties.CONTAINER_PATH}"]
        ).output.decode().split("\n")[:3]
        assert uid == "185", f"{component} runs as uid {uid}"
        assert caps.split() == ["CapEff:", "0000000000000000"]
        assert secret_mode == "185 400"  # its secrets: readable by its user only
        bindings = {k: v for k, v in (c.attrs["NetworkSettings"]["Ports"] or {}).items() if v}
        if component in published:
            assert list(bindings) == [published[component]]
            assert {b["HostIp"] for b in bindings[published[component]]} == {"127.0.0.1"}
        else:
            assert bindings == {}
        # its own role's secrets, read-only; none in its environment or command (docker inspect shows those)
        env = c.attrs["Config"]["Env"]
        cmd = " ".join(c.attrs["Config"]["Cmd"] or []) + " ".join(c.attrs["Config"]["Entrypoint"] or [])
        assert c.attrs["Mounts"] == []  # the secrets file is in the container, not a view of the host
        assert f"{properties.PROPERTIES_ENV}={properties.CONTAINER_PATH}" in env
        assert_no_secret(secrets, {f"the environment of {component}": " ".join(env),
                                   f"the command of {component}": cmd})
    worker_mem = by_component["worker-1"].attrs["HostConfig"]["Memory"]
    assert worker_mem == (256 + 512 + 384 + 128) * 1024**2


def test_control_plane_needs_the_secret(cluster: Any, backend: DockerBackend, dclient: docker.DockerClient,
                                        docker_image: str) -> None:  # noqa: F811
    """Security part 1: the master's RPC port is reachable on the cluster's network but its REST submission port
    is closed, no secret is on a host command line, and a driver without the cluster's secret, on the cluster's
    own network, registers nothing (one with it does: test_run_application)."""
    info, _, _ = cluster
    secrets = cluster_secrets(backend.secrets_dir(JOB), info.sql_password, info.lab_token)
    assert_no_secret(secrets, {"ps -ef": process_table()})
    master = dclient.containers.get(f"sparkdock-{INSTANCE}-{JOB}-master")
    network = info.state["network"]["name"]
    ip = master.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
    with socket.create_connection((ip, 7077), timeout=10):
        pass  # the master is reachable from here ...
    submission = urllib.request.Request(f"http://{ip}:6066/v1/submissions/create", data=b"{}")
    with pytest.raises(urllib.error.URLError) as err:  # ... but nothing answers a REST submission
        urllib.request.urlopen(submission, timeout=10)
    assert isinstance(err.value.reason, ConnectionRefusedError), err.value

    name = f"sparkdock-{INSTANCE}-{unique_job_id('intruder')}"
    intruder = dclient.containers.run(
        docker_image, ["python", "-c", INTRUDER_APP, info.state["master_url"], name, name], name=name,
        network=network, labels={LABEL_INSTANCE: INSTANCE, LABEL_JOB: "intruder"}, detach=True)
    try:
        def refused() -> None:
            text = intruder.logs().decode(errors="replace")
            if REFUSED not in text:
                intruder.reload()
                assert intruder.status in ("created", "running"), text[-3000:]
                raise probes.ProbeError("the intruder has not been refused yet")

        probes.wait_until(refused, 120, 0.5, "the master refusing a driver without the secret")
        assert name not in registered_apps(probes.master_status(info.endpoints["spark_ui"]["url"])).values()
    finally:
        intruder.remove(force=True)


def test_logs(cluster: Any, backend: DockerBackend, run: Any) -> None:
    text = run(backend.logs(JOB, "master", tail=200))
    assert "Master" in text
    assert len(run(backend.logs(JOB, "worker-1", tail=5)).splitlines()) <= 5
    with pytest.raises(KeyError):
        run(backend.logs(JOB, "nonsense"))
    assert run(backend.list_job_ids()) >= {JOB}


def test_adoption_by_a_new_backend(cluster: Any, dclient: Any, run: Any, backend: DockerBackend) -> None:
    info, _, _ = cluster
    before = len(labelled(dclient)[0])
    fresh = DockerBackend(backend.data_dir, INSTANCE, image=backend.image)
    try:
        adopted = run(fresh.adopt_cluster(JOB, info.state))
        assert adopted is not None
        assert adopted.endpoints == info.endpoints
        assert adopted.sql_password == info.sql_password
        # without a saved state, the secrets come back from the cluster's secrets folder
        bare = run(fresh.adopt_cluster(JOB, {}))
        assert bare is not None and bare.endpoints == info.endpoints
        assert bare.sql_password == info.sql_password and bare.lab_token == info.lab_token
        assert run(fresh.adopt_cluster("no-such-job", {})) is None
        assert JOB in run(fresh.list_job_ids())
    finally:
        run(fresh.close())
    assert len(labelled(dclient)[0]) == before


def test_run_application(cluster: Any, backend: DockerBackend, tmp_path: Path, run: Any,
                         dclient: Any) -> None:
    info, _, _ = cluster
    app1, app2 = unique_job_id("app1"), unique_job_id("app2")
    app_file = tmp_path / "app.py"
    app_file.write_text(
        "import sys\n"
        "from pyspark.sql import SparkSession\n"
        "spark = SparkSession.builder.getOrCreate()\n"
        "n = spark.range(100000).selectExpr('sum(id) AS s').collect()[0].s\n"
        "print(f'SPARKDOCK-RESULT {n} {sys.argv[1:]}')  # one write each: Spark's log on stderr interleaves\n"
        "import os, re\n"
        "caps = re.search(r'CapEff:\\s*(\\w+)', open('/proc/self/status').read()).group(1)\n"
        "print(f'SPARKDOCK-PRIVILEGES {os.getuid()} {caps}')\n"
        "print(f'SPARKDOCK-APP-ID {spark.sparkContext.applicationId}')\n"
        "spark.stop()\n"
    )
    failing = tmp_path / "fail.py"
    failing.write_text("import sys\nprint('going down')\nsys.exit(7)\n")
    phases = Phases()

    async def both() -> tuple[Any, Any]:  # the two drivers run at the same time
        return await asyncio.gather(
            backend.run_application(app1, info, StagedApp("pyspark", app_file, ["a1"]), phases),
            backend.run_application(app2, info, StagedApp("pyspark", failing), Phases()))

    result, failed = run(both())
    log_text = (backend.job_dir(app1) / "logs" / "driver.log").read_text()
    assert result.exit_status == 0, log_text[-3000:]
    assert "SPARKDOCK-RESULT 4999950000 ['a1']" in log_text
    assert "SPARKDOCK-PRIVILEGES 185 0000000000000000" in log_text  # the driver is unprivileged too
    # a driver with the cluster's secret (its file put in its container) registers with the master
    app_id = re.search(r"SPARKDOCK-APP-ID (\S+)", log_text)
    assert app_id and app_id.group(1) in registered_apps(probes.master_status(info.endpoints["spark_ui"]["url"]))
    assert result.log_path == backend.job_dir(app1) / "logs" / "driver.log"
    assert not result.oom_killed
    assert "StartingDriver" in phases.phases
    assert labelled(dclient, app1)[0] == []  # the driver container is gone
    assert failed.exit_status == 7
    assert "going down" in failed.output_tail


def test_run_application_progress_and_cancel(cluster: Any, backend: DockerBackend, tmp_path: Path, run: Any,
                                            dclient: Any) -> None:
    info, _, _ = cluster
    slow1 = unique_job_id("slow1")
    app_file = tmp_path / "slow.py"
    app_file.write_text(
        "import time\n"
        "from pyspark.sql import SparkSession\n"
        "spark = SparkSession.builder.getOrCreate()\n"
        "print('SLOW-STARTED', flush=True)\n"
        "spark.sparkContext.parallelize(range(2), 2).foreach(lambda _: time.sleep(120))\n"
    )
    phases = Phases()

    async def scenario() -> None:
        task = asyncio.ensure_future(backend.run_application(slow1, info, StagedApp("pyspark", app_file),
                                                             phases))
        for _ in range(1200):
            if phases.progress and phases.progress[-1]["jobs_running"] >= 1:
                break
            await asyncio.sleep(0.1)
        assert phases.progress, phases.phases
        assert labelled(dclient, slow1)[0] != []
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(scenario())
    assert labelled(dclient, slow1)[0] == []
    assert "SLOW-STARTED" in (backend.job_dir(slow1) / "logs" / "driver.log").read_text()


def test_watch_reports_a_dead_worker(
    cluster: Any, backend: DockerBackend, dclient: docker.DockerClient, run: Any
) -> None:
    """A worker container killed while the cluster runs is reported once; the test then starts it again and
    waits until it is back with the master, so the module's cluster stays whole for the other tests."""
    info, _, _ = cluster
    calls: list[tuple[str, str, bool, str]] = []
    worker = dclient.containers.get(f"sparkdock-{INSTANCE}-{JOB}-worker-2")
    ui = info.endpoints["spark_ui"]["url"]

    def alive_workers() -> int:
        try:
            return probes.alive_workers(probes.master_status(ui, 5))
        except probes.ProbeError:
            return -1

    async def scenario() -> None:
        watcher = await _watching(backend, calls)
        try:
            await asyncio.to_thread(worker.kill)
            await until(lambda: bool(calls), "the worker's death reported")
            assert calls[0][:3] == (JOB, "worker-2", False), calls
            assert "exited" in calls[0][3]
            await asyncio.to_thread(worker.start)
            await until(lambda: alive_workers() == 2, "worker-2 back with the master", 120)
            assert [c[1] for c in calls] == ["worker-2"], calls  # reported once; a restart is no death
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    run(scenario())
    assert JOB in run(backend.list_job_ids())

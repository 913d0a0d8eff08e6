"""Tests of the local-process backend with real Spark processes (master, workers, Thrift Server, lab).

One module-scoped 1-worker cluster serves most checks; a second cluster (started by a backend object that
is then dropped) covers two clusters at once, adoption after a restart, ``list_job_ids`` and ``watch``.
Every test stops what it started.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import testrun
from sparkdock.backends.base import BackendError, ClusterInfo, StagedApp
from sparkdock.backends.local import (
    LocalBackend,
    _marked_processes,
    local_available,
    pid_alive,
    tail_lines,
)
from sparkdock.cluster import probes
from sparkdock.model.specs import ClusterSpec

AVAILABLE, WHY = local_available()
if not AVAILABLE and os.environ.get("CI") == "true":  # on CI the local backend's tests must run
    raise RuntimeError(f"CI=true but the local backend is unavailable (Java/pyspark): {WHY}")
needs_local = pytest.mark.skipif(not AVAILABLE, reason=f"local backend unavailable: {WHY}")


@dataclass
class Recorder:
    """A Reporter that keeps every call."""

    calls: list[tuple[str, str, dict[str, Any] | None]] = field(default_factory=list)

    def __call__(self, phase: str, activity: str, *, progress: dict[str, Any] | None = None) -> None:
        self.calls.append((phase, activity, progress))

    @property
    def phases(self) -> list[str]:
        return [c[0] for c in self.calls]


def _backend(data_dir: Path, instance: str, **kw: Any) -> LocalBackend:
    return LocalBackend(data_dir, instance, stop_timeout=10, watch_interval=0.5, progress_interval=1.0, **kw)


def _pids(info: ClusterInfo) -> dict[str, tuple[int, int]]:
    return {c: (r["pid"], r["start_time"]) for c, r in info.state["processes"].items()}


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _listening() -> dict[int, set[str]]:
    """Listening TCP ports (IPv4 and IPv6) and the addresses they are bound to, from /proc/net."""
    found: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A":
                addr, port = cols[1].split(":")
                found.setdefault(int(port, 16), set()).add(addr)
    return found


def _sql(info: ClusterInfo, statement: str, password: str | None = None) -> list[tuple[Any, ...]]:
    from impala.dbapi import connect

    sql = info.endpoints["sql"]
    conn = connect(host=sql["host"], port=sql["port"], auth_mechanism="PLAIN", user="alice",
                   password=password or info.sql_password, timeout=120)
    try:
        cur = conn.cursor()
        cur.execute(statement)
        return list(cur.fetchall())
    finally:
        conn.close()


def _assert_gone(backend: LocalBackend, job_id: str, info: ClusterInfo) -> None:
    """No process of the cluster is left, no port listens, the work folder is gone, logs are kept."""
    alive = [c for c, (pid, start) in _pids(info).items() if pid_alive(pid, start)]
    assert not alive, f"processes left: {alive}"
    assert not _marked_processes(backend.instance, job_id)
    listening = [name for name, port in info.state["ports"].items() if _port_open(port)]
    assert not listening, f"ports still listening: {listening}"
    assert not (backend.job_dir(job_id) / "work").exists()
    assert (backend.job_dir(job_id) / "logs" / "master.log").is_file()
    assert job_id not in asyncio.run(backend.list_job_ids())


@dataclass
class Started:
    backend: LocalBackend
    job_id: str
    info: ClusterInfo
    reporter: Recorder
    seconds: float


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sparkdock-local")


@pytest.fixture(scope="module")
def instance() -> str:
    return testrun.instance("local")


@pytest.fixture(scope="module")
def cluster(data_dir: Path, instance: str) -> Iterator[Started]:
    """A 1-worker cluster shared by the module's tests."""
    if not AVAILABLE:
        pytest.skip(f"local backend unavailable: {WHY}")
    backend = _backend(data_dir, instance)
    rec = Recorder()
    t0 = time.monotonic()
    # 2 cores: an executor kept by the SQL endpoint (shuffle tracking) leaves one for the drivers
    spec = ClusterSpec(workers=1, worker_cores=2, worker_memory="1g")
    info = asyncio.run(backend.start_cluster("c1", spec, rec))
    started = Started(backend, "c1", info, rec, time.monotonic() - t0)
    print(f"cluster c1 ready in {started.seconds:.1f}s")
    try:
        yield started
    finally:
        asyncio.run(backend.stop_cluster("c1", info.state))


# ---------------------------------------------------------------------------------------------
# cheap checks
# ---------------------------------------------------------------------------------------------


def test_local_available_explains() -> None:
    ok, why = local_available()
    assert isinstance(ok, bool) and why
    ok2, why2 = local_available(spark_home="/nonexistent/spark")
    assert not ok2 and "/nonexistent/spark" in why2


def test_check_refuses_unwritable_data_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(BackendError) as err:
        asyncio.run(LocalBackend(blocker / "data", "x").check())
    assert err.value.code == 52


@pytest.mark.spark
@needs_local
def test_broken_java_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-such-jdk"))
    backend = _backend(tmp_path / "data", testrun.instance("local"))
    rec = Recorder()
    with pytest.raises(BackendError) as err:
        asyncio.run(backend.start_cluster("bad", ClusterSpec(workers=1), rec))
    assert err.value.code == 51
    assert err.value.phase == "ContainerCannotRun"
    assert "JAVA_HOME" in err.value.detail and "no-such-jdk" in err.value.detail
    assert rec.phases == ["CheckingRuntime"]
    assert not _marked_processes(backend.instance)
    assert not (backend.job_dir("bad") / "work").exists()
    assert asyncio.run(backend.list_job_ids()) == set()


# ---------------------------------------------------------------------------------------------
# the module cluster
# ---------------------------------------------------------------------------------------------


@pytest.mark.spark
def test_phases_endpoints_and_state(cluster: Started) -> None:
    phases = cluster.reporter.phases
    order = ["CheckingRuntime", "StartingMaster", "WaitingForWorkers 1/1", "StartingSQLEndpoint",
             "StartingLab"]
    assert [p for p in phases if p in order] == order, phases
    ep = cluster.info.endpoints
    ports = cluster.info.state["ports"]
    assert ep["sql"] == {"host": "127.0.0.1", "port": ports["sql"],
                         "jdbc_url": f"jdbc:hive2://127.0.0.1:{ports['sql']}/default"}
    assert ep["lab"]["url"] == f"http://127.0.0.1:{ports['lab']}/lab"
    assert ep["spark_ui"]["url"] == f"http://127.0.0.1:{ports['master_ui']}"
    text = repr(ep)
    assert cluster.info.sql_password not in text and cluster.info.lab_token not in text
    assert set(cluster.info.state["processes"]) == {"master", "worker-1", "sql", "lab"}
    assert cluster.info.state["sql_auth"] == "CUSTOM"
    # The recorded pids are the JVMs (spark-class execs java) and the lab's Python, not shell wrappers.
    for component, (pid, _) in _pids(cluster.info).items():
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        assert comm.startswith("python") if component == "lab" else comm == "java", (component, comm)
    # Secrets are never on a command line; everything binds to loopback.
    for pid, _ in _pids(cluster.info).values():
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        assert cluster.info.sql_password not in cmdline and cluster.info.lab_token not in cmdline
    listening = _listening()
    loopback = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}
    for name, port in ports.items():
        assert listening.get(port), f"{name} port {port} is not listening"
        assert listening[port] <= loopback, f"{name} port {port} bound to {listening[port]}"
    logs = cluster.backend.job_dir("c1") / "logs"
    assert cluster.info.sql_password not in tail_lines(logs / "sql.log", None)
    assert cluster.info.lab_token not in tail_lines(logs / "lab.log", None)


@pytest.mark.spark
def test_sql_with_password(cluster: Started) -> None:
    assert _sql(cluster.info, "SELECT count(*) FROM range(1000000)") == [(1000000,)]
    port = cluster.info.endpoints["sql"]["port"]
    with pytest.raises(probes.SQLAuthError):
        probes.probe_sql("127.0.0.1", port, "alice", "wrong password", timeout=20)


@pytest.mark.spark
def test_lab_needs_token(cluster: Started) -> None:
    base = cluster.info.endpoints["lab"]["url"].removesuffix("lab")
    assert probes.probe_lab(base, cluster.info.lab_token or "", timeout=10)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(base + "api/status", timeout=10)
    assert err.value.code == 403


@pytest.mark.spark
def test_logs(cluster: Started) -> None:
    backend = cluster.backend
    assert "Master" in asyncio.run(backend.logs("c1", "master"))
    assert len(asyncio.run(backend.logs("c1", "worker-1", tail=5)).splitlines()) <= 5
    assert asyncio.run(backend.logs("c1", "sql", tail=3))
    for bad in ("nope", "worker-7", "../x"):
        with pytest.raises(KeyError):
            asyncio.run(backend.logs("c1", bad))


@pytest.mark.spark
def test_run_application(cluster: Started, tmp_path: Path) -> None:
    ok = tmp_path / "ok.py"
    ok.write_text(
        "import time\n"
        "from pyspark.sql import SparkSession\n"
        "spark = SparkSession.builder.getOrCreate()\n"
        "print('COUNT=%d' % spark.range(100).count())\n"
        "time.sleep(3)\n"
        "spark.stop()\n"
    )
    rec = Recorder()
    result = asyncio.run(cluster.backend.run_application("a1", cluster.info, StagedApp("pyspark", ok), rec))
    log = cluster.backend.job_dir("a1") / "logs" / "driver.log"
    assert result.exit_status == 0, result.output_tail
    assert "COUNT=100" in log.read_text() and "COUNT=100" in result.output_tail
    assert result.log_path == log
    assert not (cluster.backend.job_dir("a1") / "work").exists()
    assert "a1" not in asyncio.run(cluster.backend.list_job_ids())
    running = [c for c in rec.calls if c[0] == "Running"]
    assert running and running[-1][2] is not None and running[-1][2]["jobs_total"] >= 1, rec.calls

    bad = tmp_path / "bad.py"
    bad.write_text("raise ValueError('sparkdock test failure')\n")
    app = StagedApp("pyspark", bad)
    result = asyncio.run(cluster.backend.run_application("a2", cluster.info, app, Recorder()))
    assert result.exit_status != 0
    assert "sparkdock test failure" in result.output_tail
    asyncio.run(cluster.backend.stop_cluster("a1"))
    asyncio.run(cluster.backend.stop_cluster("a2"))
    assert not _marked_processes(cluster.backend.instance, "a1")


@pytest.mark.spark
def test_run_application_cancel_kills_driver(cluster: Started, tmp_path: Path) -> None:
    slow = tmp_path / "slow.py"
    slow.write_text("import time\nprint('SLOW STARTED', flush=True)\ntime.sleep(120)\n")
    backend = cluster.backend

    async def run_and_cancel() -> None:
        task = asyncio.create_task(backend.run_application("a3", cluster.info, StagedApp("pyspark", slow),
                                                           Recorder()))
        log = backend.job_dir("a3") / "logs" / "driver.log"
        deadline = time.monotonic() + 60
        while "SLOW STARTED" not in tail_lines(log, 5) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert _marked_processes(backend.instance, "a3")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run_and_cancel())
    assert not _marked_processes(backend.instance, "a3")
    asyncio.run(backend.stop_cluster("a3"))


@pytest.mark.spark
def test_second_cluster_adoption_and_watch(cluster: Started, data_dir: Path, instance: str) -> None:
    """A second cluster next to the first; a new backend adopts it; watch reports its SQL process dying."""
    first = _backend(data_dir, instance)
    info = asyncio.run(first.start_cluster("c2", ClusterSpec(workers=1, worker_memory="512m"), Recorder()))
    try:
        ports1, ports2 = cluster.info.state["ports"], info.state["ports"]
        assert not set(ports1.values()) & set(ports2.values())
        assert _sql(info, "SELECT 40 + 2") == [(42,)]
        assert _sql(cluster.info, "SELECT 1") == [(1,)]

        # simulated server restart: the backend object is dropped, a new one adopts the cluster
        del first
        before = set(_marked_processes(instance, "c2"))
        backend = _backend(data_dir, instance)
        assert {"c1", "c2"} <= asyncio.run(backend.list_job_ids())
        adopted = asyncio.run(backend.adopt_cluster("c2", info.state))
        assert adopted is not None
        assert adopted.endpoints == info.endpoints
        assert set(_marked_processes(instance, "c2")) == before
        # a stale state (pid reused / process gone) is not adopted
        stale = {**info.state, "processes": {**info.state["processes"],
                                             "sql": {"pid": info.state["processes"]["sql"]["pid"],
                                                     "start_time": 1}}}
        assert asyncio.run(_backend(data_dir, instance).adopt_cluster("c2", stale)) is None

        async def watch_sql_death() -> list[tuple[str, str, bool, str]]:
            seen: list[tuple[str, str, bool, str]] = []

            async def on_health(job_id: str, component: str, healthy: bool, message: str) -> None:
                seen.append((job_id, component, healthy, message))

            task = asyncio.create_task(backend.watch(on_health))
            await asyncio.sleep(1.5)
            assert seen == []
            os.killpg(info.state["processes"]["sql"]["pid"], signal.SIGKILL)
            deadline = time.monotonic() + 15
            while not seen and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.5)  # reported once only
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return seen

        seen = asyncio.run(watch_sql_death())
        assert [(j, c, h) for j, c, h, _ in seen] == [("c2", "sql", False)], seen
        asyncio.run(backend.stop_cluster("c2", info.state))
        _assert_gone(backend, "c2", info)
    finally:
        asyncio.run(_backend(data_dir, instance).stop_cluster("c2", info.state))


@pytest.mark.spark
def test_sql_timeout_gives_50_and_cleans_up(data_dir: Path, instance: str) -> None:
    backend = _backend(data_dir, instance, sql_timeout=0.5)
    rec = Recorder()
    with pytest.raises(BackendError) as err:
        asyncio.run(backend.start_cluster("c3", ClusterSpec(workers=1), rec))
    assert err.value.code == 50, err.value.detail
    assert err.value.component == "sql"
    assert err.value.phase == "EndpointTimeout"
    assert err.value.logs
    assert not _marked_processes(instance, "c3")
    assert not (backend.job_dir("c3") / "work").exists()
    assert (backend.job_dir("c3") / "logs" / "sql.log").is_file()


@pytest.mark.spark
def test_cancellation_cleans_up(data_dir: Path, instance: str) -> None:
    backend = _backend(data_dir, instance)

    async def start_and_cancel() -> None:
        rec = Recorder()
        task = asyncio.create_task(backend.start_cluster("c4", ClusterSpec(workers=1), rec))
        while "StartingMaster" not in rec.phases and not task.done():
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # the master process is running
        assert _marked_processes(instance, "c4")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(start_and_cancel())
    assert not _marked_processes(instance, "c4")
    assert not (backend.job_dir("c4") / "work").exists()


@pytest.mark.spark
def test_zz_terminate(cluster: Started) -> None:
    """Runs last: terminating the module cluster leaves nothing behind but its logs; stop is idempotent."""
    backend = cluster.backend
    t0 = time.monotonic()
    asyncio.run(backend.stop_cluster("c1", cluster.info.state))
    print(f"stop took {time.monotonic() - t0:.1f}s")
    _assert_gone(backend, "c1", cluster.info)
    assert asyncio.run(backend.logs("c1", "sql", tail=5))
    asyncio.run(backend.stop_cluster("c1", cluster.info.state))
    asyncio.run(backend.stop_cluster("c1"))

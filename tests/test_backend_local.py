"""Tests of the local-process backend with real Spark processes (master, workers, Thrift Server, lab).

Most checks use the suite's shared cluster (``shared_local_cluster``, tests/local_cluster.py), whose
termination is checked when the session ends. A second cluster (started by a backend object that is then
dropped) covers two clusters at once, adoption after a restart, ``list_job_ids`` and ``watch``; two more
start and fail or are cancelled half-way: each says why it needs its own. Every test stops what it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import testrun
from job_helpers import (
    INTRUDER_APP,
    REFUSED,
    assert_no_secret,
    cluster_secrets,
    process_table,
    registered_apps,
    unique_job_id,
    until,
)
from local_cluster import (
    CANARY_ENV,
    Recorder,
    Started,
    assert_gone,
    listening_pids,
    listening_sockets,
    local_backend,
    pids_of,
)
from sparkdock.backends.base import BackendError, ClusterInfo, StagedApp
from sparkdock.backends.local import LOOPBACK as LOOPBACK_IP
from sparkdock.backends.local import LocalBackend, _marked_processes, local_available, tail_lines
from sparkdock.backends.provisioning import Deadlines
from sparkdock.cluster import probes, roles
from sparkdock.model.specs import ClusterSpec
from sparkdock.server.health import assess

AVAILABLE, WHY = local_available()
if not AVAILABLE and os.environ.get("CI") == "true":  # on CI the local backend's tests must run
    raise RuntimeError(f"CI=true but the local backend is unavailable (Java/pyspark): {WHY}")
needs_local = pytest.mark.skipif(not AVAILABLE, reason=f"local backend unavailable: {WHY}")
#: 127.0.0.1 and ::1 (and 127.0.0.1 mapped into IPv6) as /proc/net/tcp{,6} write them
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


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


def _daemons(pids: Any) -> set[int]:
    """The processes among ``pids`` that are not executors (those come and go with the applications' work:
    test clusters give idle executors back within seconds)."""
    out = set()
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"CoarseGrainedExecutorBackend" not in cmdline:
            out.add(pid)
    return out


@pytest.fixture
def cluster(shared_local_cluster: Started) -> Started:
    return shared_local_cluster


# ---------------------------------------------------------------------------------------------
# cheap checks
# ---------------------------------------------------------------------------------------------


@needs_local
def test_local_available_explains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It says what it found when the backend works, and which piece is missing when it does not."""
    ok, why = local_available()
    assert ok == AVAILABLE
    if ok:
        assert "version" in why and "pyspark " in why, why  # the Java version and pyspark's
    ok2, why2 = local_available(spark_home="/nonexistent/spark")
    assert not ok2 and "/nonexistent/spark" in why2
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    ok3, why3 = local_available()
    assert not ok3 and "JAVA_HOME" in why3 and "no-jdk" in why3, why3


def test_check_refuses_unwritable_data_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(BackendError) as err:
        asyncio.run(LocalBackend(blocker / "data", "x").check())
    assert err.value.code == 52


@pytest.mark.spark
@needs_local
def test_broken_java_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its own cluster: one that cannot start (JAVA_HOME points nowhere); nothing of it may be left."""
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-such-jdk"))
    backend = local_backend(tmp_path / "data", testrun.instance("local"))
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


@needs_local
def test_no_javac_is_51_never_an_open_sql_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its own (never started) cluster: a fresh data folder and a JAVA_HOME with a JRE only (no javac), so the
    SQL endpoint's password check cannot be built. The launch fails with 51 saying what to install, before any
    process starts; it never falls back to an endpoint that accepts any login."""
    jre = tmp_path / "jre"
    (jre / "bin").mkdir(parents=True)
    java = shutil.which("java")
    assert java, "the local backend's tests need Java"
    (jre / "bin" / "java").symlink_to(Path(java).resolve())
    monkeypatch.setenv("JAVA_HOME", str(jre))
    backend = local_backend(tmp_path / "data", testrun.instance("local"))
    rec = Recorder()
    with pytest.raises(BackendError) as err:
        asyncio.run(backend.start_cluster("nojdk", ClusterSpec(workers=1), rec))
    assert (err.value.code, err.value.phase, err.value.component) == (51, "ContainerCannotRun", "sql")
    assert "javac" in err.value.detail and "install a JDK" in err.value.detail
    assert rec.phases == ["CheckingRuntime"]
    assert not _marked_processes(backend.instance)
    assert not (backend.job_dir("nojdk") / "work").exists() and not backend.secrets_dir("nojdk").exists()


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
    assert ep["spark_ui"]["url"] == f"http://127.0.0.1:{ports['master_ui']}/"
    text = repr(ep)
    assert cluster.info.sql_password not in text and cluster.info.lab_token not in text
    assert set(cluster.info.state["processes"]) == {"master", "worker-1", "sql", "lab"}
    assert cluster.info.state["sql_auth"] == "CUSTOM"
    # The recorded pids are the JVMs (spark-class execs java) and the lab's Python, not shell wrappers.
    for component, (pid, _) in pids_of(cluster.info).items():
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        assert comm.startswith("python") if component == "lab" else comm == "java", (component, comm)
    # Secrets are never on a command line; everything binds to loopback.
    for pid, _ in pids_of(cluster.info).values():
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        assert cluster.info.sql_password not in cmdline and cluster.info.lab_token not in cmdline
    listening: dict[int, set[str]] = {}
    for port, addr, _ in listening_sockets():
        listening.setdefault(port, set()).add(addr)
    for name, port in ports.items():
        assert listening.get(port), f"{name} port {port} is not listening"
        assert listening[port] <= LOOPBACK, f"{name} port {port} bound to {listening[port]}"
    logs = cluster.backend.job_dir(cluster.job_id) / "logs"
    assert cluster.info.sql_password not in tail_lines(logs / "sql.log", None)
    assert cluster.info.lab_token not in tail_lines(logs / "lab.log", None)


@pytest.mark.spark
def test_control_plane_needs_the_secret(cluster: Started, tmp_path: Path) -> None:
    """Security part 1 on the shared cluster: every port of every process of the cluster (executors and kernels
    included) is on loopback, nothing answers a REST submission, no secret is on a command line, a driver
    without the cluster's secret registers nothing, and one with it registers: a lab kernel's session here, an
    automated job's driver in test_run_application."""
    backend, info = cluster.backend, cluster.info
    secrets = cluster_secrets(backend.secrets_dir(cluster.job_id), info.sql_password, info.lab_token)
    inodes = set()
    for pid in _marked_processes(backend.instance, cluster.job_id):
        fds: list[Path] = []
        with contextlib.suppress(OSError):  # the process ended meanwhile
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        for fd in fds:
            with contextlib.suppress(OSError):  # the descriptor was closed meanwhile
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    bound = {(port, addr) for port, addr, inode in listening_sockets() if inode in inodes}
    assert {port for port, _ in bound} >= set(info.state["ports"].values())
    assert {addr for _, addr in bound} <= LOOPBACK, bound
    assert 6066 not in {port for port, _ in bound}
    if not listening_pids(6066):
        submission = urllib.request.Request("http://127.0.0.1:6066/v1/submissions/create", data=b"{}")
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(submission, timeout=5)
    assert_no_secret(secrets, {"ps -ef": process_table()})

    ui = info.endpoints["spark_ui"]["url"]
    intruder = unique_job_id("intruder")
    out = tmp_path / "intruder.log"
    with open(out, "wb") as fh:
        proc = subprocess.Popen([backend.python, "-c", INTRUDER_APP, info.state["master_url"], intruder,
                                 LOOPBACK_IP], env={**backend._env(), "SPARK_LOCAL_IP": LOOPBACK_IP}, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def refused() -> None:
            assert proc.poll() is None or REFUSED in out.read_text(), out.read_text()[-3000:]
            if REFUSED not in out.read_text():
                raise probes.ProbeError("the intruder has not been refused yet")

        probes.wait_until(refused, 120, 0.2, "the master refusing a driver without the secret")
        assert intruder not in registered_apps(probes.master_status(ui)).values()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    # with the secret, a lab kernel's ``spark``: the lab's environment and IPython startup file, as a kernel
    # of the lab gets them (an automated job's driver: test_run_application)
    lab_pid = info.state["processes"]["lab"]["pid"]
    environ = Path(f"/proc/{lab_pid}/environ").read_bytes().decode().split("\0")
    lab_env = dict(item.split("=", 1) for item in environ if "=" in item)
    startup = Path(lab_env["IPYTHONDIR"]) / "profile_default" / "startup" / roles.LAB_STARTUP_FILENAME
    cell = "print('SPARKDOCK-APP-ID', spark.sparkContext.applicationId, flush=True)\nspark.stop()\n"
    kernel = subprocess.run([backend.python, "-c", startup.read_text() + cell], env=lab_env, capture_output=True,
                            text=True, timeout=180, cwd=tmp_path)
    assert kernel.returncode == 0, kernel.stderr[-3000:]
    app_id = re.search(r"SPARKDOCK-APP-ID (\S+)", kernel.stdout)
    assert app_id and app_id.group(1) in registered_apps(probes.master_status(ui))


@pytest.mark.spark
def test_processes_get_an_explicit_environment(cluster: Started) -> None:
    """The server's tokens and credentials never reach a cluster's processes, executors included: the shared
    cluster was started with :data:`CANARY_ENV` in the server's environment."""
    assert _sql(cluster.info, "SELECT count(*) FROM range(10)") == [(10,)]  # the SQL endpoint's executors run
    seen = []
    for pid in _marked_processes(cluster.backend.instance, cluster.job_id):
        with contextlib.suppress(OSError):  # the process ended meanwhile
            environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
            seen.append(pid)
            for key, value in CANARY_ENV.items():
                assert value not in environ, f"the server's {key} reached process {pid}"
            assert "SPARK_HOME=" in environ and "PATH=" in environ
    assert len(seen) >= len(cluster.info.state["processes"]), seen


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
    backend, job = cluster.backend, cluster.job_id
    assert "Master" in asyncio.run(backend.logs(job, "master"))
    assert len(asyncio.run(backend.logs(job, "worker-1", tail=5)).splitlines()) <= 5
    assert asyncio.run(backend.logs(job, "sql", tail=3))
    for bad in ("nope", "worker-7", "../x"):
        with pytest.raises(KeyError):
            asyncio.run(backend.logs(job, bad))


@pytest.mark.spark
def test_run_application(cluster: Started, tmp_path: Path) -> None:
    """A driver's progress is reported while it runs (it waits for the test to have seen it), its output is
    kept, and a failing driver's error is in its result. The two drivers run at the same time. With the
    cluster's secret the driver registers with the master; while it runs, no command line of its own or of its
    executors holds the secret."""
    a1, a2 = unique_job_id("a1"), unique_job_id("a2")
    ok = tmp_path / "ok.py"
    release = tmp_path / "release"
    ok.write_text(
        "import os, sys, time\n"
        "from pyspark.sql import SparkSession\n"
        "spark = SparkSession.builder.getOrCreate()\n"
        "print('COUNT=%d' % spark.range(100).count())\n"
        "print(f'SPARKDOCK-APP-ID {spark.sparkContext.applicationId}', flush=True)  # one write: stderr interleaves\n"
        "deadline = time.monotonic() + 120\n"
        "while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:\n"
        "    time.sleep(0.1)\n"
        "spark.stop()\n"
    )
    rec = Recorder()

    def progressed() -> bool:
        running = [c for c in rec.calls if c[0] == "Running" and c[2] is not None]
        return bool(running) and running[-1][2]["jobs_total"] >= 1

    bad = tmp_path / "bad.py"
    bad.write_text("raise ValueError('sparkdock test failure')\n")
    secrets = cluster_secrets(cluster.backend.secrets_dir(cluster.job_id), cluster.info.sql_password,
                              cluster.info.lab_token)

    async def run_and_release() -> tuple[Any, Any]:
        app = StagedApp("pyspark", ok, args=[str(release)])
        task = asyncio.create_task(cluster.backend.run_application(a1, cluster.info, app, rec))
        failing = asyncio.create_task(cluster.backend.run_application(a2, cluster.info,
                                                                      StagedApp("pyspark", bad), Recorder()))
        try:
            await until(lambda: progressed() or task.done(), "progress of the running driver", 120)
            # the driver and its executors run: the secret is on none of their command lines
            assert_no_secret(secrets, {"ps -ef": process_table()})
        finally:
            release.touch()
        return await task, await failing

    result, failed = asyncio.run(run_and_release())
    log = cluster.backend.job_dir(a1) / "logs" / "driver.log"
    assert result.exit_status == 0, result.output_tail
    assert "COUNT=100" in log.read_text() and "COUNT=100" in result.output_tail
    # with the cluster's secret (its properties file) the driver registered with the master
    app_id = re.search(r"SPARKDOCK-APP-ID (\S+)", result.output_tail)
    ui = cluster.info.endpoints["spark_ui"]["url"]
    assert app_id and app_id.group(1) in registered_apps(probes.master_status(ui))
    assert result.log_path == log
    assert not (cluster.backend.job_dir(a1) / "work").exists()
    assert a1 not in asyncio.run(cluster.backend.list_job_ids())
    assert progressed(), rec.calls

    assert failed.exit_status != 0
    assert "sparkdock test failure" in failed.output_tail
    asyncio.run(cluster.backend.stop_cluster(a1))
    asyncio.run(cluster.backend.stop_cluster(a2))
    assert not _marked_processes(cluster.backend.instance, a1)


@pytest.mark.spark
def test_run_application_cancel_kills_driver(cluster: Started, tmp_path: Path) -> None:
    a3 = unique_job_id("a3")
    slow = tmp_path / "slow.py"
    slow.write_text("import time\nprint('SLOW STARTED', flush=True)\ntime.sleep(120)\n")
    backend = cluster.backend

    async def run_and_cancel() -> None:
        task = asyncio.create_task(backend.run_application(a3, cluster.info, StagedApp("pyspark", slow),
                                                           Recorder()))
        log = backend.job_dir(a3) / "logs" / "driver.log"
        deadline = time.monotonic() + 60
        while "SLOW STARTED" not in tail_lines(log, 5) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert _marked_processes(backend.instance, a3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run_and_cancel())
    assert not _marked_processes(backend.instance, a3)
    asyncio.run(backend.stop_cluster(a3))


@pytest.mark.spark
def test_second_cluster_adoption_and_watch(cluster: Started) -> None:
    """A second cluster next to the first; a new backend adopts it; watch reports its SQL process dying.

    Its own cluster: its SQL process is killed (the shared one must stay whole)."""
    instance = cluster.backend.instance
    first = cluster.new_backend()
    info = asyncio.run(first.start_cluster("c2", ClusterSpec(workers=1, worker_memory="512m"), Recorder()))
    try:
        ports1, ports2 = cluster.info.state["ports"], info.state["ports"]
        assert not set(ports1.values()) & set(ports2.values())
        assert _sql(info, "SELECT 40 + 2") == [(42,)]
        assert _sql(cluster.info, "SELECT 1") == [(1,)]

        # simulated server restart: the backend object is dropped, a new one adopts the cluster
        del first
        before = _daemons(_marked_processes(instance, "c2"))
        backend = cluster.new_backend()
        assert {cluster.job_id, "c2"} <= asyncio.run(backend.list_job_ids())
        adopted = asyncio.run(backend.adopt_cluster("c2", info.state))
        assert adopted is not None
        assert adopted.endpoints == info.endpoints
        assert _daemons(_marked_processes(instance, "c2")) == before  # adoption started nothing
        # a stale state (pid reused / process gone) is not adopted
        stale = {**info.state, "processes": {**info.state["processes"],
                                             "sql": {"pid": info.state["processes"]["sql"]["pid"],
                                                     "start_time": 1}}}
        assert asyncio.run(cluster.new_backend().adopt_cluster("c2", stale)) is None

        async def watch_sql_death() -> list[tuple[str, str, bool, str]]:
            seen: list[tuple[str, str, bool, str]] = []

            async def on_health(job_id: str, component: str, healthy: bool, message: str) -> None:
                seen.append((job_id, component, healthy, message))

            task = asyncio.create_task(backend.watch(on_health))
            await until(lambda: backend.watch_passes >= 2, "two health passes", 30)
            assert seen == []  # a healthy cluster: nothing to report
            os.killpg(info.state["processes"]["sql"]["pid"], signal.SIGKILL)
            await until(lambda: bool(seen), "the SQL process' death reported", 30)
            passes = backend.watch_passes
            await until(lambda: backend.watch_passes >= passes + 2, "two more health passes", 30)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return seen

        seen = asyncio.run(watch_sql_death())
        assert [(j, c, h) for j, c, h, _ in seen] == [("c2", "sql", False)], seen
        # the health loop's view: the master killed too is an error that starts with it (and stops drivers)
        os.killpg(info.state["processes"]["master"]["pid"], signal.SIGKILL)
        async def master_dead() -> dict[str, Any]:
            seen: dict[str, Any] = {}

            async def check() -> bool:
                seen.update(await backend.health("c2", info.state))
                return not seen["master"].alive

            deadline = time.monotonic() + 30
            while not await check():  # SIGKILL is delivered, the process ends a moment later
                assert time.monotonic() < deadline, f"the master still alive: {seen}"
                await asyncio.sleep(0.1)
            return seen

        health = asyncio.run(master_dead())
        assert not health["master"].alive and not health["sql"].alive and health["worker-1"].alive, health
        assert health["master"].message.startswith("the master process (pid"), health["master"]
        dead = {c: h.message for c, h in health.items() if not h.alive}
        verdict = assess(dead, ["worker-1"])
        assert verdict.error.startswith("master stopped: the master process") and verdict.fatal[0] == "master"
        asyncio.run(backend.stop_cluster("c2", info.state))
        assert_gone(backend, "c2", info)
    finally:
        asyncio.run(cluster.new_backend().stop_cluster("c2", info.state))


@pytest.mark.spark
@needs_local
def test_sql_timeout_gives_50_and_cleans_up(tmp_path: Path, sparkdock_cache_dir: Path) -> None:
    """Its own cluster: one whose start fails (its SQL endpoint is given half a second)."""
    backend = local_backend(tmp_path / "data", testrun.instance("local"), sparkdock_cache_dir,
                            deadlines=Deadlines(sql=0.5))
    instance = backend.instance
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
@needs_local
def test_cancellation_cleans_up(tmp_path: Path) -> None:
    """Its own cluster: one whose start is cancelled once its master process runs."""
    backend = local_backend(tmp_path / "data", testrun.instance("local"))
    instance = backend.instance

    async def start_and_cancel() -> None:
        rec = Recorder()
        task = asyncio.create_task(backend.start_cluster("c4", ClusterSpec(workers=1), rec))
        await until(lambda: bool(_marked_processes(instance, "c4")) or task.done(), "the master process", 60)
        assert not task.done() and "StartingMaster" in rec.phases, rec.phases
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(start_and_cancel())
    assert not _marked_processes(instance, "c4")
    assert not (backend.job_dir("c4") / "work").exists()

"""The suite's shared local cluster, and the authenticator cache every local backend of the suite uses.

A pytest plugin (listed in conftest's ``pytest_plugins``): ``shared_local_cluster`` is one 1-worker
cluster of the local backend (master, worker, password-protected Thrift Server, lab), started the first time
a test asks for it and terminated when the session ends. test_backend_local and test_spark_roles share it;
a test that needs a cluster of its own says why in its docstring.

Its applications give idle executors back within seconds (:data:`TEST_SPARK_CONF`), so that a test that
needs the worker's cores after a query does not wait Spark's production timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import testrun
from sparkdock.backends.base import ClusterInfo
from sparkdock.backends.local import LocalBackend, _marked_processes, local_available, pid_alive
from sparkdock.model.specs import ClusterSpec

#: short executor-release timeouts for test clusters (production: 15 s idle, 30 s with shuffle data)
TEST_SPARK_CONF = {
    "spark.dynamicAllocation.executorIdleTimeout": "4s",
    "spark.dynamicAllocation.shuffleTracking.timeout": "4s",
}
#: the shared cluster's job id
SHARED = "shared"
#: Variables in the server's environment while the shared cluster starts: the server's own tokens and a cloud
#: credential, which none of the cluster's processes may get (they get an explicit environment).
CANARY_ENV = {"JUPYTERHUB_API_TOKEN": "canary-hub-token-7f3a", "JUPYTER_TOKEN": "canary-jupyter-token-7f3a",
              "AWS_SECRET_ACCESS_KEY": "canary-aws-secret-7f3a"}


@contextlib.contextmanager
def server_secrets_in_environment() -> Iterator[None]:
    """:data:`CANARY_ENV` in this process's environment for the duration."""
    before = {k: os.environ.get(k) for k in CANARY_ENV}
    os.environ.update(CANARY_ENV)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class Recorder:
    """A Reporter that keeps every call."""

    calls: list[tuple[str, str, dict[str, Any] | None]] = field(default_factory=list)

    def __call__(self, phase: str, activity: str, *, progress: dict[str, Any] | None = None) -> None:
        self.calls.append((phase, activity, progress))

    @property
    def phases(self) -> list[str]:
        return [c[0] for c in self.calls]


@dataclass
class Started:
    """A running cluster of the local backend and how it came up."""

    backend: LocalBackend
    job_id: str
    info: ClusterInfo
    reporter: Recorder
    seconds: float

    def new_backend(self, **kw: Any) -> LocalBackend:
        """Another backend object of the same installation (same data folder, instance and cache)."""
        return local_backend(self.backend.data_dir, self.backend.instance, self.backend.cache_dir, **kw)


def local_backend(data_dir: Path, instance: str, cache_dir: Path | None = None, **kw: Any) -> LocalBackend:
    """A local backend with the suite's settings: quick stop, watch and progress, short executor release."""
    kw.setdefault("spark_conf", TEST_SPARK_CONF)
    return LocalBackend(data_dir, instance, stop_timeout=10, watch_interval=0.5, progress_interval=1.0,
                        cache_dir=cache_dir, **kw)


def pids_of(info: ClusterInfo) -> dict[str, tuple[int, int]]:
    """The cluster's processes: component -> (pid, start time)."""
    return {c: (r["pid"], r["start_time"]) for c, r in info.state["processes"].items()}


def listening_sockets() -> list[tuple[int, str, str]]:
    """Listening TCP sockets (IPv4 and IPv6) as (port, hex address, inode), from /proc/net."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A":
                addr, port = cols[1].rsplit(":", 1)
                found.append((int(port, 16), addr, cols[9]))
    return found


def listening_pids(port: int) -> set[int]:
    """Processes holding a socket that listens on ``port`` (empty when nothing listens)."""
    inodes = {f"socket:[{inode}]" for p, _, inode in listening_sockets() if p == port}
    owners = set()
    if not inodes:
        return owners
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            for fd in fd_dir.iterdir():
                if str(fd.readlink()) in inodes:
                    owners.add(int(fd_dir.parent.name))
                    break
        except OSError:
            continue
    return owners


def assert_gone(backend: LocalBackend, job_id: str, info: ClusterInfo) -> None:
    """No process of the cluster is left, none of its ports is held by a process of the job, the work folder
    is gone, logs are kept. (A port the cluster freed may be taken by anyone else since: not a leak.)"""
    alive = [c for c, (pid, start) in pids_of(info).items() if pid_alive(pid, start)]
    assert not alive, f"processes left: {alive}"
    marked = set(_marked_processes(backend.instance, job_id))
    assert not marked
    ours = {pid for pid, _ in pids_of(info).values()}
    held = {name: port for name, port in info.state["ports"].items() if listening_pids(port) & ours}
    assert not held, f"ports still held by the cluster's processes: {held}"
    assert not (backend.job_dir(job_id) / "work").exists()
    assert (backend.job_dir(job_id) / "logs" / "master.log").is_file()
    assert job_id not in asyncio.run(backend.list_job_ids())


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port of 127.0.0.1 that refuses connections for as long as the generator is not closed: it is bound
    (so nobody else gets it) but not listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


@pytest.fixture(scope="session")
def sparkdock_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for every local backend of the session: the SQL authenticator jar is compiled once."""
    return tmp_path_factory.mktemp("sparkdock-cache")


@pytest.fixture(scope="session")
def shared_local_cluster(tmp_path_factory: pytest.TempPathFactory, sparkdock_cache_dir: Path) -> Iterator[Started]:
    """The suite's 1-worker local cluster (2 cores, 1g; password-protected SQL endpoint; lab).

    Two cores: an executor the SQL endpoint keeps for a few seconds after a query leaves one for a driver.
    When the session ends it is terminated, and that termination is checked: nothing is left but its logs,
    and stopping again is harmless.
    """
    ok, why = local_available()
    if not ok:
        pytest.skip(f"local backend unavailable: {why}")
    backend = local_backend(tmp_path_factory.mktemp("sparkdock-local"), testrun.instance("local"),
                            sparkdock_cache_dir)
    rec = Recorder()
    t0 = time.monotonic()
    spec = ClusterSpec(workers=1, worker_cores=2, worker_memory="1g")
    with server_secrets_in_environment():
        info = asyncio.run(backend.start_cluster(SHARED, spec, rec))
    started = Started(backend, SHARED, info, rec, time.monotonic() - t0)
    print(f"\nshared local cluster ready in {started.seconds:.1f} s")
    try:
        yield started
    finally:
        t0 = time.monotonic()
        asyncio.run(backend.stop_cluster(SHARED, info.state))
        print(f"\nshared local cluster stopped in {time.monotonic() - t0:.1f} s")
    assert_gone(backend, SHARED, info)
    assert asyncio.run(backend.logs(SHARED, "sql", tail=5))
    asyncio.run(backend.stop_cluster(SHARED, info.state))  # stopping again is harmless
    asyncio.run(backend.stop_cluster(SHARED))

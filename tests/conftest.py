"""Shared fixtures: a Jupyter server with the sparkdock extension (pytest-jupyter), and the removal of what
earlier test runs left behind."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import testrun

#: Every JVM the suite starts on this machine (clusters, drivers, javac; not in containers) compiles with C1
#: only: it needs about 40 % less CPU to start Spark, and the 2-CPU CI machine is CPU-bound. Spark's behaviour
#: is the same; only how hard the JIT works to speed up long runs changes. A value already set is kept.
os.environ.setdefault("JAVA_TOOL_OPTIONS", "-XX:TieredStopAtLevel=1")

pytest_plugins = ["pytest_jupyter.jupyter_server", "local_cluster", "lab_server"]


@pytest.fixture(scope="session", autouse=True)
def _remove_leftovers_of_earlier_runs() -> None:
    """Processes, containers, networks and test-only images of dead test runs (a killed run, a killed engine)
    are removed before any test starts, so that they change no result. Live runs are left alone."""
    gone = [f"process {pid}" for pid in testrun.remove_leftover_processes()]
    with contextlib.suppress(Exception):  # no engine: nothing of Docker to remove
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
        gone += testrun.remove_leftover_docker(client)
        client.close()
    if gone:
        print(f"\nremoved leftovers of earlier test runs: {', '.join(gone)}")


#: what a Spark driver or Thrift Server (or schemathesis) leaves in its working directory; none of it may land in
#: the work tree
_SPARK_DROPPINGS = ("spark-warehouse", "metastore_db", "derby.log", ".schemathesis")
_REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _work_tree_stays_clean() -> Iterator[None]:
    """Every Spark process (and schemathesis) the suite starts runs in a temporary folder: at the end no
    ``spark-warehouse/``, ``metastore_db/``, ``derby.log`` or ``.schemathesis/`` has appeared in the repository."""
    before = {name for name in _SPARK_DROPPINGS if (_REPO / name).exists()}
    yield
    new = [name for name in _SPARK_DROPPINGS if (_REPO / name).exists() and name not in before]
    assert not new, f"a Spark process of the tests wrote into the work tree: {new}"


@pytest.fixture
def sparkdock_config():
    """Per-test overrides of SparkDockApp config (a dict)."""
    return {}


@pytest.fixture
def jp_server_config(tmp_path, sparkdock_config, sparkdock_cache_dir):
    """A server with sparkdock enabled, its data in the test's tmp dir (the session's build cache), and no
    unauthenticated access."""
    from fake_backend import IMAGES, FakeBackend
    from sparkdock.backends.docker import DEFAULT_IMAGE

    FakeBackend.reset()
    cfg = {"backend_class": FakeBackend, "data_dir": str(tmp_path / "sparkdock"), "retry_backoff": 0.1,
           "instance": testrun.instance("srv"), "cache_dir": str(sparkdock_cache_dir),
           "allowed_images": {*IMAGES, DEFAULT_IMAGE}}  # the fake backend's images pick its behaviour
    cfg.update(sparkdock_config)
    return {
        "ServerApp": {
            "jpserver_extensions": {"sparkdock": True},
            "allow_unauthenticated_access": False,
        },
        "SparkDockApp": cfg,
    }

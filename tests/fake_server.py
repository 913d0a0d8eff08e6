"""A Jupyter server subprocess with sparkdock on the backend interface's test double (``fake_backend.py``).

For tests that need the server in a process of its own: one whose limits (``RLIMIT_FSIZE``) a test changes, or
one that a blocking client (schemathesis) drives. Valid bodies start no cluster: the double pretends.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import testrun
from sparkdock.demo import Server

TESTS = Path(__file__).resolve().parent


@contextlib.contextmanager
def running_fake_server(tmp: Path, *extra_args: str) -> Iterator[Server]:
    """Start the server (its log is printed if the test fails) and stop it at the end."""
    server = Server("auto", [
        "--SparkDockApp.backend_class=fake_backend.FakeBackend",
        f"--SparkDockApp.instance={testrun.instance('fake')}",
        "--SparkDockApp.retry_backoff=0.1",
        *extra_args,
    ], tmp=tmp)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(TESTS), *([old] if old else [])])
    try:
        server.start()
    except BaseException:  # a server that did not come up is stopped too: never left running
        print(f"server log:\n{server.log_tail(60)}")
        server.stop()
        raise
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
    try:
        yield server
    except BaseException:
        print(f"server log:\n{server.log_tail(60)}")
        raise
    finally:
        server.stop()


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server subprocess on the test double, for the tests of one module."""
    with running_fake_server(tmp_path_factory.mktemp("fake-server")) as server:
        yield server

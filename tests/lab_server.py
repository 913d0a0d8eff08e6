"""The suite's JupyterLab server: a pytest plugin (listed in conftest's ``pytest_plugins``).

``lab_server`` is one ``jupyter lab`` subprocess with the sparkdock extension on the local backend, started the
first time a test asks for it and stopped when the session ends. test_notebooks executes the notebooks against
it and test_browser drives it from Chromium. When it stops, every job it still has is terminated and no Spark
process of its data folder may be left.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import testrun
from sparkdock.demo import Server

REPO = Path(__file__).resolve().parents[1]
SPARK_PROCS = "org.apache.spark.deploy|HiveThriftServer2"


class LabServer(Server):
    """``jupyter lab`` with the sparkdock extension (local backend), a random token and its own folders; the
    notebooks of the repository are copied into its root."""

    def __init__(self, tmp: Path, cache_dir: Path | None = None) -> None:
        settings_dir = tmp / "lab-settings"
        args = [
            "--LabApp.expose_app_in_browser=True",
            f"--LabApp.user_settings_dir={settings_dir}",
            f"--LabApp.workspaces_dir={tmp / 'lab-workspaces'}",
            f"--SparkDockApp.instance={testrun.instance('lab')}",
        ]
        if cache_dir is not None:
            args.append(f"--SparkDockApp.cache_dir={cache_dir}")
        super().__init__(
            "local", args, app="lab", tmp=tmp,
            drop_env=("SPARKDOCK_URL", "SPARKDOCK_TOKEN"),  # the kernel must find its server by itself
        )
        shutil.copytree(REPO / "notebooks", self.root, dirs_exist_ok=True)
        settings = settings_dir / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True)
        # No "news?" toast over the notebook, no update check (there is no internet).
        (settings / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False})
        )


def spark_processes_of(data_dir: Path) -> list[str]:
    """Spark processes (master, workers, Thrift server) whose command line, cwd or environment names
    ``data_dir``."""
    found = []
    out = subprocess.run(["pgrep", "-af", SPARK_PROCS], capture_output=True, text=True).stdout
    needle = str(data_dir)
    for line in out.splitlines():
        pid = line.split(" ", 1)[0]
        hit = needle in line
        with contextlib.suppress(OSError):
            hit = hit or os.readlink(f"/proc/{pid}/cwd").startswith(needle)
        with contextlib.suppress(OSError):
            hit = hit or needle.encode() in Path(f"/proc/{pid}/environ").read_bytes()
        if hit:
            found.append(line[:300])
    return found


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory: pytest.TempPathFactory, sparkdock_cache_dir: Path) -> Iterator[LabServer]:
    """The suite's JupyterLab server with sparkdock on the local backend."""
    server = LabServer(tmp_path_factory.mktemp("lab-server"), sparkdock_cache_dir)
    try:
        server.start()
        print(f"\njupyter lab on {server.url} (log: {server.log_path})", flush=True)
        yield server
    finally:
        # A notebook that failed half-way did not terminate its cluster: its processes would outlive the server.
        left = server.terminate_jobs() if server.proc is not None and server.proc.poll() is None else []
        if left:
            print(f"jobs that did not end: {left}\n{server.log_tail()}")
        server.stop()
    # a clean stop, not the SIGKILL after the timeout (a server that ignores its stop costs the suite a minute)
    assert server.proc is None or server.proc.returncode != -signal.SIGKILL, server.log_tail()
    deadline = time.monotonic() + 60
    procs = spark_processes_of(server.data)
    while procs and time.monotonic() < deadline:
        time.sleep(0.5)
        procs = spark_processes_of(server.data)
    assert not left, f"jobs that did not end after DELETE: {left}"
    assert not procs, "Spark processes left behind:\n" + "\n".join(procs)

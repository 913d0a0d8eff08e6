"""sparkdock as a new user installs it: the wheel built from this tree, in a fresh venv, with no extras.

The venv starts without pip and without any package; ``pip --python`` installs the wheel and resolves its
dependencies from the package index, as ``pip install sparkdock`` would. Then:

- ``jupyter server extension list`` shows the extension enabled (by the config file the wheel installs into the
  venv's ``etc/jupyter``) and validated;
- the public imports work: ``sparkdock.connect``, the client's errors, the widgets, ``%load_ext sparkdock``;
- the ``sparkdock`` command runs;
- a Jupyter server of the venv launches a local cluster with what the wheel brought (pyspark and JupyterLab are
  dependencies, not extras): it comes up RUNNING, its SQL endpoint and its lab answer, and it ends when the
  client's ``with`` block does.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

import testrun
from lab_server import spark_processes_of
from sparkdock._version import __version__
from sparkdock.demo import Server

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.install


def _run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A new venv with the wheel of this tree installed (no extras), and an environment that sees only it."""
    work = tmp_path_factory.mktemp("install")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "dist"), str(ROOT)])
    wheels = list((work / "dist").glob("sparkdock-*.whl"))
    assert [w.name for w in wheels] == [f"sparkdock-{__version__}-py3-none-any.whl"]
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-compile",
          str(wheels[0])], timeout=600)
    home = work / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "PYTHON", "VIRTUAL_ENV", "SPARKDOCK"))}
    env.update(HOME=str(home), PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", NO_COLOR="1")
    yield venv, env


def test_pyproject_and_the_package_carry_one_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == __version__


def test_jupyter_lists_the_extension_enabled_in_a_fresh_venv(fresh_venv: tuple[Path, dict[str, str]]) -> None:
    venv, env = fresh_venv
    done = _run([str(venv / "bin" / "jupyter"), "server", "extension", "list"], env=env)
    text = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)
    # the listing is one section per config dir; sparkdock must be enabled by the venv's own
    sections = dict(re.findall(r"^Config dir: (\S+)\n(.*?)(?=^Config dir: |\Z)", text, re.M | re.S))
    own = str(venv / "etc" / "jupyter")
    assert own in sections, text
    assert re.search(r"^\s*sparkdock enabled\s*$", sections[own], re.M), text
    assert re.search(rf"^\s*sparkdock {re.escape(__version__)} OK\s*$", sections[own], re.M), text
    others = [d for d, body in sections.items() if d != own and "sparkdock" in body]
    assert not others, f"sparkdock is also enabled outside the fresh venv: {others}"


PUBLIC_IMPORTS = f'''
import sparkdock
assert sparkdock.__version__ == {__version__!r}
from importlib.metadata import version
assert version("sparkdock") == sparkdock.__version__
assert callable(sparkdock.connect)
assert sparkdock.notify("ops@example.org", on="failure")[0]["event"] == "EXECUTOR_ERROR"
from sparkdock import JobFailed, RequestTimeout, ServerUnreachable, SparkdockError, WaitTimeout
assert issubclass(JobFailed, SparkdockError) and issubclass(WaitTimeout, TimeoutError)
assert callable(sparkdock.cluster_options)
from sparkdock.widgets import ClusterPanel, JobCard, JobMonitor, JobSubmitPanel
points = sparkdock._jupyter_server_extension_points()
assert points[0]["module"] == "sparkdock" and points[0]["app"].name == "sparkdock", points
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "sparkdock")
assert "sparksql" in shell.magics_manager.magics["cell"]
print("public imports ok")
'''


def test_public_imports_work_in_a_fresh_venv(fresh_venv: tuple[Path, dict[str, str]]) -> None:
    venv, env = fresh_venv
    done = _run([str(venv / "bin" / "python"), "-c", PUBLIC_IMPORTS], env=env)
    assert done.stdout.strip().endswith("public imports ok"), done.stdout


def test_the_command_runs_in_a_fresh_venv(fresh_venv: tuple[Path, dict[str, str]]) -> None:
    """``sparkdock --help`` lists the commands; with no server to talk to, a command says so, without a
    traceback."""
    venv, env = fresh_venv
    done = _run([str(venv / "bin" / "sparkdock"), "--help"], env=env)
    assert "{jobs,launch,terminate,cluster-options,notifications,exit-codes,info}" in done.stdout, done.stdout
    alone = subprocess.run([str(venv / "bin" / "sparkdock"), "jobs"], capture_output=True, text=True, env=env,
                           timeout=120)
    assert alone.returncode == 2, (alone.stdout, alone.stderr)
    assert "cannot find the sparkdock server" in alone.stderr and "Traceback" not in alone.stderr, alone.stderr


LAUNCH = """
import sys
import requests
import sparkdock

with sparkdock.connect(sys.argv[1], sys.argv[2]) as client:
    defaults = client.cluster_options().defaults
    print("defaults", defaults["workers"], defaults["worker_memory"])
    with client.launch_cluster(name="fresh-install") as cluster:
        cluster.wait(timeout=600)
        print("state", cluster.state, cluster.data["spec"]["cluster"]["workers"])
        print("sql", int(cluster.sql("SELECT sum(id) AS total FROM range(1000)")["total"][0]))
        lab = cluster.credentials()["lab"]["url"]  # with the lab's own token, not the server's
        print("lab", requests.get(lab, timeout=60).status_code)
    cluster.wait("COMPLETE", timeout=300)
    print("ended", cluster.state, cluster.created_at <= cluster.started_at <= cluster.ended_at)
"""


def test_a_fresh_install_launches_a_local_cluster(fresh_venv: tuple[Path, dict[str, str]], tmp_path: Path,
                                                  sparkdock_cache_dir: Path) -> None:
    """A cluster of its own (not the suite's shared one): what is under test is the fresh venv's Spark and
    JupyterLab, run by the venv's own Jupyter server. The SQL authenticator comes from the suite's build cache
    (keyed by content: the same jar the venv would build)."""
    venv, env = fresh_venv
    server = Server("local", [f"--SparkDockApp.instance={testrun.instance('install')}",
                              f"--SparkDockApp.cache_dir={sparkdock_cache_dir}",
                              "--SparkDockApp.terminate_on_shutdown=True"],
                    tmp=tmp_path, python=str(venv / "bin" / "python"), env=env)
    try:
        server.start(timeout=120)
        assert server.api("GET", "info").json()["backend"] == "local", server.log_tail()
        done = subprocess.run([str(venv / "bin" / "python"), "-c", LAUNCH, server.url, server.token],
                              capture_output=True, text=True, env=env, timeout=900)
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-3000:]}\n{server.log_tail(60)}"
        assert done.stdout.split("\n")[:-1] == ["defaults 1 1g", "state RUNNING 1", "sql 499500", "lab 200",
                                                "ended COMPLETE True"], done.stdout
    finally:
        left = server.terminate_jobs(timeout=120) if server.proc is not None and server.proc.poll() is None else []
        server.stop()
    assert not left, f"jobs that did not end: {left}"
    assert not spark_processes_of(server.data), "Spark processes left behind"

"""End-to-end demo (``python -m sparkdock.demo``, run by ``make demo``).

1. Starts a Jupyter server with the sparkdock extension in a subprocess (temporary root and data folders, a
   random token, no unauthenticated access, ``--SparkDockApp.backend=auto``).
2. Follows the server's event stream and prints each state/phase change, with a timestamp, as it happens.
3. Executes ``notebooks/quickstart.ipynb`` headless with nbclient; the kernel reaches the server through
   ``SPARKDOCK_URL``/``SPARKDOCK_TOKEN``.
4. Prints the SQL result and the endpoints read from the executed notebook's outputs.
5. Tears down (terminates any job left, stops the server) and exits 0 only if the cluster reached RUNNING,
   the SQL result was right and the cluster ended COMPLETE.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

from sparkdock.notebook.client import TERMINAL_STATES, Client, SparkdockError

EXPECTED_TOTAL = 999_999 * 1_000_000 // 2  # sum(id) over range(1000000)
_T0 = time.monotonic()


def say(msg: str) -> None:
    """Print one timestamped line."""
    now = datetime.now().strftime("%H:%M:%S.%f")[:-3]
    print(f"[{now} +{time.monotonic() - _T0:6.1f}s] {msg}", flush=True)


def find_notebook(name: str) -> Path:
    """``notebooks/<name>`` of the source tree (or of the current folder)."""
    for base in (Path(__file__).resolve().parents[2], Path.cwd()):
        p = base / "notebooks" / name
        if p.exists():
            return p
    raise FileNotFoundError(f"notebooks/{name} not found (run from the sparkdock source tree)")


class Server:
    """A Jupyter server subprocess with the sparkdock extension."""

    def __init__(
        self,
        backend: str = "auto",
        extra_args: list[str] | None = None,
        *,
        app: str = "server",
        tmp: Path | None = None,
        drop_env: tuple[str, ...] = (),
        python: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """``app`` is ``"server"`` (jupyter_server) or ``"lab"`` (JupyterLab); ``tmp`` a folder to use (a
        temporary one, removed by :meth:`stop`, by default); ``drop_env`` variables the server must not see;
        ``python`` the interpreter that runs it (default: this one); ``env`` its environment (default: this
        process's)."""
        self._own_tmp = tmp is None
        self.tmp = Path(tempfile.mkdtemp(prefix="sparkdock-demo-")) if tmp is None else Path(tmp)
        self.root = self.tmp / "root"
        self.data = self.tmp / "data"
        self.root.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(parents=True, exist_ok=True)
        self.token = secrets.token_hex(24)
        #: known once :meth:`start` has returned: the server binds a port the OS picks (no race for a port)
        self.port = 0
        self.url = ""
        self.backend = backend
        self.extra_args = extra_args or []
        self.app = app
        self.drop_env = drop_env
        self.python = python or sys.executable
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.tmp / "server.log"

    def start(self, timeout: float = 90.0) -> None:
        """Start the server and wait until it answers with the token."""
        env = dict(os.environ if self.env is None else self.env)
        env["JUPYTER_RUNTIME_DIR"] = str(self.tmp / "runtime")
        env["JUPYTER_DATA_DIR"] = str(self.tmp / "jupyter-data")
        for var in self.drop_env:
            env.pop(var, None)
        for stale in Path(env["JUPYTER_RUNTIME_DIR"]).glob("jpserver-*"):  # a killed server's: not this one's port
            stale.unlink(missing_ok=True)
        program = ["-m", "jupyter_server"] if self.app == "server" else ["-m", "jupyter", "lab"]
        cmd = [
            self.python, *program, "--no-browser", "--ip=127.0.0.1", "--port=0",
            f"--ServerApp.root_dir={self.root}",
            f"--IdentityProvider.token={self.token}", "--ServerApp.allow_unauthenticated_access=False",
            "--ServerApp.jpserver_extensions={'sparkdock': True}",
            f"--SparkDockApp.backend={self.backend}", f"--SparkDockApp.data_dir={self.data}",
            *self.extra_args,
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the Jupyter server exited with {self.proc.returncode} (log below)")
            if not self.port:
                self._read_port(env["JUPYTER_RUNTIME_DIR"])
            if self.port:
                with contextlib.suppress(requests.RequestException):
                    if self.api("GET", "info", timeout=5).status_code == 200:
                        return
            time.sleep(0.3)
        raise RuntimeError(f"the Jupyter server did not answer within {timeout} s (log below)")

    def _read_port(self, runtime_dir: str) -> None:
        """The port the server bound, from the ``jpserver-*.json`` it writes into its own runtime folder."""
        for info_file in Path(runtime_dir).glob("jpserver-*.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                self.port = int(json.loads(info_file.read_text())["port"])
                self.url = f"http://127.0.0.1:{self.port}/"
                return

    def api(self, method: str, path: str, **kw: Any) -> requests.Response:
        """A request to ``sparkdock/api/<path>`` with the server's token."""
        kw.setdefault("timeout", 30)
        return requests.request(method, f"{self.url}sparkdock/api/{path}",
                                headers={"Authorization": f"token {self.token}"}, **kw)

    def log_tail(self, n: int = 40) -> str:
        """The last lines of the server's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def terminate_jobs(self, timeout: float = 300.0) -> list[str]:
        """DELETE every job not yet ended and wait until each one is; returns what was left over."""
        left: list[str] = []
        try:
            jobs = self.api("GET", "jobs", params={"limit": 200}).json()["jobs"]
        except Exception as e:
            say(f"finalizer: cannot list jobs: {e}")
            return left
        live = [j["id"] for j in jobs if j.get("state") not in TERMINAL_STATES.get(j.get("kind"), ())]
        for job_id in live:
            say(f"finalizer: terminating {job_id} left behind")
            with contextlib.suppress(requests.RequestException):
                self.api("DELETE", f"jobs/{job_id}")
        deadline = time.monotonic() + timeout
        for job_id in live:
            while time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    job = self.api("GET", f"jobs/{job_id}").json()
                    if job.get("state") in TERMINAL_STATES[job["kind"]]:
                        break
                time.sleep(1)
            else:
                left.append(job_id)
        return left

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL; see :func:`stop_process`) and remove the temp dir."""
        stop_process(self.proc, timeout)
        with contextlib.suppress(Exception):
            self._log.close()
        if self._own_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


def stop_process(p: subprocess.Popen[Any] | None, timeout: float = 60.0) -> None:
    """Stop a Jupyter server process: SIGTERM (the server's clean stop: it shuts its extensions and kernels
    down), then SIGKILL after ``timeout`` seconds.

    Not SIGINT: a server without a terminal reads an empty answer to its "Shutdown this Jupyter server?"
    question at once and resumes, so SIGINT may never stop it."""
    if p is None or p.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        p.terminate()
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def _printer(seen: dict[str, tuple[Any, Any]]) -> Any:
    def on_job(job: dict[str, Any]) -> None:
        key = (job.get("state"), job.get("phase"))
        if seen.get(job["id"]) == key:
            return
        seen[job["id"]] = key
        extra = ""
        rs = job.get("runtime_status") or {}
        if rs.get("error"):
            extra += f"  ERROR: {rs['error']}"
        if job.get("exit_code") is not None:
            extra += f"  exit code {job['exit_code']}: {job.get('exit_message')}"
        say(f"event  {job.get('kind'):<11} {job['id']} {job.get('state'):<12} {job.get('phase') or ''}{extra}")

    return on_job


def _outputs_text(nb: Any) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream":
                out.append(o.get("text", ""))
    return "".join(out)


def _errors(nb: Any) -> list[str]:
    errs = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.get("output_type") == "error":
                errs.append(f"{o.get('ename')}: {o.get('evalue')}")
    return errs


def execute_notebook(path: Path, url: str, token: str, cwd: Path, timeout: int = 1800,
                     on_cell: Any = None) -> Any:
    """Execute a notebook headless against a server; returns the executed notebook (errors stay in it)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    env = dict(os.environ, SPARKDOCK_URL=url, SPARKDOCK_TOKEN=token)
    env.pop("JPY_PARENT_PID", None)
    kwargs: dict[str, Any] = {}
    if on_cell is not None:
        kwargs["on_cell_start"] = on_cell
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=False,
                            resources={"metadata": {"path": str(cwd)}}, **kwargs)
    client.execute(env=env)
    return nb


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the process exit code."""
    ap = argparse.ArgumentParser(prog="python -m sparkdock.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="auto", help="SparkDockApp.backend (auto, docker, local)")
    ap.add_argument("--notebook", default="quickstart.ipynb")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per notebook cell")
    args = ap.parse_args(argv)

    checks: dict[str, bool] = {"server started": False, "cluster reached RUNNING": False,
                               "SQL result right": False, "cluster ended COMPLETE": False,
                               "notebook ran without errors": False}
    notes: list[str] = []
    server = Server(backend=args.backend)
    client: Client | None = None
    seen: dict[str, tuple[Any, Any]] = {}
    states: dict[str, list[str]] = {}
    try:
        say(f"starting a Jupyter server with sparkdock (backend={args.backend})")
        server.start()
        say(f"server listening on {server.url}")
        checks["server started"] = True
        client = Client(server.url, server.token)
        info = client.info()
        say(f"server up: sparkdock {info.get('version')}, backend {info.get('backend')} ({info.get('reason')})")
        printer = _printer(seen)

        def track(job: dict[str, Any]) -> None:
            lst = states.setdefault(job["id"], [])
            if not lst or lst[-1] != job.get("state"):
                lst.append(job.get("state"))
            printer(job)

        stream = client.events()
        stream.add_listener(track)
        if not stream.wait_connected(10):
            notes.append("the event stream did not connect; no live events printed")
        nb_path = find_notebook(args.notebook)
        say(f"executing {nb_path.name} headless (nbclient)")
        lock = threading.Lock()

        def on_cell(cell: Any, cell_index: int) -> None:
            if cell.get("cell_type") == "code":
                first = (cell.get("source") or "").strip().splitlines()[:1]
                with lock:
                    say(f"cell {cell_index}: {first[0][:90] if first else ''}")

        nb = None
        try:
            nb = execute_notebook(nb_path, server.url, server.token, server.root, args.timeout, on_cell)
        except Exception as e:
            notes.append(f"notebook failed: {type(e).__name__}: {str(e).strip().splitlines()[-1][:500]}")
            nb = getattr(e, "nb", None) or nb
        if nb is not None:
            text = _outputs_text(nb)
            errs = _errors(nb)
            checks["notebook ran without errors"] = not errs and not any(n.startswith("notebook failed")
                                                                         for n in notes)
            notes.extend(f"error output: {e}" for e in errs)
            m = re.search(r"^state: (\S+)", text, re.M)
            checks["cluster reached RUNNING"] = bool(m and m.group(1) == "RUNNING")
            m = re.search(r"^total: (\d+)", text, re.M)
            if m:
                say(f"SQL result: sum(id) over range(1000000) = {m.group(1)} (expected {EXPECTED_TOTAL})")
                checks["SQL result right"] = int(m.group(1)) == EXPECTED_TOTAL
            m = re.search(r"^endpoints: (.*)$", text, re.M)
            if m:
                with contextlib.suppress(ValueError):
                    eps = json.loads(m.group(1))
                    say(f"endpoints: SQL {eps.get('sql', {}).get('jdbc_url')}  lab {eps.get('lab', {}).get('url')}"
                        f"  Spark UI {eps.get('spark_ui', {}).get('url')}")
            m = re.search(r"^final state: (\S+)", text, re.M)
            checks["cluster ended COMPLETE"] = bool(m and m.group(1) == "COMPLETE")
        # cross-check with the server: the interactive job's own history
        with contextlib.suppress(SparkdockError):
            for job in client.jobs(kind="interactive"):
                hist = [e["state"] for e in job.history() if e["event"] in ("CREATED", "STATE")]
                say(f"history of {job.id}: {' -> '.join(hist)}")
                if "RUNNING" not in hist:
                    checks["cluster reached RUNNING"] = False
    except Exception as e:
        notes.append(f"{type(e).__name__}: {e}")
    finally:
        if client is not None:
            try:
                left = [j for j in client.jobs() if not j.terminal]
                for j in left:
                    say(f"teardown: terminating {j.kind} job {j.id} ({j.state})")
                    with contextlib.suppress(SparkdockError):
                        j.terminate()
                for j in left:
                    with contextlib.suppress(SparkdockError):
                        j.wait("COMPLETE" if j.kind == "interactive" else None, timeout=120)
            except SparkdockError as e:
                notes.append(f"teardown: {e}")
            client.close()
        say("stopping the Jupyter server")
        if not checks["server started"] or not all(checks.values()):
            tail = server.log_tail(30)
            if tail:
                print("---- server log (last lines) ----\n" + tail + "\n--------------------------------")
        server.stop()

    ok = all(checks.values())
    print("\n==== sparkdock demo summary ====")
    for name, passed in checks.items():
        print(f"  [{'PASS' if passed else 'FAIL'}] {name}")
    for jid, lst in states.items():
        print(f"  job {jid}: {' -> '.join(lst)}")
    for n in notes:
        print(f"  note: {n}")
    print(f"  result: {'OK' if ok else 'FAILED'} in {time.monotonic() - _T0:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

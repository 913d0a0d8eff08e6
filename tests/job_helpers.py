"""Helpers shared by the tests that drive a JobManager directly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from sparkdock.backends.base import cluster_components
from sparkdock.model.lifecycle import Kind, State
from sparkdock.server.manager import JobManager
from sparkdock.server.store import Job


async def wait_for(
    m: JobManager, job_id: str, states: str | set[str], timeout: float = 10.0, interval: float = 0.02,
    phase: str | None = None,
) -> Job:
    """Poll until the job is in one of ``states`` (and in ``phase`` when given); fail with where it is stuck
    otherwise."""
    wanted = {State(s) for s in ([states] if isinstance(states, str) else states)}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = m.store.get(job_id)
        if job.state in wanted and (phase is None or job.phase == phase):
            return job
        await asyncio.sleep(interval)
    also = f" in phase {phase!r}" if phase else ""
    raise AssertionError(f"waited {timeout:g} s for {sorted(wanted)}{also}:\n{await describe(m, job_id)}")


def _components(job: Job) -> list[str]:
    cluster = job.spec.get("cluster")
    names = cluster_components(int(cluster.get("workers") or 0) if isinstance(cluster, dict) else 0)
    return [*names, "driver"] if job.kind == Kind.AUTOMATED else names


async def describe(m: JobManager, job_id: str, lines: int = 20) -> str:
    """Everything a red test should say about a job: its state, phase, exit code, runtime status, history and
    the last ``lines`` log lines of each of its components (those that have logs)."""
    job = m.store.get(job_id)
    out = [
        f"job {job_id} ({job.name}, {job.kind}) is {job.state}, phase {job.phase!r}, exit code {job.exit_code}"
        f" {job.exit_message or ''}".rstrip(),
        f"runtime_status: {job.runtime_status}",
        "history:",
        *(f"  {e.get('time', '')} {e.get('event', '')} {e.get('state', '')} {e.get('phase') or ''} "
          f"{e.get('description') or ''}".rstrip() for e in m.store.history(job_id)[-25:]),
    ]
    for component in _components(job):
        try:
            text = await asyncio.wait_for(m.logs(job_id, component, lines), 10)
        except Exception as exc:
            text = f"(no log: {type(exc).__name__}: {exc})"
        out.append(f"--- last {lines} lines of {component}:")
        out.append(text.rstrip() or "(empty)")
    return "\n".join(out)


def events(m: JobManager, job_id: str, kind: str | None = None) -> list[dict[str, Any]]:
    """The job's history events, of one kind if given."""
    return [e for e in m.store.history(job_id) if kind is None or e["event"] == kind]


async def until(pred: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    """Wait for ``pred()`` to be true, polling, with a deadline; fail saying ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"not met in {timeout:g} s: {what}"
        await asyncio.sleep(0.05)


def unique_job_id(prefix: str) -> str:
    """A job id of its own for each run of a test: clusters are shared, and a log of an earlier run of the
    same test (``--count 2``) must not answer for this one."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def cluster_secrets(secrets_dir: Path, sql_password: str | None, lab_token: str | None) -> dict[str, str]:
    """A running cluster's secrets by name: its Spark secret (read from its properties file), its SQL password
    and its lab token."""
    from sparkdock.cluster import properties

    spark = properties.read(secrets_dir / "cluster.properties")[properties.SECRET_KEY]
    found = {"Spark secret": spark, "SQL password": sql_password or "", "lab token": lab_token or ""}
    assert all(found.values()), "a cluster without one of its secrets"
    return found


def process_table() -> str:
    """``ps -ef`` with whole command lines: what any user of the host sees."""
    return subprocess.run(["ps", "-efww"], capture_output=True, text=True, check=True, timeout=30).stdout


def database_dump(path: str | Path) -> dict[str, str]:
    """A SQLite database as SQL (``.dump``), and its files (the database, its WAL) as raw text: a secret
    written once and updated away may still be in a free page."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        found = {f"the dump of {path}": "\n".join(conn.iterdump())}
    finally:
        conn.close()
    for file in (Path(path), Path(f"{path}-wal")):
        if file.exists():
            found[f"the bytes of {file}"] = file.read_bytes().decode("latin-1")
    return found


@contextlib.contextmanager
def captured_log(*loggers: logging.Logger) -> Iterator[list[str]]:
    """Every record of ``loggers`` (and of ``sparkdock.*``), at every level, as formatted lines: the server log."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record) + (f"\n{record.exc_text}" if record.exc_text else ""))

    handler = Keep(logging.DEBUG)
    sparkdock = logging.getLogger("sparkdock")
    watched = [*loggers, sparkdock, logging.getLogger("tornado")]
    levels = [lg.level for lg in watched]
    for lg in watched:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        for lg, level in zip(watched, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)


def texts_under(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (logs, outputs) by path, as text."""
    return {str(p): p.read_text(errors="replace") for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_no_secret(secrets: Mapping[str, str], texts: Mapping[str, str]) -> None:
    """None of ``secrets`` appears in any of ``texts`` (by where they come from)."""
    assert texts, "nothing to look in"
    for where, text in texts.items():
        for name, value in secrets.items():
            assert value not in text, f"the {name} appears in {where}"


#: A driver that tries to register with the master given as argv[1], as application argv[2], its driver
#: reachable at argv[3]: with no properties file, so without the cluster's secret.
INTRUDER_APP = (
    "import sys\n"
    "from pyspark.sql import SparkSession\n"
    "SparkSession.builder.master(sys.argv[1]).appName(sys.argv[2]).config('spark.driver.host', sys.argv[3])"
    ".config('spark.ui.enabled', 'false').getOrCreate()\n"
)
#: What a driver refused by the master logs (Spark's StandaloneAppClient).
REFUSED = "Failed to connect to master"
def registered_apps(status: Mapping[str, Any]) -> dict[str, str]:
    """The applications a master's ``/json/`` lists, running or completed: id -> name."""
    apps = [*status.get("activeapps", []), *status.get("completedapps", [])]
    return {a["id"]: a["name"] for a in apps}

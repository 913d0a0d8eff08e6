"""Helpers shared by the tests that drive a JobManager directly."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
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
        job = m.get(job_id)
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
    job = m.get(job_id)
    out = [
        f"job {job_id} ({job.name}, {job.kind}) is {job.state}, phase {job.phase!r}, exit code {job.exit_code}"
        f" {job.exit_message or ''}".rstrip(),
        f"runtime_status: {job.runtime_status}",
        "history:",
        *(f"  {e.get('time', '')} {e.get('event', '')} {e.get('state', '')} {e.get('phase') or ''} "
          f"{e.get('description') or ''}".rstrip() for e in m.history(job_id)[-25:]),
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
    return [e for e in m.history(job_id) if kind is None or e["event"] == kind]


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

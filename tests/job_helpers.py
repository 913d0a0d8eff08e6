"""Helpers shared by the tests that drive a JobManager directly."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sparkdock.model.lifecycle import State
from sparkdock.server.manager import JobManager
from sparkdock.server.store import Job


async def wait_for(
    m: JobManager, job_id: str, states: str | set[str], timeout: float = 10.0, interval: float = 0.02
) -> Job:
    """Poll until the job is in one of ``states``; fail with where it is stuck otherwise."""
    wanted = {State(s) for s in ([states] if isinstance(states, str) else states)}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = m.get(job_id)
        if job.state in wanted:
            return job
        await asyncio.sleep(interval)
    job = m.get(job_id)
    raise AssertionError(f"{job_id} ({job.name}) is {job.state} (phase {job.phase}), wanted {wanted}")


def events(m: JobManager, job_id: str, kind: str | None = None) -> list[dict[str, Any]]:
    """The job's history events, of one kind if given."""
    return [e for e in m.history(job_id) if kind is None or e["event"] == kind]

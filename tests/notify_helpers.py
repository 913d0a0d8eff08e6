"""What the notification tests (test_webhooks, test_email) share: a job body on the test double, a REST call on
the pytest-jupyter server, and a wait for a job's deliveries to settle."""

from __future__ import annotations

import asyncio
import json
from typing import Any

H = {"Content-Type": "application/json"}


def job_body(code: str = "", exit_status: int = 0, notifications: list[dict[str, Any]] | None = None,
             name: str = "") -> dict[str, Any]:
    """An automated job on the test double that ends with ``exit_status`` (0: COMPLETE)."""
    fake = json.dumps({"exit_status": exit_status})
    return {"kind": "automated", "name": name, "notifications": notifications or [],
            "application": {"type": "pyspark", "code": f"# fake: {fake}\nprint('hello')\n{code}"},
            "cluster": {"image": "fake/ok"}}


async def call(jp_fetch, method: str, *path: str, body: Any = None) -> tuple[int, Any]:
    """``method sparkdock/api/<path>``: (status, JSON reply)."""
    r = await jp_fetch("sparkdock", "api", *path, method=method, raise_error=False, headers=dict(H),
                       body=None if body is None and method != "POST" else json.dumps(body or {}))
    return r.code, json.loads(r.body) if r.body else None


async def deliveries(jp_fetch, job_id: str) -> list[dict[str, Any]]:
    """The job's deliveries (``GET …/notifications``)."""
    code, reply = await call(jp_fetch, "GET", "jobs", job_id, "notifications")
    assert code == 200, reply
    return reply["deliveries"]


async def settled(jp_fetch, job_id: str, count: int, source: str = "job:") -> list[dict[str, Any]]:
    """The job's deliveries of its own notifications (``source``), once there are ``count`` and none is pending
    (a server's default notification may fire too)."""
    found: list[dict[str, Any]] = []

    async def done() -> bool:
        found[:] = [d for d in await deliveries(jp_fetch, job_id) if d["notification"].startswith(source)]
        return len(found) == count and all(d["status"] != "pending" for d in found)

    deadline = asyncio.get_running_loop().time() + 30
    while not await done():
        assert asyncio.get_running_loop().time() < deadline, f"deliveries of {job_id} did not settle: {found}"
        await asyncio.sleep(0.05)
    return found

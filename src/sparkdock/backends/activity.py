"""What tells whether someone uses a cluster, read from its endpoints (for the idle timeout).

* The SQL endpoint: the Thrift Server's application UI says how many sessions are open and how many
  statements run (``/sqlserver/``), and when each statement ended (``/api/v1/applications/<id>/sql``). The health
  loop's probe is a bare TCP connection: it opens no session, so it never counts as use.
* The lab: ``/api/status`` (its ``last_activity``: kernels, terminals and authenticated API calls) and
  ``/api/kernels`` (a ``busy`` kernel is in use). Both are read with the lab's token and ``no_track_activity``,
  so that reading them is not activity itself.

:func:`read_sql_activity` runs where the Thrift Server's UI can be reached: in the server for the local backend,
and inside the SQL container for Docker (:func:`sql_activity_script`, through ``docker exec``: its UI port is not
published).
"""

from __future__ import annotations

import inspect
import json
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class SqlActivity:
    """What the Thrift Server says of its use."""

    sessions: int
    """Open JDBC/ODBC sessions."""
    running: int
    """Statements running now."""
    last_statement_end: float | None = None
    """When the last finished statement ended (epoch seconds), if any ran."""

    @property
    def in_use(self) -> bool:
        """A session is open or a statement runs."""
        return self.sessions > 0 or self.running > 0


@dataclass(frozen=True)
class LabActivity:
    """What the lab says of its use."""

    busy_kernels: int
    last_activity: float | None
    """The lab's ``last_activity`` (epoch seconds)."""

    @property
    def in_use(self) -> bool:
        """A kernel is busy."""
        return self.busy_kernels > 0


def read_sql_activity(ui: str, timeout: float = 10.0) -> dict[str, Any]:
    """``{"sessions", "running", "last_statement_end"}`` from the Thrift Server's application UI at ``ui``.

    Self-contained (standard library only): its source also runs inside a SQL container."""
    import json as _json
    import re as _re
    import urllib.request as _req
    from datetime import datetime as _dt

    def get(path: str) -> str:
        with _req.urlopen(ui.rstrip("/") + path, timeout=timeout) as r:
            return r.read().decode("utf-8", "replace")

    page = " ".join(get("/sqlserver/").split())
    found = _re.search(r"(\d+) session\(s\) are online, running (\d+) SQL statement\(s\)", page)
    if found is None:
        raise ValueError("the Thrift Server's page does not say how many sessions are online")
    last_end = None
    for app in _json.loads(get("/api/v1/applications")):
        rows = _json.loads(get(f"/api/v1/applications/{app['id']}/sql?details=false&planDescription=false"
                               "&length=100000"))
        for row in rows:
            if row.get("status") == "RUNNING" or not row.get("submissionTime"):
                continue
            start = _dt.strptime(row["submissionTime"].replace("GMT", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z")
            end = start.timestamp() + (row.get("duration") or 0) / 1000
            last_end = end if last_end is None else max(last_end, end)
    return {"sessions": int(found.group(1)), "running": int(found.group(2)), "last_statement_end": last_end}


def sql_activity_script(ui: str, timeout: float = 10.0) -> list[str]:
    """A ``python3 -c`` command that prints :func:`read_sql_activity`'s answer as JSON (run in a container)."""
    source = inspect.getsource(read_sql_activity)
    call = f"import json\nprint(json.dumps(read_sql_activity({ui!r}, {timeout!r})))\n"
    return ["python3", "-c", f"from typing import Any\n{source}\n{call}"]


def sql_activity_of(answer: dict[str, Any]) -> SqlActivity:
    """The :class:`SqlActivity` of :func:`read_sql_activity`'s answer."""
    return SqlActivity(int(answer["sessions"]), int(answer["running"]), answer.get("last_statement_end"))


def _epoch(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC).timestamp()


def read_lab_activity(lab_url: str, token: str, timeout: float = 10.0) -> LabActivity:
    """The lab's busy kernels and last activity (blocking; run it in a thread)."""
    base = lab_url.rstrip("/")
    if base.endswith("/lab"):
        base = base[: -len("/lab")]

    def get(path: str) -> Any:
        req = urllib.request.Request(f"{base}{path}?no_track_activity=1",
                                     headers={"Authorization": f"token {token}"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read().decode("utf-8", "replace"))

    status = get("/api/status")
    kernels = get("/api/kernels")
    times = [_epoch(status.get("last_activity"))] + [_epoch(k.get("last_activity")) for k in kernels]
    known = [t for t in times if t is not None]
    return LabActivity(sum(1 for k in kernels if k.get("execution_state") == "busy"),
                       max(known) if known else None)

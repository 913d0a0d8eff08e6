"""Pure HTML/text rendering of jobs, shared by the widgets and the handles' ``_repr_html_``."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from typing import Any

from sparkdock.model.lifecycle import STYLES, State

#: Start-up steps of an interactive cluster, in order (phase prefix → step number).
STARTUP_STEPS: list[tuple[str, str]] = [
    ("Queued", "queued"),
    ("CheckingImage", "checking the image / runtime"),
    ("CreatingContainers", "creating containers / processes"),
    ("StartingMaster", "starting the master"),
    ("WaitingForWorkers", "waiting for workers"),
    ("StartingSQLEndpoint", "starting the SQL endpoint"),
    ("StartingLab", "starting the lab"),
    ("Running", "running"),
]
_STEP_OF = {
    "CheckingImage": 1,
    "CheckingRuntime": 1,
    "PullingImage": 1,
    "BuildingImage": 1,
    "CreatingNetwork": 2,
    "CreatingContainers": 2,
    "StartingProcesses": 2,
    "StartingMaster": 3,
    "WaitingForWorkers": 4,
    "StartingSQLEndpoint": 5,
    "StartingLab": 6,
}
STARTUP_TOTAL = len(STARTUP_STEPS) - 1
_WORKERS_RE = re.compile(r"WaitingForWorkers\s+(\d+)\s*/\s*(\d+)")


def esc(value: Any) -> str:
    """HTML-escape anything."""
    return html.escape("" if value is None else str(value))


def state_hex(state: str) -> str:
    """The colour of ``state`` (lifecycle.STYLES)."""
    try:
        return STYLES[State(state)].hex
    except (ValueError, KeyError):
        return "#9e9e9e"


def badge(state: str) -> str:
    """A coloured state badge."""
    return (
        f'<span class="sparkdock-badge" style="background:{state_hex(state)};color:white;'
        f'padding:1px 8px;border-radius:10px;font-weight:600;font-size:90%">{esc(state)}</span>'
    )


def startup_progress(job: dict[str, Any]) -> tuple[float, str]:
    """How far an interactive job is through its start-up steps: ``(0..STARTUP_TOTAL, label)``."""
    state, phase = job.get("state"), job.get("phase") or ""
    if state == "RUNNING":
        return float(STARTUP_TOTAL), "ready"
    if state in ("UNKNOWN", "QUEUED"):
        return 0.0, phase or "queued"
    if state != "INITIALIZING":
        return 0.0, phase or str(state)
    m = _WORKERS_RE.search(phase)
    if m:
        k, n = int(m.group(1)), max(int(m.group(2)), 1)
        return 3 + k / n, phase
    step = _STEP_OF.get(phase.split()[0] if phase else "", 0)
    return float(step), phase or "initializing"


def fmt_duration(seconds: float | None) -> str:
    """``1h02m``, ``3m05s``, ``12s``."""
    if seconds is None:
        return ""
    s = int(max(seconds, 0))
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def _t(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def runtime_seconds(job: dict[str, Any]) -> float | None:
    """Seconds between start (or creation) and end (or now)."""
    start = _t(job.get("started_at")) or None
    if start is None:
        return None
    end = _t(job.get("ended_at")) or datetime.now(UTC)
    return (end - start).total_seconds()


def runtime_status_html(job: dict[str, Any]) -> str:
    """The runtime status, error and warning first and prominent."""
    rs = job.get("runtime_status") or {}
    parts = []
    if rs.get("error"):
        parts.append(f'<div style="color:#b71c1c;font-weight:700">&#9888; error: {esc(rs["error"])}</div>')
    if rs.get("warning"):
        parts.append(
            f'<div style="color:#e65100;font-weight:600">&#9888; warning: {esc(rs["warning"])}</div>'
        )
    if rs.get("activity"):
        parts.append(f'<div style="color:#455a64">&#8635; {esc(rs["activity"])}</div>')
    return "".join(parts)


def flags(job: dict[str, Any]) -> str:
    """Short runtime-status flags for tables: ``E`` error, ``W`` warning, ``A`` activity."""
    rs = job.get("runtime_status") or {}
    return "".join(f for f, k in (("E", "error"), ("W", "warning"), ("A", "activity")) if rs.get(k))


def failure_html(job: dict[str, Any], info: dict[str, Any] | None) -> str:
    """Exit code, message, and the catalog's description and action."""
    if job.get("exit_code") is None:
        return ""
    out = (
        f'<div style="border-left:4px solid {state_hex(job.get("state", ""))};padding-left:6px">'
        f"<b>Exit code {esc(job['exit_code'])}</b>: {esc(job.get('exit_message'))}"
    )
    if info:
        out += f"<br><i>{esc(info.get('description'))}</i><br><b>Action:</b> {esc(info.get('action'))}"
    return out + "</div>"


def ended_html(job: dict[str, Any]) -> str:
    """Why an interactive cluster ended by itself (its idle timeout or max lifetime), or ``""``."""
    cluster = (job.get("spec") or {}).get("cluster") or {}
    phase = job.get("phase")
    if job.get("state") != "COMPLETE" or phase not in ("IdleTimeout", "MaxLifetime"):
        return ""
    def seconds(key: str) -> str:
        value = cluster.get(key)
        return f"{value:g} s" if isinstance(value, int | float) else "its limit"

    if phase == "IdleTimeout":
        text = f"Ended: nobody used it for {seconds('idle_timeout')} (idle_timeout)."
    else:
        text = f"Ended: it reached its max_lifetime of {seconds('max_lifetime')}."
    return f'<div style="border-left:4px solid {state_hex("COMPLETE")};padding-left:6px">{esc(text)}</div>'


# JupyterLab's reset leaves links inside widget HTML unstyled (they look like plain text): style them inline.
_LINK_STYLE = "color:#1565c0;text-decoration:underline"


def _link(url: Any) -> str:
    u = esc(url)
    return f'<a href="{u}" target="_blank" rel="noopener" style="{_LINK_STYLE}">{u}</a>'


def endpoints_html(job: dict[str, Any]) -> str:
    """JDBC URL and lab/Spark UI links."""
    eps = job.get("endpoints") or {}
    parts = []
    if eps.get("sql"):
        parts.append(f"JDBC: <code>{esc(eps['sql'].get('jdbc_url'))}</code>")
    if eps.get("lab"):
        parts.append(f"Lab: {_link(eps['lab'].get('url'))}")
    if eps.get("spark_ui"):
        parts.append(f"Spark UI: {_link(eps['spark_ui'].get('url'))}")
    return "<br>".join(parts)


def job_html(job: dict[str, Any], info: dict[str, Any] | None = None) -> str:
    """A static HTML card of a job (for frontends without widgets)."""
    head = (
        f"{badge(job.get('state', ''))} <b>{esc(job.get('kind'))} job {esc(job.get('id'))}</b> "
        f"{esc(job.get('name'))}" + (f" &middot; {esc(job.get('phase'))}" if job.get("phase") else "")
    )
    body = [head, runtime_status_html(job), endpoints_html(job), failure_html(job, info)]
    return '<div class="sparkdock-job">' + "".join(f"<div>{b}</div>" for b in body if b) + "</div>"


def history_html(events: list[dict[str, Any]]) -> str:
    """A job's history as a vertical timeline."""
    rows = []
    for ev in events:
        colour = state_hex(ev.get("state", ""))
        prog = ev.get("progress")
        extra = f" <small>{esc(prog)}</small>" if prog else ""
        rows.append(
            f'<div style="border-left:3px solid {colour};margin-left:4px;padding:1px 8px">'
            f"<small>{esc((ev.get('time') or '')[11:23])}</small> <b>{esc(ev.get('event'))}</b> "
            f"{badge(ev.get('state', ''))} {esc(ev.get('phase') or '')} "
            f'<span style="white-space:pre-wrap">{esc(ev.get("description") or "")}</span>{extra}</div>'
        )
    return "".join(rows) or "<i>no events</i>"


def jobs_table_html(jobs: list[dict[str, Any]], selected: str | None = None) -> str:
    """A table of jobs: id, kind, name, state badge, phase, exit code, runtime, flags."""
    head = "".join(
        f"<th style='text-align:left;padding:2px 6px'>{h}</th>"
        for h in ("id", "kind", "name", "state", "phase", "exit", "runtime", "flags")
    )
    rows = []
    for j in jobs:
        bg = "background:#e3f2fd;" if j.get("id") == selected else ""
        fl = flags(j)
        fl_html = f'<span style="color:#b71c1c;font-weight:700">{esc(fl)}</span>' if "E" in fl else esc(fl)
        cells = [
            esc(j.get("id")),
            esc(j.get("kind")),
            esc(j.get("name")),
            badge(j.get("state", "")),
            esc(j.get("phase") or ""),
            esc("" if j.get("exit_code") is None else j["exit_code"]),
            esc(fmt_duration(runtime_seconds(j))),
            fl_html,
        ]
        rows.append(
            f"<tr style='{bg}'>" + "".join(f"<td style='padding:2px 6px'>{c}</td>" for c in cells) + "</tr>"
        )
    return (
        f"<table class='sparkdock-jobs'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


#: the colour of a delivery's status, or of an attempt's outcome
_DELIVERY_HEX = {"delivered": "#43a047", "pending": "#f9a825", "retry": "#f9a825", "failed": "#e53935"}
ATTEMPT_HEAD = ["EVENT", "CHANNEL", "TO", "ATTEMPT", "TIME", "CODE", "LATENCY", "OUTCOME", "DETAIL"]


def text_table(rows: list[list[str]] | list[tuple[str, ...]], head: list[str]) -> str:
    """Plain-text columns (the CLI's tables, :class:`~sparkdock.notebook.client.ClusterOptions`' repr)."""
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in [head, *rows])


def attempt_rows(deliveries: list[dict[str, Any]]) -> list[list[str]]:
    """One row per attempt of each delivery (a delivery not tried yet: one row saying when it will be), in the
    columns of :data:`ATTEMPT_HEAD`; shared by the monitor and ``sparkdock notifications``."""
    rows = []
    for d in deliveries:
        head = [d.get("event") or "", d.get("channel") or "", d.get("url") or ""]
        attempts = d.get("attempts") or []
        for a in attempts:
            code = a.get("status_code")
            latency = a.get("latency_ms")
            rows.append([*head, str(a.get("number", "")), (a.get("time") or "")[:19].replace("T", " "),
                         "" if code is None else str(code), "" if latency is None else f"{latency} ms",
                         a.get("outcome") or "", a.get("error") or ""])
        status = d.get("status") or ""
        if status == "pending":
            when = (d.get("next_attempt_at") or "")[:19].replace("T", " ")
            rows.append([*head, str(len(attempts) + 1), when, "", "", "pending", "next attempt (UTC)"])
        elif not attempts:
            rows.append([*head, "-", "", "", "", status, d.get("last_error") or ""])
    return rows


def deliveries_html(deliveries: list[dict[str, Any]]) -> str:
    """A job's notifications (webhooks and emails): every attempt, with its outcome's colour."""
    if not deliveries:
        return "<i>no notifications sent</i>"
    head = "".join(f"<th style='text-align:left;padding:2px 6px'>{esc(h.lower())}</th>" for h in ATTEMPT_HEAD)
    body = []
    for row in attempt_rows(deliveries):
        colour = _DELIVERY_HEX.get(row[7], "#9e9e9e")
        cells = [esc(c) for c in row]
        cells[7] = f'<span style="color:{colour};font-weight:700">{cells[7]}</span>'
        body.append("<tr>" + "".join(f"<td style='padding:2px 6px'>{c}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"

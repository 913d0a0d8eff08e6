"""Which notifications an event of a job triggers, and what each one sends (seed 002).

The store calls the :class:`NotificationPlanner` inside the transaction of every state change
(:mod:`sparkdock.server.outbox`). A job's own notifications (``spec.notifications``, keys ``job:<i>``) and the
server's defaults (``SparkDockApp.default_notifications``, keys ``server:<i>``) are matched against the event:
the state the job enters, or ``*`` for any. One that is not ``persistent`` fires once: on the first match.

A webhook's URL has its template variables rendered with the values of :func:`variables` (percent-encoded); its
body is the notification's own ``payload`` with its variables rendered, or by default::

    {"type": "job.<event>", "timestamp": ..., "data": {"event": ..., "job": <the job JSON>, "links": {...}}}

The job JSON of a delivery leaves out the application's code and the job's notifications (their URLs may hold
the owner's secrets); job JSON never holds credentials.

An email notification (its ``url`` an email address) gets the message of :func:`.mailer.compose` instead: the
subject and the text are written now, so that a retry sends the same message.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sparkdock.model import templates
from sparkdock.model.specs import NotificationSpec, email_address
from sparkdock.server.outbox import PlannedDelivery
from sparkdock.server.store import Job
from sparkdock.server.webhooks.mailer import compose

API = "sparkdock/api/jobs"


def variables(job: Job, event: str, base_url: str) -> dict[str, str]:
    """The value of every template variable for ``event`` of ``job`` (``base_url``: the server's URL, ending
    with ``/``)."""
    archive_path = f"{API}/{job.id}/logs"
    return {
        "UUID": job.id,
        "EVENT": event,
        "JOB_STATUS": job.state.value,
        "JOB_URL": f"{base_url}{API}/{job.id}",
        "JOB_ID": job.id,
        "JOB_SYSTEM": job.backend or "",
        "JOB_NAME": job.name,
        "JOB_START_TIME": job.started_at or "",
        "JOB_END_TIME": job.ended_at or "",
        "JOB_SUBMIT_TIME": job.created_at,
        "JOB_ARCHIVE_PATH": archive_path,
        "JOB_ARCHIVE_URL": f"{base_url}{archive_path}",
        "JOB_ERROR": (job.exit_message or "") if job.exit_code is not None else "",
        "EXIT_CODE": "" if job.exit_code is None else str(job.exit_code),
        "OWNER": job.owner or "",
    }


def job_payload(job: Job) -> dict[str, Any]:
    """The job JSON a delivery carries: no application code, no notifications."""
    data = job.to_event_json()
    data["spec"] = {k: v for k, v in data["spec"].items() if k != "notifications"}
    return data


class NotificationPlanner:
    """The store's ``planner`` (see the module's docstring).

    Args:
        defaults: notifications added to every job (validated server configuration).
        base_url: returns the server's URL as users reach it, ending with ``/`` (asked at each event: the port
            of a server is known only once it listens).
    """

    def __init__(self, defaults: list[NotificationSpec], base_url: Callable[[], str]) -> None:
        self.defaults = [d.model_dump() for d in defaults]
        self.base_url = base_url
        self.planned = 0
        """How many deliveries were planned so far (the manager wakes the dispatcher when it grows)."""

    def __call__(self, job: Job, event: str, fired: set[str]) -> list[PlannedDelivery]:
        """The deliveries ``event`` of ``job`` triggers."""
        candidates = [(f"job:{i}", n) for i, n in enumerate(job.spec.get("notifications") or [])]
        candidates += [(f"server:{i}", n) for i, n in enumerate(self.defaults)]
        out: list[PlannedDelivery] = []
        values: dict[str, str] | None = None
        for key, n in candidates:
            if n.get("event") not in ("*", event) or (not n.get("persistent") and key in fired):
                continue
            if values is None:
                base = self.base_url()
                values = variables(job, event, base if base.endswith("/") else base + "/")
            address = email_address(n["url"])
            if address is not None:
                out.append(PlannedDelivery(key, "email", f"mailto:{address}",
                                           json.dumps(compose(job, event, values, address))))
                continue
            if n.get("payload") is not None:
                body: Any = templates.render_json(n["payload"], values)
            else:
                body = {"type": f"job.{event.lower()}", "timestamp": job.updated_at, "data": {
                    "event": event, "job": job_payload(job),
                    "links": {"job": values["JOB_URL"], "archive": values["JOB_ARCHIVE_URL"]}}}
            out.append(PlannedDelivery(key, "webhook", templates.render(n["url"], values, url=True),
                                       json.dumps(body, separators=(",", ":"))))
        self.planned += len(out)
        return out

"""The notebook side's typed errors: what :class:`~sparkdock.notebook.client.Client` raises, by HTTP status.

Kept apart from the client so that the widgets can catch them without importing the client.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = [
    "AuthError",
    "Conflict",
    "InvalidSpec",
    "JobFailed",
    "NotFound",
    "QuotaExceeded",
    "RequestTimeout",
    "ServerUnreachable",
    "SparkdockError",
    "WaitTimeout",
    "error_for",
]


class _FailedJob(Protocol):
    id: str
    state: str | None
    exit_code: int | None
    exit_message: str | None

    def exit_info(self) -> dict[str, Any] | None: ...


class SparkdockError(Exception):
    """Base of every sparkdock client error. ``status`` is the HTTP status (``None`` when not HTTP)."""

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.body = body


class NotFound(SparkdockError):
    """404: no such job (or log component)."""


class Conflict(SparkdockError):
    """409: the job is not in a state that allows the request (e.g. SQL on a cluster that is not RUNNING)."""


class InvalidSpec(SparkdockError):
    """400/422: the request cannot run. ``errors`` lists ``{"field", "message"}`` naming each bad field."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        body: Any = None,
        errors: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(message, status, body)
        self.errors: list[dict[str, str]] = list(errors or [])

    @property
    def fields(self) -> dict[str, str]:
        """Field name → message (the empty name holds errors not tied to a field)."""
        out: dict[str, str] = {}
        for e in self.errors:
            key = e.get("field") or ""
            out[key] = f"{out[key]}; {e.get('message', '')}" if key in out else e.get("message", "")
        return out


class AuthError(SparkdockError):
    """401/403: the token is missing, wrong, or not allowed."""


class QuotaExceeded(SparkdockError):
    """429: the queue is full."""


class ServerUnreachable(SparkdockError, ConnectionError):
    """The sparkdock server could not be reached: refused, no route, a name that does not resolve."""


class RequestTimeout(SparkdockError, TimeoutError):
    """The server took longer than ``timeout`` seconds to answer a request (a slow SQL statement, for one)."""

    def __init__(self, message: str, timeout: float) -> None:
        super().__init__(message)
        self.timeout = timeout


class WaitTimeout(SparkdockError, TimeoutError):
    """:meth:`Job.wait` timed out after ``timeout`` seconds; ``state`` is the job's last known state."""

    def __init__(self, message: str, job_id: str, state: str | None, timeout: float | None = None) -> None:
        super().__init__(message)
        self.job_id, self.state, self.timeout = job_id, state, timeout


class JobFailed(SparkdockError):
    """The job ended in a failure state while it was waited for.

    Carries ``state``, ``exit_code``, ``exit_message`` and, from the exit-code catalog, ``description`` and
    ``action`` (what to do about it).
    """

    def __init__(self, job: _FailedJob) -> None:
        self.job = job
        self.job_id = job.id
        self.state = job.state
        self.exit_code = job.exit_code
        self.exit_message = job.exit_message
        entry = job.exit_info() or {}
        self.description: str | None = entry.get("description")
        self.action: str | None = entry.get("action")
        msg = f"job {job.id} ended {self.state}"
        if self.exit_code is not None:
            msg += f" with exit code {self.exit_code}"
        if self.exit_message:
            msg += f": {self.exit_message}"
        if self.action:
            msg += f" (action: {self.action})"
        super().__init__(msg)


def error_for(status: int, body: Any, fallback: str) -> SparkdockError:
    message = body.get("message") if isinstance(body, dict) else None
    message = message or fallback or f"HTTP {status}"
    if status == 404:
        return NotFound(message, status, body)
    if status == 409:
        return Conflict(message, status, body)
    if status in (400, 422):
        errors = body.get("errors") if isinstance(body, dict) else None
        return InvalidSpec(message, status, body, errors=errors if isinstance(errors, list) else None)
    if status in (401, 403):
        return AuthError(message, status, body)
    if status == 429:
        return QuotaExceeded(message, status, body)
    return SparkdockError(message, status, body)

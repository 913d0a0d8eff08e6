"""The outcome of one attempt of a delivery, whatever its channel (webhook or email)."""

from __future__ import annotations

from dataclasses import dataclass

#: an attempt's outcomes: sent; failed now but worth another try; failed for good
DELIVERED, RETRY, FAILED = "delivered", "retry", "failed"


@dataclass
class AttemptResult:
    """What one attempt gave: its outcome, the receiver's status (an HTTP status or an SMTP reply code), an
    error, a delay the receiver asked for, and how long the attempt took."""

    outcome: str
    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None
    latency_ms: int | None = None
    """of the HTTP request or the SMTP session alone (None: nothing was sent)"""

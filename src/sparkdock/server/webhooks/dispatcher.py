"""The dispatcher: sends the outbox's pending deliveries (webhooks and emails), retries them on a schedule,
records every attempt.

One asyncio task (started by the manager) reads the pending deliveries, sends each one that is due, and sleeps
until the next one is due or until the manager says a state change planned new ones. Each attempt is a POST of
the delivery's body, signed with the server's secrets (:mod:`.signing`), through an HTTP client whose resolver
is the SSRF guard (:mod:`.guard`), with bounded timeouts and no redirects. Its outcome:

- a 2xx: ``delivered``; it is never sent again;
- a 429, a 5xx, a timeout or a network error: retried after the next delay of the schedule (Standard Webhooks':
  5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h), with jitter, or later if a 429/503 says ``Retry-After``; when the
  schedule is used up, ``failed``;
- a refusal of the guard, a redirect or another 4xx: ``failed`` at once (sending it again would not help).

An email delivery is handed to the :class:`~.mailer.Mailer` instead, and goes through the same schedule and
records (an SMTP 4xx is retried, a 5xx is final).

Delivery is at least once: a delivery whose attempt was cut short (a crash before its 2xx was recorded) is sent
again with the same ``webhook-id``, by which receivers deduplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.simple_httpclient import SimpleAsyncHTTPClient

from sparkdock._version import __version__
from sparkdock.server.db import AsyncStore
from sparkdock.server.events import call_on_loop
from sparkdock.server.outbox import Delivery, origin
from sparkdock.server.store import parse_time, utc_text, utcnow
from sparkdock.server.webhooks import signing
from sparkdock.server.webhooks.attempt import AttemptResult as _Result
from sparkdock.server.webhooks.guard import GuardedResolver, TargetGuard, TargetRefused
from sparkdock.server.webhooks.mailer import Mailer, SmtpSettings

log = logging.getLogger(__name__)

#: Standard Webhooks' retry schedule (seconds after the previous attempt)
STANDARD_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
#: bytes of a receiver's answer kept for the attempt's record
KEPT_ANSWER = 300


@dataclass(frozen=True)
class DeliveryPolicy:
    """How deliveries are made (from the extension's traitlets)."""

    schedule: tuple[float, ...] = STANDARD_SCHEDULE
    """delays between attempts: a delivery is tried at most ``len(schedule) + 1`` times"""
    jitter: float = 0.2
    """each delay is multiplied by a random factor in [1 - jitter, 1 + jitter]"""
    timeout: float = 10.0
    """seconds to connect, and seconds for the whole request"""
    secret_grace: float = 24 * 3600.0
    """seconds a rotated-out secret keeps signing, next to the new one"""
    concurrency: int = 8
    """attempts in flight at once"""


class Dispatcher:
    """Sends the outbox (see the module's docstring)."""

    def __init__(self, db: AsyncStore, guard: TargetGuard, policy: DeliveryPolicy | None = None,
                 mailer: Mailer | None = None, on_attempt: Callable[[Delivery], None] | None = None) -> None:
        self.db = db
        self.guard = guard
        self.policy = policy or DeliveryPolicy()
        self.mailer = mailer or Mailer(SmtpSettings())
        self.on_attempt = on_attempt
        """called with the delivery after each recorded attempt (the manager publishes it)"""
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._hold: dict[str, datetime] = {}  # deliveries whose record failed: not before this time
        self._http: SimpleAsyncHTTPClient | None = None

    def kick(self) -> None:
        """Look at the outbox now (callable from any thread)."""
        if self._wake is not None:
            call_on_loop(self._loop, self._wake.set)

    async def run(self) -> None:
        """Send what is due, then wait for the next due time or a kick; until cancelled."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._http = SimpleAsyncHTTPClient(force_instance=True, resolver=GuardedResolver(guard=self.guard),
                                           max_clients=self.policy.concurrency)
        try:
            while True:
                self._wake.clear()
                try:
                    wait = await self._round()
                except Exception:
                    log.exception("sparkdock: the notification outbox cannot be read; trying again in 5 s")
                    wait = 5.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
        finally:
            for task in list(self._inflight.values()):
                task.cancel()
            if self._inflight:
                await asyncio.wait(list(self._inflight.values()), timeout=5)
            self._http.close()

    async def _round(self) -> float | None:
        """Start the attempts that are due; the seconds until the next one (None: nothing pending)."""
        pending = await self.db.call(self.db.store.pending_deliveries, 500)
        now = datetime.now(UTC)
        soonest: datetime | None = None
        for d in pending:
            if d.id in self._inflight:
                continue
            due = parse_time(d.next_attempt_at) or now
            due = max(due, self._hold.get(d.id, due))
            if due > now:
                soonest = due if soonest is None else min(soonest, due)
            elif len(self._inflight) < self.policy.concurrency:  # else: a finishing attempt kicks the loop
                self._inflight[d.id] = asyncio.get_running_loop().create_task(self._deliver(d))
        return None if soonest is None else max((soonest - now).total_seconds(), 0.0)

    async def _deliver(self, d: Delivery) -> None:
        try:
            started = utcnow()
            try:
                result = await self._attempt(d)
            except Exception as exc:  # the store could not give the secrets: nothing was sent; try again later
                log.warning("sparkdock: delivery %s could not be attempted (%s); it stays pending", d.id, exc)
                self._hold[d.id] = datetime.now(UTC) + timedelta(seconds=5)
                return
            number = d.attempts + 1
            if result.outcome == "retry" and d.attempts >= len(self.policy.schedule):
                result.outcome = "failed"
                result.error = f"gave up after {number} attempts: {result.error}"
            next_at, delay = None, 0.0
            if result.outcome == "retry":
                delay = self._delay(d.attempts, result.retry_after)
                next_at = utc_text(datetime.now(UTC) + timedelta(seconds=delay))
            history = _describe(d, number, result, delay)
            try:
                recorded = await self.db.call(
                    self.db.store.record_attempt, d.id, time=started, outcome=result.outcome,
                    status_code=result.status_code, latency_ms=result.latency_ms, error=result.error,
                    next_attempt_at=next_at, history=history)
                self._hold.pop(d.id, None)
                if self.on_attempt is not None:
                    try:
                        self.on_attempt(recorded)
                    except Exception:
                        log.exception("sparkdock: the attempt of delivery %s could not be published", d.id)
            except Exception as exc:  # a full disk: keep it pending, try again later (same webhook-id)
                log.warning("sparkdock: attempt %d of delivery %s could not be recorded (%s); it stays pending",
                            number, d.id, exc)
                self._hold[d.id] = datetime.now(UTC) + timedelta(seconds=5)
            if result.outcome == "failed":
                log.warning("sparkdock: %s %s of job %s failed: %s", d.channel, d.id, d.job_id, result.error)
        finally:
            self._inflight.pop(d.id, None)
            self.kick()

    def _delay(self, done: int, retry_after: float | None) -> float:
        """The delay after the ``done``-th attempt (0-based index in the schedule), with jitter; at least what a
        ``Retry-After`` asked (bounded by the schedule's longest delay)."""
        base = self.policy.schedule[done]
        delay = base * random.uniform(1 - self.policy.jitter, 1 + self.policy.jitter)
        if retry_after is not None:
            delay = max(delay, min(retry_after, max(self.policy.schedule)))
        return delay

    async def _attempt(self, d: Delivery) -> _Result:
        """One attempt of the delivery: an email, or a POST; raises only when the store cannot give the signing
        secrets (nothing is sent then)."""
        assert self._http is not None
        if d.channel == "email":
            return await self.mailer.send(d)
        try:
            parts = urlsplit(d.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                return _Result("failed", error=f"not an http(s) URL: {origin(d.url)}")
        except ValueError as exc:
            return _Result("failed", error=f"not a valid URL: {exc}")
        now = utcnow()
        since = utc_text(datetime.now(UTC) - timedelta(seconds=self.policy.secret_grace))
        secrets = await self.db.call(self.db.store.signing_secrets, now, since)
        body = d.payload.encode()
        headers = {"Content-Type": "application/json", "User-Agent": f"sparkdock-webhooks/{__version__}",
                   **signing.headers(secrets, d.id, int(time.time()), body)}
        answer = bytearray()

        def keep(chunk: bytes) -> None:
            if len(answer) < KEPT_ANSWER:
                answer.extend(chunk[:KEPT_ANSWER - len(answer)])

        request = HTTPRequest(d.url, method="POST", body=body, headers=headers, follow_redirects=False,
                              connect_timeout=self.policy.timeout, request_timeout=self.policy.timeout,
                              streaming_callback=keep, decompress_response=False)
        t0 = time.monotonic()
        result = await self._post(request, answer)
        result.latency_ms = int((time.monotonic() - t0) * 1000)
        return result

    async def _post(self, request: HTTPRequest, answer: bytearray) -> _Result:
        """Send the request and say what its answer means (``answer``: the start of the body, kept as it
        streams in)."""
        assert self._http is not None
        try:
            response = await self._http.fetch(request, raise_error=False)
        except TargetRefused as exc:
            return _Result("failed", error=str(exc))
        except HTTPClientError as exc:  # 599: a timeout or a closed connection
            return _Result("retry", error=f"{exc.message or 'no answer'} (after at most {self.policy.timeout:g} s)"
                           if exc.code == 599 else str(exc))
        except Exception as exc:  # refused connection, reset, TLS failure, DNS failure
            return _Result("retry", error=f"{type(exc).__name__}: {exc}")
        code = response.code
        text = bytes(answer).decode(errors="replace").strip()
        if 200 <= code < 300:
            return _Result("delivered", status_code=code)
        what = f"HTTP {code}" + (f": {text[:200]}" if text else "")
        if code == 429 or code >= 500:
            return _Result("retry", status_code=code, error=what, retry_after=_retry_after(response.headers))
        if 300 <= code < 400:
            location = response.headers.get("Location", "")
            return _Result("failed", status_code=code, error=f"HTTP {code}: redirects are not followed "
                           f"(to {origin(location) if '://' in location else location or '?'})")
        return _Result("failed", status_code=code, error=what)


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After", "")
    try:
        return max(float(value), 0.0) if value else None
    except ValueError:
        return None


def _describe(d: Delivery, number: int, result: _Result, delay: float) -> str:
    """The history line of one attempt (a webhook's URL as its origin only: its path or query may hold a
    secret)."""
    head = f"{d.channel} {d.event} to {d.target} (attempt {number})"
    if result.outcome == "delivered":
        answer = "SMTP" if d.channel == "email" else "HTTP"
        return f"{head}: delivered, {answer} {result.status_code} in {result.latency_ms} ms"
    if result.outcome == "retry":
        return f"{head}: {result.error} in {result.latency_ms} ms; next attempt in {delay:.0f} s"
    return f"{head}: failed: {result.error}"

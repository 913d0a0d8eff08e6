"""Thin tornado handlers of the public REST contract (DESIGN.md) and the event WebSocket.

Each handler parses the request, calls the :class:`~sparkdock.server.manager.JobManager`, and writes JSON. Errors
are always JSON ``{"message": ...}``: 400 for a body that is not JSON, 422 for a spec that cannot run
(with ``errors`` naming each field), 404 for an unknown id, 409 for a wrong state, 413 for a huge body,
429 for a full queue, 503 when the server cannot write its store or files (a full disk; nothing is changed).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.auth.utils import HTTP_METHOD_TO_AUTH_ACTION
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from tornado import web, websocket

from sparkdock._version import __version__
from sparkdock.model import exit_codes
from sparkdock.model.lifecycle import Kind, State, style_catalog
from sparkdock.model.protocol import SLOW_CONSUMER_CLOSE_CODE
from sparkdock.model.specs import SpecError, parse_sql_request
from sparkdock.server import openapi
from sparkdock.server.hiveserver2 import SQLError
from sparkdock.server.manager import JobConflict, JobManager, QuotaExceeded
from sparkdock.server.owners import Caller, OwnerPolicy
from sparkdock.server.store import Job, JobNotFound, StorageUnavailable

AUTH_RESOURCE = "sparkdock:jobs"
MAX_BODY_BYTES = 2 * 1024 * 1024
LOG_COMPONENTS_HELP = "master, worker-N, sql, lab or driver"
#: The send buffer of an event WebSocket (the kernel doubles it): with the queue of ``event_queue_size`` events,
#: it bounds what the server holds for a client that does not read (Linux would otherwise grow it to 4 MB).
EVENT_SOCKET_SNDBUF = 128 * 1024

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class _Reply(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        self.status, self.message, self.extra = status, message, extra
        super().__init__(message)


#: what a full disk, a file-size limit, a quota or a read-only or failing file system raise
_DISK_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EIO}


def json_errors(method: F) -> F:
    """Turn the manager's exceptions into JSON error replies (never a traceback, never a bare 500): a store or
    disk that cannot be written is a 503 (nothing was changed)."""

    @functools.wraps(method)
    async def wrapper(self: SparkDockHandler, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(self, *args, **kwargs)
        except _Reply as r:
            self._error(r.status, r.message, **r.extra)
        except SpecError as e:
            self._error(e.status, str(e), errors=e.errors)
        except JobNotFound as e:
            self._error(404, str(e))
        except JobConflict as e:
            self._error(409, str(e))
        except QuotaExceeded as e:
            self._error(429, str(e))
        except StorageUnavailable as e:
            self._error(503, str(e))
        except OSError as e:
            if e.errno not in _DISK_ERRNOS:
                raise
            self.log.warning("sparkdock: %s", e)
            self._error(503, f"the server cannot write its files ({e.strerror}); free disk space on the server, "
                        "then try again")
        except web.HTTPError:
            raise
        except Exception as e:
            self.log.exception("sparkdock request failed")
            self._error(500, f"internal error: {e.__class__.__name__}: {e}")

    return wrapper  # type: ignore[return-value]


class SparkDockHandler(APIHandler):
    """Base of the REST handlers."""

    auth_resource = AUTH_RESOURCE

    @property
    def manager(self) -> JobManager:
        """The job manager."""
        return self.settings["sparkdock_manager"]

    async def prepare(self) -> None:  # type: ignore[override]
        """Start the manager on first use (also under test servers that skip extension start hooks)."""
        await ensure_async(super().prepare())
        await self.manager.ensure_started()

    def _error(self, status: int, message: str, **extra: Any) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": message, **extra}))

    def _int_arg(self, name: str, default: int | None, lo: int, hi: int) -> int | None:
        raw = self.get_argument(name, None)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise _Reply(400, f"{name} must be an integer") from None
        if not lo <= value <= hi:
            raise _Reply(400, f"{name} must be between {lo} and {hi}")
        return value

    async def _caller(self, action: str | None = None) -> Caller:
        """Who calls, and which jobs they may see (:mod:`sparkdock.server.owners`)."""
        action = action or HTTP_METHOD_TO_AUTH_ACTION[self.request.method.upper()]
        policy: OwnerPolicy = self.settings["sparkdock_owners"]
        return await policy.caller(self, self.current_user, action)

    async def _job(self, job_id: str, action: str | None = None) -> Job:
        """The job, if the caller may see it; a job of someone else is a 404, as if it did not exist."""
        job = await self.manager.get(job_id)
        if not (await self._caller(action)).may_see(job.owner):
            raise JobNotFound(job_id)
        return job


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json_body(raw: bytes) -> Any:
    """The JSON value of a request body, or a 400/413 :class:`_Reply` that says what is wrong: not JSON,
    ``NaN``/``Infinity``, nested deeper than Python's parser goes, or text that is not valid Unicode."""
    if len(raw) > MAX_BODY_BYTES:
        raise _Reply(413, f"request body too large: at most {MAX_BODY_BYTES} bytes")
    try:
        value = json.loads(raw or b"null", parse_constant=_no_constant)
    except RecursionError:
        raise _Reply(400, "request body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise _Reply(400, f"request body is not valid JSON: {e}") from None
    try:  # a lone surrogate (\ud800) parses, but is not text: it could be neither stored nor shown
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise _Reply(400, "request body is not valid Unicode (a lone surrogate escape)") from None
    except RecursionError:
        raise _Reply(400, "request body is nested too deeply") from None
    return value


class _StreamedBody(SparkDockHandler):
    """A handler whose body is received in chunks (``@web.stream_request_body``), so that an oversized one is
    refused before it is buffered: a ``Content-Length`` over :data:`MAX_BODY_BYTES` gets 413 at once (tornado
    then closes the connection without reading the body), and a chunked body stops being kept past it."""

    _chunks: list[bytes]
    _received = 0

    async def prepare(self) -> None:  # type: ignore[override]
        """Refuse a declared oversized body before reading it."""
        self._chunks, self._received = [], 0
        await super().prepare()
        declared = self.request.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            self._error(413, f"request body too large: at most {MAX_BODY_BYTES} bytes")

    def data_received(self, chunk: bytes) -> None:
        """Keep the body while it is within :data:`MAX_BODY_BYTES`; count all of it."""
        self._received += len(chunk)
        if self._received <= MAX_BODY_BYTES:
            self._chunks.append(chunk)

    def _body(self) -> Any:
        if self._received > MAX_BODY_BYTES:  # (the chunk that crossed the limit was not kept)
            raise _Reply(413, f"request body too large: at most {MAX_BODY_BYTES} bytes")
        return parse_json_body(b"".join(self._chunks))


@web.stream_request_body
class JobsHandler(_StreamedBody):
    """``GET/POST sparkdock/api/jobs``."""

    @web.authenticated
    @authorized
    @json_errors
    async def get(self) -> None:
        kind = self.get_argument("kind", None) or None
        state = self.get_argument("state", None) or None
        if kind is not None and kind not in {k.value for k in Kind}:
            raise _Reply(400, "kind must be 'interactive' or 'automated'")
        states = [s.strip() for s in state.split(",")] if state else None
        if states and not set(states) <= {s.value for s in State}:
            raise _Reply(400, f"state must be one of {', '.join(s.value for s in State)}")
        limit = self._int_arg("limit", 100, 1, 1000)
        offset = self._int_arg("offset", 0, 0, 10**9)
        owner = (await self._caller()).owner_filter
        jobs, total = await self.manager.list(kind=kind, states=states, limit=limit, offset=offset, owner=owner)
        self.finish(json.dumps({"jobs": [j.to_json() for j in jobs], "total": total}))

    @web.authenticated
    @authorized
    @json_errors
    async def post(self) -> None:
        job = await self.manager.submit(self._body(), caller=await self._caller())
        self.set_status(201)
        self.set_header("Location", self.request.path.rstrip("/") + "/" + job.id)
        self.finish(json.dumps(job.to_json()))


class JobHandler(SparkDockHandler):
    """``GET/DELETE sparkdock/api/jobs/{id}``."""

    @web.authenticated
    @authorized
    @json_errors
    async def get(self, job_id: str) -> None:
        self.finish(json.dumps((await self._job(job_id)).to_json()))

    @web.authenticated
    @authorized
    @json_errors
    async def delete(self, job_id: str) -> None:
        await self._job(job_id)
        job = await self.manager.cancel(job_id, reason="user")
        self.set_status(202)
        self.finish(json.dumps(job.to_json()))


class StatusHandler(SparkDockHandler):
    """``GET sparkdock/api/jobs/{id}/status``."""

    @web.authenticated
    @authorized
    @json_errors
    async def get(self, job_id: str) -> None:
        job = await self._job(job_id)
        self.finish(json.dumps({"id": job.id, "state": job.state.value, "exit_code": job.exit_code}))


class HistoryHandler(SparkDockHandler):
    """``GET sparkdock/api/jobs/{id}/history``."""

    @web.authenticated
    @authorized
    @json_errors
    async def get(self, job_id: str) -> None:
        await self._job(job_id)
        self.finish(json.dumps({"events": await self.manager.history(job_id)}))


class LogsHandler(SparkDockHandler):
    """``GET sparkdock/api/jobs/{id}/logs?component=&tail=``."""

    @web.authenticated
    @authorized
    @json_errors
    async def get(self, job_id: str) -> None:
        job = await self._job(job_id)
        default = "driver" if job.kind == Kind.AUTOMATED else "master"
        component = self.get_argument("component", default) or default
        tail = self._int_arg("tail", None, 1, 100_000)
        try:
            text = await self.manager.logs(job_id, component, tail)
        except KeyError:
            raise _Reply(404, f"job {job_id} has no component {component!r} ({LOG_COMPONENTS_HELP})") from None
        self.finish(json.dumps({"id": job_id, "component": component, "logs": text}))


@web.stream_request_body
class SQLHandler(_StreamedBody):
    """``POST sparkdock/api/jobs/{id}/sql`` with ``{"statement": ...}``."""

    @web.authenticated
    @authorized
    @json_errors
    async def post(self, job_id: str) -> None:
        await self._job(job_id)
        req = parse_sql_request(self._body())
        try:
            result = await self.manager.sql(job_id, req.statement, req.limit)
        except SQLError as e:
            raise _Reply(400, f"SQL error: {e}") from None
        self.finish(json.dumps(result.to_json()))


class NotificationsHandler(SparkDockHandler):
    """``GET sparkdock/api/jobs/{id}/notifications``: the job's notifications and every delivery attempt."""

    @web.authenticated
    @authorized
    @json_errors
    async def get(self, job_id: str) -> None:
        job = await self._job(job_id)
        self.finish(json.dumps({"id": job.id, "notifications": job.spec.get("notifications") or [],
                                "deliveries": await self.manager.deliveries(job_id)}))


class WebhookSecretHandler(SparkDockHandler):
    """``GET/POST sparkdock/api/webhooks/secret``: the server's webhook signing secret (admins only).

    GET says when it was made and rotated and whether it was shown, never the secret. POST shows a secret once:
    the current one if it was never shown, else a new one that replaces it (the old one keeps signing for
    ``webhook_secret_grace`` seconds). The answer is never cached, and the secret is never logged.
    """

    async def _admin(self) -> None:
        if not (await self._caller()).sees_all:
            raise _Reply(403, "only an admin may read or rotate the webhook signing secret")

    @web.authenticated
    @authorized
    @json_errors
    async def get(self) -> None:
        await self._admin()
        self.finish(json.dumps(await self.manager.webhook_secret_info()))

    @web.authenticated
    @authorized
    @json_errors
    async def post(self) -> None:
        await self._admin()
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(await self.manager.reveal_webhook_secret()))


class CredentialsHandler(SparkDockHandler):
    """``GET sparkdock/api/jobs/{id}/credentials``: the SQL password and lab token of a RUNNING cluster.

    The only response that carries a secret, and only on this explicit request (for beeline, DBeaver or
    opening the lab); it is marked not cacheable and is never logged. Job JSON, history and logs never
    contain credentials. It needs the ``write`` permission on ``sparkdock:jobs`` (whoever holds the password
    can change the cluster's data), and the job must be the caller's own (or the caller an admin).
    """

    @web.authenticated
    @authorized("write")
    @json_errors
    async def get(self, job_id: str) -> None:
        await self._job(job_id, "write")
        creds = await self.manager.credentials(job_id)
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(creds))


class ExitCodesHandler(SparkDockHandler):
    """``GET sparkdock/api/exit-codes``: the catalog."""

    @web.authenticated
    @authorized
    @json_errors
    async def get(self) -> None:
        self.finish(json.dumps(exit_codes.catalog_json()))


class InfoHandler(SparkDockHandler):
    """``GET sparkdock/api/info``: the backend in use and why, capacity, state colours."""

    @web.authenticated
    @authorized
    @json_errors
    async def get(self) -> None:
        self.finish(json.dumps({"version": __version__, **(await self.manager.info()), "states": style_catalog()}))


class ClusterOptionsHandler(SparkDockHandler):
    """``GET sparkdock/api/cluster-options``: what a cluster request may ask (bounds, images) and its defaults."""

    @web.authenticated
    @authorized
    @json_errors
    async def get(self) -> None:
        self.finish(json.dumps(self.manager.cluster_options()))


class OpenAPIHandler(SparkDockHandler):
    """``GET sparkdock/api/openapi.json``: the OpenAPI document of this API (:mod:`sparkdock.server.openapi`)."""

    @web.authenticated
    @authorized
    @json_errors
    async def get(self) -> None:
        self.finish(json.dumps(openapi.document(self.base_url)))


def _owner_of(msg: dict[str, Any]) -> str | None:
    """The owner of the job an event message is about (a job change, or an attempt of one of its deliveries)."""
    if msg.get("type") == "job":
        return msg["job"].get("owner")
    return msg.get("owner")


class EventsHandler(JupyterHandler, websocket.WebSocketHandler):
    """``WS sparkdock/api/events``: one JSON message per job change, ``{"type": "job", "job": {...}}``, and one
    per attempt of a notification, ``{"type": "delivery", "owner": ..., "delivery": {"id", "job_id", "status",
    "attempts", ...}}`` (no URL, no body: ``GET sparkdock/api/jobs/{id}/notifications`` has them). A client sees
    the messages of the jobs it may see.

    Each client has a queue of at most ``event_queue_size`` messages, and a message is written only when the
    previous one has left for the network. A client that stops reading is disconnected once its queue is full,
    with close code :data:`~sparkdock.model.protocol.SLOW_CONSUMER_CLOSE_CODE` (4008) and a reason; it should
    reconnect and reload what it shows (``GET sparkdock/api/jobs``). The server never keeps more for it.
    """

    auth_resource = AUTH_RESOURCE
    _caller: Caller = Caller("", sees_all=False)  # set by pre_get: before it, nothing is visible
    _sub: Any = None
    _pump: asyncio.Task[None] | None = None

    @property
    def manager(self) -> JobManager:
        """The job manager."""
        return self.settings["sparkdock_manager"]

    async def pre_get(self) -> None:
        """Authorize the subscriber (read access to jobs) and learn which jobs it may see."""
        ok = await ensure_async(self.authorizer.is_authorized(self, self.current_user, "read", AUTH_RESOURCE))
        if not ok:
            raise web.HTTPError(403)
        policy: OwnerPolicy = self.settings["sparkdock_owners"]
        self._caller = await policy.caller(self, self.current_user, "read")

    @ws_authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        """Upgrade to a WebSocket."""
        await ensure_async(self.pre_get())
        await self.manager.ensure_started()
        res = super().get(*args, **kwargs)
        if res is not None:
            await res

    def open(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Subscribe to the event bus and forward its messages."""
        caller = self._caller
        with contextlib.suppress(AttributeError, OSError):  # bound what the kernel holds for a client, too
            self.ws_connection.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, EVENT_SOCKET_SNDBUF)
        self._sub = self.manager.bus.subscribe(
            accept=lambda msg: caller.may_see(_owner_of(msg)),
            on_overflow=self._too_slow,
        )
        self._pump = asyncio.get_running_loop().create_task(self._forward())

    def _too_slow(self) -> None:
        """The client has not read its last ``event_queue_size`` events: disconnect it (its queue is already
        emptied; the close frame follows what is in flight, and tornado aborts the connection if the client does
        not answer the close within 5 s)."""
        size = self.manager.bus.maxsize
        self.log.warning("sparkdock: event client %s fell %d events behind; disconnected (code %d)",
                         self.request.remote_ip, size, SLOW_CONSUMER_CLOSE_CODE)
        self._cleanup()
        self.close(SLOW_CONSUMER_CLOSE_CODE, f"too slow: {size} events not read; reconnect and reload the jobs")

    async def _forward(self) -> None:
        sub = self._sub
        while not sub.closed:
            msg = await sub.get()
            try:
                sent = self.write_message(json.dumps(msg))
            except websocket.WebSocketClosedError:
                break
            sent.add_done_callback(_retrieve)
            try:  # shielded: cancelling the pump must not cancel tornado's own write
                await asyncio.shield(sent)
            except websocket.WebSocketClosedError:
                break
        self._cleanup()

    def on_message(self, message: str | bytes) -> None:
        """Clients may send ``ping``; anything else is ignored."""
        if message == "ping":
            with contextlib.suppress(websocket.WebSocketClosedError):
                self.write_message(json.dumps({"type": "pong"}))

    def on_close(self) -> None:
        """Detach the listener of a disconnected client."""
        self._cleanup()

    def _cleanup(self) -> None:
        if self._sub is not None:
            self._sub.close()
        if self._pump is not None and not self._pump.done() and self._pump is not asyncio.current_task():
            self._pump.cancel()


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a write's failure as seen (a client gone while a message was being written is expected)."""
    if not fut.cancelled():
        fut.exception()


_ID = r"(?P<job_id>[A-Za-z0-9_-]+)"
default_handlers: list[tuple[str, type]] = [
    (r"/sparkdock/api/jobs/?", JobsHandler),
    (rf"/sparkdock/api/jobs/{_ID}/?", JobHandler),
    (rf"/sparkdock/api/jobs/{_ID}/status", StatusHandler),
    (rf"/sparkdock/api/jobs/{_ID}/history", HistoryHandler),
    (rf"/sparkdock/api/jobs/{_ID}/logs", LogsHandler),
    (rf"/sparkdock/api/jobs/{_ID}/sql", SQLHandler),
    (rf"/sparkdock/api/jobs/{_ID}/credentials", CredentialsHandler),
    (rf"/sparkdock/api/jobs/{_ID}/notifications", NotificationsHandler),
    (r"/sparkdock/api/webhooks/secret", WebhookSecretHandler),
    (r"/sparkdock/api/exit-codes", ExitCodesHandler),
    (r"/sparkdock/api/info", InfoHandler),
    (r"/sparkdock/api/cluster-options", ClusterOptionsHandler),
    (r"/sparkdock/api/openapi.json", OpenAPIHandler),
    (r"/sparkdock/api/events", EventsHandler),
]

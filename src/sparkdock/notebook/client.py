"""The Python client of the sparkdock REST API and its event stream.

Inside a notebook kernel started by a Jupyter server, :func:`connect` finds that server by itself::

    import sparkdock
    client = sparkdock.connect()
    with client.launch_cluster() as cluster:    # the server's default size (sparkdock.cluster_options())
        cluster.wait()                          # follows the event stream; raises JobFailed on a failure
        cluster.sql("SELECT 1 AS one")          # a pandas DataFrame, run by the server
    # leaving the block terminated the cluster

Every call is blocking. Waiting follows ``WS sparkdock/api/events`` (one JSON message per job change) in a
background thread (:class:`EventStream`), and falls back to polling with exponential backoff only when the
stream cannot be opened. HTTP errors become typed exceptions carrying the server's message.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import socket
import struct
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote, urlsplit, urlunsplit

import requests

from sparkdock.model.protocol import SLOW_CONSUMER_CLOSE_CODE
from sparkdock.notebook.errors import (
    AuthError,
    Conflict,
    InvalidSpec,
    JobFailed,
    NotFound,
    QuotaExceeded,
    RequestTimeout,
    ServerUnreachable,
    SparkdockError,
    WaitTimeout,
    error_for,
)

log = logging.getLogger(__name__)

__all__ = [
    "AuthError",
    "AutomatedJob",
    "Client",
    "ClusterOptions",
    "Conflict",
    "EventStream",
    "InteractiveJob",
    "InvalidSpec",
    "Job",
    "JobFailed",
    "NotFound",
    "QuotaExceeded",
    "RequestTimeout",
    "ServerUnreachable",
    "SparkdockError",
    "WaitTimeout",
    "cluster_options",
    "connect",
    "notify",
]

FAILURE_STATES: frozenset[str] = frozenset({"SYSTEM_ERROR", "EXECUTOR_ERROR", "CANCELED"})
TERMINAL_STATES: dict[str, frozenset[str]] = {
    "interactive": frozenset({"COMPLETE", "SYSTEM_ERROR"}),
    "automated": frozenset({"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}),
}


# ---- server discovery --------------------------------------------------------------------------------
def _discover() -> tuple[str, str]:
    url, token = os.environ.get("SPARKDOCK_URL"), os.environ.get("SPARKDOCK_TOKEN")
    if url:
        return url, token or ""
    ppid = os.environ.get("JPY_PARENT_PID")
    if ppid:
        try:
            from jupyter_server.serverapp import list_running_servers

            for info in list_running_servers():
                if str(info.get("pid")) == str(ppid):
                    return str(info["url"]), str(info.get("token") or "")
        except Exception as e:  # a broken runtime dir must not hide the clear error below
            log.debug("list_running_servers failed: %s", e)
    raise SparkdockError(
        "cannot find the sparkdock server: pass connect(url=..., token=...), set SPARKDOCK_URL and "
        "SPARKDOCK_TOKEN, or run inside a kernel started by a Jupyter server with the sparkdock extension "
        f"(JPY_PARENT_PID={ppid or 'unset'} matches no running server)"
    )


#: the moments :func:`notify` knows, each the states (events) it stands for; ``change`` is every state change
NOTIFY_ON: dict[str, tuple[str, ...]] = {
    "end": ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"),
    "failure": ("EXECUTOR_ERROR", "SYSTEM_ERROR"),
    "ready": ("RUNNING",),
    "change": ("*",),
}


def notify(target: str, on: str | Iterable[str] = "end") -> list[dict[str, Any]]:
    """The ``notifications`` that tell ``target`` (a webhook URL, or an email address) about a job.

    ``on``: ``"end"`` (it completed, failed or was canceled: the default), ``"failure"``, ``"ready"`` (a cluster is
    RUNNING), ``"change"`` (every state change), a state name, or several of these. For example
    ``client.submit(code=..., notifications=sparkdock.notify("me@example.org"))``.
    """
    names = [on] if isinstance(on, str) else list(on)
    events: list[str] = []
    for name in names:
        for event in NOTIFY_ON.get(name.lower(), (name.upper(),)):
            if event not in events:
                events.append(event)
    return [{"url": target, "event": e, "persistent": e == "*"} for e in events]


def connect(url: str | None = None, token: str | None = None) -> Client:
    """Connect to the sparkdock server extension.

    The server is found from, in order: the explicit ``url``/``token``; the ``SPARKDOCK_URL`` and
    ``SPARKDOCK_TOKEN`` environment variables; the running Jupyter server whose pid is ``JPY_PARENT_PID``
    (set in kernels started by a Jupyter server). Otherwise :class:`SparkdockError` explains what to do.
    """
    if url is None:
        url, found_token = _discover()
        token = token if token is not None else found_token
    elif token is None:
        token = os.environ.get("SPARKDOCK_TOKEN", "")
    return Client(url, token or "")


def cluster_options(url: str | None = None, token: str | None = None) -> ClusterOptions:
    """What the server lets a cluster request ask (sizes, images) and the defaults a request gets when it does not
    say; the server is found as :func:`connect` finds it. See :class:`ClusterOptions`."""
    with connect(url, token) as client:
        return client.cluster_options()


class ClusterOptions(Mapping[str, dict[str, Any]]):
    """What a cluster request may ask of the server, and its defaults (``GET sparkdock/api/cluster-options``).

    A read-only mapping of each field to ``{"default", "min", "max"}`` (``image``: ``{"default", "allowed"}``,
    ``allowed`` None when any image is; ``idle_timeout`` and ``max_lifetime``: ``{"default"}``, None for none)::

        opts = sparkdock.cluster_options()
        opts["workers"]["max"]      # the server's max_workers
        opts.defaults               # {"workers": 1, "worker_cores": 1, "worker_memory": "1g", ...}

    :meth:`Client.launch_cluster` and :meth:`Client.submit` leave out what they are not given, so the defaults
    here are what a cluster gets.
    """

    def __init__(self, data: Mapping[str, dict[str, Any]]) -> None:
        self._data = {k: dict(v) for k, v in data.items()}

    def __getitem__(self, key: str) -> dict[str, Any]:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    @property
    def defaults(self) -> dict[str, Any]:
        """Field → the value a request that does not give it gets."""
        return {k: v.get("default") for k, v in self._data.items()}

    def rows(self) -> list[tuple[str, str, str]]:
        """``(field, default, allowed)`` as text, one per field."""
        out = []
        for key, opt in self._data.items():
            default = "none" if opt.get("default") is None else str(opt["default"])
            if "max" in opt:
                allowed = f"{opt.get('min')} to {opt['max']}"
            elif "allowed" in opt:
                allowed = "any" if opt["allowed"] is None else ", ".join(opt["allowed"]) or "the default only"
            else:
                allowed = "seconds, or none"
            out.append((key, default, allowed))
        return out

    def __repr__(self) -> str:
        from sparkdock.notebook.widgets.render import text_table

        table = text_table(self.rows(), ["option", "default", "allowed"])
        return "ClusterOptions\n" + "\n".join("  " + line for line in table.splitlines())

    def _repr_html_(self) -> str:
        from sparkdock.notebook.widgets.render import esc

        cells = "".join(f"<tr><td><code>{esc(k)}</code></td><td>{esc(d)}</td><td>{esc(a)}</td></tr>"
                        for k, d, a in self.rows())
        return ("<table><thead><tr><th>option</th><th>default</th><th>allowed</th></tr></thead>"
                f"<tbody>{cells}</tbody></table>")


# ---- event stream ------------------------------------------------------------------------------------
Listener = Callable[[dict[str, Any]], None]


class EventStream:
    """Follows ``WS sparkdock/api/events`` in a daemon thread and calls listeners with each job JSON.

    Reconnects with backoff when the connection drops. After every (re)connection the ``on_connect`` hooks
    reload what their listeners show (a snapshot over REST), so that a change missed while disconnected is
    never missed for good. The server disconnects a client that falls too far behind with close code
    :data:`SLOW_CONSUMER_CLOSE_CODE`; the stream then reconnects at once and resynchronises the same way
    (``resyncs`` counts those). Listeners run in the stream's thread: they must be quick and must not raise
    (an exception is logged and ignored). ``connected`` is set while the socket is open; ``failed`` is set when
    the stream could not be opened at all (callers then fall back to polling). ``sockopt``: socket options of
    the connection (``(level, option, value)`` triples).
    """

    def __init__(self, ws_url: str, token: str, sockopt: Iterable[tuple[int, int, int]] = ()) -> None:
        self.ws_url = ws_url
        self.token = token
        self.sockopt = tuple(sockopt)
        self.resyncs = 0
        self.last_close: tuple[int | None, str] | None = None
        self.connected = threading.Event()
        self.failed = threading.Event()
        self._listeners: dict[int, tuple[str, Listener]] = {}
        self._on_connect: dict[int, Callable[[], None]] = {}
        self._next = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ws: Any = None

    def start(self) -> EventStream:
        """Start the thread (idempotent)."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive() or self._stop.is_set():
                self._stop = threading.Event()  # a thread still closing keeps its own, set, event
                self._thread = threading.Thread(
                    target=self._run, args=(self._stop,), name="sparkdock-events", daemon=True
                )
                self._thread.start()
        return self

    def add_listener(self, fn: Listener, on_connect: Callable[[], None] | None = None,
                     topic: str = "job") -> Callable[[], None]:
        """Call ``fn(job_json)`` for each job change (and ``on_connect()`` after each (re)connection, to
        catch up on what was missed); returns a function that removes them. ``topic="delivery"``: call
        ``fn(delivery)`` for each attempt of a notification instead (``{"id", "job_id", "status", "attempts",
        ...}``)."""
        with self._lock:
            key = self._next
            self._next += 1
            self._listeners[key] = (topic, fn)
            if on_connect is not None:
                self._on_connect[key] = on_connect

        def remove() -> None:
            with self._lock:
                self._listeners.pop(key, None)
                self._on_connect.pop(key, None)

        return remove

    def wait_connected(self, timeout: float) -> bool:
        """Wait until the socket is open; False if it failed or timed out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.connected.wait(0.05):
                return True
            if self.failed.is_set():
                return False
        return self.connected.is_set()

    def close(self) -> None:
        """Stop the thread and close the socket."""
        self._stop.set()
        ws = self._ws
        if ws is not None:
            # No closing handshake (the server may not be serving while we close); shutting the socket down
            # wakes the thread blocked in recv().
            with contextlib.suppress(Exception):
                ws.sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(Exception):
                ws.shutdown()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=3)

    def _run(self, stop: threading.Event) -> None:
        import websocket

        backoff = 0.2
        attempts = 0
        while not stop.is_set():
            try:
                ws = websocket.create_connection(
                    self.ws_url,
                    timeout=10,
                    header=[f"Authorization: token {self.token}"] if self.token else [],
                    enable_multithread=True,
                    sockopt=self.sockopt,
                )
            except Exception as e:
                attempts += 1
                log.debug("event stream: cannot connect to %s: %s", self.ws_url, e)
                if attempts >= 2:
                    self.failed.set()
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if stop.is_set():
                with contextlib.suppress(Exception):
                    ws.close(timeout=0.1)
                break
            self._ws, attempts, backoff = ws, 0, 0.2
            self.failed.clear()
            self.connected.set()
            with self._lock:
                hooks = list(self._on_connect.values())
            for hook in hooks:
                self._call(hook)
            try:
                ws.settimeout(15)
                while not stop.is_set():
                    try:
                        opcode, frame = ws.recv_data_frame()
                    except websocket.WebSocketTimeoutException:
                        ws.send("ping")  # keep the socket alive through idle periods
                        continue
                    if opcode == websocket.ABNF.OPCODE_CLOSE:
                        self.last_close = _close_status(frame.data)
                        if self.last_close[0] == SLOW_CONSUMER_CLOSE_CODE:
                            log.warning("sparkdock events: %s; reconnecting and reloading", self.last_close[1])
                            self.resyncs += 1
                            backoff = 0.0
                        break
                    try:
                        msg = json.loads(frame.data)
                    except ValueError:
                        continue
                    topic = msg.get("type") if isinstance(msg, dict) else None
                    if topic in ("job", "delivery") and isinstance(msg.get(topic), dict):
                        with self._lock:
                            listeners = [fn for t, fn in self._listeners.values() if t == topic]
                        for fn in listeners:
                            self._call(fn, msg[topic])
            except Exception as e:
                if not stop.is_set():
                    log.debug("event stream dropped: %s", e)
            finally:
                self.connected.clear()
                self._ws = None
                with contextlib.suppress(Exception):
                    ws.close()
            stop.wait(backoff)
            backoff = backoff or 0.2

    @staticmethod
    def _call(fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("sparkdock event listener failed")


def _close_status(data: bytes) -> tuple[int | None, str]:
    """The code and reason of a WebSocket close frame's payload."""
    if len(data) < 2:
        return None, ""
    return struct.unpack("!H", data[:2])[0], data[2:].decode("utf-8", "replace")


# ---- the client --------------------------------------------------------------------------------------
class Client:
    """A connection to the sparkdock server extension (REST + event stream)."""

    def __init__(self, url: str, token: str = "", *, timeout: float = 60.0) -> None:
        if not url.endswith("/"):
            url += "/"
        self.url = url
        self.token = token
        self.timeout = timeout
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"token {token}"
        self._stream: EventStream | None = None
        self._catalog: dict[int, dict[str, Any]] | None = None
        self._lock = threading.Lock()
        self._handles: weakref.WeakValueDictionary[str, Job] = weakref.WeakValueDictionary()

    def __repr__(self) -> str:
        return f"<sparkdock.Client {self.url}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing
    @property
    def api_url(self) -> str:
        """Base URL of the REST API."""
        return self.url + "sparkdock/api/"

    @property
    def events_url(self) -> str:
        """URL of the event WebSocket."""
        parts = urlsplit(self.api_url + "events")
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path, "", ""))

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """One REST call; returns the decoded JSON or raises a typed :class:`SparkdockError`:
        :class:`RequestTimeout` when the server does not answer within ``timeout`` seconds (default: the
        client's ``timeout``), :class:`ServerUnreachable` when it cannot be reached at all."""
        limit = timeout or self.timeout
        try:
            r = self.session.request(
                method,
                self.api_url + path,
                json=json_body,
                params={k: v for k, v in (params or {}).items() if v is not None} or None,
                timeout=limit,
            )
        except requests.Timeout as e:
            what = "accept the connection" if isinstance(e, requests.ConnectTimeout) else "answer"
            raise RequestTimeout(f"{method} {path}: the sparkdock server at {self.url} did not {what} within "
                                 f"{limit:g} s (timed out)", limit) from None
        except requests.RequestException as e:
            raise ServerUnreachable(f"cannot reach the sparkdock server at {self.url}: {e}") from None
        try:
            body = r.json() if r.content else None
        except ValueError:
            body = None
        if r.status_code >= 400:
            raise error_for(r.status_code, body, (r.text or r.reason or "")[:500])
        return body

    def events(self) -> EventStream:
        """The shared event stream of this client (started on first use)."""
        with self._lock:
            if self._stream is None:
                self._stream = EventStream(self.events_url, self.token)
            return self._stream.start()

    def close(self) -> None:
        """Close the event stream and the HTTP session."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        self.session.close()

    def _handle(self, data: dict[str, Any]) -> Job:
        h = self._handles.get(data["id"])
        if h is None:
            cls = InteractiveJob if data.get("kind") == "interactive" else AutomatedJob
            h = cls(self, data)
            self._handles[data["id"]] = h
        else:
            h._update(data)
        return h

    # -- jobs
    def cluster_options(self) -> ClusterOptions:
        """What a cluster request may ask of this server (sizes, images) and the defaults it gets when it does
        not say (:class:`ClusterOptions`)."""
        return ClusterOptions(self.request("GET", "cluster-options"))

    def launch_cluster(
        self,
        name: str = "",
        workers: int | None = None,
        worker_cores: int | None = None,
        worker_memory: str | None = None,
        idle_timeout: float | None = None,
        max_lifetime: float | None = None,
        image: str | None = None,
        notifications: Sequence[Mapping[str, Any]] = (),
    ) -> InteractiveJob:
        """Launch an interactive cluster (an interactive job); returns at once, in state QUEUED.

        What is not given is left out of the request, so the server's defaults apply (:meth:`cluster_options`
        lists them with the bounds). Call :meth:`Job.wait` to wait until it is RUNNING; use the handle in a
        ``with`` block to terminate the cluster when the block ends. ``notifications``: webhooks or emails on its
        events, ``{"url": ..., "event": "RUNNING" | "*" | ..., "persistent": False}`` (see :meth:`submit` and
        :func:`notify`).
        """
        cluster = _given(workers=workers, worker_cores=worker_cores, worker_memory=worker_memory,
                         idle_timeout=idle_timeout, max_lifetime=max_lifetime, image=image)
        body: dict[str, Any] = {"kind": "interactive", "cluster": cluster}
        if name:
            body["name"] = name
        if notifications:
            body["notifications"] = [dict(n) for n in notifications]
        job = self._handle(self.request("POST", "jobs", json_body=body))
        assert isinstance(job, InteractiveJob)
        return job

    def submit(
        self,
        code: str | None = None,
        path: str | None = None,
        type: str = "pyspark",
        name: str = "",
        args: Sequence[str] = (),
        conf: Mapping[str, Any] | None = None,
        cluster: Mapping[str, Any] | Job | str | None = None,
        cluster_job: Job | str | None = None,
        policy: Mapping[str, Any] | None = None,
        notifications: Sequence[Mapping[str, Any]] = (),
    ) -> AutomatedJob:
        """Submit an automated job (a batch Spark application): PySpark ``code``/``path`` or a SQL script.

        It runs on a RUNNING interactive cluster, given as ``cluster`` or ``cluster_job`` (its handle or id), or
        on an ephemeral cluster of its own shaped by ``cluster`` (a dict of ``workers``, ``worker_cores``,
        ``worker_memory``, ``image``: what it leaves out, the server's defaults give). A relative
        ``path`` is taken from the kernel's current folder; the file must lie under the Jupyter server's root
        directory, which the server reads it from. ``policy``
        takes ``max_runtime``, ``min_runtime``, ``overrun_action``, ``retries``, ``rerun_on_exit_codes``.
        ``notifications`` are webhooks or emails on the job's events: ``{"url": "https://...?job=${JOB_ID}",
        "event": "COMPLETE" | "*" | <any state>, "persistent": False, "payload": {...}}`` (seed 002; the URL and
        payload may use template variables), or ``{"url": "ops@example.org", "event": ...}``; :func:`notify` makes
        them. Bad input raises :class:`InvalidSpec` whose ``errors`` name each field.
        """
        shape, on = _run_on(cluster, cluster_job)
        app: dict[str, Any] = {"type": type, "args": [str(a) for a in args], "conf": dict(conf or {})}
        if code is not None:
            app["code"] = code
        if path is not None:  # the server reads it: from the kernel's folder, as the user sees it
            app["path"] = os.path.abspath(os.path.expanduser(path)) if path else path
        body: dict[str, Any] = {"kind": "automated", "application": app}
        if name:
            body["name"] = name
        if on is not None:
            body["cluster_job"] = on
        if shape is not None:
            body["cluster"] = shape
        if policy is not None:
            body["policy"] = dict(policy)
        if notifications:
            body["notifications"] = [dict(n) for n in notifications]
        job = self._handle(self.request("POST", "jobs", json_body=body))
        assert isinstance(job, AutomatedJob)
        return job

    def jobs(
        self, kind: str | None = None, state: str | Iterable[str] | None = None, limit: int = 1000
    ) -> list[Job]:
        """Jobs, newest first, optionally filtered by ``kind`` and ``state`` (a name or several)."""
        if state is not None and not isinstance(state, str):
            state = ",".join(state)
        body = self.request("GET", "jobs", params={"kind": kind, "state": state, "limit": limit})
        return [self._handle(j) for j in body["jobs"]]

    def job(self, job_id: str) -> Job:
        """One job by id (raises :class:`NotFound`)."""
        return self._handle(self.request("GET", f"jobs/{quote(job_id, safe='')}"))

    def exit_codes(self) -> dict[str, Any]:
        """The exit-code catalog: ``{"exit_codes": [...], "kernel_exit_codes": [...]}``."""
        return self.request("GET", "exit-codes")

    def exit_code_info(self, code: int | None) -> dict[str, Any] | None:
        """The catalog entry of ``code`` (description, action, message...), cached; None if unknown."""
        if code is None:
            return None
        if self._catalog is None:
            try:
                self._catalog = {e["code"]: e for e in self.exit_codes()["exit_codes"]}
            except SparkdockError:
                return None
        return self._catalog.get(int(code))

    def webhook_secret(self) -> str:
        """The server's webhook signing secret (``whsec_...``), shown once: the current one if it was never
        shown, else a new one that replaces it (admins only). Verify deliveries with it."""
        return self.request("POST", "webhooks/secret")["secret"]

    def info(self) -> dict[str, Any]:
        """Server information: version, backend in use and why, capacity, state colours."""
        return self.request("GET", "info")

    def running_clusters(self) -> list[InteractiveJob]:
        """The RUNNING interactive jobs."""
        return [j for j in self.jobs(kind="interactive", state="RUNNING") if isinstance(j, InteractiveJob)]


def _given(**values: Any) -> dict[str, Any]:
    """The values that were given (not None): the server's defaults apply to the others."""
    return {k: v for k, v in values.items() if v is not None}


def _run_on(cluster: Any, cluster_job: Any) -> tuple[dict[str, Any] | None, str | None]:
    """``(ephemeral cluster shape, interactive job id)`` of :meth:`Client.submit`'s ``cluster`` and
    ``cluster_job``: a handle or an id given as ``cluster`` means the same as ``cluster_job``."""
    if isinstance(cluster, Job | str):
        if cluster_job is not None:
            raise TypeError("submit() takes the cluster to run on once: cluster=<handle or id> or "
                            "cluster_job=<handle or id>, not both")
        cluster, cluster_job = None, cluster
    if cluster is not None and not isinstance(cluster, Mapping):
        raise TypeError("submit(cluster=...) takes a running cluster (its handle or id) or the shape of an "
                        f"ephemeral cluster (a dict like {{'workers': 2}}), not {type(cluster).__name__}")
    if cluster is not None and cluster_job is not None:
        raise TypeError("submit() runs a job either on a running cluster (cluster_job=) or on an ephemeral "
                        "cluster shaped by cluster={...}, not both")
    if isinstance(cluster_job, Job) and not isinstance(cluster_job, InteractiveJob):
        raise TypeError(f"a job runs on an interactive cluster; {cluster_job.id} is an automated job")
    if cluster_job is not None and not isinstance(cluster_job, Job | str):
        raise TypeError(f"cluster_job takes a cluster's handle or id, not {type(cluster_job).__name__}")
    job_id = cluster_job.id if isinstance(cluster_job, Job) else cluster_job
    return (None if cluster is None else dict(cluster)), job_id


def _time(value: Any) -> datetime | None:
    """A time of the job JSON (ISO 8601, UTC) as an aware datetime; None when unset."""
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


class _Default:
    """The default of :meth:`Job.wait`'s ``timeout``: the handle's ``default_timeout``."""

    def __repr__(self) -> str:
        return "<default>"


DEFAULT_TIMEOUT: Any = _Default()


class Job:
    """A handle on one job. ``data`` is the last job JSON seen (from REST or the event stream).

    A handle is a context manager: leaving a ``with`` block terminates the job (a cluster) or cancels it (an
    automated job) unless it has already ended.
    """

    #: seconds :meth:`wait` waits by default
    default_timeout: float = 900.0

    kind = ""

    def __init__(self, client: Client, data: dict[str, Any]) -> None:
        self.client = client
        self.data: dict[str, Any] = data
        self._cond = threading.Condition()
        self._card: Any = None
        self._stop_asked = False  # terminate()/cancel() was called on this handle

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self.terminal:
            return
        try:
            self.terminate()
        except SparkdockError as e:
            if exc is None:
                raise
            log.warning("sparkdock: job %s was not terminated on leaving its with block: %s", self.id, e)

    # -- fields
    @property
    def id(self) -> str:
        """The job id."""
        return self.data["id"]

    @property
    def name(self) -> str:
        """The job name."""
        return self.data.get("name") or ""

    @property
    def state(self) -> str:
        """The state (seed 000 names), as last seen."""
        return self.data["state"]

    @property
    def phase(self) -> str | None:
        """The phase: a finer reason under the state."""
        return self.data.get("phase")

    @property
    def created_at(self) -> datetime | None:
        """When the job was submitted (UTC)."""
        return _time(self.data.get("created_at"))

    @property
    def started_at(self) -> datetime | None:
        """When the job started RUNNING (UTC), or None."""
        return _time(self.data.get("started_at"))

    @property
    def ended_at(self) -> datetime | None:
        """When the job ended (UTC), or None while it has not."""
        return _time(self.data.get("ended_at"))

    @property
    def exit_code(self) -> int | None:
        """The exit code (only on CANCELED, EXECUTOR_ERROR, SYSTEM_ERROR)."""
        return self.data.get("exit_code")

    @property
    def exit_message(self) -> str | None:
        """The exit message."""
        return self.data.get("exit_message")

    @property
    def runtime_status(self) -> dict[str, str | None]:
        """``{"activity", "warning", "error"}``."""
        return self.data.get("runtime_status") or {"activity": None, "warning": None, "error": None}

    @property
    def endpoints(self) -> dict[str, Any] | None:
        """The endpoints (interactive and RUNNING), else None."""
        return self.data.get("endpoints")

    @property
    def terminal(self) -> bool:
        """True when the job will never change again."""
        return self.state in TERMINAL_STATES.get(self.data.get("kind", self.kind), frozenset())

    @property
    def failed(self) -> bool:
        """True when the job ended in a failure state."""
        return self.state in FAILURE_STATES

    def exit_info(self) -> dict[str, Any] | None:
        """The catalog entry (description, action, ...) of the exit code, if any."""
        return self.client.exit_code_info(self.exit_code)

    def _update(self, data: dict[str, Any]) -> bool:
        """Take a newer job JSON (older ones, by ``seq``, are ignored). Returns True if taken."""
        with self._cond:
            if (
                data.get("seq") is not None
                and self.data.get("seq") is not None
                and data["seq"] < self.data["seq"]
            ):
                return False
            self.data = data
            self._cond.notify_all()
        card = self._card
        if card is not None:
            card.update(data)
        return True

    # -- calls
    def refresh(self) -> Self:
        """Re-read the job from the server."""
        self._update(self.client.request("GET", f"jobs/{self.id}"))
        return self

    def history(self) -> list[dict[str, Any]]:
        """The history: ``{id, time, event, state, phase, description, attempt, progress?}`` events."""
        return self.client.request("GET", f"jobs/{self.id}/history")["events"]

    def notifications(self) -> list[dict[str, Any]]:
        """The notification deliveries of this job (webhooks and emails): ``{id, notification, event, channel, url,
        status, attempts: [{number, time, status_code, latency_ms, error, outcome}]}``."""
        return self.client.request("GET", f"jobs/{self.id}/notifications")["deliveries"]

    def logs(self, component: str | None = None, tail: int | None = None) -> str:
        """Logs of one component (``master``, ``worker-N``, ``sql``, ``lab``, ``driver``; default: the
        driver of an automated job, the master of a cluster)."""
        return self.client.request(
            "GET", f"jobs/{self.id}/logs", params={"component": component, "tail": tail}
        )["logs"]

    def terminate(self) -> Self:
        """Terminate (interactive) or cancel (automated) the job; it goes CANCELING. Repeating is harmless.
        A job canceled through this handle does not make :meth:`wait` raise :class:`JobFailed`."""
        self._stop_asked = True
        self._update(self.client.request("DELETE", f"jobs/{self.id}"))
        return self

    def cancel(self) -> Self:
        """Same as :meth:`terminate`."""
        return self.terminate()

    def _default_states(self) -> frozenset[str]:
        return TERMINAL_STATES[self.kind]

    def _default_timeout(self) -> float:
        return self.default_timeout

    def _goal(self, states: object, target: frozenset[str]) -> str:
        """What :meth:`wait` waits for, in words: "end", "be RUNNING", "be COMPLETE or CANCELED"."""
        if states is None:
            return "be RUNNING" if self.kind == "interactive" else "end"
        return "be " + " or ".join(sorted(target))

    def wait(
        self,
        states: str | Iterable[str] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        raise_on_error: bool = True,
        *,
        raise_on_failure: bool | None = None,
    ) -> Self:
        """Wait until the job is in one of ``states``, following the event stream; returns the handle.

        Default ``states``: a cluster until it is RUNNING (or has ended), an automated job until it has ended.

        When the job ends in a failure state that ``states`` does not name (SYSTEM_ERROR, EXECUTOR_ERROR, or
        CANCELED unless this handle canceled it), :class:`JobFailed` is raised with its exit code, message and
        the catalog's description and action. ``raise_on_error=False`` returns the handle instead (look at
        ``job.failed`` and ``job.exit_code``); it also returns when the job has ended in a state that is not one
        of ``states`` (otherwise a :class:`SparkdockError`).

        ``timeout`` in seconds; by default the handle's ``default_timeout`` (15 minutes for a cluster to start,
        1 hour for an automated job, or its policy's ``max_runtime`` and 10 minutes if longer); ``None`` waits
        as long as it takes. Raises :class:`WaitTimeout` ("timed out after N s ...").
        """
        if raise_on_failure is not None:
            warnings.warn("Job.wait(raise_on_failure=...) is now Job.wait(raise_on_error=...); a failure raises "
                          "JobFailed by default", DeprecationWarning, stacklevel=2)
            raise_on_error = raise_on_failure
        if isinstance(timeout, _Default):
            timeout = self._default_timeout()
        target = self._default_states() if states is None else frozenset(
            [states] if isinstance(states, str) else states)
        named = frozenset() if states is None else target
        terminal = TERMINAL_STATES[self.kind]
        deadline = None if timeout is None else time.monotonic() + timeout
        stream = self.client.events()

        def on_event(job: dict[str, Any]) -> None:
            if job.get("id") == self.id:
                self._update(job)

        def on_connect() -> None:
            with contextlib.suppress(SparkdockError):
                self.refresh()

        remove = stream.add_listener(on_event, on_connect)
        try:
            use_stream = stream.wait_connected(min(5.0, timeout) if timeout else 5.0)
            self.refresh()  # after subscribing: nothing can be missed in between
            poll = 0.1
            while True:
                st = self.state
                if (raise_on_error and st in FAILURE_STATES and st not in named
                        and not (st == "CANCELED" and self._stop_asked)):
                    raise JobFailed(self)
                if st in target:
                    return self
                if st in terminal:
                    if not raise_on_error:
                        return self
                    raise SparkdockError(
                        f"job {self.id} ended {st} and will never reach {', '.join(sorted(target))}"
                    )
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise WaitTimeout(
                        f"timed out after {timeout:g} s waiting for job {self.id} to {self._goal(states, target)}: "
                        f"it is still {st}"
                        + (f" (phase {self.phase})" if self.phase else "")
                        + "; wait(timeout=...) waits longer, timeout=None as long as it takes",
                        self.id,
                        st,
                        timeout,
                    )
                if use_stream and stream.connected.is_set():
                    # Events wake us up; a slow periodic re-read is only a safety net.
                    step = 10.0 if remaining is None else min(10.0, remaining)
                    with self._cond:
                        woke = self.state != st or self._cond.wait(step)
                    if not woke and stream.connected.is_set() and step >= 10.0:
                        self.refresh()
                else:
                    use_stream = False
                    step = poll if remaining is None else min(poll, remaining)
                    time.sleep(max(step, 0))
                    poll = min(poll * 2, 5.0)
                    self.refresh()
                    if stream.connected.is_set():
                        use_stream = True
        finally:
            remove()

    # -- display
    def summary(self) -> str:
        """A one-paragraph, plain-text summary."""
        lines = [
            f"{self.kind} job {self.id} {self.name!r}: {self.state}"
            + (f" ({self.phase})" if self.phase else "")
        ]
        rs = self.runtime_status
        for key in ("error", "warning", "activity"):
            if rs.get(key):
                lines.append(f"  {key}: {rs[key]}")
        if self.exit_code is not None:
            lines.append(f"  exit code {self.exit_code}: {self.exit_message or ''}")
            info = self.exit_info()
            if info:
                lines.append(f"  {info.get('description', '')}")
                lines.append(f"  action: {info.get('action', '')}")
        eps = self.endpoints or {}
        if eps.get("sql"):
            lines.append(f"  JDBC: {eps['sql'].get('jdbc_url')}")
        if eps.get("lab"):
            lines.append(f"  lab: {eps['lab'].get('url')}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.state}" + (f" {self.phase}>" if self.phase else ">")

    def __str__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        from sparkdock.notebook.widgets.render import job_html

        return job_html(self.data, self.exit_info())

    def widget(self) -> Any:
        """The live status card (an ipywidgets widget), updated from the event stream."""
        if self._card is None:
            from sparkdock.notebook.widgets.card import JobCard

            self._card = JobCard(self.client, self.data, handle=self)
            self._card.follow()
        return self._card

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle: dict[str, Any] = {"text/plain": self.summary(), "text/html": self._repr_html_()}
        if _widgets_available():
            try:
                wb = self.widget()._repr_mimebundle_(include=include, exclude=exclude) or {}
                bundle.update({k: v for k, v in wb.items() if k != "text/plain"})
            except Exception as e:  # no widget frontend: the HTML summary is enough
                log.debug("no widget view: %s", e)
        return bundle


def _widgets_available() -> bool:
    try:
        from IPython import get_ipython

        ip = get_ipython()
    except Exception:
        return False
    return ip is not None and getattr(ip, "kernel", None) is not None


class InteractiveJob(Job):
    """A handle on an interactive job: a Spark cluster with a SQL endpoint and a lab endpoint."""

    kind = "interactive"

    @property
    def jdbc_url(self) -> str | None:
        """The JDBC URL of the SQL endpoint (RUNNING only)."""
        return ((self.endpoints or {}).get("sql") or {}).get("jdbc_url")

    @property
    def lab_url(self) -> str | None:
        """The URL of the cluster's JupyterLab (RUNNING only)."""
        return ((self.endpoints or {}).get("lab") or {}).get("url")

    @property
    def spark_ui_url(self) -> str | None:
        """The URL of the Spark master UI (RUNNING only)."""
        return ((self.endpoints or {}).get("spark_ui") or {}).get("url")

    def _default_states(self) -> frozenset[str]:
        return frozenset({"RUNNING"}) | TERMINAL_STATES["interactive"]

    def credentials(self) -> dict[str, Any]:
        """The SQL user/password and the lab token (``GET …/credentials``), for beeline, DBeaver or a browser.

        ``{"sql": {"user", "password", "jdbc_url"}, "lab": {"token", "url"}}``; the lab ``url`` includes the
        token. Only needed outside the notebook: :meth:`sql` never needs them.
        """
        return self.client.request("GET", f"jobs/{self.id}/credentials")

    def sql_password_file(self) -> Path:
        """The SQL password in a file only you can read, for tools that take it from a file (beeline ``-w``).

        A password on a command line is visible to every user of the machine (``ps``). The file is
        ``<Jupyter runtime dir>/sparkdock/<job id>.sql-password``: the folder 0700, the file 0600, written
        atomically. The password stops working when the cluster ends.
        """
        return self._password_file(self.credentials()["sql"]["password"] or "")

    def _password_file(self, password: str) -> Path:
        from jupyter_core.paths import jupyter_runtime_dir

        folder = Path(jupyter_runtime_dir()) / "sparkdock"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.chmod(0o700)
        target = folder / f"{self.id}.sql-password"
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)  # created 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(password)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return target

    def beeline_args(self, beeline: str = "beeline") -> list[str]:
        """The arguments of a ``beeline`` that connects to this cluster's SQL endpoint; the password is read
        from :meth:`sql_password_file` (``-w``), never put on the command line."""
        sql = self.credentials()["sql"]
        password_file = self._password_file(sql["password"] or "")
        return [beeline, "-u", sql["jdbc_url"], "-n", sql["user"], "-w", str(password_file)]

    def beeline_command(self) -> str:
        """A ``beeline`` command line (for a terminal) that connects to this cluster's SQL endpoint, with the
        password in a private file (:meth:`beeline_args`)."""
        return shlex.join(self.beeline_args())

    def sql_result(self, statement: str, limit: int | None = None, timeout: float | None = None) -> dict[str, Any]:
        """Run ``statement`` on the SQL endpoint (through the server).

        Returns the raw reply ``{columns, rows, row_count, truncated, limit}``. ``timeout``: seconds to wait for
        the answer (default: the client's timeout, at least 330 s: the server gives a statement 300 s); past it,
        :class:`RequestTimeout`.
        """
        body: dict[str, Any] = {"statement": statement}
        if limit is not None:
            body["limit"] = int(limit)
        limit_s = timeout or max(self.client.timeout, 330)
        try:
            return self.client.request("POST", f"jobs/{self.id}/sql", json_body=body, timeout=limit_s)
        except RequestTimeout:
            raise RequestTimeout(f"the SQL statement on {self.id} got no answer within {limit_s:g} s (timed out); "
                                 "it may still be running on the cluster; sql(..., timeout=...) waits longer",
                                 limit_s) from None

    def sql(self, statement: str, limit: int | None = None, timeout: float | None = None) -> Any:
        """Run ``statement`` on the cluster's SQL endpoint and return a pandas DataFrame.

        The statement goes through the server (``POST sparkdock/api/jobs/{id}/sql``): the cluster's SQL
        credentials stay on the server and never reach the kernel. At most ``limit`` rows come back (the
        server caps it too); ``df.attrs["truncated"]`` says whether rows were left out. Raises
        :class:`Conflict` when the cluster is not RUNNING, :class:`InvalidSpec` for a SQL error and
        :class:`RequestTimeout` when no answer comes within ``timeout`` seconds.
        """
        import pandas as pd

        res = self.sql_result(statement, limit, timeout)
        df = pd.DataFrame(res.get("rows") or [], columns=res.get("columns") or [])
        df.attrs["truncated"] = bool(res.get("truncated"))
        df.attrs["limit"] = res.get("limit")
        return df


class AutomatedJob(Job):
    """A handle on an automated job: a batch Spark application."""

    kind = "automated"
    default_timeout = 3600.0

    def _default_timeout(self) -> float:
        policy = (self.data.get("spec") or {}).get("policy") or {}
        max_runtime = policy.get("max_runtime")
        return max(self.default_timeout, float(max_runtime) + 600) if max_runtime else self.default_timeout

"""Readiness probes of a cluster's endpoints.

All functions block (the async callers run them in an executor) and are bounded by a timeout.
Readiness is checked at the protocol level, never by a TCP connect: a port published by Docker
accepts TCP at once (docker-proxy), long before the service behind it is up.

The SQL probe needs ``impyla`` (``impala.dbapi``); the others use the standard library only.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = [
    "ProbeError",
    "SQLAuthError",
    "alive_workers",
    "master_status",
    "probe_lab",
    "probe_sql",
    "wait_until",
]

T = TypeVar("T")


class ProbeError(RuntimeError):
    """An endpoint is not (yet) ready; the message says what failed."""


class SQLAuthError(ProbeError):
    """The SQL endpoint answered but refused the credentials."""


_AUTH_MARKERS = ("error validating the login", "authentication", "invalid user name or password",
                 "login refused", "bad credentials", "peer indicated failure")


def probe_sql(host: str, port: int, user: str, password: str | None, timeout: float = 10.0) -> None:
    """Open a HiveServer2 session on the SQL endpoint and run ``SELECT 1``.

    Uses impyla with ``auth_mechanism="PLAIN"`` (SASL PLAIN, what the Spark Thrift Server expects
    with ``hive.server2.authentication`` ``NONE`` or ``CUSTOM``).

    Args:
        host: the endpoint's host.
        port: the endpoint's port (HiveServer2 binary protocol).
        user: user name (any name is accepted by the sparkdock authenticator).
        password: the cluster's SQL password (for ``NONE`` authentication any non-empty value works).
        timeout: seconds allowed for the socket operations of the whole probe.

    Raises:
        SQLAuthError: the server refused the login.
        ProbeError: anything else (connection refused or reset, timeout, unexpected result).
    """
    try:
        from impala.dbapi import connect
    except ImportError as exc:  # pragma: no cover - depends on the installation
        # not a ProbeError: retrying cannot help
        raise RuntimeError("probe_sql needs the 'impyla' package (pip install impyla)") from exc

    conn = None
    try:
        conn = connect(host=host, port=int(port), auth_mechanism="PLAIN", user=user,
                       password=password or "x", timeout=timeout)
        cur = conn.cursor()
        try:
            cur.execute("SELECT 1")
            rows = cur.fetchall()
        finally:
            _quiet_close(cur)
    except ProbeError:
        raise
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        if any(marker in text.lower() for marker in _AUTH_MARKERS):
            raise SQLAuthError(f"SQL endpoint {host}:{port} refused the login of {user!r}: {text}") from exc
        raise ProbeError(f"SQL endpoint {host}:{port} is not ready: {text}") from exc
    finally:
        if conn is not None:
            _quiet_close(conn)
    if not rows or rows[0][0] != 1:
        raise ProbeError(f"SQL endpoint {host}:{port}: SELECT 1 returned {rows!r}")


def _quiet_close(obj: Any) -> None:
    # closing a broken session must not hide the real error
    with contextlib.suppress(Exception):
        obj.close()


def probe_lab(url: str, token: str, timeout: float = 5.0) -> dict[str, Any]:
    """Check that the lab answers ``GET {url}/api/status?token=...`` with 200.

    Args:
        url: the lab's base URL (e.g. ``http://127.0.0.1:8888/`` or with a base path).
        token: the lab's token.
        timeout: seconds allowed for the request.

    Returns:
        The decoded JSON status (``started``, ``kernels``, ...).

    Raises:
        ProbeError: no answer, a non-200 status (403 means a wrong token), or not JSON.
    """
    status_url = url.rstrip("/") + "/api/status?" + urllib.parse.urlencode({"token": token})
    shown = url.rstrip("/") + "/api/status"
    try:
        with urllib.request.urlopen(status_url, timeout=timeout) as resp:
            body = resp.read()
            code = resp.status
    except urllib.error.HTTPError as exc:
        hint = " (wrong token?)" if exc.code == 403 else ""
        raise ProbeError(f"lab {shown} answered HTTP {exc.code}{hint}") from exc
    except (TimeoutError, urllib.error.URLError, OSError) as exc:
        raise ProbeError(f"lab {shown} is not ready: {exc}") from exc
    if code != 200:
        raise ProbeError(f"lab {shown} answered HTTP {code}")
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise ProbeError(f"lab {shown} did not answer JSON") from exc
    return data if isinstance(data, dict) else {"status": data}


def master_status(ui_url: str, timeout: float = 5.0) -> dict[str, Any]:
    """Return the master's status from its web UI (``GET {ui_url}/json/``).

    The dict has, among others, ``url``, ``status`` (``"ALIVE"``), ``cores``, ``coresused``,
    ``memory``, ``workers`` (each with ``state``, ``cores``, ``coresused``...), ``activeapps``.

    Raises:
        ProbeError: no answer, a non-200 status or not JSON.
    """
    status_url = ui_url.rstrip("/") + "/json/"
    try:
        with urllib.request.urlopen(status_url, timeout=timeout) as resp:
            data = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise ProbeError(f"Spark master UI {status_url} answered HTTP {exc.code}") from exc
    except (TimeoutError, urllib.error.URLError, OSError) as exc:
        raise ProbeError(f"Spark master UI {status_url} is not ready: {exc}") from exc
    except ValueError as exc:
        raise ProbeError(f"Spark master UI {status_url} did not answer JSON") from exc
    if not isinstance(data, dict):
        raise ProbeError(f"Spark master UI {status_url} answered unexpected JSON")
    return data


def alive_workers(status: dict[str, Any]) -> int:
    """Number of workers in state ``ALIVE`` in a :func:`master_status` result."""
    if "aliveworkers" in status and not status.get("workers"):
        return int(status["aliveworkers"])
    return sum(1 for w in status.get("workers", []) if str(w.get("state", "")).upper() == "ALIVE")


def wait_until(check: Callable[[], T], timeout: float, interval: float = 0.5,
               what: str = "condition") -> T:
    """Call ``check`` until it returns without raising :class:`ProbeError`; return its result.

    Raises:
        ProbeError: ``check`` still failed after ``timeout`` seconds (the last error is chained).
            :class:`SQLAuthError` is raised at once: retrying a refused password is useless.
    """
    deadline = time.monotonic() + timeout
    last: ProbeError | None = None
    while True:
        try:
            return check()
        except SQLAuthError:
            raise
        except ProbeError as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise ProbeError(f"{what}: not ready after {timeout:.0f}s: {last}") from last
        time.sleep(interval)


def probe_tcp(host: str, port: int, timeout: float = 3.0) -> None:
    """Check that something accepts a TCP connection on ``host:port``; nothing is sent.

    This is the SQL endpoint's health probe: it opens no HiveServer2 session (so it is not "use" of the
    cluster) and the Thrift Server logs nothing for it.

    Raises:
        ProbeError: the connection is refused or times out.
    """
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise ProbeError(f"{host}:{port} does not accept connections: {exc}") from exc


def probe_lab_alive(url: str, timeout: float = 3.0) -> None:
    """Check that the lab's server answers ``GET /api`` (its version; no token needed, no session opened).

    Args:
        url: the lab's URL (``http://host:port/lab`` or its base).

    Raises:
        ProbeError: no answer or not a Jupyter server's answer.
    """
    parts = urllib.parse.urlsplit(url)
    path = parts.path.rstrip("/")
    base = path[: -len("/lab")] if path.endswith("/lab") else path
    api = urllib.parse.urlunsplit((parts.scheme, parts.netloc, base + "/api", "", ""))
    try:
        with urllib.request.urlopen(api, timeout=timeout) as resp:
            data = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise ProbeError(f"lab {api} answered HTTP {exc.code}") from exc
    except (TimeoutError, urllib.error.URLError, OSError, ValueError) as exc:
        raise ProbeError(f"lab {api} does not answer: {exc}") from exc
    if not isinstance(data, dict) or "version" not in data:
        raise ProbeError(f"lab {api} did not answer as a Jupyter server")

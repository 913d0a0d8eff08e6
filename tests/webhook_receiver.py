"""A real HTTP receiver of webhooks on a loopback address, for the tests: it records what it gets and answers
what the test scripted (per path: a list of statuses, the last one repeated; a redirect; a Retry-After).

It runs in a thread, so that it serves the in-process test server (on the test's event loop) and a server
subprocess alike. Tests wait on its condition (:meth:`Receiver.wait_for`), never on a length of time.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Received:
    """One request the receiver got."""

    path: str
    query: str
    headers: dict[str, str]
    """lower-case names"""
    body: bytes
    status: int
    at: float = field(default_factory=time.monotonic)

    @property
    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


class Receiver:
    """A webhook receiver on ``host`` (a loopback address), on a port the OS picks."""

    def __init__(self, host: str = "127.0.0.3") -> None:
        self.host = host
        self.received: list[Received] = []
        self.script: dict[str, list[int]] = {}
        self.redirects: dict[str, str] = {}
        self.retry_after: dict[str, str] = {}
        self.stall: dict[str, threading.Event] = {}
        """path -> an event: the first request to that path gets no answer until the test sets it"""
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = urlsplit(self.path)
                with receiver._cond:
                    stall = receiver.stall.pop(parts.path, None)
                if stall is not None:  # a receiver that does not answer (in time)
                    stall.wait(60)
                status = receiver._answer(parts.path)
                self.send_response(status)
                if parts.path in receiver.redirects:
                    self.send_header("Location", receiver.redirects[parts.path])
                if status in (429, 503) and parts.path in receiver.retry_after:
                    self.send_header("Retry-After", receiver.retry_after[parts.path])
                answer = b"ok" if status < 300 else f"scripted {status}".encode()
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._cond:
                    receiver.received.append(Received(parts.path, parts.query, headers, body, status))
                    receiver._cond.notify_all()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _answer(self, path: str) -> int:
        with self._cond:
            statuses = self.script.get(path)
            if not statuses:
                return 302 if path in self.redirects else 200
            return statuses.pop(0) if len(statuses) > 1 else statuses[0]

    def url(self, path: str = "/") -> str:
        """The URL of ``path`` on this receiver."""
        return f"http://{self.host}:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        """The requests to ``path``, in order."""
        with self._cond:
            return [r for r in self.received if r.path == path]

    def wait_for(self, pred: Callable[[list[Received]], bool], what: str, timeout: float = 30.0) -> list[Received]:
        """Wait until ``pred(received)`` holds (woken by each request); fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pred(self.received):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"the receiver did not get {what} within {timeout} s; it got "
                                         f"{[(r.path, r.status) for r in self.received]}")
                self._cond.wait(left)
            return list(self.received)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

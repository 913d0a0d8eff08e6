"""Requests a server must refuse, on a real Jupyter server (pytest-jupyter) with the test double as backend:
files outside the root, images not allowed, sizes over the bounds, hostile bodies and oversized ones. Each gets a
4xx that names the field, and the server log shows no traceback."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from job_helpers import captured_log
from sparkdock.server.app import exposure_warning
from sparkdock.server.handlers import MAX_BODY_BYTES

H = {"Content-Type": "application/json"}
SQL_APP = {"type": "sql", "code": "SELECT 1"}


@pytest.fixture
def server_log(jp_serverapp: Any) -> Iterator[list[str]]:
    """The server's log once it runs (its start configures the loggers, dropping handlers added before)."""
    with captured_log(jp_serverapp.log, logging.getLogger("SparkDockApp")) as lines:
        yield lines


async def _post(jp_fetch: Any, body: Any, *path: str) -> tuple[int, dict[str, Any]]:
    raw = body if isinstance(body, str | bytes) else json.dumps(body)
    r = await jp_fetch("sparkdock", "api", "jobs", *path, method="POST", body=raw, headers=dict(H), raise_error=False)
    return r.code, json.loads(r.body)


def _fields(reply: dict[str, Any]) -> list[str]:
    return [e["field"] for e in reply.get("errors") or []]


def _no_traceback(lines: list[str]) -> None:
    text = "\n".join(lines)
    assert any(re.match(r"4\d\d (GET|POST) ", line) for line in lines), "the server log has no 4xx request line"
    assert "Traceback" not in text and "internal error" not in text and " 500 " not in text, text[-3000:]


async def test_application_paths_outside_the_root_are_refused(server_log, jp_fetch, jp_root_dir: Path,
                                                              tmp_path: Path) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text("print('not yours')\n")
    (jp_root_dir / "link.py").symlink_to(outside)
    for path in ("/etc/passwd", "../x", "link.py", str(outside)):
        code, reply = await _post(jp_fetch, {"kind": "automated", "application": {"type": "pyspark", "path": path}})
        assert code == 400 and _fields(reply) == ["application.path"], (path, reply)
        assert "application.path" in reply["message"]
    (jp_root_dir / "mine.py").write_text("print(1)\n")
    code, reply = await _post(jp_fetch, {"kind": "automated", "application": {"type": "pyspark", "path": "mine.py"},
                                         "cluster": {"image": "fake/ok"}})
    assert code == 201, reply
    _no_traceback(server_log)


@pytest.mark.parametrize("sparkdock_config", [{"max_workers": 3, "max_worker_cores": 2, "max_worker_memory": "2g"}])
async def test_images_and_sizes_beyond_the_settings_are_refused(jp_fetch) -> None:
    over = {"workers": (4, "max_workers"), "worker_cores": (3, "max_worker_cores"),
            "worker_memory": ("3g", "max_worker_memory"), "image": ("someone/miner:latest", "allowed_images")}
    for field, (value, setting) in over.items():
        for body in ({"kind": "interactive", "cluster": {field: value}},
                     {"kind": "automated", "application": SQL_APP, "cluster": {field: value}}):
            code, reply = await _post(jp_fetch, body)
            assert code == 400 and _fields(reply) == [f"cluster.{field}"], (body, reply)
            assert setting in reply["message"]
    code, reply = await _post(jp_fetch, {"kind": "interactive",
                                         "cluster": {"workers": 3, "worker_cores": 2, "worker_memory": "2g"}})
    assert code == 201, reply


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


#: (name, raw body, expected status, the field the reply names or None)
HOSTILE: list[tuple[str, str | bytes, int, str | None]] = [
    ("deeply nested", _nested(200_000), 400, None),
    ("deeply nested in a field", '{"kind": "interactive", "cluster": {"workers": ' + _nested(5000) + "}}", 400, None),
    ("nested under the limit", '{"kind": "interactive", "cluster": {"workers": ' + _nested(500) + "}}", 422,
     "cluster.workers"),
    ("nested conf", json.dumps({"kind": "automated", "application": {**SQL_APP, "conf": {"a": {"b": {"c": 1}}}}}),
     422, "application.conf"),
    ("NaN", '{"kind": "interactive", "cluster": {"idle_timeout": NaN}}', 400, None),
    ("Infinity", '{"kind": "interactive", "cluster": {"max_lifetime": -Infinity}}', 400, None),
    ("1e400", json.dumps({"kind": "automated", "application": SQL_APP})[:-1] + ', "policy": {"max_runtime": 1e400}}',
     422, "policy.max_runtime"),
    ("a lone surrogate", '{"kind": "interactive", "name": "\\ud800"}', 400, None),
    ("bytes that are not UTF-8", b'{"kind": "interactive", "name": "\xff\xfe"}', 400, None),
    ("emoji in a name", json.dumps({"kind": "interactive", "name": "\U0001f4a5 boom"}), 422, "name"),
    ("NUL in a path", json.dumps({"kind": "automated", "application": {"type": "pyspark", "path": "a\x00b"}}),
     422, "application.path"),
    ("negative workers", json.dumps({"kind": "interactive", "cluster": {"workers": -5}}), 422, "cluster.workers"),
    ("huge workers", json.dumps({"kind": "interactive", "cluster": {"workers": 10**30}}), 422, "cluster.workers"),
    ("5000 digits", '{"kind": "interactive", "cluster": {"workers": ' + "9" * 5000 + "}}", 400, None),
    ("negative memory", json.dumps({"kind": "interactive", "cluster": {"worker_memory": -1}}), 422,
     "cluster.worker_memory"),
    ("absurd memory", json.dumps({"kind": "interactive", "cluster": {"worker_memory": "99999999999999t"}}), 400,
     "cluster.worker_memory"),
    ("negative timeout", json.dumps({"kind": "interactive", "cluster": {"idle_timeout": -1}}), 422,
     "cluster.idle_timeout"),
    ("args not a list", json.dumps({"kind": "automated", "application": {**SQL_APP, "args": "x"}}), 422,
     "application.args"),
    ("kind a number", json.dumps({"kind": 5}), 422, "kind"),
    ("a string body", json.dumps("interactive"), 422, ""),
    ("a list body", json.dumps([{"kind": "interactive"}]), 422, ""),
    ("unknown field", json.dumps({"kind": "interactive", "clusterr": {}}), 422, "clusterr"),
    ("huge name", json.dumps({"kind": "interactive", "name": "x" * 100_000}), 422, "name"),
    ("bad cluster_job", json.dumps({"kind": "automated", "application": SQL_APP, "cluster_job": "../../etc"}), 422,
     "cluster_job"),
]


async def test_hostile_bodies_get_a_4xx_that_names_the_field(server_log, jp_fetch) -> None:
    for name, raw, status, field in HOSTILE:
        code, reply = await _post(jp_fetch, raw)
        assert code == status, (name, code, reply)
        assert reply["message"], name
        if field is not None:
            assert field in _fields(reply), (name, reply)
    # a cluster to aim SQL bodies at
    code, job = await _post(jp_fetch, {"kind": "interactive", "cluster": {"image": "fake/ok"}})
    assert code == 201
    for body, field in (({"statement": 5}, "statement"), ({"statement": "SELECT 1", "limit": -3}, "limit"),
                        ({"statement": "SELECT 1", "limit": "ten"}, "limit"), (["SELECT 1"], "statement"),
                        ({"statement": "\ud800"}, None)):
        code, reply = await _post(jp_fetch, body if field else '{"statement": "\\ud800"}', job["id"], "sql")
        assert 400 <= code < 500 and code != 404, (body, code, reply)
        if field:
            assert field in reply["message"], (body, reply)
    _no_traceback(server_log)


async def test_query_parameters_out_of_range(server_log, jp_fetch) -> None:
    code, job = await _post(jp_fetch, {"kind": "interactive", "cluster": {"image": "fake/ok"}})
    assert code == 201
    cases = [(("jobs",), {"limit": "0"}, "limit"), (("jobs",), {"limit": "100000"}, "limit"),
             (("jobs",), {"limit": "ten"}, "limit"), (("jobs",), {"offset": "-1"}, "offset"),
             (("jobs",), {"state": "EXPLODED"}, "state"), (("jobs",), {"kind": "batch"}, "kind"),
             (("jobs", job["id"], "logs"), {"tail": "-5"}, "tail"),
             (("jobs", job["id"], "logs"), {"tail": "1" * 50}, "tail"),
             (("jobs", job["id"], "logs"), {"component": "../../etc/passwd"}, "component")]
    for path, params, name in cases:
        r = await jp_fetch("sparkdock", "api", *path, params=params, raise_error=False)
        reply = json.loads(r.body)
        assert 400 <= r.code < 500, (path, params, r.code, reply)
        assert name in reply["message"], (path, params, reply)
    _no_traceback(server_log)


async def _raw_request(port: int, head: str, body_parts: list[bytes], timeout: float = 20.0) -> bytes:
    """Send a request by hand (headers, then body parts) and read the reply until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode())
        for part in body_parts:
            writer.write(part)
            await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


async def test_an_oversized_body_is_refused_before_it_is_read(server_log, jp_fetch, jp_http_port, jp_base_url,
                                                              jp_auth_header) -> None:
    auth = "".join(f"{k}: {v}\r\n" for k, v in jp_auth_header.items())
    url = f"{jp_base_url.rstrip('/')}/sparkdock/api/jobs"
    # a declared gigabyte, of which nothing is sent: the 413 comes back at once, so nothing was buffered
    head = (f"POST {url} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\n"
            f"Content-Length: {1024**3}\r\n\r\n")
    reply = await _raw_request(jp_http_port, head, [])
    assert reply.startswith(b"HTTP/1.1 413"), reply[:300]
    assert b"too large" in reply
    # a chunked body (no length declared) over the limit: refused once read, only the limit was kept
    head = (f"POST {url} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    chunk = b"x" * (256 * 1024)
    parts = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * (MAX_BODY_BYTES // len(chunk) + 2) + [b"0\r\n\r\n"]
    reply = await _raw_request(jp_http_port, head, parts)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:300]
    # the server still answers
    r = await jp_fetch("sparkdock", "api", "info")
    assert r.code == 200
    _no_traceback(server_log)


@pytest.mark.parametrize("sparkdock_config", [{"bind_address": "0.0.0.0"}])
async def test_a_bind_address_beyond_loopback_is_warned_about(capsys, jp_fetch) -> None:
    await jp_fetch("sparkdock", "api", "info")
    start_log = capsys.readouterr().err.splitlines()  # the server's start, logged to stderr
    warned = [line for line in start_log if "bind_address='0.0.0.0' is not loopback" in line]
    assert warned and "SQL endpoint" in warned[0] and "Spark UIs" in warned[0], start_log[-20:]
    assert warned[0].startswith("[W ")
    for address in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert exposure_warning(address) is None, address
    for address in ("0.0.0.0", "", "::", "192.168.1.10"):
        assert exposure_warning(address), address

"""The OpenAPI document (``GET sparkdock/api/openapi.json``): served, true to the routes the handlers serve, its
request schemas the pydantic specs', and schemathesis run against it on a real server finds no 5xx."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fake_server import fake_server  # noqa: F401
from sparkdock.demo import Server
from sparkdock.model.specs import ApplicationSpec, AutomatedJobRequest, ClusterSpec, Policy, SQLRequest
from sparkdock.server import openapi
from sparkdock.server.handlers import EventsHandler, default_handlers

METHODS = ("get", "post", "put", "patch", "delete")


def _methods(handler: type) -> set[str]:
    """The HTTP methods a handler class implements itself (not tornado's defaults)."""
    return {m for m in METHODS for c in handler.__mro__ if c.__module__.startswith("sparkdock") and m in vars(c)}


def _handler_for(path: str) -> type | None:
    for pattern, handler in default_handlers:
        if re.fullmatch(pattern, path):
            return handler
    return None


async def test_the_document_is_served_and_true_to_the_routes(jp_fetch, jp_base_url):
    r = await jp_fetch("sparkdock", "api", "openapi.json")
    doc = json.loads(r.body)
    assert doc["openapi"].startswith("3.1") and doc["servers"] == [{"url": jp_base_url.rstrip("/")}]

    documented: dict[type, set[str]] = {}
    for path, item in doc["paths"].items():
        handler = _handler_for(path.replace("{job_id}", "j0b_id-1"))
        assert handler is not None, f"{path} is documented but no handler serves it"
        methods = {m for m in item if m in METHODS}
        assert methods == _methods(handler), (path, methods, _methods(handler))
        documented[handler] = methods
        for param in item.get("parameters", []):
            assert param["in"] != "path" or "{" + param["name"] + "}" in path
    served = {handler for _, handler in default_handlers}
    assert served - set(documented) == {EventsHandler}, "a route is served but not documented"
    assert _handler_for(doc["x-websocket"]["path"]) is EventsHandler
    assert doc["x-websocket"]["close_codes"] == {"4008": "too slow: the client fell too far behind; "
                                                         "reconnect and reload"}

    # request bodies are the pydantic specs' own schemas, not a copy that could drift
    schemas = doc["components"]["schemas"]
    for model in (ClusterSpec, ApplicationSpec, Policy, AutomatedJobRequest, SQLRequest):
        expected = model.model_json_schema(ref_template=openapi.REF)
        expected.pop("$defs", None)
        assert schemas[model.__name__] == expected, model.__name__
    assert doc["paths"]["/sparkdock/api/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JobRequest"}
    assert set(schemas["JobRequest"]["discriminator"]["mapping"]) == {"interactive", "automated"}


async def test_the_document_needs_a_login(jp_fetch):
    """Like every route of the API: no token, no document."""
    import tornado.httpclient

    with pytest.raises(tornado.httpclient.HTTPClientError) as err:
        await jp_fetch("sparkdock", "api", "openapi.json", headers={"Authorization": ""})
    assert err.value.code == 403


def test_schemathesis_finds_no_server_error(fake_server: Server, tmp_path: Path) -> None:  # noqa: F811
    """Property-based requests from the document (valid and invalid ones) against a real server on the test
    double (valid bodies start pretend clusters), bounded in examples and time: no answer is a 5xx, and every
    answer matches the document's schema for it."""
    st = Path(sys.executable).with_name("st")
    cmd = [
        str(st), "run", f"{fake_server.url}sparkdock/api/openapi.json",
        "--header", f"Authorization: token {fake_server.token}",
        "--checks", "not_a_server_error,response_schema_conformance",
        "--max-examples", "25", "--max-time", "15", "--seed", "33", "--workers", "1",
        "--request-timeout", "20", "--generation-database", "none", "--no-color",
    ]
    env = {**os.environ, "SCHEMATHESIS_TELEMETRY": "false"}
    # in a folder of its own: schemathesis keeps a cache (.schemathesis/) in its working directory
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[:12000] + "\n" + fake_server.log_tail(40)
    # it really ran every operation of the document, in every phase, with many cases
    operations = sum(1 for item in openapi.PATHS.values() for m in item if m in METHODS)
    selected = re.search(r"Selected:\s+(\d+)/(\d+)\s+Tested:\s+(\d+)", out)
    # (every operation but the document's own GET, which schemathesis leaves out)
    assert selected and int(selected[3]) == int(selected[2]) == operations - 1, out[-3000:]
    cases = re.search(r"(\d+) generated, (\d+) passed", out)
    assert cases and int(cases[1]) >= 300 and cases[1] == cases[2], out[-3000:]

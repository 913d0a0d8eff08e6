"""The OpenAPI 3.1 document of the REST API, served at ``GET sparkdock/api/openapi.json``.

The request bodies' schemas are generated from the pydantic specs (:mod:`sparkdock.model.specs`: what the
handlers validate with), so they cannot drift from the validation. The paths, methods and parameters are
written here next to each other; ``tests/test_openapi.py`` keeps them equal to the routes the handlers serve,
and schemathesis runs the document against a real server. The event WebSocket is not an HTTP operation: it is
described in ``x-websocket``.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from pydantic import TypeAdapter

from sparkdock._version import __version__
from sparkdock.model.lifecycle import Kind, State
from sparkdock.model.protocol import SLOW_CONSUMER_CLOSE_CODE
from sparkdock.model.specs import JobRequest, SQLRequest

REF = "#/components/schemas/{model}"
API = "/sparkdock/api"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


_STR = {"type": "string"}
_INT = {"type": "integer"}
_OBJ = {"type": "object"}

_JOB_FIELDS: dict[str, Any] = {
    "id": _STR,
    "kind": {"type": "string", "enum": [k.value for k in Kind]},
    "name": _STR,
    "state": {"type": "string", "enum": [s.value for s in State]},
    "phase": _nullable(_STR),
    "exit_code": _nullable(_INT),
    "exit_message": _nullable(_STR),
    "runtime_status": {
        "type": "object",
        "description": "seed 001: what the job does now, and its warning and error",
        "properties": {k: _nullable(_STR) for k in ("activity", "warning", "error")},
    },
    "endpoints": _nullable({"type": "object", "description": "a RUNNING cluster's sql, lab and spark_ui"}),
    "spec": {"type": "object", "description": "the request as stored, with the server's defaults filled in"},
    "owner": _nullable(_STR),
    "created_at": {"type": "string", "description": "ISO 8601 UTC"},
    "updated_at": {"type": "string", "description": "ISO 8601 UTC"},
    "started_at": _nullable(_STR),
    "ended_at": _nullable(_STR),
    "attempt": _INT,
    "flagged": {"type": "boolean", "description": "a RUNNING job with a runtime error (never reused)"},
    "backend": _nullable(_STR),
    "seq": {"type": "integer", "description": "grows with every change of the job"},
}

RESPONSE_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["message"],
        "properties": {
            "message": _STR,
            "errors": {
                "type": "array",
                "description": "one entry per bad field (422)",
                "items": {"type": "object", "properties": {"field": _STR, "message": _STR}},
            },
        },
    },
    "Job": {
        "type": "object",
        "required": [k for k in _JOB_FIELDS if k not in ("attempt", "flagged", "backend", "seq")],
        "properties": _JOB_FIELDS,
    },
    "JobList": {
        "type": "object",
        "required": ["jobs", "total"],
        "properties": {"jobs": {"type": "array", "items": _ref("Job")}, "total": _INT},
    },
    "JobStatus": {
        "type": "object",
        "required": ["id", "state", "exit_code"],
        "properties": {"id": _STR, "state": _JOB_FIELDS["state"], "exit_code": _nullable(_INT)},
    },
    "History": {
        "type": "object",
        "required": ["events"],
        "properties": {"events": {"type": "array", "items": {
            "type": "object",
            "required": ["time", "event"],
            "properties": {"id": _INT, "time": _STR, "event": _STR, "state": _nullable(_STR),
                           "phase": _nullable(_STR), "description": _nullable(_STR), "attempt": _nullable(_INT),
                           "progress": _OBJ},
        }}},
    },
    "Logs": {
        "type": "object",
        "required": ["id", "component", "logs"],
        "properties": {"id": _STR, "component": _STR, "logs": _STR},
    },
    "SQLResult": {
        "type": "object",
        "required": ["columns", "rows"],
        "properties": {"columns": {"type": "array", "items": _STR}, "rows": {"type": "array", "items": {
            "type": "array"}}, "row_count": _INT, "truncated": {"type": "boolean"}, "limit": _nullable(_INT)},
    },
    "Notifications": {
        "type": "object",
        "required": ["id", "notifications", "deliveries"],
        "properties": {
            "id": _STR,
            "notifications": {"type": "array", "items": _OBJ, "description": "the job's notifications as stored"},
            "deliveries": {"type": "array", "items": {
                "type": "object",
                "required": ["id", "notification", "event", "url", "status", "attempts"],
                "properties": {
                    "id": {"type": "string", "description": "the webhook-id, or the email's Message-ID (the same "
                           "for every attempt)"},
                    "notification": {"type": "string", "description": "job:<i> (the job's) or server:<i>"},
                    "event": _STR, "channel": {"type": "string", "enum": ["webhook", "email"]},
                    "url": {"type": "string", "description": "the URL or mailto: address (a server default's as "
                            "its origin, or its address's domain)"},
                    "status": {"type": "string", "enum": ["pending", "delivered", "failed"]},
                    "created_at": _STR, "next_attempt_at": _nullable(_STR), "delivered_at": _nullable(_STR),
                    "last_error": _nullable(_STR),
                    "attempts": {"type": "array", "items": {
                        "type": "object",
                        "properties": {"number": _INT, "time": _STR, "status_code": _nullable(_INT),
                                       "latency_ms": _nullable(_INT), "error": _nullable(_STR),
                                       "outcome": {"type": "string", "enum": ["delivered", "retry", "failed"]}},
                        "description": "status_code: the HTTP status of a webhook, the SMTP reply code of an email",
                    }},
                },
            }},
        },
    },
    "WebhookSecretInfo": {
        "type": "object",
        "properties": {"created_at": _nullable(_STR), "shown": {"type": "boolean"}, "rotated_at": _nullable(_STR),
                       "grace_seconds": {"type": "number"}},
    },
    "WebhookSecret": {
        "type": "object",
        "required": ["secret", "created_at", "rotated"],
        "properties": {"secret": {"type": "string", "description": "whsec_<base64>: shown this once"},
                       "created_at": _STR, "rotated": {"type": "boolean"}, "grace_seconds": {"type": "number"}},
    },
    "Credentials": {"type": "object", "description": "sql {user, password, jdbc_url} and lab {token, url}"},
    "ExitCodes": {"description": "the exit-code catalog (seed 000)"},
    "Info": {"type": "object", "description": "version, backend in use and why, capacity, state colours"},
    "ClusterOptions": {
        "type": "object",
        "description": "what a cluster request may ask of this server, and what it gets when it does not say",
        "required": ["workers", "worker_cores", "worker_memory", "image", "idle_timeout", "max_lifetime"],
        "properties": {
            "workers": {"type": "object", "properties": {"default": _INT, "min": _INT, "max": _INT}},
            "worker_cores": {"type": "object", "properties": {"default": _INT, "min": _INT, "max": _INT}},
            "worker_memory": {"type": "object", "properties": {"default": _STR, "min": _STR, "max": _STR}},
            "image": {"type": "object", "properties": {
                "default": _nullable(_STR),
                "allowed": _nullable({"type": "array", "items": _STR}),
            }, "description": "allowed: the images a request may name (null: any)"},
            "idle_timeout": {"type": "object", "properties": {"default": _nullable({"type": "number"})}},
            "max_lifetime": {"type": "object", "properties": {"default": _nullable({"type": "number"})}},
        },
    },
    "OpenAPI": {"type": "object"},
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


_DENIED = {"403": _error("not authenticated, or not allowed on sparkdock:jobs")}
_UNKNOWN = {"404": _error("no such job (or not the caller's)")}
_STORE = {"503": _error("the server cannot write its store or files (a full disk); nothing was changed")}
_JOB_ID = {"name": "job_id", "in": "path", "required": True,
           "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"}}


def _int_query(name: str, lo: int, hi: int, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": "integer", "minimum": lo, "maximum": hi}}


def _body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(schema)}}}


PATHS: dict[str, dict[str, Any]] = {
    f"{API}/jobs": {
        "get": {
            "operationId": "listJobs", "summary": "List jobs, newest first",
            "parameters": [
                {"name": "kind", "in": "query", "required": False,
                 "schema": {"type": "string", "enum": [k.value for k in Kind]}},
                {"name": "state", "in": "query", "required": False, "description": "states, comma-separated",
                 "schema": {"type": "string"}},
                _int_query("limit", 1, 1000, "at most this many (default 100)"),
                _int_query("offset", 0, 10**9, "skip this many"),
            ],
            "responses": {"200": _ok("the jobs and how many match", "JobList"),
                          "400": _error("a bad query parameter"), **_DENIED},
        },
        "post": {
            "operationId": "submitJob", "summary": "Launch an interactive cluster or submit an automated job",
            "requestBody": _body("JobRequest"),
            "responses": {"201": _ok("the job, QUEUED (Location: its URL)", "Job"),
                          "400": _error("not JSON, a request the server's limits refuse, or a notification "
                                        "it cannot send (errors name each field)"),
                          "409": _error("cluster_job is not RUNNING"), "413": _error("body over 2 MB"),
                          "422": _error("a spec that cannot run; errors name each field"),
                          "429": _error("too many jobs queued"), **_DENIED, **_STORE},
        },
    },
    f"{API}/jobs/{{job_id}}": {
        "parameters": [_JOB_ID],
        "get": {"operationId": "getJob", "summary": "One job (with its code)",
                "responses": {"200": _ok("the job", "Job"), **_UNKNOWN, **_DENIED}},
        "delete": {"operationId": "cancelJob", "summary": "Cancel a job or terminate a cluster (repeat is harmless)",
                   "responses": {"202": _ok("the job, CANCELING (or already ended)", "Job"), **_UNKNOWN,
                                 **_DENIED, **_STORE}},
    },
    f"{API}/jobs/{{job_id}}/status": {
        "parameters": [_JOB_ID],
        "get": {"operationId": "getJobStatus", "summary": "State and exit code",
                "responses": {"200": _ok("state and exit code", "JobStatus"), **_UNKNOWN, **_DENIED}},
    },
    f"{API}/jobs/{{job_id}}/history": {
        "parameters": [_JOB_ID],
        "get": {"operationId": "getJobHistory", "summary": "The job's events, oldest first",
                "responses": {"200": _ok("the events", "History"), **_UNKNOWN, **_DENIED}},
    },
    f"{API}/jobs/{{job_id}}/logs": {
        "parameters": [_JOB_ID],
        "get": {
            "operationId": "getJobLogs", "summary": "Logs of one component",
            "parameters": [
                {"name": "component", "in": "query", "required": False,
                 "description": "master, worker-N, sql, lab or driver (default: driver or master)",
                 "schema": {"type": "string"}},
                _int_query("tail", 1, 100_000, "only the last lines"),
            ],
            "responses": {"200": _ok("the log text", "Logs"), "400": _error("a bad tail"),
                          **_UNKNOWN, **_DENIED},
        },
    },
    f"{API}/jobs/{{job_id}}/sql": {
        "parameters": [_JOB_ID],
        "post": {
            "operationId": "runSQL", "summary": "Run a statement on a RUNNING interactive cluster",
            "requestBody": _body("SQLRequest"),
            "responses": {"200": _ok("columns and rows", "SQLResult"), "400": _error("a SQL error"),
                          "409": _error("not a RUNNING interactive job"), "413": _error("body over 2 MB"),
                          "422": _error("a bad body; errors name each field"), **_UNKNOWN, **_DENIED},
        },
    },
    f"{API}/jobs/{{job_id}}/credentials": {
        "parameters": [_JOB_ID],
        "get": {"operationId": "getCredentials", "summary": "SQL password and lab token of a RUNNING cluster "
                                                            "(needs write permission; never cached)",
                "responses": {"200": _ok("the credentials", "Credentials"), "409": _error("not RUNNING"),
                              **_UNKNOWN, **_DENIED}},
    },
    f"{API}/jobs/{{job_id}}/notifications": {
        "parameters": [_JOB_ID],
        "get": {"operationId": "getJobNotifications", "summary": "The job's notifications (webhooks, emails) and every "
                "delivery attempt",
                "responses": {"200": _ok("notifications and deliveries", "Notifications"), **_UNKNOWN, **_DENIED}},
    },
    f"{API}/webhooks/secret": {
        "get": {"operationId": "getWebhookSecretInfo", "summary": "When the webhook signing secret was made, "
                                                                  "rotated, shown (admins; never the secret)",
                "responses": {"200": _ok("what is known of the secret", "WebhookSecretInfo"), **_DENIED}},
        "post": {"operationId": "revealWebhookSecret", "summary": "Show a signing secret once: the current one if "
                                                                  "never shown, else a new one (rotation; admins)",
                 "responses": {"200": _ok("the secret, shown this once", "WebhookSecret"), **_DENIED, **_STORE}},
    },
    f"{API}/exit-codes": {
        "get": {"operationId": "getExitCodes", "summary": "The exit-code catalog",
                "responses": {"200": _ok("the catalog", "ExitCodes"), **_DENIED}},
    },
    f"{API}/info": {
        "get": {"operationId": "getInfo", "summary": "Backend in use and why, capacity, state colours",
                "responses": {"200": _ok("what the server runs on", "Info"), **_DENIED}},
    },
    f"{API}/cluster-options": {
        "get": {"operationId": "getClusterOptions", "summary": "What a cluster request may ask (sizes, images) and "
                "the defaults it gets when it does not say",
                "responses": {"200": _ok("the bounds and defaults", "ClusterOptions"), **_DENIED}},
    },
    f"{API}/openapi.json": {
        "get": {"operationId": "getOpenAPI", "summary": "This document",
                "responses": {"200": _ok("the OpenAPI document", "OpenAPI"), **_DENIED}},
    },
}

WEBSOCKET: dict[str, Any] = {
    "path": f"{API}/events",
    "description": 'One JSON message per job change, {"type": "job", "job": <Job without '
                   'spec.application.code>}, and one per attempt of a notification, {"type": "delivery", "owner", '
                   '"delivery": {"id", "job_id", "notification", "event", "channel", "status", "attempts", '
                   '"next_attempt_at", "last_error"}}, for the jobs the caller may see. A client that does not read is '
                   f"closed with code {SLOW_CONSUMER_CLOSE_CODE} once SparkDockApp.event_queue_size events wait "
                   "for it: reconnect and reload the jobs (GET /sparkdock/api/jobs).",
    "close_codes": {str(SLOW_CONSUMER_CLOSE_CODE): "too slow: the client fell too far behind; reconnect and reload"},
}


@functools.cache
def _components() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for name, model in (("JobRequest", TypeAdapter(JobRequest)), ("SQLRequest", TypeAdapter(SQLRequest))):
        schema = model.json_schema(ref_template=REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
    schemas.update(RESPONSE_SCHEMAS)
    return {
        "schemas": schemas,
        "securitySchemes": {"token": {
            "type": "apiKey", "in": "header", "name": "Authorization",
            "description": "'token <the Jupyter server's token>' (or the server's other login)",
        }},
    }


def document(base_url: str = "/") -> dict[str, Any]:
    """The OpenAPI document for a server whose base URL is ``base_url`` (a fresh copy)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sparkdock",
            "version": __version__,
            "description": "Interactive Spark clusters and automated Spark jobs from Jupyter. Errors are JSON "
                           '{"message": ...}. The event stream is a WebSocket (x-websocket).',
        },
        "servers": [{"url": base_url.rstrip("/") or "/"}],
        "security": [{"token": []}],
        "paths": copy.deepcopy(PATHS),
        "components": copy.deepcopy(_components()),
        "x-websocket": dict(WEBSOCKET),
    }

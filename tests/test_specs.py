"""Bad specs are rejected with field-level messages; good ones get defaults."""

from __future__ import annotations

import pytest

from sparkdock.model.specs import (
    AutomatedJobRequest,
    InteractiveJobRequest,
    SpecError,
    parse_job_request,
    parse_size,
)


def _fields(body) -> dict[str, str]:
    with pytest.raises(SpecError) as exc:
        parse_job_request(body)
    return {e["field"]: e["message"] for e in exc.value.errors}


def test_interactive_defaults():
    req = parse_job_request({"kind": "interactive", "name": "demo"})
    assert isinstance(req, InteractiveJobRequest)
    assert req.cluster.workers == 1 and req.cluster.worker_memory == "1g"


def test_automated_full():
    req = parse_job_request({
        "kind": "automated", "name": "etl",
        "application": {"type": "pyspark", "code": "print(1)", "args": ["a"], "conf": {"spark.x": 1, "spark.y": True}},
        "cluster": {"workers": 2, "worker_cores": 1, "worker_memory": "512m"},
        "policy": {"max_runtime": 60, "overrun_action": "cancel", "retries": 2, "rerun_on_exit_codes": [2]},
    })
    assert isinstance(req, AutomatedJobRequest)
    assert req.application.conf == {"spark.x": "1", "spark.y": "true"}
    assert req.policy.retries == 2


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"kind": "interactive", "cluster": {"workers": -1}}, "cluster.workers", "greater than or equal to 1"),
        ({"kind": "interactive", "cluster": {"workers": "two"}}, "cluster.workers", "integer"),
        ({"kind": "interactive", "cluster": {"worker_memory": "lots"}}, "cluster.worker_memory", "512m"),
        ({"kind": "interactive", "cluster": {"worker_memory": "100m"}}, "cluster.worker_memory", "at least"),
        ({"kind": "interactive", "cluster": {"image": "Bad Image!"}}, "cluster.image", "image reference"),
        ({"kind": "interactive", "cluster": {"idle_timeout": 0}}, "cluster.idle_timeout", "greater than 0"),
        ({"kind": "interactive", "cluster": {"wrokers": 2}}, "cluster.wrokers", "unknown field"),
        ({"kind": "batch"}, "kind", "'interactive' or 'automated'"),
        ({}, "kind", "required"),
        ({"kind": "automated", "application": {"type": "pyspark", "code": "x", "path": "/y"}},
         "application", "exactly one of 'code' or 'path'"),
        ({"kind": "automated", "application": {"type": "pyspark"}}, "application", "exactly one"),
        ({"kind": "automated", "application": {"type": "scala", "code": "x"}}, "application.type", "pyspark"),
        ({"kind": "automated", "application": {"type": "sql", "code": "x"}, "cluster": {}, "cluster_job": "abc"},
         "", "not both"),
        ({"kind": "automated", "application": {"type": "sql", "code": "x"}, "policy": {"retries": 99}},
         "policy.retries", "less than or equal to 10"),
        ({"kind": "automated", "application": {"type": "sql", "code": "x"}, "policy": {"rerun_on_exit_codes": [9]}},
         "policy.rerun_on_exit_codes.0", "less than or equal to 7"),
        ({"kind": "automated", "application": {"type": "sql", "code": "x"},
          "policy": {"min_runtime": 10, "max_runtime": 5}}, "policy", "min_runtime"),
        ({"kind": "automated", "application": {"type": "sql", "code": "x", "conf": {"bad key": "1"}}},
         "application.conf", "invalid conf key"),
        ({"kind": "automated", "application": {"type": "sql", "code": "x", "conf": {"spark.authenticate": "false"}}},
         "application.conf", "set by sparkdock"),
        ({"kind": "automated", "application": {"type": "sql", "code": "x",
                                                "conf": {"spark.redaction.regex": "nothing"}}},
         "application.conf", "set by sparkdock"),
        ({"kind": "automated", "application": {"type": "sql", "code": "x",
                                                "conf": {"spark.ui.killEnabled": "true"}}},
         "application.conf", "set by sparkdock"),
    ],
)
def test_bad_specs_name_the_field(body, field, words):
    errors = _fields(body)
    assert field in errors, errors
    assert words in errors[field], errors


def test_huge_code_is_refused():
    errors = _fields({"kind": "automated", "application": {"type": "pyspark", "code": "x" * 1_000_001}})
    assert "at most" in errors["application.code"]


def test_not_an_object():
    with pytest.raises(SpecError, match="JSON object"):
        parse_job_request([1, 2])


def test_sizes():
    assert parse_size("1g") == 1024**3
    assert parse_size("512M") == 512 * 1024**2
    with pytest.raises(ValueError):
        parse_size("1.5g")

"""Template variables of notifications (seed 002): ``${JOB_ID}`` and the others, in URLs and payloads.

A notification's ``url`` (and its optional custom ``payload``) may name any variable of :data:`VARIABLES` as
``${NAME}``; when the event happens, each is replaced by its value for the job at that moment. A name that is
not in the table is refused when the job is submitted (:func:`unknown_variables`), so a typo never becomes a
literal ``${JOB_IDD}`` in a request. In a URL the values are percent-encoded (a job's error has spaces and
slashes); in a payload they are inserted as they are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

#: Every variable, and what it is in sparkdock (seed 002's table, plus EXIT_CODE and OWNER).
VARIABLES: dict[str, str] = {
    "UUID": "the job's id (sparkdock's ids are short, unique and URL-safe; the same value as JOB_ID)",
    "EVENT": "the event that happened: the state the job just entered, e.g. RUNNING or SYSTEM_ERROR",
    "JOB_STATUS": "the job's state when the event happened",
    "JOB_URL": "the job in the API: <server>/sparkdock/api/jobs/<id>",
    "JOB_ID": "the job's id",
    "JOB_SYSTEM": "the backend that runs the job: docker or local (the execution system)",
    "JOB_NAME": "the job's name (its id when it was given none)",
    "JOB_START_TIME": "when the job started running, ISO 8601 UTC (empty before it has)",
    "JOB_END_TIME": "when the job ended, ISO 8601 UTC (empty before it has)",
    "JOB_SUBMIT_TIME": "when the job was submitted, ISO 8601 UTC",
    "JOB_ARCHIVE_PATH": "where the job's logs and outputs are read, relative to the server: "
                        "sparkdock/api/jobs/<id>/logs",
    "JOB_ARCHIVE_URL": "the same, as a full URL: <server>/sparkdock/api/jobs/<id>/logs",
    "JOB_ERROR": "the message that explains why the job failed or was canceled (empty otherwise)",
    "EXIT_CODE": "the job's exit code (seed 000; empty unless it ended CANCELED, EXECUTOR_ERROR or SYSTEM_ERROR)",
    "OWNER": "the user who submitted the job",
}

#: ``${NAME}`` (a name is upper-case letters, digits and underscores)
_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


def variables_in(text: str) -> list[str]:
    """The names of the ``${...}`` variables in ``text``, in order."""
    return _VARIABLE.findall(text)


def unknown_variables(text: str) -> list[str]:
    """The variables of ``text`` that are not in :data:`VARIABLES` (empty when every one is known)."""
    return [name for name in variables_in(text) if name not in VARIABLES or not _NAME.match(name)]


def strings_in(value: Any) -> list[str]:
    """Every string of a JSON value (its values, not its keys), to check or render a payload template."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings_in(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings_in(v)]
    return []


def render(text: str, values: Mapping[str, str], *, url: bool = False) -> str:
    """``text`` with each ``${NAME}`` replaced by ``values[NAME]`` (percent-encoded when ``url``). A name
    without a value (refused at submission, so not expected) is left as it is."""

    def one(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in values:
            return m.group(0)
        value = values[name]
        return quote(value, safe="") if url else value

    return _VARIABLE.sub(one, text)


def render_json(value: Any, values: Mapping[str, str]) -> Any:
    """A JSON value (a payload template) with the variables of its strings replaced (keys are kept)."""
    if isinstance(value, str):
        return render(value, values)
    if isinstance(value, dict):
        return {k: render_json(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [render_json(v, values) for v in value]
    return value


def sample_values() -> dict[str, str]:
    """A value for every variable, to check that a URL template makes a valid URL once rendered."""
    return {name: "x" for name in VARIABLES}

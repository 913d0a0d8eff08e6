"""Validated input models (pydantic v2) for the bodies of ``POST sparkdock/api/jobs``.

Every model forbids unknown fields, so a typo is an error that names the field instead of being silently
ignored. :func:`parse_job_request` turns a ``ValidationError`` into a :class:`SpecError` whose message names
each offending field with a dotted path (``cluster.workers``) and says what is allowed.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from sparkdock.model import templates

#: Largest inline application code accepted (bytes of UTF-8).
MAX_CODE_BYTES = 1_000_000

_SIZE_RE = re.compile(r"^(\d+)([kmgt])?b?$", re.IGNORECASE)
_UNITS = {None: 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
# A Docker image reference: [registry[:port]/]path[:tag][@digest], lower-case path components.
_IMAGE_RE = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::\d+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
_NAME_RE = re.compile(r"^[\w .:@()/+-]{1,100}$")
_CONF_KEY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")


def parse_size(value: str) -> int:
    """Parse a Spark/JVM size like ``"512m"``, ``"1g"`` or ``"2048"`` (bytes) into bytes."""
    m = _SIZE_RE.match(value.strip())
    if not m:
        raise ValueError(f"invalid size {value!r}")
    unit = m.group(2).lower() if m.group(2) else None
    return int(m.group(1)) * _UNITS[unit]


def _check_size(value: str, minimum: int) -> str:
    if not isinstance(value, str) or not _SIZE_RE.match(value.strip()):
        raise ValueError("must be a size like '512m' or '1g' (a number with an optional k, m, g or t suffix)")
    if parse_size(value) < minimum:
        raise ValueError(f"must be at least {minimum // 1024**2}m")
    return value.strip().lower().removesuffix("b")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


PositiveSeconds = Annotated[float, Field(gt=0, le=30 * 24 * 3600, description="seconds")]


#: The bounds of every cluster request (a server's ``max_*`` settings may only lower the maxima).
SPEC_MAX_WORKERS = 32
SPEC_MAX_WORKER_CORES = 64
MIN_WORKER_MEMORY = "256m"


class ClusterSpec(_Model):
    """The shape of a cluster: workers, their size, the image and (interactive) schedule limits."""

    workers: int = Field(1, ge=1, le=SPEC_MAX_WORKERS, description="number of Spark workers")
    worker_cores: int = Field(1, ge=1, le=SPEC_MAX_WORKER_CORES, description="cores per worker")
    worker_memory: str = Field("1g", description=f"memory per worker, e.g. '1g' or '512m' (at least "
                                                 f"{MIN_WORKER_MEMORY})")
    image: str | None = Field(None, description="container image (Docker backend); default from config")
    idle_timeout: PositiveSeconds | None = Field(
        None, description="terminate an interactive cluster idle for this many seconds"
    )
    max_lifetime: PositiveSeconds | None = Field(
        None, description="terminate an interactive cluster this many seconds after it started"
    )

    @field_validator("worker_memory", mode="before")
    @classmethod
    def _memory(cls, v: Any) -> str:
        if not isinstance(v, str):
            raise ValueError("must be a string size like '512m' or '1g'")
        return _check_size(v, parse_size(MIN_WORKER_MEMORY))

    @field_validator("image")
    @classmethod
    def _image(cls, v: str | None) -> str | None:
        if v is not None and not _IMAGE_RE.match(v):
            raise ValueError("must be an image reference like 'sparkdock/spark:0.1.0' (lower-case name)")
        return v

    @property
    def worker_memory_bytes(self) -> int:
        """Worker memory in bytes."""
        return parse_size(self.worker_memory)


#: Spark properties an application may not set: the cluster's secret and encryption, the closed submission
#: and kill paths, the redaction of secrets in UIs, and sparkdock's own keys (see docs/SECURITY.md).
RESERVED_CONF = "spark.authenticate"
RESERVED_CONF_PREFIXES = ("spark.authenticate.", "spark.network.crypto.", "spark.master.rest.",
                          "spark.ui.killEnabled", "spark.redaction.", "spark.sparkdock.")


class ApplicationSpec(_Model):
    """A Spark application: PySpark code or file, or a SQL script."""

    type: Literal["pyspark", "sql"] = Field(description="'pyspark' or 'sql'")
    code: str | None = Field(None, description="inline code (exactly one of code/path)")
    path: str | None = Field(None, description="path of a file readable by the server (exactly one of code/path)")
    args: list[str] = Field(default_factory=list, max_length=256, description="application arguments")
    conf: dict[str, str] = Field(default_factory=dict, description="Spark conf, e.g. spark.executor.memory")

    @field_validator("code")
    @classmethod
    def _code(cls, v: str | None) -> str | None:
        if v is not None:
            if not v.strip():
                raise ValueError("must not be empty")
            if len(v.encode()) > MAX_CODE_BYTES:
                raise ValueError(f"must be at most {MAX_CODE_BYTES} bytes; use 'path' for larger files")
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None and (not v or "\x00" in v):
            raise ValueError("must be a non-empty file path")
        return v

    @field_validator("conf", mode="before")
    @classmethod
    def _conf(cls, v: Any) -> dict[str, str]:
        if not isinstance(v, dict):
            raise ValueError("must be an object of Spark conf keys to values")
        out: dict[str, str] = {}
        for key, val in v.items():
            if not isinstance(key, str) or not _CONF_KEY_RE.match(key):
                raise ValueError(f"invalid conf key {key!r}")
            if key == RESERVED_CONF or key.startswith(RESERVED_CONF_PREFIXES):
                raise ValueError(f"conf key {key!r} is set by sparkdock (the cluster's security settings) and "
                                 "cannot be changed by an application")
            if isinstance(val, dict | list) or val is None:
                raise ValueError(f"conf value of {key!r} must be a string, number or boolean")
            out[key] = str(val).lower() if isinstance(val, bool) else str(val)
        return out

    @model_validator(mode="after")
    def _exactly_one(self) -> ApplicationSpec:
        if (self.code is None) == (self.path is None):
            raise ValueError("exactly one of 'code' or 'path' must be given")
        return self


class Policy(_Model):
    """Run policies of an automated job (seeds 003 and 004)."""

    max_runtime: PositiveSeconds | None = Field(None, description="overrun after this many seconds")
    min_runtime: PositiveSeconds | None = Field(None, description="underrun warning if it ends sooner")
    overrun_action: Literal["warn", "cancel"] = Field("warn", description="'warn' or 'cancel' (exit code 15)")
    retries: int = Field(0, ge=0, le=10, description="start retries with exponential backoff")
    rerun_on_exit_codes: list[Annotated[int, Field(ge=1, le=7)]] = Field(
        default_factory=list, max_length=7, description="kernel exit codes (1-7) that trigger a rerun"
    )

    @model_validator(mode="after")
    def _runtime_order(self) -> Policy:
        if self.max_runtime is not None and self.min_runtime is not None and self.min_runtime > self.max_runtime:
            raise ValueError("min_runtime must not be larger than max_runtime")
        return self


#: Events a notification may name: a state the job enters (any but UNKNOWN), or ``*`` for every state change
#: (tests/test_outbox.py keeps it equal to the states).
NotificationEvent = Literal["*", "QUEUED", "INITIALIZING", "RUNNING", "COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR",
                            "CANCELING", "CANCELED"]
#: Most notifications of one job, and the largest payload template (bytes of JSON).
MAX_NOTIFICATIONS = 10
MAX_PAYLOAD_BYTES = 16 * 1024


def _known_variables(text: str) -> None:
    unknown = templates.unknown_variables(text)
    if unknown:
        raise ValueError(f"unknown template variable ${{{unknown[0]}}}; known: "
                         + ", ".join(f"${{{n}}}" for n in templates.VARIABLES))


#: a single email address (the common subset of RFC 5321: no quoted local part, no address literal)
_EMAIL_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
                       r"[A-Za-z0-9])?\.)+[A-Za-z]{2,63}")


def email_address(url: str) -> str | None:
    """The address of an email notification (``mailto:ops@example.org`` or a bare ``ops@example.org``), or None
    when ``url`` is not one (a webhook's URL). The address is not checked: :class:`NotificationSpec` does."""
    if url[:7].lower() == "mailto:":
        return url[7:]
    if "://" not in url and "@" in url:
        return url
    return None


class NotificationSpec(_Model):
    """A notification on a job's events (seed 002): a webhook POSTed, signed, to ``url``, or an email when
    ``url`` is an email address; sent when the job enters ``event``."""

    url: str = Field(min_length=1, max_length=2048, description="an http:// or https:// URL (it may hold template "
                     "variables like ${JOB_ID} or ${EVENT}), or an email address (mailto:ops@example.org or "
                     "ops@example.org)")
    event: NotificationEvent = Field(description="the state that triggers it, or '*' for every state change")
    persistent: bool = Field(False, description="false: sent once, on the first matching event; true: on every "
                             "matching event")
    payload: dict[str, Any] | None = Field(None, description="a JSON object to send instead of the job (its strings "
                                           "may hold template variables), e.g. a chat message; webhooks only")

    @property
    def email(self) -> str | None:
        """The address of an email notification; None for a webhook."""
        return email_address(self.url)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        address = email_address(v)
        if address is not None:
            if "${" in address:
                raise ValueError("an email address cannot hold template variables")
            if not _EMAIL_RE.fullmatch(address):
                raise ValueError("is not a valid email address (one address like ops@example.org, or "
                                 "mailto:ops@example.org, without a name or a ?subject=)")
            return v
        _known_variables(v)
        rendered = templates.render(v, templates.sample_values(), url=True)
        try:
            parts = urlsplit(rendered)
            host, _port = parts.hostname, parts.port  # a port that is not a number raises
        except ValueError as exc:
            raise ValueError(f"is not a valid URL ({exc})") from None
        if parts.scheme not in ("http", "https") or not host:
            raise ValueError("must be an http:// or https:// URL with a host, or an email address")
        if any(c.isspace() or ord(c) < 32 for c in rendered):
            raise ValueError("must not contain spaces or control characters")
        return v

    @model_validator(mode="after")
    def _payload_of_webhooks(self) -> NotificationSpec:
        if self.payload is not None and self.email is not None:
            raise ValueError("payload: an email notification has no payload (its text is the job's summary); "
                             "remove it, or give a webhook URL")
        return self

    @field_validator("payload")
    @classmethod
    def _payload(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            if len(json.dumps(v)) > MAX_PAYLOAD_BYTES:
                raise ValueError(f"must be at most {MAX_PAYLOAD_BYTES} bytes of JSON")
            for text in templates.strings_in(v):
                _known_variables(text)
        return v


class _JobRequest(_Model):
    name: str = Field("", description="a short human name")
    notifications: list[NotificationSpec] = Field(
        default_factory=list, max_length=MAX_NOTIFICATIONS,
        description="webhooks on the job's events (seed 002), signed as Standard Webhooks do",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if v and not _NAME_RE.match(v):
            raise ValueError("must be 1-100 letters, digits, spaces or . : @ ( ) / + - _")
        return v


class InteractiveJobRequest(_JobRequest):
    """Body of a POST for an interactive cluster."""

    kind: Literal["interactive"]
    cluster: ClusterSpec = Field(default_factory=ClusterSpec)


class AutomatedJobRequest(_JobRequest):
    """Body of a POST for an automated job (a batch Spark application)."""

    kind: Literal["automated"]
    application: ApplicationSpec
    cluster: ClusterSpec | None = None
    cluster_job: str | None = Field(None, description="id of a RUNNING interactive job to run on")
    policy: Policy = Field(default_factory=Policy)

    @field_validator("cluster_job")
    @classmethod
    def _cluster_job(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[A-Za-z0-9_-]{1,64}$", v):
            raise ValueError("must be a job id")
        return v

    @model_validator(mode="after")
    def _one_target(self) -> AutomatedJobRequest:
        if self.cluster is not None and self.cluster_job is not None:
            raise ValueError("give either 'cluster' (an ephemeral cluster) or 'cluster_job', not both")
        return self


JobRequest = Annotated[InteractiveJobRequest | AutomatedJobRequest, Field(discriminator="kind")]
_ADAPTER: TypeAdapter[InteractiveJobRequest | AutomatedJobRequest] = TypeAdapter(JobRequest)


class SQLRequest(_Model):
    """Body of ``POST sparkdock/api/jobs/{id}/sql``."""

    statement: str = Field(min_length=1, description="one SQL statement (Spark SQL)")
    limit: int | None = Field(None, ge=1, description="most rows returned (default: the server's sql_max_rows)")

    @field_validator("statement")
    @classmethod
    def _statement(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("a non-empty statement is required")
        return v


class SpecError(ValueError):
    """A request body that cannot run (seed 003 "Cannot Run"). ``errors`` names each field.

    ``status`` is the HTTP status of the reply: 422 for a body that is not a valid spec, 400 for one this
    server refuses by its settings (a file outside its root, an image not allowed, a size over a bound) and for
    notifications it cannot send (a URL that is not http(s), an unknown template variable).
    """

    def __init__(self, errors: list[dict[str, str]], status: int = 422) -> None:
        self.errors = errors
        self.status = status
        super().__init__("; ".join(f"{e['field']}: {e['message']}" if e["field"] else e["message"] for e in errors))

    @property
    def fields(self) -> list[str]:
        """The dotted names of the offending fields."""
        return [e["field"] for e in self.errors]


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("interactive", "automated")]
    return ".".join(parts)


def _humanize(err: dict[str, Any]) -> str:
    msg = str(err.get("msg", "invalid"))
    msg = msg.removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        return "unknown field"
    if err.get("type") == "union_tag_invalid":
        return "must be 'interactive' or 'automated'"
    if err.get("type") == "union_tag_not_found":
        return "is required: 'interactive' or 'automated'"
    return msg


def validation_errors(exc: ValidationError) -> list[dict[str, str]]:
    """Field-level errors of a pydantic ``ValidationError``."""
    out = []
    for err in exc.errors():
        field = _field_name(tuple(err.get("loc", ())))
        if err.get("type") in ("union_tag_invalid", "union_tag_not_found"):
            field = "kind"
        out.append({"field": field, "message": _humanize(err)})
    return out


def _parse(adapter: TypeAdapter[Any], body: Any, field: str, what: str) -> Any:
    if not isinstance(body, dict):
        raise SpecError([{"field": field, "message": f"the body must be a JSON object{what}"}])
    try:
        return adapter.validate_python(body)
    except ValidationError as exc:
        raise SpecError(validation_errors(exc)) from None


def parse_job_request(body: Any) -> InteractiveJobRequest | AutomatedJobRequest:
    """Validate a POST body; raise :class:`SpecError` naming the fields on bad input (400 when only
    notifications are wrong, else 422)."""
    try:
        return _parse(_ADAPTER, body, "", "")
    except SpecError as exc:
        if exc.fields and all(f.split(".")[0] == "notifications" for f in exc.fields):
            exc.status = 400
        raise


_NOTIFICATIONS_ADAPTER: TypeAdapter[list[NotificationSpec]] = TypeAdapter(list[NotificationSpec])


def parse_notifications(value: Any, field: str = "notifications") -> list[NotificationSpec]:
    """Validate a list of notifications (the server's defaults); :class:`SpecError` (400) names the fields."""
    try:
        return _NOTIFICATIONS_ADAPTER.validate_python(value)
    except ValidationError as exc:
        raise SpecError([{"field": f"{field}.{e['field']}", "message": e["message"]}
                         for e in validation_errors(exc)], status=400) from None


_SQL_ADAPTER: TypeAdapter[SQLRequest] = TypeAdapter(SQLRequest)


def parse_sql_request(body: Any) -> SQLRequest:
    """Validate a SQL POST body; raise :class:`SpecError` naming the fields on bad input."""
    return _parse(_SQL_ADAPTER, body, "statement", " with a statement")

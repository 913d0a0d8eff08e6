"""The backend interface: provisioning and teardown of clusters, running applications, adoption.

A backend knows nothing of job states: it provisions, probes, reports progress through a
:class:`Reporter`, and raises :class:`BackendError` carrying the exit code of the failure. The
:class:`~sparkdock.server.manager.JobManager` owns the lifecycle and turns those into state transitions.

Backends never block the event loop: blocking SDK calls and probes run in an executor.

Every backend keeps its per-job files under ``<data_dir>/jobs/<job_id>/`` (``logs/<component>.log`` for
logs that must outlive the cluster, ``app/`` for staged applications), so that logs are served after the
containers or processes are gone.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sparkdock.backends.activity import LabActivity, SqlActivity, read_lab_activity
from sparkdock.backends.logfiles import LogPolicy
from sparkdock.cluster import probes, properties
from sparkdock.model.specs import ClusterSpec

#: Components of a cluster, as named in the logs API.
CLUSTER_COMPONENTS = ("master", "sql", "lab")  # plus worker-1 … worker-N, and driver for automated jobs


def cluster_components(workers: int) -> list[str]:
    """The components of a cluster of ``workers`` workers, in start order: master, worker-1 … worker-N, sql, lab."""
    return ["master", *(f"worker-{i}" for i in range(1, workers + 1)), "sql", "lab"]


#: The files of a cluster's secrets folder: one for the SQL endpoint, one for the lab, one for the rest (the
#: master, the workers and every driver, which need the cluster's secret only).
SECRET_FILES = {"sql": "sql.properties", "lab": "lab.properties", "cluster": "cluster.properties"}


def secret_file(folder: Path, component: str) -> Path:
    """The properties file of a component (``sql``, ``lab``; anything else gets ``cluster.properties``)."""
    return folder / SECRET_FILES.get(component, SECRET_FILES["cluster"])


def read_credentials(folder: Path) -> dict[str, str]:
    """The SQL password and the lab token a cluster's secrets folder holds (for adopting a cluster without a
    saved state, for the credentials API); empty when the files are gone."""
    found: dict[str, str] = {}
    for role, key, name in (("sql", properties.SQL_PASSWORD_KEY, "sql_password"),
                            ("lab", properties.LAB_TOKEN_KEY, "lab_token")):
        try:
            value = properties.read(secret_file(folder, role)).get(key)
        except OSError:
            continue
        if value:
            found[name] = value
    return found


class Reporter(Protocol):
    """Callback for progress while a cluster comes up or an application runs.

    ``phase`` is the finer reason under the state (``CreatingContainers``, ``WaitingForWorkers 1/2``…),
    ``activity`` a sentence for ``runtime_status.activity``; both are recorded in the history.
    """

    def __call__(self, phase: str, activity: str, *, progress: dict[str, Any] | None = None) -> None: ...


class BackendError(Exception):
    """A provisioning or runtime failure, with the exit code it maps to.

    * ``code``: 50 (endpoint failed), 51 (image/container/process could not be provisioned), 52 (the backend
      itself cannot provision). The manager maps these to automated codes (20/21) where needed.
    * ``phase``: e.g. ``ErrImagePull``, ``ContainerCannotRun``, ``CrashLoopBackOff``, ``EndpointTimeout``.
    * ``detail``: the daemon's or the service's own message.
    * ``component`` and ``logs``: the failing component and its last log lines, kept in the history.
    """

    def __init__(
        self,
        code: int,
        detail: str,
        *,
        phase: str | None = None,
        component: str | None = None,
        logs: str | None = None,
        retryable: bool = False,
    ) -> None:
        self.code = code
        self.detail = detail
        self.phase = phase
        self.component = component
        self.logs = logs
        self.retryable = retryable
        super().__init__(detail)


@dataclass
class ClusterInfo:
    """A provisioned cluster.

    ``endpoints`` is the public JSON of DESIGN.md
    (``{"sql": {"host", "port", "jdbc_url"}, "lab": {"url"}, "spark_ui": {"url"}}``), with no secrets.
    ``state`` is backend-private and JSON-serializable (container ids, pids, ports; no secret); the
    manager persists it in the store so that a restarted server can adopt the cluster.
    ``credentials`` (``sql_password``, ``lab_token``) live only in memory and in the cluster's 0600 secrets
    files: they are never persisted with the state.
    """

    job_id: str
    endpoints: dict[str, Any]
    state: dict[str, Any] = field(default_factory=dict)
    credentials: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def sql_user(self) -> str:
        """User name for the SQL endpoint."""
        return str(self.state.get("sql_user", "sparkdock"))

    @property
    def sql_password(self) -> str | None:
        """Password of the SQL endpoint (never shown in responses)."""
        return self.credentials.get("sql_password")

    @property
    def lab_token(self) -> str | None:
        """Token of the lab endpoint."""
        return self.credentials.get("lab_token")


@dataclass
class StagedApp:
    """An application staged for its driver: a file on the host plus how to run it."""

    type: str  # "pyspark" | "sql"
    file: Path
    args: list[str] = field(default_factory=list)
    conf: dict[str, str] = field(default_factory=dict)


@dataclass
class AppResult:
    """How a driver ended: its exit status and where its output is kept."""

    exit_status: int
    output_tail: str
    log_path: Path | None = None
    oom_killed: bool = False


@dataclass(frozen=True)
class ComponentHealth:
    """Whether one component's container or process is alive, as :meth:`Backend.health` sees it.

    ``message`` says how a dead component ended (exit code or status, the engine's error, its last log line);
    it contains "out of memory" when the component was killed for memory (Docker's ``State.OOMKilled``, a
    JVM's ``OutOfMemoryError`` or Spark's own exit code 52).
    """

    alive: bool
    message: str = ""
    oom: bool = False


def out_of_memory_text(component: str, how: str) -> str:
    """The message of a component killed for memory: always says "out of memory"."""
    return f"the {component} {how}: out of memory"


def probe_endpoint(component: str, endpoints: dict[str, Any], timeout: float = 3.0) -> str | None:
    """Why the endpoint of ``component`` in a cluster's public ``endpoints`` does not answer, or ``None``
    (blocking). No session is opened: a probe is not use of the cluster."""
    try:
        if component == "master":
            url = (endpoints.get("spark_ui") or {}).get("url")
            if url:
                probes.master_status(url, timeout=timeout)
        elif component == "sql":
            sql = endpoints.get("sql") or {}
            if sql.get("host") and sql.get("port"):
                probes.probe_tcp(str(sql["host"]), int(sql["port"]), timeout=timeout)
        elif component == "lab":
            url = (endpoints.get("lab") or {}).get("url")
            if url:
                probes.probe_lab_alive(url, timeout=timeout)
    except probes.ProbeError as exc:
        return f"the {component} endpoint does not answer: {exc}"
    return None


#: Called by :meth:`Backend.watch` when a component of a running cluster changes health:
#: ``(job_id, component, healthy, message)``.
HealthCallback = Callable[[str, str, bool, str], Awaitable[None] | None]


class Backend(abc.ABC):
    """What a cluster backend provides. See :mod:`sparkdock.backends.docker` and ``.local``."""

    #: Short name (``docker``/``local``), stored on each job.
    name: str = "base"

    def __init__(self, data_dir: Path | str, instance: str) -> None:
        self.data_dir = Path(data_dir)
        self.instance = instance
        self.log_policy = LogPolicy()
        """How big a job's logs may grow (set by the server from ``max_log_bytes_per_job``)."""

    def job_dir(self, job_id: str) -> Path:
        """Per-job folder for logs and staged files."""
        return self.data_dir / "jobs" / job_id

    def secrets_dir(self, job_id: str) -> Path:
        """A cluster's secrets folder (0700): its roles' properties files, removed when the cluster stops."""
        return (self.job_dir(job_id) / "secrets").absolute()

    def credentials(self, job_id: str) -> dict[str, str]:
        """The SQL password and lab token of a running cluster, read from its secrets folder (blocking, small);
        empty when the folder is gone."""
        return read_credentials(self.secrets_dir(job_id))

    @abc.abstractmethod
    async def check(self) -> None:
        """Raise :class:`BackendError` (code 52) if the backend cannot provision at all."""

    @abc.abstractmethod
    async def start_cluster(self, job_id: str, spec: ClusterSpec, report: Reporter) -> ClusterInfo:
        """Provision a cluster and wait until the master, workers, SQL and lab endpoints are ready.

        On failure, remove everything created for the job, then raise :class:`BackendError`.
        Cancellation (``asyncio.CancelledError``) also removes everything before propagating.
        """

    @abc.abstractmethod
    async def stop_cluster(self, job_id: str, state: dict[str, Any] | None = None) -> None:
        """Remove every resource of the job. Idempotent: stopping a stopped cluster is harmless."""

    @abc.abstractmethod
    async def adopt_cluster(self, job_id: str, state: dict[str, Any]) -> ClusterInfo | None:
        """After a restart: return the running cluster of ``job_id`` (same ports, nothing duplicated),
        or ``None`` if it is gone or unhealthy (the caller then stops it and fails the job)."""

    @abc.abstractmethod
    async def list_job_ids(self) -> set[str]:
        """Ids of the jobs that have resources of this installation (by the instance label/marker)."""

    @abc.abstractmethod
    async def logs(self, job_id: str, component: str, tail: int | None = None) -> str:
        """Logs of one component (``master``, ``worker-N``, ``sql``, ``lab``, ``driver``); raise
        ``KeyError`` for an unknown component."""

    @abc.abstractmethod
    async def run_application(
        self, job_id: str, cluster: ClusterInfo, app: StagedApp, report: Reporter
    ) -> AppResult:
        """Run a driver for ``app`` on ``cluster`` until it ends; keep its output in
        ``job_dir/logs/driver.log``. Cancellation kills the driver and propagates."""

    async def health(self, job_id: str, state: dict[str, Any]) -> dict[str, ComponentHealth]:
        """Whether each container or process of a running cluster is alive (``master``, ``worker-N``, ``sql``,
        ``lab``), with one engine call for the whole cluster (plus one per newly dead container). ``state`` is
        the cluster's :attr:`ClusterInfo.state`. Raise :class:`BackendError` when the backend cannot tell (the
        engine is down). The default knows nothing: an empty dict."""
        return {}

    async def probe(self, endpoints: dict[str, Any], components: list[str], timeout: float = 3.0) -> dict[str, str]:
        """Probe the endpoints of ``components`` (``master``, ``sql``, ``lab``) of a running cluster, off the
        event loop, concurrently; return why each one that does not answer fails. The probes open no session:
        the master's ``/json/``, a TCP connection to the SQL endpoint, the lab's ``GET /api``."""
        answers = await asyncio.gather(*(asyncio.to_thread(probe_endpoint, c, endpoints, timeout)
                                         for c in components))
        return {c: why for c, why in zip(components, answers, strict=True) if why is not None}

    async def sql_activity(self, job_id: str, state: dict[str, Any]) -> SqlActivity | None:
        """Open sessions and running statements of the cluster's SQL endpoint, read from the Thrift Server
        (:mod:`sparkdock.backends.activity`); ``None`` when this backend cannot tell. Raise when it cannot be
        read now."""
        return None

    async def lab_activity(self, lab_url: str, token: str) -> LabActivity | None:
        """Busy kernels and last activity of the cluster's lab, read over HTTP with its token (off the event
        loop; reading is not activity). Raise when it cannot be read."""
        return await asyncio.to_thread(read_lab_activity, lab_url, token)

    async def watch(self, on_health: HealthCallback) -> None:  # noqa: B027 - optional hook
        """Follow the health of running clusters until cancelled (optional)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients and background tasks (clusters keep running)."""

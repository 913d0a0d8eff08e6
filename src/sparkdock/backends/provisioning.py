"""The one provisioning sequence of an interactive cluster, run by every backend.

A backend describes the cluster it is building as :class:`ClusterParts`, a few primitives: prepare (the
phases only that backend has), start a component, which components have exited, a component's address, its
last log lines, and remove everything. :func:`provision` runs the common part on them, the same on Docker,
local processes and any later backend::

    <the backend's own phases>        Docker: CheckingImage, PullingImage, CreatingNetwork, CreatingContainers
                                      local:  CheckingRuntime
    StartingMaster                    start the master; its web UI must say ALIVE
    WaitingForWorkers k/N             start the workers, the SQL endpoint and the lab; N workers registered
    StartingSQLEndpoint               a HiveServer2 session runs SELECT 1 with the cluster's password
    StartingLab                       JupyterLab answers /api/status with the cluster's token

Each phase is reported (phase and activity sentence, which the manager keeps as ``runtime_status.activity``
and in the history). The master and the workers share one deadline, the SQL endpoint and the lab have one
each. Failures get their exit code here, in one place:

==============================================================  ====  ======================
what happened                                                   code  phase
==============================================================  ====  ======================
a backend phase or a start failed (the primitive's own error)   51/52 the primitive's
the master or a worker exited                                   51    ``CrashLoopBackOff``
the SQL endpoint or the lab exited                              50    ``CrashLoopBackOff``
the master or the workers not up by the start deadline          51    ``StartTimeout``
the SQL endpoint or the lab not answering by its deadline       50    ``EndpointTimeout``
the SQL endpoint refused the cluster's own password             50    ``EndpointAuthFailed``
a started component with no address                             51    ``ContainerCannotRun``
anything unexpected in the sequence or a primitive              52    ``LauncherFailed``
==============================================================  ====  ======================

Errors carry the failing component and its last log lines. On any failure, and on cancellation, everything
is removed (``ClusterParts.remove``, shielded from a second cancellation) before the error propagates.
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sparkdock.backends.base import (
    SECRET_FILES,
    BackendError,
    ClusterInfo,
    Reporter,
    cluster_components,
    read_credentials,
    secret_file,
)
from sparkdock.cluster import probes, properties
from sparkdock.model.specs import ClusterSpec

__all__ = [
    "ERROR_LOG_LINES",
    "SECRET_FILES",
    "SPARK_PROBES",
    "ClusterParts",
    "ClusterPlan",
    "Deadlines",
    "Probes",
    "driver_secret_file",
    "endpoints",
    "provision",
    "quiet_probe_sql",
    "read_credentials",
    "safe_reporter",
    "secret_file",
    "write_secret_files",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Lines of a failing component's log kept in a :class:`BackendError`.
ERROR_LOG_LINES = 40
#: The components whose failure is an endpoint failure (50); any other is a provisioning failure (51).
ENDPOINTS = ("sql", "lab")


@dataclass(frozen=True)
class ClusterPlan:
    """What is being built: the job, its spec, its components in start order, and its secrets.

    The secrets are made here, once, for every backend: the cluster's ``spark.authenticate.secret``, the SQL
    password and the lab token. They reach the processes only through the roles' properties files
    (:func:`write_secret_files`), never a command line or an environment variable.
    """

    job_id: str
    spec: ClusterSpec
    sql_password: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    lab_token: str = field(default_factory=lambda: secrets.token_hex(24), repr=False)
    sql_user: str = "sparkdock"
    spark_secret: str = field(default_factory=properties.new_secret, repr=False)

    def role_properties(self, role: str) -> dict[str, str]:
        """The properties file of a role: the cluster's control plane (its secret, encrypted RPC, no REST
        submission, no kill links), plus the SQL password for ``sql`` and the lab token for ``lab``."""
        props = properties.control_plane_conf(self.spark_secret)
        if role == "sql":
            props[properties.SQL_PASSWORD_KEY] = self.sql_password
        elif role == "lab":
            props[properties.LAB_TOKEN_KEY] = self.lab_token
        return props

    def credentials(self) -> dict[str, str]:
        """What a user needs to reach the endpoints: the SQL password and the lab token (kept in memory only)."""
        return {"sql_password": self.sql_password, "lab_token": self.lab_token}

    @property
    def components(self) -> list[str]:
        """master, worker-1 … worker-N, sql, lab."""
        return cluster_components(self.spec.workers)

    @property
    def workers(self) -> list[str]:
        """worker-1 … worker-N."""
        return [f"worker-{i}" for i in range(1, self.spec.workers + 1)]


def write_secret_files(plan: ClusterPlan, folder: Path) -> None:
    """Write the cluster's properties files into ``folder``: the folder 0700, each file 0600, owned by the user
    the roles run as (this process's). ``BackendError`` 52 when it cannot (the launcher cannot work)."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.chmod(0o700)
        for role in SECRET_FILES:
            properties.write(folder / SECRET_FILES[role], plan.role_properties(role))
    except OSError as exc:
        raise BackendError(52, f"cannot write the secrets of job {plan.job_id} in {folder}: {exc}",
                           phase="CreatingContainers") from exc


def driver_secret_file(folder: Path, cluster_job: str) -> Path:
    """The properties file a driver on cluster ``cluster_job`` starts with (the cluster's secret).

    ``BackendError`` 52 when it is gone: the cluster was stopped, or started by a sparkdock without secrets."""
    path = secret_file(folder, "driver")
    if not path.is_file():
        raise BackendError(52, f"the secrets of cluster {cluster_job} are gone ({path}): it was stopped, or "
                           "started by an older sparkdock", component="driver")
    return path


@dataclass(frozen=True)
class Deadlines:
    """Seconds each step may take: the master and all workers together, the SQL endpoint, the lab; and
    the seconds between two tries of a probe (twice that for the SQL endpoint, whose tries are costly)."""

    start: float = 120.0
    sql: float = 240.0
    lab: float = 120.0
    interval: float = 0.5


@dataclass(frozen=True)
class Probes:
    """The blocking readiness checks the sequence polls (run in threads; see :mod:`sparkdock.cluster.probes`).

    * ``master(ui_url, timeout)``: the master's ``/json/`` status, ``ProbeError`` until it answers;
    * ``sql(host, port, user, password, timeout)``: ``SELECT 1``; ``SQLAuthError`` for a refused login;
    * ``lab(base_url, token, timeout)``: ``/api/status`` with the token.
    """

    master: Callable[[str, float], dict[str, Any]]
    sql: Callable[[str, int, str, str | None, float], Any]
    lab: Callable[[str, str, float], Any]


class _QuietProbes(logging.Filter):
    """Drops the connection errors thrift logs while the SQL probe polls an endpoint that is starting."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_probe_state, "quiet", False)


_probe_state = threading.local()
_QUIET_FILTER = _QuietProbes()
for _name in ("thrift.transport.TSocket", "impala.hiveserver2"):
    if _QUIET_FILTER not in logging.getLogger(_name).filters:
        logging.getLogger(_name).addFilter(_QUIET_FILTER)


def quiet_probe_sql(host: str, port: int, user: str, password: str | None, timeout: float) -> None:
    """:func:`probes.probe_sql` without thrift's "Could not connect" error logs (expected while starting)."""
    _probe_state.quiet = True
    try:
        probes.probe_sql(host, port, user, password, timeout=timeout)
    finally:
        _probe_state.quiet = False


#: The real probes, against Spark and JupyterLab.
SPARK_PROBES = Probes(master=probes.master_status, sql=quiet_probe_sql, lab=probes.probe_lab)

_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking probe in the probes' own thread pool (a slow endpoint holds a thread for seconds;
    it must not starve the event loop's default executor)."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(max_workers=16,
                                                              thread_name_prefix="sparkdock-probe")
    return await asyncio.wrap_future(_executor.submit(fn, *args))


class ClusterParts(abc.ABC):
    """The primitives one backend gives the sequence for one cluster, the cluster of ``plan``.

    Only what is truly the backend's own lives here: containers, networks and labels for Docker; processes,
    ports and folders for local. The order, the phases, the deadlines and the exit codes are the sequence's.
    """

    def __init__(self, plan: ClusterPlan) -> None:
        self.plan = plan

    @abc.abstractmethod
    async def prepare(self, report: Reporter) -> None:
        """Everything before the master starts, reporting the phases only this backend has.

        Raises:
            BackendError: 51 (the image or runtime cannot run the cluster) or 52 (the backend cannot work).
        """

    @abc.abstractmethod
    async def start(self, component: str) -> None:
        """Start ``master``, ``worker-N``, ``sql`` or ``lab``; ``BackendError`` (51/52) when it cannot."""

    @abc.abstractmethod
    async def exited(self, components: Sequence[str]) -> dict[str, str]:
        """Which of the started ``components`` no longer run, each with a sentence on how it ended
        (exit status, out of memory); empty when all run."""

    @abc.abstractmethod
    async def address(self, component: str) -> tuple[str, int] | None:
        """Where the server and users reach a started component: the master's web UI, the SQL endpoint or
        the lab; ``None`` when it has none."""

    @abc.abstractmethod
    async def last_logs(self, component: str, lines: int) -> str | None:
        """The last ``lines`` lines of a component's output, or ``None`` when they cannot be read."""

    @abc.abstractmethod
    async def remove(self) -> None:
        """Remove everything created for the cluster (its logs are kept). Idempotent."""

    @abc.abstractmethod
    def state(self) -> dict[str, Any]:
        """The backend's JSON state of the ready cluster (ids, ports; never a secret), kept in the store for
        adoption after a restart."""


def endpoints(master: tuple[str, int], sql: tuple[str, int], lab: tuple[str, int]) -> dict[str, Any]:
    """The public ``endpoints`` JSON of a cluster (DESIGN.md), from its three addresses. No secrets."""
    return {
        "sql": {"host": sql[0], "port": sql[1], "jdbc_url": f"jdbc:hive2://{sql[0]}:{sql[1]}/default"},
        "lab": {"url": f"http://{lab[0]}:{lab[1]}/lab"},
        "spark_ui": {"url": f"http://{master[0]}:{master[1]}/"},
    }


async def _remove_shielded(remove: Callable[[], Awaitable[None]], what: str) -> None:
    """Run a cleanup to its end even if the caller is cancelled, again, while it runs."""
    task = asyncio.ensure_future(remove())
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})
        raise
    except Exception:
        log.exception("sparkdock: cleanup of %s failed", what)


def safe_reporter(report: Reporter) -> Reporter:
    """A reporter that never raises: a broken progress callback must not break the cluster."""

    def call(phase: str, activity: str, *, progress: dict[str, Any] | None = None) -> None:
        try:
            if progress is None:
                report(phase, activity)
            else:
                report(phase, activity, progress=progress)
        except Exception:
            log.exception("sparkdock: the reporter failed for phase %s", phase)

    return call


async def provision(parts: ClusterParts, report: Reporter, deadlines: Deadlines,
                    checks: Probes = SPARK_PROBES) -> ClusterInfo:
    """Build the cluster of ``parts.plan`` on ``parts`` and wait until every endpoint answers (see the module).

    Raises:
        BackendError: 50, 51 or 52 as the module's table says; everything created is removed first, and on
            cancellation too.
    """
    plan = parts.plan
    try:
        return await _Sequence(parts, safe_reporter(report), deadlines, checks).run()
    except BaseException as exc:
        if isinstance(exc, BackendError) and exc.component and exc.logs is None:
            exc.logs = await _last_logs(parts, exc.component)
        await _remove_shielded(parts.remove, f"job {plan.job_id}")
        if isinstance(exc, Exception) and not isinstance(exc, BackendError):
            log.exception("sparkdock: provisioning of job %s failed unexpectedly", plan.job_id)
            raise BackendError(52, f"the backend failed: {type(exc).__name__}: {exc}",
                               phase="LauncherFailed") from exc
        raise


async def _last_logs(parts: ClusterParts, component: str) -> str | None:
    """A failing component's last lines, or ``None`` when even they cannot be read."""
    try:
        return await parts.last_logs(component, ERROR_LOG_LINES)
    except Exception as exc:
        log.warning("sparkdock: cannot read the last logs of %s: %s", component, exc)
        return None


class _Sequence:
    """One run of :func:`provision`: the steps in order, each a method."""

    def __init__(self, parts: ClusterParts, report: Reporter, deadlines: Deadlines, checks: Probes) -> None:
        self.parts = parts
        self.plan = parts.plan
        self.report = report
        self.deadlines = deadlines
        self.checks = checks
        self.started: list[str] = []

    async def run(self) -> ClusterInfo:
        await self.parts.prepare(self.report)
        start_deadline = time.monotonic() + self.deadlines.start
        master = await self.master(start_deadline)
        await self.workers(master, start_deadline)
        sql = await self.sql()
        lab = await self.lab()
        return ClusterInfo(job_id=self.plan.job_id, endpoints=endpoints(master, sql, lab),
                           state=self.parts.state(), credentials=self.plan.credentials())

    # -- the steps ------------------------------------------------------------------------------

    async def master(self, deadline: float) -> tuple[str, int]:
        self.report("StartingMaster", "Starting the Spark master")
        await self.start(["master"])
        master = await self.address("master")

        def alive(timeout: float) -> dict[str, Any]:
            status = self.checks.master(_url(master), timeout)
            if str(status.get("status", "")).upper() != "ALIVE":
                raise probes.ProbeError(f"the Spark master is {status.get('status')}")
            return status

        await self.poll(_threaded(alive), deadline, what="the Spark master", component="master",
                        probe_timeout=5.0)
        return master

    async def workers(self, master: tuple[str, int], deadline: float) -> None:
        n = len(self.plan.workers)
        self.report(f"WaitingForWorkers 0/{n}", f"Starting {n} worker(s), the SQL endpoint and the lab")
        await self.start([*self.plan.workers, *ENDPOINTS])
        seen = 0

        def registered(timeout: float) -> int:
            return min(probes.alive_workers(self.checks.master(_url(master), timeout)), n)

        async def count(timeout: float) -> int:
            nonlocal seen
            alive = await _in_thread(registered, timeout)
            if alive != seen:
                seen = alive
                self.report(f"WaitingForWorkers {alive}/{n}", f"{alive} of {n} workers registered with the master")
            if alive < n:
                raise probes.ProbeError(f"{alive} of {n} workers registered with the master")
            return alive

        await self.poll(count, deadline, what=f"{n} Spark worker(s)", component=self.plan.workers[0],
                        probe_timeout=5.0)

    async def sql(self) -> tuple[str, int]:
        host, port = await self.address("sql")
        self.report("StartingSQLEndpoint",
                    f"Waiting for the SQL endpoint (Spark Thrift Server) on {host}:{port} to answer SELECT 1")

        def select_1(timeout: float) -> None:
            try:
                self.checks.sql(host, port, self.plan.sql_user, self.plan.sql_password, timeout)
            except probes.SQLAuthError as exc:
                raise BackendError(50, f"the SQL endpoint refused the cluster's own password: {exc}",
                                   phase="EndpointAuthFailed", component="sql") from exc

        await self.poll(_threaded(select_1), time.monotonic() + self.deadlines.sql, what="the SQL endpoint",
                        component="sql", probe_timeout=20.0, interval=2 * self.deadlines.interval)
        return host, port

    async def lab(self) -> tuple[str, int]:
        lab = await self.address("lab")
        self.report("StartingLab", f"Waiting for JupyterLab on {lab[0]}:{lab[1]} to answer")
        await self.poll(_threaded(lambda timeout: self.checks.lab(_url(lab) + "/", self.plan.lab_token, timeout)),
                        time.monotonic() + self.deadlines.lab, what="the lab", component="lab", probe_timeout=5.0)
        return lab

    # -- the primitives, with the sequence's exit codes ------------------------------------------

    async def start(self, components: list[str]) -> None:
        """Start components together; the first failure is raised once all have been tried."""
        self.started += components
        results = await asyncio.gather(*(self.parts.start(c) for c in components), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def address(self, component: str) -> tuple[str, int]:
        found = await self.parts.address(component)
        if found is not None:
            return found
        await self.raise_if_exited(f"the {component} address")
        raise BackendError(51, f"the {component} has no address the server can reach",
                           phase="ContainerCannotRun", component=component,
                           logs=await _last_logs(self.parts, component))

    async def raise_if_exited(self, what: str) -> None:
        """Raise the failure of the first started component that no longer runs."""
        gone = await self.parts.exited(self.started)
        for component in self.started:
            if component in gone:
                raise BackendError(
                    _code_of(component), f"{gone[component]} while waiting for {what}",
                    phase="CrashLoopBackOff", component=component,
                    logs=await _last_logs(self.parts, component))

    async def poll(self, check: Callable[[float], Awaitable[Any]], deadline: float, *, what: str,
                   component: str, probe_timeout: float, interval: float | None = None) -> Any:
        """Await ``check(timeout)`` until it returns without ``ProbeError``.

        Before each try every started component must still run; past ``deadline`` the step fails with
        ``component``'s code and logs.
        """
        last: BaseException | None = None
        while True:
            await self.raise_if_exited(what)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                endpoint = _code_of(component) == 50
                raise BackendError(
                    _code_of(component), f"{what} was not ready in time: {last}",
                    phase="EndpointTimeout" if endpoint else "StartTimeout", component=component,
                    logs=await _last_logs(self.parts, component))
            timeout = min(remaining, probe_timeout)
            try:
                return await check(timeout)
            except probes.ProbeError as exc:
                last = exc
            pause = self.deadlines.interval if interval is None else interval
            await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))


def _threaded(probe: Callable[[float], T]) -> Callable[[float], Awaitable[T]]:
    """A blocking ``probe(timeout)`` as an awaitable check, run in the probes' thread pool."""
    return lambda timeout: _in_thread(probe, timeout)


def _code_of(component: str) -> int:
    return 50 if component in ENDPOINTS else 51


def _url(address: tuple[str, int]) -> str:
    return f"http://{address[0]}:{address[1]}"

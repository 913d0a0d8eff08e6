"""The lifecycle of one automated job: staging, its cluster, the driver, policies and exit codes.

An :class:`AutomatedRun` is driven by the :class:`~sparkdock.server.manager.JobManager` as the job's task,
through the small :class:`RunHost` interface (so this module does not import the manager):

* ``INITIALIZING``: stage the application (11/12 on bad input), then provision an ephemeral cluster or
  attach to a RUNNING interactive job's cluster. A provisioning failure is a *Start Failed* (seed 003):
  retried with exponential backoff (``INITIALIZING → QUEUED``, runtime status cleared) up to
  ``policy.retries``, then ``SYSTEM_ERROR`` 24 (or 20/21 when no retry was asked for).
* ``RUNNING``: the driver runs; an overrun watchdog warns (and cancels with 15 when
  ``overrun_action="cancel"``); a resource watchdog cancels with 15 when Spark says the application will
  never get executors.
* The end is classified from the driver's exit status and output into ``COMPLETE``,
  ``EXECUTOR_ERROR`` 18 (kernel exit code 1–7), or a system code (16, 17, 27, 29). A kernel exit code
  listed in ``policy.rerun_on_exit_codes`` reruns the job (``RUNNING → QUEUED``) while attempts remain.
  An underrun (shorter than ``min_runtime``) adds a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sparkdock.backends.base import AppResult, BackendError, ClusterInfo, StagedApp
from sparkdock.backends.logfiles import LogFollower
from sparkdock.cluster import roles
from sparkdock.cluster.classify import classify_driver
from sparkdock.model import exit_codes
from sparkdock.model.lifecycle import State
from sparkdock.model.specs import ClusterSpec
from sparkdock.server.staging import StagingError, stage_application

if TYPE_CHECKING:
    from sparkdock.backends.base import Backend, Reporter
    from sparkdock.server.db import AsyncStore
    from sparkdock.server.store import Job

# spark-submit's own refusals (argument validation in SparkSubmit, a JVM that cannot start). A failing Python
# application never prints these: its errors are Python tracebacks.
_SUBMIT_ERROR = re.compile(
    r"^(Error: .+|Exception in thread \"main\" org\.apache\.spark\.SparkException: .+)$",
    re.M,
)
_NO_RESOURCES = "Initial job has not accepted any resources"
_CLUSTER_GONE = re.compile(r"(All masters are unresponsive|Application has been killed\. Reason: Master removed"
                           r"|Master removed our application)")


class _Retry(Exception):
    def __init__(self, detail: str, code: int) -> None:
        self.detail, self.code = detail, code
        super().__init__(detail)


class RunHost(Protocol):
    """What an automated run needs of whoever drives it: the :class:`~sparkdock.server.manager.JobManager`.

    The manager imports this module and hands itself over; this module never imports the manager.
    """

    db: AsyncStore
    backend: Backend

    @property
    def root_dir(self) -> Path:
        """The folder an application's ``path`` must lie under."""

    @property
    def stopping(self) -> bool:
        """True while the server shuts down: a cancelled run then stops, without finishing the job as canceled."""
        ...

    def retry_delay(self, attempt: int) -> float:
        """Seconds to wait before the attempt after ``attempt`` (exponential backoff)."""
        ...

    async def touch(self, job_id: str, when: str | None = None) -> None:
        """Record use of an interactive cluster (an automated job running on it), now or at ``when``."""
        ...

    def kick(self) -> None:
        """Wake the scheduler (a job was requeued)."""
        ...

    def reporter(self, job_id: str) -> Reporter:
        """The callback a backend reports a job's phases through."""
        ...

    async def cluster_of(self, job: Job) -> ClusterInfo:
        """The cluster of a RUNNING interactive job."""
        ...

    async def record_failure_logs(self, job_id: str, err: BackendError) -> None:
        """Add the last log lines of a failed component to the job's history."""
        ...

    async def safe_stop(self, job_id: str) -> None:
        """Remove the job's cluster, logging rather than raising a failure."""
        ...

    async def finish_cancel(self, job_id: str) -> None:
        """Remove a CANCELING job's resources and move it to its final state."""
        ...

    def track_cluster(self, job_id: str, cluster: ClusterInfo | None) -> None:
        """Have the health loop check a job's ephemeral cluster (``None``: no longer, before its teardown)."""
        ...

    async def cancel(self, job_id: str, reason: str = "user", detail: str = "", wait: bool = False) -> Job:
        """Cancel a job (``reason``: overrun or resources, from the watchdogs)."""
        ...


class AutomatedRun:
    """One automated job's task (all of its attempts)."""

    def __init__(self, manager: RunHost, job_id: str) -> None:
        self.m = manager
        self.db = manager.db
        self.backend = manager.backend
        self.job_id = job_id
        self.spec: dict[str, Any] = {}
        self.policy: dict[str, Any] = {}
        self.cluster_job: str | None = None
        self.cluster: ClusterInfo | None = None
        self.watchdogs: list[asyncio.Task[Any]] = []

    # ---- entry ----------------------------------------------------------------------------------
    async def run(self) -> None:
        """Run the current attempt (the manager requeues for the next one)."""
        try:
            job = await self.db.get(self.job_id)
            self.spec = job.spec
            self.policy = job.spec.get("policy") or {}
            self.cluster_job = job.spec.get("cluster_job")
            await self._attempt()
        except asyncio.CancelledError:
            if self.m.stopping:
                await self._teardown()
                raise
            await self._teardown()
            await self.m.finish_cancel(self.job_id)
        except Exception as exc:  # never leave a job hanging
            await self._teardown()
            with contextlib.suppress(Exception):
                await self._fail(17, f"internal error: {exc}", phase="Failed")
        finally:
            for w in self.watchdogs:
                w.cancel()

    async def _fail(self, code: int, detail: str, *, phase: str, **fields: Any) -> None:
        job = await self.db.get(self.job_id)
        state = exit_codes.get(code).state
        msg = exit_codes.message(code, detail=detail, **fields)
        if job.state == State.QUEUED:  # a requeued job that fails before it initializes again
            await self.db.transition(self.job_id, State.INITIALIZING, phase=phase)
        await self.db.transition(self.job_id, state, phase=phase, exit_code=code, exit_message=msg)

    def _report(self, phase: str, activity: str, progress: dict[str, Any] | None = None) -> None:
        self.db.submit(self.db.store.update, self.job_id, phase=phase, activity=activity, progress=progress)

    async def _teardown(self) -> None:
        if self.cluster_job is None:
            self.m.track_cluster(self.job_id, None)  # the health loop must not read the teardown as deaths
            await self.m.safe_stop(self.job_id)

    # ---- one attempt ----------------------------------------------------------------------------
    async def _attempt(self) -> None:
        job = await self.db.get(self.job_id)
        self._report("StagingApplication", "staging the application")
        try:
            app = await asyncio.to_thread(stage_application, self.backend.job_dir(self.job_id),
                                          self.spec["application"], job.attempt, self.m.root_dir)
        except StagingError as err:
            await self._fail(err.code, err.detail, phase="InvalidInput" if err.code == 11 else "StagingFailed")
            return
        try:
            self.cluster = await self._provision()
        except _Retry as r:
            await self._start_failed(r)
            return
        if self.cluster is None:
            return
        if self.cluster_job is None:
            self.m.track_cluster(self.job_id, self.cluster)
        await self.db.transition(
            self.job_id, State.RUNNING, phase="Running",
            runtime_status={"activity": "driver starting"}, description=f"driver starting (attempt {job.attempt})",
        )
        started = time.monotonic()
        self._start_watchdogs()
        if self.cluster_job:
            await self.m.touch(self.cluster_job)
        result = await self._run_driver(app)
        for w in self.watchdogs:
            w.cancel()
        if self.cluster_job:
            await self.m.touch(self.cluster_job)
        if isinstance(result, str):  # the cluster went away under the driver (which is now stopped)
            await self._teardown()
            await self._fail(27, result, phase="ClusterLost")
            return
        elapsed = time.monotonic() - started
        await self._finish(result, elapsed)

    async def _run_driver(self, app: StagedApp) -> AppResult | str:
        """Run the driver while watching its cluster; the reason as a string when the cluster was lost.

        A driver whose master goes away does not exit on its own: Spark waits for the master to come back
        (and, once its executors are gone, for resources that never come). So the driver is stopped as soon
        as the cluster it runs on leaves RUNNING (an interactive cluster terminated meanwhile) or loses its
        master.
        """
        driver = asyncio.ensure_future(
            self.backend.run_application(self.job_id, self.cluster, app, self.m.reporter(self.job_id)))
        guard = asyncio.ensure_future(self._cluster_gone())
        try:
            await asyncio.wait({driver, guard}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            guard.cancel()
            if not driver.done():
                driver.cancel()  # the backend kills the driver before the cancellation propagates
                await asyncio.wait({driver})
        if driver.cancelled() and guard.done() and not guard.cancelled() and guard.exception() is None:
            return guard.result()
        return driver.result()

    async def _cluster_gone(self, interval: float = 1.0) -> str:
        """Return why, once the cluster the driver runs on is gone; runs until cancelled otherwise."""
        watched = self.cluster_job or self.job_id
        while True:
            await asyncio.sleep(interval)
            try:
                target = await self.db.find(watched)
            except Exception:  # a busy database must not stop the driver: look again
                continue
            if target is None:
                return f"interactive cluster {watched} is gone"
            if self.cluster_job and target.state != State.RUNNING:
                how = "was terminated" if target.state in (State.CANCELING, State.COMPLETE) else "ended"
                return f"interactive cluster {watched} {how} ({target.state}) while the driver ran"
            error = (target.runtime_status or {}).get("error") or ""
            if error.startswith("master stopped"):
                where = f"interactive cluster {watched}" if self.cluster_job else "the ephemeral cluster"
                return f"{where} lost its master while the driver ran: {error}"

    async def _provision(self) -> ClusterInfo | None:
        if self.cluster_job is not None:
            target = await self.db.find(self.cluster_job)
            if target is None or target.state != State.RUNNING or target.flagged:
                why = "is gone" if target is None else (
                    f"has a runtime error: {target.runtime_status['error']}" if target.flagged
                    else f"is {target.state}"
                )
                await self._fail(27, f"interactive cluster {self.cluster_job} {why}", phase="ClusterLost")
                return None
            self._report("AttachingToCluster", f"using the cluster of interactive job {self.cluster_job}")
            return await self.m.cluster_of(target)
        spec = ClusterSpec(**self.spec["cluster"])
        try:
            await self.backend.check()
            return await self.backend.start_cluster(self.job_id, spec, self.m.reporter(self.job_id))
        except BackendError as err:
            await self.m.record_failure_logs(self.job_id, err)
            await self.m.safe_stop(self.job_id)
            code = 21 if err.component == "master" else 20
            raise _Retry(err.detail, code) from None

    async def _start_failed(self, r: _Retry) -> None:
        job = await self.db.get(self.job_id)
        retries = int(self.policy.get("retries") or 0)
        if job.attempt <= retries:
            delay = self.m.retry_delay(job.attempt)
            await self.db.transition(
                self.job_id, State.QUEUED, phase="StartFailed", attempt=job.attempt + 1,
                description=f"Start Failed (attempt {job.attempt} of {retries + 1}): {r.detail}; "
                            f"retrying in {delay:g} s",
            )
            await asyncio.sleep(delay)
            self.m.kick()
            return
        if retries:
            await self._fail(24, r.detail, phase="RetriesExhausted", attempts=job.attempt)
        else:
            await self._fail(r.code, r.detail, phase="ProvisioningFailed")

    # ---- watchdogs ------------------------------------------------------------------------------
    def _start_watchdogs(self) -> None:
        loop = asyncio.get_running_loop()
        max_rt = self.policy.get("max_runtime")
        if max_rt:
            self.watchdogs.append(loop.create_task(self._overrun(float(max_rt))))
        self.watchdogs.append(loop.create_task(self._resources()))

    async def _overrun(self, max_runtime: float) -> None:
        await asyncio.sleep(max_runtime)
        detail = f"ran longer than max_runtime={max_runtime:g} s"
        with contextlib.suppress(Exception):
            await self.db.update(self.job_id, warning=f"Overrun: {detail}", event="OVERRUN",
                              description=f"Overrun: {detail}")
        if self.policy.get("overrun_action") == "cancel":
            await self.m.cancel(self.job_id, "overrun", f"{detail}; raise policy.max_runtime")

    async def _resources(self, interval: float = 2.0) -> None:
        """Cancel with 15 when Spark says twice that no executor was accepted and none can fit a worker.

        The driver's log is followed from where this attempt began (the log gathers every attempt), reading
        only what it gained since the last look, off the event loop."""
        follower = await asyncio.to_thread(LogFollower, self.backend.job_dir(self.job_id) / "logs" / "driver.log")
        busy_warned = False
        seen, carry = 0, b""
        while True:
            await asyncio.sleep(interval)
            try:
                found, carry = await asyncio.to_thread(follower.count, _NO_RESOURCES.encode(), carry)
            except OSError:
                continue
            seen += found
            if seen >= 2:  # Spark repeats it every 15 s while it waits
                never = await self._never_fits()
                if never is None:  # an executor fits a worker: the cluster is busy, not too small
                    if not busy_warned:
                        busy_warned = True
                        with contextlib.suppress(Exception):
                            await self.db.update(self.job_id, warning="waiting for executors: the cluster's cores "
                                                 "are taken by other applications (Spark: initial job has not "
                                                 "accepted any resources)")
                    continue
                detail = await self._resource_advice(never)
                with contextlib.suppress(Exception):
                    await self.db.update(self.job_id, warning=f"no executor can start: {detail}")
                await self.m.cancel(self.job_id, "resources", detail)
                return

    async def _cluster_size(self) -> dict[str, Any]:
        """The cluster spec the driver runs on (the interactive job's for ``cluster_job``)."""
        if self.cluster_job is None:
            return self.spec.get("cluster") or {}
        with contextlib.suppress(Exception):
            target = await self.db.find(self.cluster_job)
            if target is not None:
                return target.spec.get("cluster") or {}
        return {}

    async def _never_fits(self) -> str | None:
        """What the application asks of an executor that no worker of its cluster has, or ``None``.

        Spark's "Initial job has not accepted any resources" warning alone does not tell a cluster that is
        too small from one whose cores are taken by other applications; the executor ask against the
        worker size does.
        """
        conf = self.spec["application"].get("conf") or {}
        cluster = await self._cluster_size()
        if not cluster:
            return None
        reasons: list[str] = []
        with contextlib.suppress(ValueError, TypeError):
            worker_mb = roles.parse_memory_mb(str(cluster.get("worker_memory") or "1g"))
            mem = conf.get("spark.executor.memory")
            if mem is not None and roles.parse_memory_mb(str(mem)) > worker_mb:
                reasons.append(f"spark.executor.memory={mem} is more than a worker's {cluster.get('worker_memory')}")
        with contextlib.suppress(ValueError, TypeError):
            cores = conf.get("spark.executor.cores")
            if cores is not None and int(cores) > int(cluster.get("worker_cores") or 1):
                reasons.append(f"spark.executor.cores={cores} is more than a worker's "
                               f"{cluster.get('worker_cores') or 1} core(s)")
        for key, value in conf.items():
            if key.startswith("spark.executor.resource.") and key.endswith(".amount"):
                with contextlib.suppress(ValueError, TypeError):
                    if float(value) > 0:
                        reasons.append(f"{key}={value}: workers offer no such resource")
        return "; ".join(reasons) or None

    async def _resource_advice(self, never: str | None = None) -> str:
        conf = self.spec["application"].get("conf") or {}
        cluster = await self._cluster_size()
        asks = ", ".join(f"{k}={v}" for k, v in conf.items() if k.startswith(("spark.executor.", "spark.cores")))
        size = (f"{cluster.get('workers')} worker(s) of {cluster.get('worker_cores')} core(s) and "
                f"{cluster.get('worker_memory')}") if cluster else f"the cluster of job {self.cluster_job}"
        if self.cluster_job and cluster:
            size = f"the cluster of job {self.cluster_job} ({size})"
        why = f": {never}" if never else ""
        return (f"the application asks for more than {size} can give ({asks or 'its executor defaults'}){why}; "
                "enlarge the cluster (workers, worker_cores, worker_memory) or lower spark.executor.*")

    # ---- the end --------------------------------------------------------------------------------
    async def _finish(self, result: AppResult, elapsed: float) -> None:
        job = await self.db.get(self.job_id)
        output = result.output_tail or ""
        if job.state == State.CANCELING:
            return
        if result.exit_status != 0 and self._cluster_lost(output):
            await self._teardown()
            await self._fail(27, "the cluster's master went away while the driver ran", phase="ClusterLost")
            return
        submit_err = _SUBMIT_ERROR.search(output) if result.exit_status not in (0,) else None
        outcome = classify_driver(result.exit_status, output)
        if result.oom_killed:
            outcome = type(outcome)(16, None, "the driver was killed for running out of memory")
        await self._teardown()
        if outcome.exit_code is None:
            min_rt = self.policy.get("min_runtime")
            if min_rt and elapsed < float(min_rt):
                text = f"Underrun: finished in {elapsed:.1f} s, before min_runtime={float(min_rt):g} s"
                await self.db.update(self.job_id, warning=text, event="UNDERRUN", description=text)
            await self.db.transition(self.job_id, State.COMPLETE, phase="Succeeded",
                                  description=f"driver exited 0 after {elapsed:.1f} s")
            return
        if submit_err and outcome.kernel_exit_code in (2, 7):
            await self._fail(17, submit_err.group(1)[:500], phase="SubmissionRefused")
            return
        if outcome.exit_code == 15:
            await self.m.cancel(self.job_id, "resources", await self._resource_advice())
            return
        if outcome.exit_code in (16, 29):
            code = outcome.exit_code
            phase = "OOMKilled" if code == 16 else "DriverCrashed"
            await self._fail(code, outcome.reason, phase=phase)
            return
        kernel = outcome.kernel_exit_code or 7
        reruns = [int(c) for c in self.policy.get("rerun_on_exit_codes") or []]
        max_attempts = 1 + max(int(self.policy.get("retries") or 0), 1)
        if kernel in reruns and job.attempt < max_attempts:
            await self.db.transition(
                self.job_id, State.QUEUED, phase="Rerun", attempt=job.attempt + 1,
                description=f"kernel exit code {kernel} is in rerun_on_exit_codes: rerun "
                            f"(attempt {job.attempt + 1} of {max_attempts}); {outcome.reason[:300]}",
            )
            self.m.kick()
            return
        await self.db.add_event(self.job_id, f"driver failed: {outcome.reason[:1000]}", event="DRIVER")
        await self.db.transition(
            self.job_id, State.EXECUTOR_ERROR, phase="Failed", exit_code=18,
            exit_message=exit_codes.message(18, kernel_exit_code=kernel),
            description=f"Task fails with kernel exit code: {kernel} ({outcome.reason[:300]})",
        )

    @staticmethod
    def _cluster_lost(output: str) -> bool:
        return bool(_CLUSTER_GONE.search(output))


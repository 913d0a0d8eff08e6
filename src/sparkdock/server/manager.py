"""The :class:`JobManager`: the asynchronous orchestrator and the only writer of job state.

It runs each job's lifecycle (``UNKNOWN → QUEUED → INITIALIZING → RUNNING → …``) as an asyncio task,
enforces capacity (``max_running_clusters``: beyond it, jobs wait in ``QUEUED`` and start in order),
cancels (user, schedule, overrun), watches timeouts and idleness, follows backend health, and reconciles
the store with what the backend finds when the server starts.

Backends report progress and failures; the manager turns them into transitions, exit codes, phases,
runtime status and history events in the :class:`~sparkdock.server.store.JobStore`, and every change is
published on the :class:`~sparkdock.server.events.EventBus`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sparkdock.backends.base import Backend, BackendError, ClusterInfo, Reporter
from sparkdock.model import exit_codes
from sparkdock.model.lifecycle import IllegalTransition, Kind, State
from sparkdock.model.specs import (
    MIN_WORKER_MEMORY,
    SPEC_MAX_WORKER_CORES,
    SPEC_MAX_WORKERS,
    AutomatedJobRequest,
    ClusterSpec,
    InteractiveJobRequest,
    SpecError,
    parse_job_request,
)
from sparkdock.server.automated import AutomatedRun
from sparkdock.server.db import AsyncStore
from sparkdock.server.events import EventBus, call_on_loop
from sparkdock.server.health import HealthMonitor
from sparkdock.server.hiveserver2 import SQLResult, run_statement
from sparkdock.server.limits import Limits
from sparkdock.server.outbox import Delivery, summary
from sparkdock.server.owners import DEFAULT_OWNER, Caller
from sparkdock.server.store import Job, JobStore, StorageUnavailable, parse_time, utc_text, utcnow
from sparkdock.server.webhooks.dispatcher import DeliveryPolicy, Dispatcher
from sparkdock.server.webhooks.guard import TargetGuard
from sparkdock.server.webhooks.mailer import Mailer, SmtpSettings

log = logging.getLogger(__name__)

#: The runtime error of a RUNNING job whose cluster could not be adopted at start-up (the engine was down).
_NOT_ADOPTED = "after a server restart the backend cannot be reached to adopt the cluster"

#: Map of an interactive provisioning code to the automated code for an ephemeral cluster.
_AUTOMATED_PROVISION_CODE = {50: 20, 51: 20, 52: 20}


class JobConflict(RuntimeError):
    """The job is not in a state that allows the request (HTTP 409)."""


class QuotaExceeded(RuntimeError):
    """Too many jobs are queued (HTTP 429)."""


@dataclass
class ManagerConfig:
    """Settings of the manager (filled from the extension's traitlets)."""

    max_running_clusters: int = 2
    max_queued_jobs: int = 50
    default_cluster: dict[str, Any] = field(default_factory=dict)
    default_idle_timeout: float | None = None
    default_max_lifetime: float | None = None
    terminate_on_shutdown: bool = False
    retry_backoff: float = 2.0
    retry_backoff_max: float = 60.0
    watchdog_interval: float = 1.0
    sql_row_limit: int = 1000
    sql_timeout: float = 300.0
    max_drivers_per_cluster: int = 2
    health_interval: float = 2.0
    health_grace: float = 20.0
    health_probe_failures: int = 3
    retention_days: float | None = None
    retention_interval: float = 3600.0
    limits: Limits = field(default_factory=Limits)
    webhooks: DeliveryPolicy = field(default_factory=DeliveryPolicy)
    webhook_allowed_networks: tuple[str, ...] = ()
    smtp: SmtpSettings = field(default_factory=SmtpSettings)


@dataclass
class _Runtime:
    """In-memory companions of a job: its task, cluster and bookkeeping."""

    task: asyncio.Task[None] | None = None
    cluster: ClusterInfo | None = None
    cancel_reason: str | None = None  # "user" | "idle" | "lifetime" | "overrun" | "resources" | …
    cancel_detail: str = ""
    run_started: float | None = None
    next_use_check: float = 0.0  # monotonic: when the idle check may read the cluster's use again


class JobManager:
    """Owns the lifecycle of every job."""

    def __init__(
        self,
        store: JobStore,
        backend: Backend,
        bus: EventBus | None = None,
        config: ManagerConfig | None = None,
        backend_reason: str = "",
    ) -> None:
        self.store = store
        self.db = AsyncStore(store)
        self.backend = backend
        self.backend_reason = backend_reason
        self.bus = bus or EventBus()
        self.config = config or ManagerConfig()
        self._rt: dict[str, _Runtime] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        self._stopping = False
        self._wake: asyncio.Event | None = None  # created on start (needs a running loop)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.health = HealthMonitor(self, interval=self.config.health_interval, grace=self.config.health_grace,
                                    probe_failures=self.config.health_probe_failures)
        self.notifier = Dispatcher(self.db, TargetGuard(self.config.webhook_allowed_networks), self.config.webhooks,
                                   mailer=Mailer(self.config.smtp), on_attempt=self._on_attempt)
        self._planned_seen = 0
        self.store.listeners.append(self._on_store_change)

    # ---- start / stop ---------------------------------------------------------------------------
    async def ensure_started(self) -> None:
        """Start the manager once: reconcile, then the scheduler, watchdogs and backend watch."""
        if self._started:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._started:
                return
            self._loop = asyncio.get_running_loop()
            self.bus.bind(self._loop)
            self._stopping = False
            self._wake = asyncio.Event()
            await self.reconcile()
            try:  # the idle timeout and max lifetime of adopted clusters, from their stored times, at once
                await self._check_schedules()
            except Exception:
                log.exception("schedule check at start-up failed")
            self._spawn(self._retention_loop(), "retention")
            self._spawn(self._scheduler_loop(), "scheduler")
            self._spawn(self._watchdog_loop(), "watchdog")
            self._spawn(self._watch_backend(), "backend-watch")
            self._spawn(self.health.run(), "health")
            self._spawn(self.notifier.run(), "notifications")
            self._started = True
            self.kick()

    async def stop(self) -> None:
        """Stop background work. Clusters keep running unless ``terminate_on_shutdown``."""
        if not self._started:
            return
        if self.config.terminate_on_shutdown:
            for job in await self.db.non_terminal():
                with contextlib.suppress(Exception):
                    await self.cancel(job.id, reason="shutdown", wait=True)
        self._stopping = True
        tasks = [t for t in self._tasks if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=60)
            for t in pending:
                log.warning("sparkdock task %s did not stop in time", t.get_name())
        with contextlib.suppress(Exception):
            await self.backend.close()
        self._started = False

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=f"sparkdock-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("sparkdock task %s failed", task.get_name(), exc_info=task.exception())

    @property
    def stopping(self) -> bool:
        """True while the manager shuts down."""
        return self._stopping

    def retry_delay(self, attempt: int) -> float:
        """Seconds before the attempt after ``attempt``: ``retry_backoff`` doubled per attempt, capped."""
        return min(self.config.retry_backoff * 2 ** (attempt - 1), self.config.retry_backoff_max)

    def kick(self) -> None:
        """Wake the scheduler (callable from any thread)."""
        if self._wake is not None:
            call_on_loop(self._loop, self._wake.set)

    def _on_store_change(self, job: Job) -> None:
        """Publish a change (called by the store after each commit, on the store's thread)."""
        self.bus.publish({"type": "job", "job": job.to_event_json()})
        if job.terminal:  # a cluster or a driver slot is free
            self.kick()
        planned = getattr(self.store.planner, "planned", 0)
        if planned != self._planned_seen:  # the change planned deliveries (committed now): send them
            self._planned_seen = planned
            self.notifier.kick()

    def _on_attempt(self, d: Delivery) -> None:
        """Publish an attempt of a delivery (the monitor shows it live); seen by those who see the job."""
        self.bus.publish({"type": "delivery", "owner": d.owner, "delivery": summary(d)})

    @property
    def root_dir(self) -> Path:
        """The folder an application's ``path`` must lie under."""
        return self.config.limits.root_dir

    # ---- queries --------------------------------------------------------------------------------
    async def get(self, job_id: str) -> Job:
        """The job (raises :class:`~sparkdock.server.store.JobNotFound`)."""
        return await self.db.get(job_id)

    async def list(self, **filters: Any) -> tuple[list[Job], int]:
        """Jobs and their total count; see :meth:`JobStore.list`."""
        return await self.db.list(**filters)

    async def history(self, job_id: str) -> list[dict[str, Any]]:
        """The job's history."""
        return await self.db.history(job_id)

    async def deliveries(self, job_id: str) -> list[dict[str, Any]]:
        """The job's webhook deliveries and their attempts."""
        return await self.db.call(self.store.deliveries, job_id)

    async def webhook_secret_info(self) -> dict[str, Any]:
        """When the signing secret was made and rotated, and whether it was shown (never the secret)."""
        return {**(await self.db.call(self.store.webhook_secret_info)),
                "grace_seconds": self.config.webhooks.secret_grace}

    async def reveal_webhook_secret(self) -> dict[str, Any]:
        """Show a signing secret once: the current one if it was never shown, else a new one (a rotation: the
        old one keeps signing for ``webhook_secret_grace`` seconds)."""
        secret, created, rotated = await self.db.call(self.store.reveal_webhook_secret, utcnow())
        log.info("sparkdock: the webhook signing secret was %s", "rotated" if rotated else "shown")
        return {"secret": secret, "created_at": created, "rotated": rotated,
                "grace_seconds": self.config.webhooks.secret_grace}

    async def info(self) -> dict[str, Any]:
        """The backend in use and why, capacity and counts."""
        running = await self._clusters_in_use()
        return {
            "backend": self.backend.name,
            "reason": self.backend_reason,
            "instance": self.backend.instance,
            "max_running_clusters": self.config.max_running_clusters,
            "clusters_in_use": running,
            "max_queued_jobs": self.config.max_queued_jobs,
        }

    def cluster_options(self) -> dict[str, Any]:
        """What a cluster request may ask of this server, and what it gets when it does not say.

        ``{"workers": {"default", "min", "max"}, "worker_cores": {...}, "worker_memory": {"default", "min", "max"},
        "image": {"default", "allowed"}, "idle_timeout": {"default"}, "max_lifetime": {"default"}}``: the server's
        ``default_*`` settings and its limits (``max_*``, ``allowed_images``) under the spec's own bounds.
        """
        defaults = self._cluster_spec({})
        limits = self.config.limits
        images = limits.allowed_images
        return {
            "workers": {"default": defaults.workers, "min": 1, "max": min(limits.max_workers, SPEC_MAX_WORKERS)},
            "worker_cores": {"default": defaults.worker_cores, "min": 1,
                             "max": min(limits.max_worker_cores, SPEC_MAX_WORKER_CORES)},
            "worker_memory": {"default": defaults.worker_memory, "min": MIN_WORKER_MEMORY,
                              "max": limits.max_worker_memory},
            "image": {"default": defaults.image or getattr(self.backend, "image", None),
                      "allowed": None if images is None else sorted(images)},
            "idle_timeout": {"default": self.config.default_idle_timeout},
            "max_lifetime": {"default": self.config.default_max_lifetime},
        }

    # ---- submit ---------------------------------------------------------------------------------
    async def submit(self, body: Any, caller: Caller | None = None) -> Job:
        """Validate a POST body and create the job (``QUEUED``), owned by ``caller`` (default: the owner
        ``default``, who sees every job). Raises :class:`SpecError`, :class:`JobConflict` (``cluster_job`` not
        usable) or :class:`QuotaExceeded`."""
        caller = caller or Caller(DEFAULT_OWNER, sees_all=True)
        req = parse_job_request(body)
        if not self.config.smtp.enabled:
            mails = [i for i, n in enumerate(req.notifications) if n.email]
            if mails:
                raise SpecError([{"field": f"notifications.{i}.url", "message": "email notifications are not "
                                  "enabled on this server (its admin sets SparkDockApp.smtp_host); give a webhook "
                                  "URL"} for i in mails], status=400)
        if isinstance(req, InteractiveJobRequest):
            cluster = self._cluster_spec(req.cluster.model_dump(exclude_unset=True))
            self.config.limits.check_cluster(cluster)
            spec: dict[str, Any] = {"kind": "interactive", "cluster": cluster.model_dump()}
            if cluster.idle_timeout is None and self.config.default_idle_timeout:
                spec["cluster"]["idle_timeout"] = self.config.default_idle_timeout
            if cluster.max_lifetime is None and self.config.default_max_lifetime:
                spec["cluster"]["max_lifetime"] = self.config.default_max_lifetime
        else:
            spec = await self._automated_spec(req, caller)
        spec["notifications"] = [n.model_dump() for n in req.notifications]
        queued = (await self.db.list(states=[State.UNKNOWN, State.QUEUED], limit=1))[1]
        over_quota = queued >= self.config.max_queued_jobs
        if over_quota and req.kind == "interactive":
            raise QuotaExceeded(
                f"{queued} jobs are already queued (max_queued_jobs={self.config.max_queued_jobs}); "
                "wait for running jobs to end"
            )
        # created in its first state in one transaction: a store that fails leaves no job half made
        if over_quota:
            then: dict[str, Any] = {
                "target": State.SYSTEM_ERROR, "phase": "QuotaReached", "exit_code": 23,
                "exit_message": exit_codes.message(23, detail=f"{queued} jobs queued, the limit is "
                                                              f"{self.config.max_queued_jobs}"),
            }
        else:
            then = {"target": State.QUEUED, "phase": "Queued", "description": "queued for capacity"}
        job = await self.db.create(req.kind, spec, name=req.name, owner=caller.name, backend=self.backend.name,
                                   then=then)
        if not over_quota:
            self.kick()
        return job

    def _cluster_spec(self, given: dict[str, Any]) -> ClusterSpec:
        merged = {**self.config.default_cluster, **given}
        try:
            return ClusterSpec(**merged)
        except Exception as exc:  # a bad server default must still be reported by field
            from pydantic import ValidationError

            from sparkdock.model.specs import validation_errors

            if isinstance(exc, ValidationError):
                raise SpecError(
                    [{"field": f"cluster.{e['field']}", "message": e["message"]} for e in validation_errors(exc)]
                ) from None
            raise

    async def _automated_spec(self, req: AutomatedJobRequest, caller: Caller) -> dict[str, Any]:
        """The stored spec of an automated job. A ``cluster_job`` that cannot be used is refused at submission
        (seed 003 "Cannot Run"): 422 when it does not exist or is not the caller's to see, 409 when it is not
        RUNNING or is flagged."""
        spec: dict[str, Any] = {
            "kind": "automated",
            "application": req.application.model_dump(),
            "policy": req.policy.model_dump(),
            "cluster_job": req.cluster_job,
            "cluster": None,
        }
        if req.application.path is not None:
            self.config.limits.check_path(req.application.path)
        if req.cluster_job is not None:
            target = await self.db.find(req.cluster_job)
            if target is None or target.kind != Kind.INTERACTIVE or not caller.may_see(target.owner):
                raise SpecError([{"field": "cluster_job", "message": f"no interactive job {req.cluster_job!r}"}])
            if target.state != State.RUNNING:
                raise JobConflict(f"cluster_job {req.cluster_job} is {target.state}, not RUNNING")
            if target.flagged:
                raise JobConflict(
                    f"cluster_job {req.cluster_job} has a runtime error and is not reused: "
                    f"{target.runtime_status['error']}"
                )
        else:
            given = req.cluster.model_dump(exclude_unset=True) if req.cluster else {}
            cluster = self._cluster_spec(given)
            self.config.limits.check_cluster(cluster)
            spec["cluster"] = cluster.model_dump()
        return spec

    # ---- cancel ---------------------------------------------------------------------------------
    async def cancel(self, job_id: str, reason: str = "user", detail: str = "", wait: bool = False) -> Job:
        """Cancel or terminate a job; idempotent. ``reason``: user, idle, lifetime (an interactive cluster's
        schedule), overrun, resources, shutdown, dependency."""
        job = await self.db.get(job_id)
        if job.terminal or job.state == State.CANCELING:
            return job
        phase = {"idle": "TimedOut", "lifetime": "TimedOut", "overrun": "Overrun",
                 "resources": "InsufficientResources"}.get(reason, "Terminating")
        desc = {
            "user": "cancellation requested by the user",
            "idle": f"terminated by schedule: {detail}",
            "lifetime": f"terminated by schedule: {detail}",
            "overrun": f"canceled by policy: {detail}",
            "resources": f"canceled automatically: {detail}",
            "shutdown": "terminated at server shutdown",
            "dependency": f"canceled: {detail}",
        }.get(reason, reason)
        rt = self._rt.setdefault(job_id, _Runtime())
        previous = rt.cancel_reason, rt.cancel_detail
        rt.cancel_reason, rt.cancel_detail = reason, detail
        # CANCELING is queued on the store's thread before the job's task is cancelled: whatever the task then
        # reads or writes comes after it (a write it had already queued, e.g. RUNNING, lands before it)
        moved = self.db.queue(self.store.transition, job_id, State.CANCELING, phase=phase, description=desc)
        task = rt.task
        own = task is not None and not task.done() and task is not asyncio.current_task()
        if own:
            task.cancel()  # the job's task finishes the cancellation (it owns the resources)
        try:
            job = await moved
        except StorageUnavailable:  # nothing was written; the job's task (if any) was told to stop
            rt.cancel_reason, rt.cancel_detail = previous
            raise
        except IllegalTransition:  # it ended (or is being canceled) since it was read: nothing left to cancel
            rt.cancel_reason, rt.cancel_detail = previous
            job = await self.db.get(job_id)
            if job.terminal or job.state == State.CANCELING:
                return job
            raise
        if own:
            if wait:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait({task}, timeout=120)
        else:
            finisher = self._spawn(self.finish_cancel(job_id), f"cancel-{job_id}")
            if wait:
                await asyncio.wait({finisher}, timeout=120)
        return await self.db.get(job_id)

    async def finish_cancel(self, job_id: str) -> None:
        """Remove every resource of a CANCELING job and move it to its final state."""
        job = await self.db.get(job_id)
        if job.state != State.CANCELING:
            return
        rt = self._rt.get(job_id) or _Runtime()
        try:
            await self.backend.stop_cluster(job_id, job.backend_state or None)
        except Exception as exc:  # teardown is retried at next reconcile; still finish the state
            log.warning("teardown of %s failed: %s", job_id, exc)
            await self.db.add_event(job_id, f"teardown error: {exc}", event="WARNING")
        rt.cluster = None
        if job.kind == Kind.INTERACTIVE:  # the final phase says why it ended (the card shows it)
            phase = {"idle": "IdleTimeout", "lifetime": "MaxLifetime"}.get(rt.cancel_reason or "", "Terminated")
            why = f"ended: {rt.cancel_detail}; " if phase != "Terminated" else ""
            await self.db.transition(job_id, State.COMPLETE, phase=phase, description=f"{why}all resources removed")
        else:
            code = 15 if rt.cancel_reason in ("overrun", "resources") else 14
            msg = (
                exit_codes.message(15, reason=rt.cancel_detail)
                if code == 15
                else exit_codes.message(14)
            )
            await self.db.transition(job_id, State.CANCELED, phase="Canceled", exit_code=code, exit_message=msg)
        self._rt.pop(job_id, None)
        self.kick()

    # ---- SQL and logs ---------------------------------------------------------------------------
    async def sql(self, job_id: str, statement: str, limit: int | None = None) -> SQLResult:
        """Run a statement on a RUNNING interactive job's SQL endpoint."""
        job = await self.db.get(job_id)
        if job.kind != Kind.INTERACTIVE or job.state != State.RUNNING:
            raise JobConflict(f"job {job_id} is a {job.kind.value} job in state {job.state}; "
                              "SQL needs a RUNNING interactive job")
        cluster = await self.cluster_of(job)
        sql_ep = cluster.endpoints["sql"]
        await self.touch(job_id)
        limit = min(limit or self.config.sql_row_limit, self.config.sql_row_limit)
        try:
            return await asyncio.to_thread(
                run_statement, sql_ep["host"], int(sql_ep["port"]), statement,
                user=cluster.sql_user, password=cluster.sql_password, limit=limit,
                timeout=self.config.sql_timeout,
            )
        finally:
            await self.touch(job_id)

    async def credentials(self, job_id: str) -> dict[str, Any]:
        """The SQL user/password and lab token of a RUNNING interactive job (for beeline, DBeaver, the lab).

        Raises :class:`JobConflict` unless the job is a RUNNING interactive job.
        """
        job = await self.db.get(job_id)
        if job.kind != Kind.INTERACTIVE or job.state != State.RUNNING:
            raise JobConflict(f"job {job_id} is {job.state}; credentials exist only for a RUNNING interactive job")
        cluster = await self.cluster_of(job)
        endpoints = cluster.endpoints or job.endpoints or {}
        lab_url = (endpoints.get("lab") or {}).get("url")
        token = cluster.lab_token
        return {
            "sql": {
                "user": cluster.sql_user,
                "password": cluster.sql_password,
                "jdbc_url": (endpoints.get("sql") or {}).get("jdbc_url"),
            },
            "lab": {"token": token, "url": f"{lab_url}?token={token}" if lab_url and token else lab_url},
        }

    async def touch(self, job_id: str, when: str | None = None) -> None:
        """Record use of an interactive cluster (now, or at ``when``): its idle timer starts again. Stored, so
        that the idle timeout counts from it after a server restart too."""
        try:
            await self.db.set_last_activity(job_id, when or utcnow())
        except Exception as exc:  # a busy database must not fail the request that used the cluster
            log.warning("could not record the use of %s: %s", job_id, exc)

    async def logs(self, job_id: str, component: str, tail: int | None = None) -> str:
        """Logs of one component of a job."""
        job = await self.db.get(job_id)
        target = job_id
        if component != "driver" and job.kind == Kind.AUTOMATED and job.spec.get("cluster_job"):
            target = job.spec["cluster_job"]
        return await self.backend.logs(target, component, tail)

    async def cluster_of(self, job: Job) -> ClusterInfo:
        """The cluster of a job that has one (raises :class:`JobConflict` otherwise); its credentials are
        read (a file) off the event loop."""
        rt = self._rt.get(job.id)
        if rt is not None and rt.cluster is not None:
            return rt.cluster
        if job.backend_state:
            cluster = ClusterInfo(job.id, job.endpoints or {}, job.backend_state,
                                  credentials=await asyncio.to_thread(self.backend.credentials, job.id))
            if rt is not None:
                rt.cluster = cluster
            return cluster
        raise JobConflict(f"job {job.id} has no cluster")

    async def _clusters_in_use(self) -> int:
        jobs, _ = await self.db.list(states=[State.INITIALIZING, State.RUNNING, State.CANCELING], limit=100000)
        return sum(1 for j in jobs if j.kind == Kind.INTERACTIVE or not j.spec.get("cluster_job"))

    # ---- scheduler ------------------------------------------------------------------------------
    async def _scheduler_loop(self) -> None:
        assert self._wake is not None
        while not self._stopping:  # (a cancel racing wait_for's wake-up can be swallowed)
            self._wake.clear()
            try:
                await self._schedule()
            except Exception:
                log.exception("scheduler pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=5)

    async def _drivers_in_use(self) -> dict[str, int]:
        """Automated jobs started on each interactive cluster (by its job id)."""
        jobs, _ = await self.db.list(kind="automated", states=[State.INITIALIZING, State.RUNNING, State.CANCELING],
                                  limit=100000)
        used: dict[str, int] = {}
        for j in jobs:
            if j.spec.get("cluster_job"):
                used[j.spec["cluster_job"]] = used.get(j.spec["cluster_job"], 0) + 1
        return used

    async def _wait(self, job: Job, phase: str, description: str) -> None:
        if job.phase != phase:
            await self.db.update(job.id, phase=phase, description=description)

    async def _schedule(self) -> None:
        queued, _ = await self.db.list(states=[State.QUEUED], limit=100000, oldest_first=True)
        in_use = await self._clusters_in_use()
        drivers = await self._drivers_in_use()
        cap, max_drivers = self.config.max_running_clusters, self.config.max_drivers_per_cluster
        for job in queued:
            rt = self._rt.setdefault(job.id, _Runtime())
            if rt.task is not None and not rt.task.done():
                continue  # waiting out a retry backoff
            target = job.spec.get("cluster_job") if job.kind == Kind.AUTOMATED else None
            needs_cluster = job.kind == Kind.INTERACTIVE or not target
            if needs_cluster and in_use >= cap:
                await self._wait(job, f"WaitingForCapacity {in_use}/{cap}",
                                 f"waiting: {in_use} of {cap} clusters in use")
                continue
            if target and drivers.get(target, 0) >= max_drivers:
                await self._wait(job, f"WaitingForDriverSlot {drivers[target]}/{max_drivers}",
                           f"waiting: {drivers[target]} of {max_drivers} applications run on cluster {target} "
                           "(max_drivers_per_cluster)")
                continue
            try:
                await self.db.transition(job.id, State.INITIALIZING, phase="Initializing", expect={State.QUEUED})
            except IllegalTransition:  # canceled since the list was read (the store is awaited, not locked)
                continue
            if needs_cluster:
                in_use += 1
            if target:
                drivers[target] = drivers.get(target, 0) + 1
            runner = self._run_interactive if job.kind == Kind.INTERACTIVE else self._run_automated
            rt.task = self._spawn(runner(job.id), f"job-{job.id}")

    def reporter(self, job_id: str) -> Reporter:
        """The callback a backend reports the job's phases through (late reports are dropped).

        The phase ``EngineUnavailable`` (a driver waiting for the engine to answer again) is also the job's
        warning, cleared by the next report if nobody replaced it meanwhile.

        Backends call it synchronously (on the loop or on a thread): the write is queued on the store's thread,
        in order with every other store call, and not waited for."""
        warned: list[str] = []
        store = self.store

        def write(phase: str, activity: str, progress: dict[str, Any] | None, clear: str | None,
                  extra: dict[str, Any]) -> None:
            if clear is not None:
                job = store.find(job_id)
                if job is not None and job.runtime_status.get("warning") == clear:
                    extra["warning"] = None
            store.update(job_id, phase=phase, activity=activity, progress=progress, **extra)

        def report(phase: str, activity: str, *, progress: dict[str, Any] | None = None) -> None:
            extra: dict[str, Any] = {}
            clear = None
            if phase == "EngineUnavailable":
                extra["warning"] = activity
                warned[:] = [activity]
            elif warned:
                clear = warned.pop()
            self.db.submit(write, phase, activity, progress, clear, extra)  # a late report fails there: dropped

        return report

    async def record_failure_logs(self, job_id: str, err: BackendError) -> None:
        """Add a failed component's last log lines to the job's history."""
        if err.logs:
            comp = err.component or "cluster"
            await self.db.add_event(job_id, f"last log lines of {comp}:\n{err.logs[-8000:]}", event="LOGS")

    # ---- interactive ----------------------------------------------------------------------------
    async def _run_interactive(self, job_id: str) -> None:
        rt = self._rt.setdefault(job_id, _Runtime())
        try:
            try:
                job = await self.db.get(job_id)
                spec = ClusterSpec(**job.spec["cluster"])
                await self.backend.check()
                info = await self.backend.start_cluster(job_id, spec, self.reporter(job_id))
            except BackendError as err:
                await self.record_failure_logs(job_id, err)
                await self.safe_stop(job_id)
                code = err.code if err.code in (50, 51, 52) else 51
                endpoint = err.component if err.component in ("sql", "lab") else "sql or lab"
                await self.db.transition(
                    job_id, State.SYSTEM_ERROR, phase=err.phase or "Failed", exit_code=code,
                    exit_message=exit_codes.message(code, detail=err.detail, endpoint=endpoint),
                )
                return
            rt.cluster = info
            await self.db.update(job_id, backend_state=info.state)
            await self.db.transition(
                job_id, State.RUNNING, phase="Ready", endpoints=info.endpoints,
                runtime_status={"activity": "cluster ready: SQL and lab endpoints answer"},
                description="cluster ready",
            )
        except asyncio.CancelledError:
            if self._stopping:
                raise
            await self.safe_stop(job_id)
            await self.finish_cancel(job_id)
        except Exception as exc:  # never leave a job hanging in INITIALIZING
            log.exception("interactive job %s failed", job_id)
            await self.safe_stop(job_id)
            with contextlib.suppress(Exception):
                await self.db.transition(job_id, State.SYSTEM_ERROR, phase="Failed", exit_code=52,
                                      exit_message=exit_codes.message(52, detail=str(exc)))

    async def safe_stop(self, job_id: str) -> None:
        """Remove the job's cluster; a failure is logged, not raised."""
        try:
            job = await self.db.find(job_id)
            await asyncio.shield(self.backend.stop_cluster(job_id, job.backend_state if job else None))
        except Exception as exc:
            log.warning("cleanup of %s failed: %s", job_id, exc)

    # ---- automated ------------------------------------------------------------------------------
    async def _run_automated(self, job_id: str) -> None:
        await AutomatedRun(self, job_id).run()

    # ---- watchdogs ------------------------------------------------------------------------------
    async def _watchdog_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.config.watchdog_interval)
            try:
                await self._check_schedules()
            except Exception:
                log.exception("watchdog pass failed")

    async def _retention_loop(self) -> None:
        """Prune old finished jobs at start-up, then every ``retention_interval`` seconds."""
        while not self._stopping and self.config.retention_days:
            try:
                await self.prune_history()
            except Exception:
                log.exception("pruning the job history failed")
            await asyncio.sleep(self.config.retention_interval)

    async def prune_history(self) -> list[str]:
        """Delete the jobs that ended more than ``retention_days`` ago: their folders (logs, staged files), then
        their rows and history; the ids deleted. Jobs that have not ended are never pruned.

        Folders go first, off the event loop: a crash in between leaves rows that the next pass deletes, never a
        folder that no job points to."""
        days = self.config.retention_days
        if not days:
            return []
        before = utc_text(datetime.now(UTC) - timedelta(days=days))
        ids = await self.db.prunable(before)
        if not ids:
            return []
        folders = [self.backend.job_dir(j) for j in ids]
        await asyncio.to_thread(lambda: [shutil.rmtree(f, ignore_errors=True) for f in folders])
        await self.db.delete(ids)
        log.info("pruned %d job(s) that ended before %s (history_retention_days=%g)", len(ids), before, days)
        return ids

    async def _check_schedules(self) -> None:
        """End RUNNING interactive clusters past their ``max_lifetime`` (from ``started_at``) or idle for
        ``idle_timeout`` (from their last use, stored): both survive a server restart."""
        jobs, _ = await self.db.list(kind=Kind.INTERACTIVE, states=[State.RUNNING], limit=100000)
        now = parse_time(utcnow())
        assert now is not None
        for job in jobs:
            cluster = job.spec.get("cluster") or {}
            started = parse_time(job.started_at)
            lifetime = cluster.get("max_lifetime")
            if lifetime and started is not None and (now - started).total_seconds() >= lifetime:
                await self.cancel(job.id, "lifetime", f"max_lifetime of {lifetime:g} s reached (running since "
                                                      f"{job.started_at})")
                continue
            idle = cluster.get("idle_timeout")
            if idle:
                await self._check_idle(job, float(idle), now)

    async def _check_idle(self, job: Job, idle: float, now: datetime) -> None:
        """Cull the cluster of ``job`` if nobody used it for ``idle`` seconds.

        Use is: SQL run through the REST API and automated jobs running on the cluster (both recorded by
        :meth:`touch`), and, read from the cluster only when the timer is due, open SQL sessions
        and running statements (the last statement's end counts), busy lab kernels and the lab's
        ``last_activity``. When what the cluster says cannot be read, nothing is culled: it is read again later.
        """
        last = parse_time(job.last_activity_at or job.started_at)
        if last is None or (now - last).total_seconds() < idle:
            return
        rt = self._rt.setdefault(job.id, _Runtime())
        if time.monotonic() < rt.next_use_check:
            return
        if await self._cluster_busy(job.id):
            await self.touch(job.id)
            return
        use = await self._read_use(job)
        if isinstance(use, str):  # could not tell: look again later, never cull on a guess
            log.warning("idle check of %s: %s", job.id, use)
            rt.next_use_check = time.monotonic() + min(30.0, idle / 2)
            return
        in_use, seen = use
        if in_use:
            await self.touch(job.id)
            return
        if seen is not None and seen > last:
            await self.touch(job.id, utc_text(seen))
            if (now - seen).total_seconds() < idle:
                return
            last = seen
        await self.cancel(job.id, "idle", f"idle for {(now - last).total_seconds():.0f} s (idle_timeout {idle:g} s): "
                                          f"no SQL session or statement, no busy lab kernel, no lab, REST or "
                                          f"automated-job use since {utc_text(last)}")

    async def _read_use(self, job: Job) -> tuple[bool, datetime | None] | str:
        """``(in use now, last use seen)`` from the cluster's SQL endpoint and lab, or why it cannot be read."""
        try:
            cluster = await self.cluster_of(job)
        except JobConflict as exc:
            return str(exc)
        seen: list[float] = []
        try:
            sql = await asyncio.wait_for(self.backend.sql_activity(job.id, cluster.state), 15)
        except Exception as exc:
            return f"the SQL endpoint's activity cannot be read: {getattr(exc, 'detail', None) or exc}"
        if sql is not None:
            if sql.in_use:
                return True, None
            if sql.last_statement_end is not None:
                seen.append(sql.last_statement_end)
        lab_url = ((cluster.endpoints or job.endpoints or {}).get("lab") or {}).get("url")
        if lab_url and cluster.lab_token:
            try:
                lab = await asyncio.wait_for(self.backend.lab_activity(lab_url, cluster.lab_token), 15)
            except Exception as exc:
                return f"the lab's activity cannot be read: {exc}"
            if lab is not None and lab.in_use:
                return True, None
            if lab is not None and lab.last_activity is not None:
                seen.append(lab.last_activity)
        return False, (datetime.fromtimestamp(max(seen), UTC) if seen else None)

    async def _cluster_busy(self, job_id: str) -> bool:
        """An interactive cluster is busy while an automated job runs on it."""
        for jid, rt in list(self._rt.items()):  # (it awaits the store: jobs may come and go meanwhile)
            if jid != job_id and rt.task is not None and not rt.task.done():
                j = await self.db.find(jid)
                if j is not None and j.spec.get("cluster_job") == job_id:
                    return True
        return False

    async def _watch_backend(self) -> None:
        await self.backend.watch(self._on_health)

    async def _on_health(self, job_id: str, component: str, healthy: bool, message: str) -> None:
        """The backend saw a component die: the health loop checks now rather than at its next round."""
        log.debug("health event of %s/%s (healthy=%s): %s", job_id, component, healthy, message)
        self.health.poke()

    # ---- what the health loop needs (see sparkdock.server.health) ---------------------------------
    def track_cluster(self, job_id: str, cluster: ClusterInfo | None) -> None:
        """Have the health loop check the ephemeral cluster of an automated job (``None``: stop, before its
        teardown)."""
        self._rt.setdefault(job_id, _Runtime()).cluster = cluster

    async def watched_clusters(self) -> list[tuple[Job, dict[str, Any], dict[str, Any]]]:
        """RUNNING jobs whose cluster the health loop checks: ``(job, backend state, endpoints)``."""
        jobs, _ = await self.db.list(states=[State.RUNNING], limit=100000)
        watched = []
        for job in jobs:
            rt = self._rt.get(job.id)
            if job.kind == Kind.INTERACTIVE:
                state = rt.cluster.state if rt is not None and rt.cluster is not None else job.backend_state
                endpoints = job.endpoints or {}
            elif rt is not None and rt.cluster is not None:  # an automated job's ephemeral cluster
                state, endpoints = rt.cluster.state, rt.cluster.endpoints
            else:
                continue
            if state:
                watched.append((job, state, endpoints))
        return watched

    async def still_watched(self, job_id: str, state: dict[str, Any]) -> Job | None:
        """The job, while it is RUNNING and (for an automated job) its ephemeral cluster is not being removed;
        else ``None``."""
        job = await self.db.find(job_id)
        if job is None or job.state != State.RUNNING:
            return None
        if job.kind == Kind.INTERACTIVE:
            return job
        rt = self._rt.get(job_id)
        return job if rt is not None and rt.cluster is not None and rt.cluster.state is state else None

    async def reattach(self, job_id: str, state: dict[str, Any], note: str) -> None:
        """The engine answers again after an outage: read the cluster of a RUNNING interactive job again (its
        containers, ports and credentials: :meth:`Backend.adopt_cluster`) and record it (``REATTACHED``)."""
        job = await self.db.find(job_id)
        if job is None or job.state != State.RUNNING:
            return
        if job.kind == Kind.INTERACTIVE:
            try:
                info = await self.backend.adopt_cluster(job_id, state)
            except Exception as exc:  # the health loop goes on judging what it sees
                log.warning("re-attaching %s failed: %s", job_id, exc)
                info = None
            if info is not None:
                self._rt.setdefault(job_id, _Runtime()).cluster = info
                if info.endpoints and info.endpoints != job.endpoints:
                    await self.db.update(job_id, endpoints=info.endpoints, backend_state=info.state)
                if (job.runtime_status.get("error") or "").startswith(_NOT_ADOPTED):  # adopted at last
                    await self.db.update(job_id, error=None, description="adopted once the engine answered again")
        with contextlib.suppress(Exception):
            await self.db.add_event(job_id, note, event="REATTACHED")

    async def end_lost(self, job_id: str, component: str, detail: str, phase: str = "EndpointLost") -> None:
        """End a RUNNING interactive job whose master or SQL endpoint stayed down: its last log lines go in the
        history, its cluster is removed (the capacity slot is free), and it ends in SYSTEM_ERROR with 50
        (``phase``: ``EndpointLost``, or ``LostInEngineOutage`` when it did not survive an engine outage)."""
        job = await self.db.find(job_id)
        if job is None or job.state != State.RUNNING or job.kind != Kind.INTERACTIVE:
            return
        with contextlib.suppress(Exception):
            lines = await self.backend.logs(job_id, component, tail=40)
            if lines.strip():
                await self.db.add_event(job_id, f"last log lines of {component}:\n{lines[-8000:]}", event="LOGS")
        await self.safe_stop(job_id)
        rt = self._rt.get(job_id)
        if rt is not None:
            rt.cluster = None
        with contextlib.suppress(Exception):  # a user's terminate may have won the race: it finishes the job
            await self.db.transition(
                job_id, State.SYSTEM_ERROR, phase=phase, exit_code=50, expect={State.RUNNING},
                exit_message=exit_codes.message(50, endpoint=component, detail=detail),
                description=f"{component} stopped while running: {detail}",
            )

    # ---- reconcile ------------------------------------------------------------------------------
    async def reconcile(self) -> None:
        """Match every non-terminal job with what the backend finds (run once at start-up)."""
        found: set[str] | None
        try:
            found = await self.backend.list_job_ids()
        except Exception as exc:  # e.g. the Docker engine is down: adopt what answers, destroy nothing
            log.warning("backend cannot list resources: %s", exc)
            found = None
        for job in await self.db.non_terminal():
            try:
                await self._reconcile_job(job, found)
            except Exception:
                log.exception("reconcile of %s failed", job.id)
        live = {j.id for j in await self.db.non_terminal()}
        for orphan in sorted((found or set()) - live):
            log.info("removing orphaned resources of job %s", orphan)
            with contextlib.suppress(Exception):
                await self.backend.stop_cluster(orphan, None)

    async def _reconcile_job(self, job: Job, found: set[str] | None) -> None:
        rt = self._rt.setdefault(job.id, _Runtime())
        if job.state == State.UNKNOWN:
            await self.db.transition(job.id, State.QUEUED, phase="Queued", description="queued after restart")
        elif job.state == State.INITIALIZING:
            await self.safe_stop(job.id)
            await self.db.transition(
                job.id, State.QUEUED, phase="Requeued",
                description="the server restarted while the job was initializing; partial resources removed "
                "and the job requeued",
            )
        elif job.state == State.CANCELING:
            await self.finish_cancel(job.id)
        elif job.state == State.RUNNING and job.kind == Kind.INTERACTIVE:
            info = None
            if found is None or job.id in found:
                try:
                    info = await self.backend.adopt_cluster(job.id, job.backend_state)
                except BackendError as exc:
                    if found is None:  # the backend cannot tell: keep the job, flag it, destroy nothing
                        await self.db.update(job.id, error=f"{_NOT_ADOPTED}: {exc.detail}")
                        self.health.engine_unreachable(job.id)  # adopted when the health loop reaches it
                        return
                    log.warning("adoption of %s failed: %s", job.id, exc)
                except Exception as exc:
                    log.warning("adoption of %s failed: %s", job.id, exc)
            if info is not None:
                rt.cluster = info
                await self.db.add_event(job.id, "adopted after server restart (same endpoints)", event="ADOPTED")
                return
            await self.safe_stop(job.id)
            what = "its resources were found but its endpoints do not answer" if found and job.id in found \
                else "none of its resources were found"
            await self.db.transition(
                job.id, State.SYSTEM_ERROR, phase="Lost", exit_code=50,
                exit_message=exit_codes.message(50, endpoint="sql and lab", detail=f"after a server restart {what}"),
            )
        elif job.state == State.RUNNING:
            await self.safe_stop(job.id)  # its driver (and ephemeral cluster); never the cluster_job's cluster
            await self.db.transition(
                job.id, State.SYSTEM_ERROR, phase="Lost", exit_code=27,
                exit_message=exit_codes.message(27, detail="the server restarted while the driver ran; the driver "
                                                           "and its ephemeral cluster were stopped"),
            )


def data_dir_default() -> Path:
    """Default data folder: ``<jupyter data dir>/sparkdock``."""
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "sparkdock"

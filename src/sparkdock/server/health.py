"""The health loop: every running cluster is checked every ``health_interval`` seconds, on every backend.

A round asks the backend once per cluster whether its containers or processes are alive
(:meth:`~sparkdock.backends.base.Backend.health`), and probes the endpoints of the live ones off the event loop:
the master's ``/json/``, a TCP connection to the SQL endpoint (no HiveServer2 session: a probe is not use of the
cluster, and the idle timeout never hears of it) and the lab's ``GET /api``. Engine events (a container that
dies) only wake the loop early; every verdict comes from a round.

:func:`assess` turns what a round saw into seed 001's runtime status:

* ``warning`` while the cluster still works: some of its workers are dead, or its lab is;
* ``error`` when it cannot work: its master, its SQL endpoint or its last worker is dead (or the master or SQL
  endpoint does not answer). An error flags the job in every view and it is never reused for an automated job;
* a master or SQL endpoint that stays dead for ``health_grace`` seconds ends an interactive job in
  ``SYSTEM_ERROR`` with exit code 50 (the manager removes the cluster, which frees its capacity slot).

An automated job's ephemeral cluster is checked for its master and workers only; a dead master there stops the
driver (the run ends with 27).

An endpoint that is alive but does not answer its probe is flagged only after ``probe_failures`` rounds in a row,
so that one slow answer of a busy machine flags nothing; it is never fatal (a dead one is). A warning or error
this loop wrote is cleared when the cause is gone; one written by someone else is never touched.

When the engine itself does not answer (the Docker engine restarts: with ``live-restore`` its containers keep
running), nothing is concluded about the cluster: its job gets a warning that says so. When the engine answers
again, the cluster is re-attached (:meth:`HealthHost.reattach`: its containers and endpoints are read again, not
assumed) and the warning goes; a cluster whose master or SQL endpoint did not survive the outage ends at once
with exit code 50 and that reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sparkdock.backends.base import Backend, BackendError
from sparkdock.server.db import AsyncStore
from sparkdock.server.store import Job

log = logging.getLogger(__name__)

#: Components whose death ends an interactive cluster after the grace period.
FATAL = ("master", "sql")


@dataclass(frozen=True)
class Verdict:
    """What one round concluded about one cluster."""

    warning: str | None = None
    error: str | None = None
    fatal: tuple[str, str] | None = None
    """``(component, message)`` of a dead master or SQL endpoint: ends the job after the grace period."""


def assess(dead: dict[str, str], workers: Sequence[str], *, unanswered: dict[str, str] | None = None,
           interactive: bool = True) -> Verdict:
    """Seed 001's runtime status of a cluster from its dead components and its live endpoints that do not
    answer (component → why).

    ``workers`` names every worker of the cluster. Errors come first for the master (an error that starts with
    ``master stopped`` stops an automated job's driver), then the SQL endpoint, then the workers. Only a *dead*
    master or SQL endpoint is fatal: one that is alive but does not answer is flagged, and the flag is cleared
    when it answers again.
    """
    unanswered = unanswered or {}
    errors: list[str] = []
    warnings: list[str] = []
    fatal: tuple[str, str] | None = None
    for component in FATAL:
        if not interactive and component != "master":
            continue
        if component in dead:
            errors.append(f"{component} stopped: {dead[component]}")
            if interactive and fatal is None:
                fatal = (component, dead[component])
        elif component in unanswered:
            errors.append(f"{component} does not answer: {unanswered[component]}")
    gone = [w for w in workers if w in dead]
    if gone:
        why = "; ".join(dead[w] for w in gone)
        if len(gone) == len(workers):
            errors.append(f"all {len(workers)} worker(s) stopped, no executor can run: {why}")
        else:
            warnings.append(f"{len(gone)} of {len(workers)} workers stopped, the cluster runs on the others: {why}")
    if interactive and ("lab" in dead or "lab" in unanswered):
        how = f"stopped: {dead['lab']}" if "lab" in dead else f"does not answer: {unanswered['lab']}"
        warnings.append(f"lab {how}; the SQL endpoint and Spark still work")
    return Verdict(
        warning="; ".join(warnings) or None,
        error="; ".join(errors) or None,
        fatal=fatal,
    )


class HealthHost(Protocol):
    """What the loop needs of the :class:`~sparkdock.server.manager.JobManager`."""

    db: AsyncStore
    backend: Backend

    async def watched_clusters(self) -> list[tuple[Job, dict[str, Any], dict[str, Any]]]:
        """RUNNING jobs with a cluster to check: ``(job, backend state, endpoints)``."""
        ...

    async def still_watched(self, job_id: str, state: dict[str, Any]) -> Job | None:
        """The job as it is now, while it still runs on the cluster of ``state`` (not being torn down); else
        ``None``."""
        ...

    async def end_lost(self, job_id: str, component: str, detail: str, phase: str = "EndpointLost") -> None:
        """End an interactive job whose master or SQL endpoint stayed down (SYSTEM_ERROR 50)."""
        ...

    async def reattach(self, job_id: str, state: dict[str, Any], note: str) -> None:
        """The engine answers again after an outage: read the cluster again (history event ``REATTACHED``
        with ``note``)."""
        ...


@dataclass
class _Record:
    """What the loop remembers of one job between rounds."""

    wrote: dict[str, str | None] = field(default_factory=lambda: {"warning": None, "error": None})
    probe_fails: dict[str, int] = field(default_factory=dict)
    down_since: float | None = None
    engine_down: float | None = None
    """Since when (monotonic) the engine has not answered for this cluster."""


class HealthMonitor:
    """The loop (see the module docstring). The manager starts :meth:`run` and calls :meth:`poke` on engine
    events; :attr:`rounds` counts finished rounds (tests and benchmarks wait on it, they never sleep)."""

    def __init__(self, host: HealthHost, *, interval: float = 2.0, grace: float = 20.0, probe_failures: int = 3,
                 probe_timeout: float = 5.0) -> None:
        self.host = host
        self.interval = interval
        self.grace = grace
        self.probe_failures = max(1, probe_failures)
        self.probe_timeout = probe_timeout
        self.rounds = 0
        self._records: dict[str, _Record] = {}
        self._poke: asyncio.Event | None = None

    def engine_unreachable(self, job_id: str) -> None:
        """The engine could not be reached for ``job_id`` outside the loop (its adoption at start-up): the first
        round that reaches it re-attaches the cluster."""
        rec = self._records.setdefault(job_id, _Record())
        rec.engine_down = rec.engine_down or time.monotonic()

    def poke(self) -> None:
        """Start the next round now (an engine reported a death)."""
        if self._poke is not None:
            self._poke.set()

    async def run(self) -> None:
        """Run rounds until cancelled."""
        self._poke = asyncio.Event()
        while True:
            self._poke.clear()
            try:
                await self.round()
            except Exception:
                log.exception("health round failed")
            self.rounds += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), timeout=self.interval)

    async def round(self) -> None:
        """Check every watched cluster once, concurrently."""
        watched = await self.host.watched_clusters()
        live = {job.id for job, _, _ in watched}
        for gone in set(self._records) - live:
            del self._records[gone]
        await asyncio.gather(*(self._check(job, state, endpoints) for job, state, endpoints in watched))

    async def _check(self, job: Job, state: dict[str, Any], endpoints: dict[str, Any]) -> None:
        interactive = job.kind == "interactive"
        try:
            components = await self.host.backend.health(job.id, state)
        except BackendError as exc:  # the engine cannot tell: nothing is concluded, the job says so
            await self._engine_down(job, state, exc)
            return
        if not components:
            return
        probed = [c for c in ((*FATAL, "lab") if interactive else ("master",))
                  if c in components and components[c].alive]
        failures = await self.host.backend.probe(endpoints, probed, self.probe_timeout)
        current = await self.host.still_watched(job.id, state)
        if current is None:
            return  # torn down meanwhile: what this round saw is the teardown
        rec = self._records.setdefault(job.id, _Record())
        dead = {c: h.message or f"the {c} is not running" for c, h in components.items() if not h.alive}
        unanswered: dict[str, str] = {}
        for component in probed:
            failure = failures.get(component)
            if failure is None:
                rec.probe_fails.pop(component, None)
                continue
            rec.probe_fails[component] = rec.probe_fails.get(component, 0) + 1
            if rec.probe_fails[component] >= self.probe_failures:
                unanswered[component] = failure
        workers = sorted((c for c in components if c.startswith("worker-")), key=lambda c: int(c.split("-")[1]))
        verdict = assess(dead, workers, unanswered=unanswered, interactive=interactive)
        if rec.engine_down is not None:  # the engine answers again: re-attach, or end what did not survive
            outage = f"the {self._engine_name()} did not answer for {time.monotonic() - rec.engine_down:.1f} s"
            rec.engine_down = None
            if verdict.fatal is not None:
                component, message = verdict.fatal
                self._records.pop(job.id, None)
                await self.host.end_lost(job.id, component, f"{message}: it did not survive the engine's outage "
                                                            f"({outage})", phase="LostInEngineOutage")
                return
            alive = sum(1 for h in components.values() if h.alive)
            await self.host.reattach(job.id, state, f"re-attached: {outage}; its containers and endpoints were "
                                                    f"read again ({alive} of {len(components)} running)")
            current = await self.host.still_watched(job.id, state) or current
        await self._write(current, rec, verdict)
        if verdict.fatal is None:
            rec.down_since = None
            return
        now = time.monotonic()
        rec.down_since = rec.down_since or now
        if now - rec.down_since >= self.grace:
            component, message = verdict.fatal
            self._records.pop(job.id, None)
            await self.host.end_lost(job.id, component, f"{message} (down for more than {self.grace:g} s, "
                                                        "health_grace)")

    def _engine_name(self) -> str:
        name = self.host.backend.name
        return "Docker engine" if name == "docker" else f"{name} backend"

    async def _engine_down(self, job: Job, state: dict[str, Any], exc: BackendError) -> None:
        """The backend cannot tell whether the cluster lives: warn (once), conclude nothing."""
        log.debug("health of %s unknown: %s", job.id, exc.detail)
        current = await self.host.still_watched(job.id, state)
        if current is None:
            return
        rec = self._records.setdefault(job.id, _Record())
        rec.down_since = None  # a death seen before the outage is judged again when the engine is back
        if rec.engine_down is None:
            rec.engine_down = time.monotonic()
            detail = " ".join(str(exc.detail).split())[:200]
            warning = (f"the {self._engine_name()} does not answer ({detail}); the cluster is not checked until it "
                       "is back, then it is re-attached")
            await self._write(current, rec, Verdict(warning=warning, error=current.runtime_status.get("error")))

    async def _write(self, current: Job, rec: _Record, verdict: Verdict) -> None:
        """Write the verdict's warning and error on the RUNNING job ``current``; clear only what this loop
        wrote."""
        changes: dict[str, str | None] = {}
        for key, value in (("warning", verdict.warning), ("error", verdict.error)):
            if value is not None and current.runtime_status.get(key) != value:
                changes[key] = value
            elif value is None and rec.wrote[key] is not None and current.runtime_status.get(key) == rec.wrote[key]:
                changes[key] = None
        if not changes:
            return
        try:
            await self.host.db.update(current.id, event="HEALTH", **changes)  # type: ignore[arg-type]
        except Exception as exc:  # the job left RUNNING meanwhile
            log.debug("health of %s not recorded: %s", current.id, exc)
            return
        rec.wrote.update(changes)

"""A test double at the backend interface, for lifecycle logic only (no Spark, no Docker).

Real clusters are tested with the local and Docker backends; this double lets the manager's lifecycle
(capacity, cancel at every state, retries, reruns, codes, reconcile) be tested quickly and exactly.

Behaviour is scripted through the request itself, so that a test server needs no extra wiring:
* a cluster's ``image`` picks its start-up behaviour from :attr:`FakeBackend.images`;
* an application's code holds a line ``# fake: {...json...}`` with ``exit_status``, ``output``, ``run_delay``
  and ``gate``: the application then runs until the test opens that gate (:meth:`FakeBackend.open_gate`),
  so that a test waits on a condition rather than on a length of time.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, ClassVar

from sparkdock.backends.activity import LabActivity, SqlActivity
from sparkdock.backends.base import (
    AppResult,
    Backend,
    BackendError,
    ClusterInfo,
    ComponentHealth,
    Reporter,
    StagedApp,
    cluster_components,
)
from sparkdock.backends.logfiles import LogPolicy, RotatingWriter, tail_lines
from sparkdock.model.specs import ClusterSpec

IMAGES: dict[str, dict[str, Any]] = {
    "fake/ok": {},
    "fake/slow": {"start_delay": 3.0},
    "fake/fail51": {"fail": (51, "No such image: nope:1", "master")},
    "fake/fail50": {"fail": (50, "SQL endpoint not ready after 1 s", "sql")},
    "fake/failmaster": {"fail": (51, "master container exited", "master")},
    "fake/flaky": {"fail": (51, "port allocation failed", "worker-1"), "fail_times": 1},
}


class FakeBackend(Backend):
    """Provisions pretend clusters."""

    name = "fake"
    live: ClassVar[dict[str, dict[str, Any]]] = {}
    started: ClassVar[list[str]] = []
    stopped: ClassVar[list[str]] = []
    failures: ClassVar[dict[str, int]] = {}
    health_cb: ClassVar[Any] = None
    engine_down: ClassVar[bool] = False
    gates: ClassVar[dict[str, asyncio.Event]] = {}
    dead: ClassVar[dict[str, dict[str, str]]] = {}
    unanswered: ClassVar[dict[str, str]] = {}
    sql_use: ClassVar[dict[str, SqlActivity]] = {}
    """What each cluster's SQL endpoint says of its use (default: no session, no statement)."""
    lab_use: ClassVar[LabActivity | None] = None
    """What every lab says of its use (default: cannot tell)."""
    use_unreadable: ClassVar[set[str]] = set()

    @classmethod
    def reset(cls) -> None:
        """Forget everything (between tests)."""
        cls.live, cls.started, cls.stopped, cls.failures = {}, [], [], {}
        cls.health_cb, cls.engine_down, cls.gates = None, False, {}
        cls.dead, cls.unanswered = {}, {}
        cls.sql_use, cls.lab_use, cls.use_unreadable = {}, None, set()

    @classmethod
    def kill(cls, job_id: str, component: str, message: str) -> None:
        """Make a component of a live cluster dead, as :meth:`health` then reports it."""
        cls.dead.setdefault(job_id, {})[component] = message

    @classmethod
    def gate(cls, name: str) -> asyncio.Event:
        """The gate applications with ``"gate": name`` wait for."""
        return cls.gates.setdefault(name, asyncio.Event())

    @classmethod
    def open_gate(cls, name: str) -> None:
        """Let the applications waiting at gate ``name`` finish."""
        cls.gate(name).set()

    async def check(self) -> None:
        if self.engine_down:
            raise BackendError(52, "Cannot connect to the fake engine at unix:///nope.sock")

    async def start_cluster(self, job_id: str, spec: ClusterSpec, report: Reporter) -> ClusterInfo:
        beh = IMAGES.get((spec.image or "fake/ok").split(":")[0], {})
        self.started.append(job_id)
        self.live[job_id] = {"workers": spec.workers}
        self.dead.pop(job_id, None)
        try:
            report("CreatingContainers", "creating containers")
            report("StartingMaster", "starting the master")
            for k in range(1, spec.workers + 1):
                report(f"WaitingForWorkers {k}/{spec.workers}", f"waiting for workers {k}/{spec.workers}")
            await asyncio.sleep(beh.get("start_delay", 0.05))
            fail = beh.get("fail")
            if fail and self.failures.get(job_id, 0) < beh.get("fail_times", 10**9):
                self.failures[job_id] = self.failures.get(job_id, 0) + 1
                code, detail, component = fail
                raise BackendError(code, detail, phase="ContainerCannotRun", component=component,
                                   logs="fake log line 1\nfake log line 2")
            report("StartingSQLEndpoint", "starting the SQL endpoint")
            report("StartingLab", "starting the lab")
        except BaseException:
            self.live.pop(job_id, None)
            raise
        return ClusterInfo(
            job_id,
            {"sql": {"host": "127.0.0.1", "port": 1, "jdbc_url": "jdbc:hive2://127.0.0.1:1/default"},
             "lab": {"url": "http://127.0.0.1:2/lab"}, "spark_ui": {"url": "http://127.0.0.1:3"}},
            {"fake": True, "workers": spec.workers}, credentials=self.credentials(job_id),
        )

    async def stop_cluster(self, job_id: str, state: dict[str, Any] | None = None) -> None:
        self.live.pop(job_id, None)
        self.stopped.append(job_id)

    async def adopt_cluster(self, job_id: str, state: dict[str, Any]) -> ClusterInfo | None:
        await self.check()
        if job_id not in self.live:
            return None
        return ClusterInfo(job_id, {"sql": {"host": "127.0.0.1", "port": 1, "jdbc_url": "x"}}, state,
                           credentials=self.credentials(job_id))

    def credentials(self, job_id: str) -> dict[str, str]:
        return {"sql_password": "secret-password", "lab_token": "secret-token"} if job_id in self.live else {}

    async def list_job_ids(self) -> set[str]:
        await self.check()
        return set(self.live)

    async def logs(self, job_id: str, component: str, tail: int | None = None) -> str:
        if component not in ("master", "sql", "lab", "driver", "worker-1"):
            raise KeyError(component)
        path = self.job_dir(job_id) / "logs" / "driver.log"
        if component == "driver" and await asyncio.to_thread(path.is_file):  # what run_application wrote
            return await asyncio.to_thread(tail_lines, path, tail)
        return f"{component} log of {job_id}\n"

    async def run_application(self, job_id: str, cluster: ClusterInfo, app: StagedApp, report: Reporter) -> AppResult:
        beh: dict[str, Any] = {}
        for line in (await asyncio.to_thread(app.file.read_text)).splitlines():
            if line.startswith("# fake:"):
                beh = json.loads(line.split(":", 1)[1])
        log = self.job_dir(job_id) / "logs" / "driver.log"
        report("Running", "jobs 0/1", progress={"jobs_done": 0, "jobs_total": 1})
        # a driver writing log_mb MB of output (in its own process: here a thread), through the log rotation
        writer = asyncio.ensure_future(asyncio.to_thread(_write_log, log, self.log_policy, beh.get("log_mb", 0),
                                                         beh.get("log_seconds", 0)))
        for i in range(beh.get("reports", 0)):  # a driver whose progress changes that many times
            report("Running", f"tasks {i + 1}/{beh['reports']}", progress={"tasks_done": i + 1,
                                                                             "tasks_total": beh["reports"]})
            await asyncio.sleep(beh.get("report_interval", 0.01))
        await asyncio.sleep(beh.get("run_delay", 0.05))
        if "gate" in beh:
            await self.gate(beh["gate"]).wait()
        await writer
        report("Running", "jobs 1/1", progress={"jobs_done": 1, "jobs_total": 1})
        out = beh.get("output", "done\n")
        await asyncio.to_thread(_append_text, log, out)
        return AppResult(beh.get("exit_status", 0), out, log)

    async def health(self, job_id: str, state: dict[str, Any]) -> dict[str, ComponentHealth]:
        await self.check()
        if job_id not in self.live:
            return {}
        dead = self.dead.get(job_id, {})
        return {c: ComponentHealth(c not in dead, dead.get(c, ""))
                for c in cluster_components(int(self.live[job_id]["workers"]))}

    async def probe(self, endpoints: dict[str, Any], components: list[str], timeout: float = 3.0) -> dict[str, str]:
        # pretend endpoints: nothing listens on them; a test makes one "not answer" through `unanswered`
        return {c: self.unanswered[c] for c in components if c in self.unanswered}

    async def sql_activity(self, job_id: str, state: dict[str, Any]) -> SqlActivity | None:
        if job_id in self.use_unreadable:
            raise BackendError(52, "the fake SQL endpoint's UI does not answer")
        return self.sql_use.get(job_id, SqlActivity(0, 0))

    async def lab_activity(self, lab_url: str, token: str) -> LabActivity | None:
        assert token == "secret-token"
        return self.lab_use

    async def watch(self, on_health: Any) -> None:
        type(self).health_cb = on_health
        await asyncio.Event().wait()


def _write_log(path: Path, policy: LogPolicy, mb: float, seconds: float = 0) -> None:
    """Write ``mb`` MB of driver-like output lines to ``path`` (rotated as the real backends do), spread over
    ``seconds`` (a driver's pace; 0: at once)."""
    line = b"INFO TaskSetManager: Finished task in stage 0.0 (TID 1) in 12 ms on 10.0.0.2 (executor 0) " + b"." * 30
    count = int(mb * 1024 * 1024 / (len(line) + 8))
    start = time.monotonic()
    with RotatingWriter(path, policy) as out:
        for i in range(count):
            out.write(b"%07d %s\n" % (i, line))
            if seconds and i % 1000 == 999:  # keep to the pace
                time.sleep(max(0.0, start + seconds * i / count - time.monotonic()))


def _append_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(text)

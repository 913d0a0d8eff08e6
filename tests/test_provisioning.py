"""The one provisioning sequence (backends/provisioning.py) on a fake primitive set: no Docker, no Spark.

The real tests of 50, 51 and 52 on each backend are in test_backend_docker.py and test_backend_local.py;
here every failure of the sequence's table is planted in turn, and the phases, their order, the codes, the
failing component, its logs and the cleanup are checked.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
import stat
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sparkdock.backends import docker as docker_backend
from sparkdock.backends import local as local_backend
from sparkdock.backends.base import BackendError
from sparkdock.backends.provisioning import (
    ClusterParts,
    ClusterPlan,
    Deadlines,
    Probes,
    driver_secret_file,
    provision,
    read_credentials,
    secret_file,
    write_secret_files,
)
from sparkdock.cluster import properties
from sparkdock.cluster.probes import ProbeError, SQLAuthError
from sparkdock.model.specs import ClusterSpec

#: Deadlines and probe intervals short enough for a planted timeout to fire at once, long enough for the
#: fake endpoints (a poll registers one more worker) to be up in time otherwise.
QUICK = Deadlines(start=0.5, sql=0.2, lab=0.2, interval=0.01)


@dataclass
class Fake(ClusterParts):
    """Primitives that record every call; ``exits`` says which component is dead after its start."""

    plan: ClusterPlan = field(default_factory=lambda: ClusterPlan("job1", ClusterSpec(workers=2)))
    exits: set[str] = field(default_factory=set)
    start_error: dict[str, BaseException] = field(default_factory=dict)
    prepare_error: BaseException | None = None
    no_address: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)
    running: set[str] = field(default_factory=set)
    removed: int = 0
    remove_gate: asyncio.Event | None = None

    async def prepare(self, report: Any) -> None:
        self.calls.append("prepare")
        report("CheckingFake", "a phase of this backend only")
        if self.prepare_error is not None:
            raise self.prepare_error

    async def start(self, component: str) -> None:
        self.calls.append(f"start {component}")
        if component in self.start_error:
            raise self.start_error[component]
        self.running.add(component)

    async def exited(self, components: Sequence[str]) -> dict[str, str]:
        return {c: f"the {c} exited with code 3" for c in components if c in self.exits and c in self.running}

    async def address(self, component: str) -> tuple[str, int] | None:
        self.calls.append(f"address {component}")
        if component in self.no_address:
            return None
        return "127.0.0.1", {"master": 1001, "sql": 1002, "lab": 1003}[component]

    async def last_logs(self, component: str, lines: int) -> str | None:
        return f"last {lines} lines of {component}"

    async def remove(self) -> None:
        self.calls.append("remove")
        if self.remove_gate is not None:
            await self.remove_gate.wait()
        self.removed += 1

    def state(self) -> dict[str, Any]:
        return {"fake": True}


class Endpoints:
    """Fake probes: the master says ALIVE and registers one more worker a poll; SQL and lab answer."""

    def __init__(self, *, master: str = "ALIVE", max_workers: int = 99, sql: BaseException | None = None,
                 lab: BaseException | None = None) -> None:
        self.master_status = master
        self.max_workers = max_workers
        self.sql_error = sql
        self.lab_error = lab
        self.polls = 0
        self.seen: list[tuple[str, Any]] = []

    def master(self, url: str, timeout: float) -> dict[str, Any]:
        self.seen.append(("master", url))
        workers = min(self.polls, self.max_workers)
        self.polls += 1
        return {"status": self.master_status, "workers": [{"state": "ALIVE"}] * workers}

    def sql(self, host: str, port: int, user: str, password: str | None, timeout: float) -> None:
        self.seen.append(("sql", (host, port, user, password)))
        if self.sql_error is not None:
            raise self.sql_error

    def lab(self, url: str, token: str, timeout: float) -> dict[str, Any]:
        self.seen.append(("lab", (url, token)))
        if self.lab_error is not None:
            raise self.lab_error
        return {"started": "now"}

    def probes(self) -> Probes:
        return Probes(master=self.master, sql=self.sql, lab=self.lab)


class Phases:
    def __init__(self) -> None:
        self.phases: list[str] = []

    def __call__(self, phase: str, activity: str, *, progress: dict[str, Any] | None = None) -> None:
        self.phases.append(phase)


def run(parts: Fake, checks: Endpoints, deadlines: Deadlines = QUICK,
        report: Callable[..., None] | None = None) -> tuple[Any, Phases, ClusterPlan]:
    phases = Phases()
    info = asyncio.run(provision(parts, report or phases, deadlines, checks.probes()))
    return info, phases, parts.plan


def test_phases_in_order_and_the_cluster_info() -> None:
    parts, checks = Fake(), Endpoints()
    info, phases, plan = run(parts, checks)
    assert phases.phases == ["CheckingFake", "StartingMaster", "WaitingForWorkers 0/2", "WaitingForWorkers 1/2",
                             "WaitingForWorkers 2/2", "StartingSQLEndpoint", "StartingLab"]
    assert parts.calls[:3] == ["prepare", "start master", "address master"]
    assert sorted(parts.calls[3:7]) == ["start lab", "start sql", "start worker-1", "start worker-2"]
    assert parts.calls[7:] == ["address sql", "address lab"]
    assert parts.removed == 0
    assert info.job_id == "job1" and info.state == {"fake": True}
    assert info.endpoints == {
        "sql": {"host": "127.0.0.1", "port": 1002, "jdbc_url": "jdbc:hive2://127.0.0.1:1002/default"},
        "lab": {"url": "http://127.0.0.1:1003/lab"},
        "spark_ui": {"url": "http://127.0.0.1:1001/"},
    }
    # the probes reached the addresses with the plan's own credentials
    assert ("master", "http://127.0.0.1:1001") in checks.seen
    assert ("sql", ("127.0.0.1", 1002, "sparkdock", plan.sql_password)) in checks.seen
    assert ("lab", ("http://127.0.0.1:1003/", plan.lab_token)) in checks.seen
    assert plan.sql_password not in repr(plan) and plan.lab_token not in repr(plan)


def test_credentials_differ_per_cluster() -> None:
    a, b = ClusterPlan("a", ClusterSpec()), ClusterPlan("b", ClusterSpec())
    assert a.sql_password != b.sql_password and a.lab_token != b.lab_token
    assert len(a.sql_password) >= 24 and len(a.lab_token) >= 24


def test_secret_files_give_each_role_what_it_needs_only(tmp_path: Path) -> None:
    plan = ClusterPlan("a", ClusterSpec())
    assert plan.spark_secret not in repr(plan) and plan.sql_password not in repr(plan)
    assert ClusterPlan("b", ClusterSpec()).spark_secret != plan.spark_secret
    folder = tmp_path / "secrets"
    old = os.umask(0)
    try:
        write_secret_files(plan, folder)
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert sorted(p.name for p in folder.iterdir()) == ["cluster.properties", "lab.properties", "sql.properties"]
    read = {p.name: properties.read(p) for p in folder.iterdir()}
    for props in read.values():
        assert props[properties.SECRET_KEY] == plan.spark_secret
        assert props["spark.authenticate"] == "true" and props["spark.master.rest.enabled"] == "false"
    for p in folder.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert read["sql.properties"][properties.SQL_PASSWORD_KEY] == plan.sql_password
    assert read["lab.properties"][properties.LAB_TOKEN_KEY] == plan.lab_token
    assert properties.SQL_PASSWORD_KEY not in read["lab.properties"] | read["cluster.properties"]
    assert properties.LAB_TOKEN_KEY not in read["sql.properties"] | read["cluster.properties"]
    assert secret_file(folder, "worker-2") == secret_file(folder, "driver") == folder / "cluster.properties"
    assert read_credentials(folder) == {"sql_password": plan.sql_password, "lab_token": plan.lab_token}
    assert read_credentials(tmp_path / "gone") == {}
    assert driver_secret_file(folder, "a") == folder / "cluster.properties"


def test_secret_files_that_cannot_be_written_or_are_gone_are_52(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # a folder cannot be made below a file, even by root
    with pytest.raises(BackendError) as err:
        write_secret_files(ClusterPlan("a", ClusterSpec()), blocker / "secrets")
    assert (err.value.code, err.value.phase) == (52, "CreatingContainers")
    with pytest.raises(BackendError) as gone:
        driver_secret_file(tmp_path / "stopped", "c1")
    assert gone.value.code == 52 and gone.value.component == "driver" and "c1" in gone.value.detail


def test_a_broken_reporter_does_not_break_the_cluster() -> None:
    def broken(phase: str, activity: str, **_: Any) -> None:
        raise RuntimeError("the widget went away")

    info, _, _ = run(Fake(), Endpoints(), report=broken)
    assert info.endpoints["sql"]["port"] == 1002


# what is planted -> (code, phase, component, the last phase reported)
FAILURES: dict[str, tuple[Callable[[], tuple[Fake, Endpoints]], int, str | None, str | None, str]] = {
    "image cannot be had (the backend's own phase)": (
        lambda: (Fake(prepare_error=BackendError(51, "no image", phase="ErrImagePull")), Endpoints()),
        51, "ErrImagePull", None, "CheckingFake"),
    "backend unable to provision": (
        lambda: (Fake(prepare_error=BackendError(52, "engine down", phase="EngineUnavailable")), Endpoints()),
        52, "EngineUnavailable", None, "CheckingFake"),
    "a worker cannot be started": (
        lambda: (Fake(start_error={"worker-2": BackendError(51, "cannot start", phase="ContainerCannotRun",
                                                            component="worker-2")}), Endpoints()),
        51, "ContainerCannotRun", "worker-2", "WaitingForWorkers 0/2"),
    "the master exits": (
        lambda: (Fake(exits={"master"}), Endpoints()), 51, "CrashLoopBackOff", "master", "StartingMaster"),
    "the master never says ALIVE": (
        lambda: (Fake(), Endpoints(master="STANDBY")), 51, "StartTimeout", "master", "StartingMaster"),
    "a worker exits": (
        lambda: (Fake(exits={"worker-2"}), Endpoints()), 51, "CrashLoopBackOff", "worker-2",
        "WaitingForWorkers 0/2"),
    "the workers never register": (
        lambda: (Fake(), Endpoints(max_workers=1)), 51, "StartTimeout", "worker-1", "WaitingForWorkers 1/2"),
    "the SQL endpoint exits": (
        lambda: (Fake(exits={"sql"}), Endpoints()), 50, "CrashLoopBackOff", "sql", "WaitingForWorkers 0/2"),
    "the SQL endpoint never answers": (
        lambda: (Fake(), Endpoints(sql=ProbeError("connection refused"))), 50, "EndpointTimeout", "sql",
        "StartingSQLEndpoint"),
    "the SQL endpoint refuses its own password": (
        lambda: (Fake(), Endpoints(sql=SQLAuthError("login refused"))), 50, "EndpointAuthFailed", "sql",
        "StartingSQLEndpoint"),
    "the SQL endpoint has no address": (
        lambda: (Fake(no_address={"sql"}), Endpoints()), 51, "ContainerCannotRun", "sql",
        "WaitingForWorkers 2/2"),
    "the lab exits": (
        lambda: (Fake(exits={"lab"}), Endpoints()), 50, "CrashLoopBackOff", "lab", "WaitingForWorkers 0/2"),
    "the lab never answers": (
        lambda: (Fake(), Endpoints(lab=ProbeError("HTTP 403"))), 50, "EndpointTimeout", "lab", "StartingLab"),
    "a primitive fails unexpectedly": (
        lambda: (Fake(start_error={"sql": RuntimeError("fork failed")}), Endpoints()), 52, "LauncherFailed",
        None, "WaitingForWorkers 0/2"),
}


@pytest.mark.parametrize("planted", list(FAILURES))
def test_failure_mapping(planted: str) -> None:
    make, code, phase, component, last_phase = FAILURES[planted]
    parts, checks = make()
    phases = Phases()
    with pytest.raises(BackendError) as err:
        asyncio.run(provision(parts, phases, QUICK, checks.probes()))
    e = err.value
    assert (e.code, e.phase, e.component) == (code, phase, component), e.detail
    assert phases.phases[-1] == last_phase, phases.phases
    assert parts.calls[-1] == "remove" and parts.removed == 1
    if e.phase in ("CrashLoopBackOff", "StartTimeout", "EndpointTimeout", "ContainerCannotRun") and component:
        assert e.logs == f"last 40 lines of {component}"
    if e.phase == "CrashLoopBackOff":
        assert "exited with code 3" in e.detail


def test_cancellation_removes_everything_even_when_cancelled_again() -> None:
    async def scenario() -> Fake:
        parts = Fake(remove_gate=asyncio.Event())
        phases = Phases()
        never = Endpoints(master="STANDBY")
        task = asyncio.ensure_future(provision(parts, phases, Deadlines(start=60), never.probes()))
        while not never.seen:
            await asyncio.sleep(0)
        task.cancel()
        while "remove" not in parts.calls:
            await asyncio.sleep(0)
        task.cancel()  # a second cancel while removing: the removal still runs to its end
        await asyncio.sleep(0)
        parts.remove_gate.set()  # type: ignore[union-attr]
        with pytest.raises(asyncio.CancelledError):
            await task
        return parts

    parts = asyncio.run(scenario())
    assert parts.removed == 1


@pytest.mark.parametrize("module", [docker_backend, local_backend], ids=["docker", "local"])
def test_each_backend_runs_the_one_sequence(module: Any) -> None:
    """Each backend's start_cluster calls provision() with its own ClusterParts, and keeps no sequence
    of its own: none of the sequence's phases or failure phases is named in the backend's module."""
    backend = module.DockerBackend if module is docker_backend else module.LocalBackend
    tree = ast.parse(textwrap.dedent(inspect.getsource(backend.start_cluster)))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
             and "provision" in (getattr(n.func, "id", None), getattr(n.func, "attr", None))]
    assert len(calls) == 1
    parts = [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, ClusterParts)
             and v is not ClusterParts]
    assert len(parts) == 1 and not inspect.isabstract(parts[0])
    source = inspect.getsource(module)
    for phase in ("StartingMaster", "WaitingForWorkers", "StartingSQLEndpoint", "StartingLab",
                  "CrashLoopBackOff", "StartTimeout", "EndpointTimeout", "EndpointAuthFailed"):
        assert f'"{phase}' not in source, f"{module.__name__} names the sequence's phase {phase}"

"""Automated jobs on real Spark: a real :class:`JobManager` with a real :class:`LocalBackend` (issue #7).

One interactive cluster (1 worker of 2 cores) runs almost every job through ``cluster_job``; one ephemeral
cluster runs the parquet job on its own, at the same time. The jobs on the interactive cluster run
concurrently, so the whole file takes about the time of the slowest job (the resource watchdog needs
Spark's "Initial job has not accepted any resources" warning twice, 15 s apart):

* COMPLETE: a PySpark job writing and reading a parquet table (interactive and ephemeral), a SQL script;
* EXECUTOR_ERROR 18 with the kernel exit codes 1 to 7 produced by real drivers; SYSTEM_ERROR 16 (out of
  memory), 17 (spark-submit refuses the conf) and 29 (the driver aborted, 134);
* CANCELED 15 (executors that can never start; an overrun with ``overrun_action=cancel``), CANCELED 14;
* SYSTEM_ERROR 11 and 12 (staging);
* SYSTEM_ERROR 27 when the interactive cluster is terminated under a running driver (submitted with the
  others; the cluster is terminated once every other job has ended);
* nothing left behind: no process of the instance, no work folder.

Its clusters are its own: the test ends by terminating the interactive one under a running driver, and the
ephemeral one is what it tests. Their applications give idle executors back within seconds
(``local_cluster.TEST_SPARK_CONF``): with Spark's production timeouts (15 s idle, 30 s with shuffle data) nine
sessions queue for the worker's two cores for minutes, and how long depended on who got them first.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

import testrun
from docker_fixtures import build_broken_image, docker_image  # noqa: F401
from job_helpers import describe, events, wait_for
from local_cluster import TEST_SPARK_CONF
from sparkdock.backends.local import LocalBackend, pid_alive
from sparkdock.model.lifecycle import State
from sparkdock.server.limits import Limits
from sparkdock.server.manager import JobManager, ManagerConfig
from sparkdock.server.store import Job, JobStore

SESSION = "from pyspark.sql import SparkSession\nspark = SparkSession.builder.getOrCreate()\n"

PARQUET = SESSION + """\
import sys
path = sys.argv[1]
spark.range(200).selectExpr("id", "id * 2 AS twice").write.mode("overwrite").parquet(path)
back = spark.read.parquet(path)
assert back.count() == 200, back.count()
assert back.agg({"twice": "sum"}).collect()[0][0] == 2 * sum(range(200))
print("PARQUET-OK", path)
"""

SQL_SCRIPT = """\
-- a SQL script job
CREATE TEMPORARY VIEW numbers AS SELECT id FROM range(10);
SELECT sum(id) AS total FROM numbers;
"""

# A driver that runs until it is stopped. No SparkSession: overrun, cancel and cluster-lost act on the driver's
# process, and every session less is CPU the 2-core machine gives to the jobs that need Spark.
SLEEPER = "import time\nprint('SLEEPING', flush=True)\ntime.sleep(600)\n"






def states_of(m: JobManager, job_id: str) -> list[str]:
    """The states the job went through, in order."""
    return [e["state"] for e in events(m, job_id, "STATE")]


def automated(name: str, code: str | None = None, *, where: dict[str, Any], app_type: str = "pyspark",
              path: str | None = None, args: list[str] | None = None, conf: dict[str, str] | None = None,
              policy: dict[str, Any] | None = None) -> dict[str, Any]:
    """An automated job's POST body."""
    app: dict[str, Any] = {"type": app_type, "args": args or [], "conf": conf or {}}
    if path is not None:
        app["path"] = path
    else:
        app["code"] = code
    return {"kind": "automated", "name": name, "application": app, "policy": policy or {}, **where}


def _driver_pids(backend: LocalBackend, job_id: str) -> list[int]:
    from sparkdock.backends.local import _marked_processes

    return list(_marked_processes(backend.instance, job_id))


@pytest.mark.spark
@pytest.mark.timeout(600)  # the suite's longest test: about 200 s on a 2-CPU machine (the default is 300 s)
async def test_automated_jobs_on_real_clusters(tmp_path: Path) -> None:
    """Every automated outcome the issue lists, on one interactive and one ephemeral real cluster.

    Its own clusters: the interactive one is terminated under a running driver (27), and the ephemeral one,
    started and stopped for its job, is itself under test."""
    t0 = time.monotonic()
    store = JobStore(tmp_path / "jobs.db")
    backend = LocalBackend(tmp_path / "data", testrun.instance("auto"), sql_auth="none",
                           spark_conf=TEST_SPARK_CONF)
    m = JobManager(store, backend, config=ManagerConfig(max_running_clusters=2, watchdog_interval=0.5,
                                                        limits=Limits(root_dir=tmp_path)))
    await m.ensure_started()
    problems: list[str] = []

    def expect(job_id: str, state: str, code: int | None, *message_parts: str) -> Job:
        job = m.store.get(job_id)
        label = f"{job.name} ({job_id})"
        if job.state != State(state) or job.exit_code != code:
            said = [e["description"] or e["state"] for e in m.store.history(job_id)]
            problems.append(f"{label}: {job.state} {job.exit_code} ({job.phase}: {job.exit_message}), "
                            f"wanted {state} {code}; history: {said}")
            return job
        for part in message_parts:
            if part not in (job.exit_message or ""):
                problems.append(f"{label}: exit_message {job.exit_message!r} lacks {part!r}")
        seen = states_of(m, job_id)
        path = ["QUEUED", "INITIALIZING"] + ([] if code in (11, 12) else ["RUNNING"])
        path += ["CANCELING", state] if state == "CANCELED" else [state]
        if seen != path:
            problems.append(f"{label}: history states {seen}, wanted {path}")
        if events(m, job_id)[0]["event"] != "CREATED":
            problems.append(f"{label}: history does not start with CREATED")
        return job

    try:
        shared = await m.submit({"kind": "interactive", "name": "shared", "cluster": {"workers": 1, "worker_cores": 2}})
        eph = await m.submit(automated("parquet-ephemeral", PARQUET, args=[str(tmp_path / "eph.parquet")],
                                 where={"cluster": {"workers": 1, "worker_cores": 1}}))
        await wait_for(m, shared.id, "RUNNING", 240)
        on = {"cluster_job": shared.id}
        missing = tmp_path / "no-such-table.parquet"
        jobs = {
            "parquet": await m.submit(automated("parquet", PARQUET, args=[str(tmp_path / "t.parquet")], where=on)),
            "sql": await m.submit(automated("sql", SQL_SCRIPT, app_type="sql", where=on)),
            "k1": await m.submit(automated("k1-assert", SESSION + "assert spark.range(3).count() == 4, 'wrong count'\n",
                                     where=on)),
            "k2": await m.submit(automated("k2-exit", "import sys\nprint('leaving with 3')\nsys.exit(3)\n", where=on)),
            "k3": await m.submit(automated("k3-missing", SESSION + f"spark.read.parquet({str(missing)!r}).count()\n",
                                     where=on)),
            "k4": await m.submit(automated("k4-integrity", (
                "from sparkdock.spark.errors import IntegrityError\n"
                "n = len(list(range(100)))  # rows a real job would have counted\n"
                "if n != 101:\n"
                "    raise IntegrityError(f'integrity check failed: expected 101 rows, found {n}')\n"), where=on)),
            "k5": await m.submit(automated("k5-output", (
                "from sparkdock.spark.errors import require_outputs\n"
                f"require_outputs({str(tmp_path / 'never-written.parquet')!r})\n"), where=on)),
            "k6": await m.submit(automated("k6-module", "import sparkdock_no_such_module\n", where=on)),
            "c17": await m.submit(automated("refused", "print('never runs')\n", where=on,
                                      conf={"spark.driver.cores": "-1"})),
            "c16": await m.submit(automated("out-of-memory", "x = bytearray(1 << 44)  # 16 TiB\n", where=on)),
            "c29": await m.submit(automated("abort", "import os, signal\nos.kill(os.getpid(), signal.SIGABRT)\n",
                                      where=on)),
            "k7": await m.submit(automated("k7-runtime", "raise RuntimeError('boom from the job')\n", where=on)),
            "r15": await m.submit(automated("no-executor", SESSION + "spark.range(10).count()\n", where=on,
                                      conf={"spark.executor.memory": "64g"})),
            "overrun": await m.submit(automated("overrun", SLEEPER, where=on,
                                          policy={"max_runtime": 8, "overrun_action": "cancel"})),
            "cancel": await m.submit(automated("cancel", SLEEPER, where=on)),
            "c11": await m.submit(automated("missing-path", path=str(tmp_path / "nope.py"), where=on)),
            "c12": await m.submit(automated("syntax", "def broken(:\n    pass\n", where=on)),
        }
        lost = await m.submit(automated("cluster-lost", SLEEPER, where=on))
        ids = {k: j.id for k, j in jobs.items()}
        terminal = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}

        # cancel a sleeping job once its driver runs
        await wait_for(m, ids["cancel"], "RUNNING", 120)
        deadline = time.monotonic() + 120
        while "SLEEPING" not in await m.logs(ids["cancel"], "driver"):
            assert time.monotonic() < deadline, await describe(m, ids["cancel"])
            await asyncio.sleep(0.5)
        pids = _driver_pids(backend, ids["cancel"])
        assert pids, "the driver of the job to cancel has no process"
        await m.cancel(ids["cancel"])

        # one deadline for all: they run at the same time
        deadline = time.monotonic() + 300
        for jid in [*ids.values(), eph.id]:
            await wait_for(m, jid, terminal, max(1.0, deadline - time.monotonic()))
        print(f"[automated-real] all jobs ended after {time.monotonic() - t0:.0f} s")
        for job in [m.store.get(i) for i in (shared.id, eph.id, *ids.values())]:
            print(f"  {job.name:18} {job.state:15} created {job.created_at[11:19]} "
                  f"started {(job.started_at or '')[11:19]} ended {(job.ended_at or '')[11:19]}")

        expect(ids["parquet"], "COMPLETE", None)
        assert (tmp_path / "t.parquet").is_dir()
        expect(ids["sql"], "COMPLETE", None)
        assert m.store.get(shared.id).state == State.RUNNING  # a cluster_job leaves its cluster running
        for key, kernel in (("k1", 1), ("k2", 2), ("k3", 3), ("k4", 4), ("k5", 5), ("k6", 6), ("k7", 7)):
            expect(ids[key], "EXECUTOR_ERROR", 18, f"Task fails with kernel exit code: {kernel}")
            if not events(m, ids[key], "DRIVER"):
                problems.append(f"{key}: no DRIVER event in history")
        for key, needle in (("k3", "PATH_NOT_FOUND"), ("k6", "sparkdock_no_such_module"), ("k7", "boom")):
            if needle not in " ".join(e["description"] or "" for e in m.store.history(ids[key])):
                problems.append(f"{key}: history does not quote {needle!r}")
        expect(ids["c17"], "SYSTEM_ERROR", 17, "Spark refused the submission", "Driver cores must be a positive")
        expect(ids["c16"], "SYSTEM_ERROR", 16, "Cluster became unusable", "MemoryError")
        expect(ids["c29"], "SYSTEM_ERROR", 29, "The driver terminated abnormally", "134")
        expect(ids["r15"], "CANCELED", 15, "To avoid unexpected consumption", "spark.executor.memory=64g",
               "enlarge the cluster")
        expect(ids["overrun"], "CANCELED", 15, "max_runtime")
        for key, phase in (("r15", "InsufficientResources"), ("overrun", "Overrun")):
            if phase not in [e["phase"] for e in events(m, ids[key], "STATE")]:
                problems.append(f"{key}: no CANCELING event with phase {phase}")
        if not events(m, ids["overrun"], "OVERRUN"):
            problems.append("overrun: no OVERRUN event")
        expect(ids["cancel"], "CANCELED", 14, "Job has been aborted by user.")
        if any(pid_alive(p) for p in pids):
            problems.append(f"cancel: driver processes {pids} still alive")
        expect(ids["c11"], "SYSTEM_ERROR", 11, "Invalid inputs for the application", "nope.py")
        expect(ids["c12"], "SYSTEM_ERROR", 12, "Failed to stage the application", "syntax error at line 1")

        # driver logs outlive the driver
        if "PARQUET-OK" not in await m.logs(ids["parquet"], "driver"):
            problems.append("parquet: driver log lacks PARQUET-OK")
        if "boom from the job" not in await m.logs(ids["k7"], "driver"):
            problems.append("k7: driver log lacks the exception")
        if "total" not in await m.logs(ids["sql"], "driver"):
            problems.append("sql: driver log lacks the result")

        # the ephemeral cluster: complete, and all of its processes gone
        expect(eph.id, "COMPLETE", None)
        assert (tmp_path / "eph.parquet").is_dir()
        eph_pids = [rec["pid"] for rec in (m.store.get(eph.id).backend_state or {}).get("processes", {}).values()]
        if eph.id in await backend.list_job_ids() or any(pid_alive(p) for p in eph_pids):
            problems.append(f"ephemeral cluster {eph.id} left processes or its work folder")

        # 27: terminate the interactive cluster under a running driver
        deadline = time.monotonic() + 60
        while "SLEEPING" not in await m.logs(lost.id, "driver"):
            assert time.monotonic() < deadline, await describe(m, lost.id)
            await asyncio.sleep(0.5)
        await m.cancel(shared.id)
        await wait_for(m, lost.id, terminal, 90)
        expect(lost.id, "SYSTEM_ERROR", 27, "Cluster disappeared unexpectedly", shared.id)
        if m.store.get(lost.id).phase != "ClusterLost" or _driver_pids(backend, lost.id):
            problems.append(f"cluster-lost: phase {m.store.get(lost.id).phase}, "
                            f"driver pids {_driver_pids(backend, lost.id)}")
        await wait_for(m, shared.id, "COMPLETE", 90)
        assert not problems, "\n".join(problems)
    finally:
        for job in store.non_terminal():
            await m.cancel(job.id, wait=True)
        await m.stop()
        leftovers = await backend.list_job_ids()
        store.close()
        print(f"[automated-real] total {time.monotonic() - t0:.0f} s")
    assert leftovers == set()


@pytest.mark.docker
async def test_provisioning_failures_on_docker_are_20_21_24(
    tmp_path: Path, docker_image: str  # noqa: F811
) -> None:
    """An ephemeral cluster whose image cannot be had: 20 without retries; with retries, every attempt is in
    the history ("Start Failed", runtime status cleared on requeue) and the job ends 24. An image whose master
    exits at once: 21, with the master's last log lines in the history. Its own clusters: each fails to
    start, which is what is tested."""
    import docker

    from sparkdock.backends.docker import DockerBackend

    broken = testrun.image_tag("broken-master")
    dclient = docker.from_env()
    build_broken_image(dclient, docker_image, "master", broken, exit_code=4)

    store = JobStore(tmp_path / "jobs.db")
    backend = DockerBackend(tmp_path / "data", testrun.instance("autod"), image=docker_image)
    m = JobManager(store, backend, config=ManagerConfig(retry_backoff=0.2))
    await m.ensure_started()
    try:
        bad = {"workers": 1, "image": "sparkdock/no-such-image:0"}
        app = {"type": "pyspark", "code": "print(1)\n"}
        j20 = await m.submit({"kind": "automated", "application": app, "cluster": bad})
        j24 = await m.submit({"kind": "automated", "application": app, "cluster": bad, "policy": {"retries": 2}})
        j21 = await m.submit({"kind": "automated", "application": app, "cluster": {"workers": 1, "image": broken,
                                                                            "worker_memory": "512m"}})
        done20 = await wait_for(m, j20.id, {"SYSTEM_ERROR"}, 120)
        assert done20.exit_code == 20 and "could not be provisioned" in done20.exit_message
        assert "no-such-image" in done20.exit_message
        done24 = await wait_for(m, j24.id, {"SYSTEM_ERROR"}, 120)
        assert done24.exit_code == 24 and done24.attempt == 3 and "3 attempts" in done24.exit_message
        starts = [e for e in events(m, j24.id, "STATE") if e["phase"] == "StartFailed"]
        assert [e["attempt"] for e in starts] == [2, 3] and all(e["state"] == "QUEUED" for e in starts)
        assert [e["state"] for e in events(m, j24.id, "STATE")].count("INITIALIZING") == 3
        done21 = await wait_for(m, j21.id, {"SYSTEM_ERROR"}, 180)
        assert done21.exit_code == 21 and "master" in done21.exit_message
        assert any("broken on purpose" in (e["description"] or "") for e in events(m, j21.id, "LOGS"))
        assert await backend.list_job_ids() == set()  # nothing left by any attempt
    finally:
        await m.stop()
        store.close()
        dclient.images.remove(broken, force=True)
        dclient.close()

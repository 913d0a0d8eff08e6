"""Benchmark: wall time of a trivial PySpark job through sparkdock vs a bare ``spark-submit``.

* **sparkdock**: ``JobManager.submit`` of an automated job (``cluster_job`` on a RUNNING interactive cluster
  of the :class:`~sparkdock.backends.local.LocalBackend`) until the job is ``COMPLETE``: staging, the
  driver's ``spark-submit``, progress polling, classification and every state change in SQLite.
* **bare**: ``spark-submit`` of the same file to the same master with the same command line
  (:func:`sparkdock.cluster.roles.driver_command`), from start to exit.

The application is ``spark.range(1000).count()``. Both run in one process against the same cluster,
alternating, ``--rounds`` times each; medians are compared. Results go to
``bench/results/job_overhead.json``; a markdown row for the README is printed.

Usage: ``.venv/bin/python bench/job_overhead.py [--rounds 3]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from sparkdock.backends.local import LocalBackend, _base_env  # noqa: E402
from sparkdock.cluster import roles  # noqa: E402
from sparkdock.model.lifecycle import State  # noqa: E402
from sparkdock.server.manager import JobManager, ManagerConfig  # noqa: E402
from sparkdock.server.store import JobStore  # noqa: E402

APP = """\
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
assert spark.range(1000).count() == 1000
spark.stop()
"""
RESULTS = REPO / "bench" / "results" / "job_overhead.json"
TERMINAL = {State.COMPLETE, State.EXECUTOR_ERROR, State.SYSTEM_ERROR, State.CANCELED}


async def wait_state(m: JobManager, job_id: str, wanted: set[State], timeout: float, poll: float = 0.05) -> State:
    """Poll the job until its state is in ``wanted``; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = m.store.get(job_id).state
        if state in wanted:
            return state
        await asyncio.sleep(poll)
    raise TimeoutError(f"{job_id} is still {m.store.get(job_id).state}")


async def time_sparkdock(m: JobManager, cluster_job: str) -> float:
    """Submit the app on the interactive cluster; seconds from submit to COMPLETE."""
    t0 = time.monotonic()
    job = await m.submit({"kind": "automated", "name": "bench", "cluster_job": cluster_job,
                    "application": {"type": "pyspark", "code": APP}})
    state = await wait_state(m, job.id, TERMINAL, 300)
    elapsed = time.monotonic() - t0
    if state != State.COMPLETE:
        raise RuntimeError(f"the sparkdock job ended {state}: {m.store.get(job.id).exit_message}")
    return elapsed


def time_bare(backend: LocalBackend, state: dict, app_file: Path, workdir: Path) -> float:
    """``spark-submit`` of the same app to the same master with the same command line; seconds to exit."""
    cmd = roles.driver_command(
        spark_home=str(state["spark_home"]), python=backend.python, master_url=str(state["master_url"]),
        host="127.0.0.1", app_file=str(app_file), worker_memory=state.get("worker_memory", "1g"),
        worker_cores=int(state.get("worker_cores", 1)), name="bench-bare", bind_host="127.0.0.1", ui_port=0,
    )
    env = {**_base_env(backend.python, backend.spark_home), **cmd.env, "SPARK_LOCAL_DIRS": str(workdir)}
    t0 = time.monotonic()
    out = subprocess.run(cmd.argv, env=env, cwd=workdir, capture_output=True, text=True, timeout=300,
                         stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - t0
    if out.returncode != 0:
        raise RuntimeError(f"bare spark-submit failed ({out.returncode}): {out.stderr[-2000:]}")
    return elapsed


async def main(rounds: int) -> dict:
    """Start one interactive cluster, time both ways ``rounds`` times (alternating), tear down."""
    with tempfile.TemporaryDirectory(prefix="sparkdock-bench-") as tmp:
        root = Path(tmp)
        store = JobStore(root / "jobs.db")
        backend = LocalBackend(root / "data", "benchjob", sql_auth="none")
        m = JobManager(store, backend, config=ManagerConfig(watchdog_interval=0.5))
        await m.ensure_started()
        app_file = root / "app.py"
        app_file.write_text(APP)
        workdir = root / "bare"
        workdir.mkdir()
        try:
            cluster = await m.submit({"kind": "interactive", "name": "bench",
                                      "cluster": {"workers": 1, "worker_cores": 2}})
            if await wait_state(m, cluster.id, {State.RUNNING, *TERMINAL}, 300) != State.RUNNING:
                raise RuntimeError(f"the cluster did not start: {m.store.get(cluster.id).exit_message}")
            state = m.store.get(cluster.id).backend_state
            # one untimed warm-up of each (JVM class data, Python bytecode, page cache)
            await time_sparkdock(m, cluster.id)
            await asyncio.to_thread(time_bare, backend, state, app_file, workdir)
            sd: list[float] = []
            bare: list[float] = []
            for _ in range(rounds):
                sd.append(await time_sparkdock(m, cluster.id))
                bare.append(await asyncio.to_thread(time_bare, backend, state, app_file, workdir))
                print(f"sparkdock {sd[-1]:.2f} s, bare {bare[-1]:.2f} s", flush=True)
        finally:
            for job in store.non_terminal():
                await m.cancel(job.id, wait=True)
            await m.stop()
            store.close()
    sd_med, bare_med = statistics.median(sd), statistics.median(bare)
    return {
        "benchmark": "wall time of spark.range(1000).count() as a job: sparkdock cluster_job (submit to "
                     "COMPLETE) vs bare spark-submit of the same file to the same master",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_avg_1m_at_end": round(os.getloadavg()[0], 2)},
        "backend": "local",
        "cluster": {"workers": 1, "worker_cores": 2},
        "rounds": rounds,
        "sparkdock_seconds": [round(x, 2) for x in sd],
        "bare_spark_submit_seconds": [round(x, 2) for x in bare],
        "sparkdock_median_s": round(sd_med, 2),
        "bare_median_s": round(bare_med, 2),
        "overhead_median_s": round(sd_med - bare_med, 2),
        "ratio_sparkdock_over_bare": round(sd_med / bare_med, 2),
        "notes": "Both drivers use the same spark-submit command line (sparkdock.cluster.roles.driver_command) "
                 "against the same running interactive cluster (local backend, whose SQL endpoint and lab "
                 "also run on this 2-CPU machine). One untimed warm-up of each precedes the timed rounds.",
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()
    result = asyncio.run(main(opts.rounds))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(
        f"| Wall time of a trivial PySpark job on a running cluster (`bench/job_overhead.py`) | "
        f"{result['sparkdock_median_s']:.1f} s | bare `spark-submit` to the same master: "
        f"{result['bare_median_s']:.1f} s | {result['ratio_sparkdock_over_bare']:.2f} |"
    )

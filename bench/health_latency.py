"""Benchmark: from a kill to the flag, on both backends, with the default ``health_interval``.

For each backend (``docker`` when the engine answers, ``local``), a real :class:`JobManager` with the default
health settings launches a cluster of two workers. Then, twice:

* a worker is killed (``docker kill``, or ``SIGKILL`` to its process group);
* **sparkdock**: the time until the job's ``runtime_status`` shows it (a warning for the first worker, an error
  for the second), read from the store as the API serves it;
* **baseline**: the time until the death is visible at all to a bare poller of the engine or of ``/proc``
  (``docker inspect`` says not running, or the pid is gone), polled every 10 ms in the same run.

The goal is a flag under 5 s. Results go to ``bench/results/health_latency.json``; markdown rows for the README
are printed.

Usage: ``.venv/bin/python bench/health_latency.py [--backend docker|local|both]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from sparkdock.backends.base import Backend  # noqa: E402
from sparkdock.server.limits import Limits  # noqa: E402
from sparkdock.server.manager import JobManager, ManagerConfig  # noqa: E402
from sparkdock.server.store import JobStore  # noqa: E402

RESULTS = REPO / "bench" / "results" / "health_latency.json"


def _watch_raw(dead: Callable[[], bool], out: dict[str, float]) -> threading.Thread:
    """The baseline: a thread that notes when ``dead()`` first holds (polled every 10 ms)."""

    def run() -> None:
        while not dead():
            time.sleep(0.01)
        out["raw"] = time.monotonic()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


async def _measure(m: JobManager, job_id: str, key: str, kill: Callable[[], None],
                   dead: Callable[[], bool]) -> dict[str, float]:
    seen: dict[str, float] = {}
    t0 = time.monotonic()
    kill()
    raw = _watch_raw(dead, seen)
    while not m.store.get(job_id).runtime_status.get(key):
        await asyncio.sleep(0.01)
        if time.monotonic() - t0 > 120:
            raise RuntimeError(f"no {key} 120 s after the kill: {m.store.get(job_id).runtime_status}")
    flagged = time.monotonic()
    raw.join(60)
    return {"flag_s": flagged - t0, "raw_s": seen.get("raw", flagged) - t0}


async def _run(backend_name: str, work: Path) -> list[dict[str, float]]:
    backend: Backend
    if backend_name == "docker":
        import docker

        from sparkdock.backends.docker import DockerBackend

        backend = DockerBackend(work / "data", f"bench-health-{os.getpid()}")
        client = docker.from_env()
    else:
        from sparkdock.backends.local import LocalBackend, pid_alive

        backend = LocalBackend(work / "data", f"bench-health-{os.getpid()}", sql_auth="none")
    m = JobManager(JobStore(work / "jobs.db"), backend, config=ManagerConfig(limits=Limits(root_dir=work)))
    await m.ensure_started()
    samples = []
    try:
        job = await m.submit({"kind": "interactive", "cluster": {"workers": 2, "worker_memory": "512m"}})
        while m.store.get(job.id).state.value not in ("RUNNING", "SYSTEM_ERROR"):
            await asyncio.sleep(0.2)
        job = m.store.get(job.id)
        assert job.state.value == "RUNNING", job.exit_message
        for component, key in (("worker-1", "warning"), ("worker-2", "error")):
            if backend_name == "docker":
                cid = job.backend_state["containers"][component]["id"]

                def kill(cid: str = cid) -> None:
                    client.containers.get(cid).kill()

                def dead(cid: str = cid) -> bool:
                    return not client.api.inspect_container(cid)["State"]["Running"]
            else:
                rec = job.backend_state["processes"][component]

                def kill(rec: dict = rec) -> None:
                    os.killpg(rec["pid"], signal.SIGKILL)

                def dead(rec: dict = rec) -> bool:
                    return not pid_alive(rec["pid"], rec["start_time"])

            sample = await _measure(m, job.id, key, kill, dead)
            sample.update(backend=backend_name, component=component, flag=key)
            print(f"{backend_name}: {component} killed → {key} in {sample['flag_s']:.2f} s "
                  f"(visible to a bare poller in {sample['raw_s']:.2f} s)", flush=True)
            samples.append(sample)
        await m.cancel(job.id, wait=True)
    finally:
        await m.stop()
    return samples


def _docker_up() -> bool:
    try:
        import docker

        docker.from_env(timeout=5).ping()
        return True
    except Exception:
        return False


def main() -> None:
    """Run the benchmark and record it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["docker", "local", "both"], default="both")
    args = parser.parse_args()
    names = ["docker", "local"] if args.backend == "both" else [args.backend]
    if "docker" in names and not _docker_up():
        print("docker: the engine does not answer (run scripts/setup-docker.sh); skipped")
        names.remove("docker")
    samples: list[dict] = []
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"sparkdock-bench-health-{name}-") as tmp:
            samples += asyncio.run(_run(name, Path(tmp)))
    interval = ManagerConfig().health_interval
    result = {
        "benchmark": "health_latency",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "health_interval_s": interval,
        "samples": samples,
        "by_backend": {},
    }
    for name in names:
        mine = [s for s in samples if s["backend"] == name]
        flag, raw = statistics.median(s["flag_s"] for s in mine), statistics.median(s["raw_s"] for s in mine)
        worst = max(s["flag_s"] for s in mine)
        result["by_backend"][name] = {"flag_median_s": flag, "flag_worst_s": worst, "raw_median_s": raw}
        print(f"| Kill of a worker → warning/error flag, {name} backend, default interval {interval:g} s "
              f"(`bench/health_latency.py`) | {flag:.2f} s (worst {worst:.2f} s) | death visible to a bare "
              f"poller: {raw:.2f} s | {flag / raw if raw > 0 else float('inf'):.1f} |")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"recorded in {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()

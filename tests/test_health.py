"""Health, part 1, on a real Docker cluster: a real :class:`JobManager`'s health loop sees every death.

One RUNNING cluster of two workers, with ``health_interval=1`` and ``health_grace=2`` (the local backend goes
through the same sequence in ``test_rest_real.py``, through the REST API of a real server):

* a healthy cluster is checked round after round and nothing is flagged (the probes of its master, SQL endpoint
  and lab answer);
* one worker is killed: a warning; the other one: an error (the job is flagged). That second worker is killed
  for memory: its container is given a limit just above what it uses and made to allocate, and the
  message says "out of memory";
* the SQL endpoint is killed: after the grace period the job ends in SYSTEM_ERROR with 50, the SQL log's last
  lines are in the history, the cluster is removed and its capacity slot is free.

The cluster is the test's own: the test kills its parts one by one and that ends it. Every wait has a deadline and
polls a condition (no sleep); the time from each kill to its flag is printed, and measured by
``bench/health_latency.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

import testrun
from docker_fixtures import docker_image  # noqa: F401
from job_helpers import describe, events, until, wait_for
from sparkdock.backends.base import Backend
from sparkdock.model.lifecycle import State
from sparkdock.server.limits import Limits
from sparkdock.server.manager import JobManager, ManagerConfig
from sparkdock.server.store import JobStore

pytestmark = pytest.mark.timeout(400)


async def _manager(tmp_path: Path, backend: Backend) -> JobManager:
    m = JobManager(JobStore(tmp_path / "jobs.db"), backend,
                   config=ManagerConfig(health_interval=1.0, health_grace=2.0, limits=Limits(root_dir=tmp_path)))
    await m.ensure_started()
    return m


async def _flag(m: JobManager, job_id: str, key: str, needle: str, kill: Callable[[], None]) -> str:
    """Kill something, then wait until ``runtime_status[key]`` mentions ``needle``; the flag's text."""
    t0 = time.monotonic()
    kill()
    try:
        await until(lambda: needle in (m.get(job_id).runtime_status.get(key) or ""), f"{key} with {needle!r}", 60)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{await describe(m, job_id)}") from None
    print(f"health: {key} {needle!r} {time.monotonic() - t0:.2f} s after the kill")
    return str(m.get(job_id).runtime_status[key])


async def _deaths(m: JobManager, job_id: str, kill: Callable[[str], None], second_worker: Callable[[], None],
                  second_needle: str) -> None:
    """The sequence of the module docstring."""
    rounds = m.health.rounds
    await until(lambda: m.health.rounds >= rounds + 3, "three health rounds", 60)
    job = m.get(job_id)
    assert job.state == State.RUNNING and job.runtime_status["warning"] is None and not job.flagged, job.runtime_status

    warning = await _flag(m, job_id, "warning", "1 of 2 workers stopped", lambda: kill("worker-1"))
    assert "worker-1" in warning and not m.get(job_id).flagged

    error = await _flag(m, job_id, "error", "all 2 worker(s) stopped", second_worker)
    assert second_needle in error, error
    assert m.get(job_id).flagged and m.get(job_id).state == State.RUNNING

    t0 = time.monotonic()
    kill("sql")
    done = await wait_for(m, job_id, "SYSTEM_ERROR", timeout=60)
    print(f"health: SYSTEM_ERROR 50 {time.monotonic() - t0:.2f} s after the SQL endpoint was killed")
    assert done.exit_code == 50 and done.phase == "EndpointLost", await describe(m, job_id)
    assert "stopped while running" in done.exit_message and "health_grace" in done.exit_message
    assert any(e["event"] == "LOGS" and e["description"].startswith("last log lines of sql")
               for e in events(m, job_id))
    assert m.info()["clusters_in_use"] == 0
    assert await m.backend.list_job_ids() == set()


@pytest.mark.docker
async def test_docker_cluster_deaths(tmp_path: Path, docker_image: str) -> None:  # noqa: F811
    import docker

    from sparkdock.backends.docker import DockerBackend

    backend = DockerBackend(tmp_path / "data", testrun.instance("health"), image=docker_image)
    m = await _manager(tmp_path, backend)
    client = docker.from_env()
    try:
        job = m.submit({"kind": "interactive", "name": "health",
                        "cluster": {"workers": 2, "worker_cores": 1, "worker_memory": "512m"}})
        job = await wait_for(m, job.id, "RUNNING", timeout=240)
        ids = {c: rec["id"] for c, rec in job.backend_state["containers"].items()}

        def kill(component: str) -> None:
            client.containers.get(ids[component]).kill()

        def starve_worker_2() -> None:
            """A limit just above what the worker uses, then an allocation in it: the kernel's OOM killer
            takes the worker's JVM (made its first choice), and the engine records State.OOMKilled."""
            worker = client.containers.get(ids["worker-2"])
            used = client.api.stats(worker.id, stream=False)["memory_stats"]["usage"]
            limit = used + 64 * 2**20
            worker.update(mem_limit=limit, memswap_limit=limit)
            hog = ("import glob\n"
                   "for p in glob.glob('/proc/[0-9]*'):\n"
                   "    try:\n"
                   "        if b'java' in open(p + '/cmdline', 'rb').read():\n"
                   "            open(p + '/oom_score_adj', 'w').write('1000')\n"
                   "    except OSError:\n"
                   "        pass\n"
                   "chunks = []\n"
                   "while True:\n"
                   "    chunks.append(bytearray(8 << 20))\n")
            worker.exec_run(["python3", "-c", hog], user="185:185")

        await _deaths(m, job.id, kill, starve_worker_2, "out of memory")
        assert client.containers.list(all=True, filters={"label": f"sparkdock.job={job.id}"}) == []
    finally:
        for jid in await backend.list_job_ids():
            await backend.stop_cluster(jid)
        await m.stop()
        client.close()

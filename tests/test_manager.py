"""Lifecycle logic of the JobManager, through the backend interface's test double (no Spark here).

Real clusters run through the same manager in test_rest_real.py, test_automated_real.py and the backend tests.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time

import pytest

from fake_backend import FakeBackend
from job_helpers import describe, events, until, wait_for
from sparkdock.backends.activity import LabActivity, SqlActivity
from sparkdock.model.lifecycle import State
from sparkdock.model.specs import ClusterSpec, SpecError
from sparkdock.server.automated import RunHost
from sparkdock.server.limits import Limits
from sparkdock.server.manager import JobConflict, JobManager, ManagerConfig, QuotaExceeded
from sparkdock.server.store import JobStore, parse_time


@pytest.fixture
def store(tmp_path):
    s = JobStore(tmp_path / "jobs.db")
    yield s
    s.close()


@pytest.fixture
def make_manager(tmp_path, store, jp_asyncio_loop):
    """Makes started managers on a FakeBackend; each is stopped at the end, also when the test failed (a
    manager left running would act on the next test's jobs)."""
    managers: list[JobManager] = []
    FakeBackend.reset()
    root = tmp_path / "root"  # the server's root_dir: where application paths must lie
    root.mkdir()

    async def make(**cfg) -> JobManager:
        cfg.setdefault("retry_backoff", 0.05)
        cfg.setdefault("watchdog_interval", 0.1)
        cfg.setdefault("limits", Limits(root_dir=root))
        m = JobManager(store, FakeBackend(tmp_path / "data", "test"), config=ManagerConfig(**cfg))
        await m.ensure_started()
        managers.append(m)
        return m

    yield make
    for m in managers:
        jp_asyncio_loop.run_until_complete(m.stop())  # stop() is idempotent
        m.db.close()




def interactive(image="fake/ok", **cluster):
    return {"kind": "interactive", "cluster": {"image": image, **cluster}}


def automated(fake: dict | None = None, code: str = "print(1)", policy=None, image="fake/ok", **kw):
    if fake is not None:
        code = f"# fake: {json.dumps(fake)}\n{code}"
    body = {"kind": "automated", "application": {"type": "pyspark", "code": code},
            "policy": policy or {}, **kw}
    if "cluster_job" not in kw:
        body["cluster"] = {"image": image}
    return body




def test_the_manager_is_what_an_automated_run_needs() -> None:
    """The manager drives automated runs through :class:`RunHost` (automated.py does not import the manager):
    it has every member of that interface, with the same parameters."""
    members = [n for n in vars(RunHost) if not n.startswith("_")] + list(RunHost.__annotations__)
    assert {"db", "backend", "stopping", "cancel", "safe_stop"} <= set(members)
    for name in members:
        want = getattr(RunHost, name, None)
        if callable(want):
            got = getattr(JobManager, name)
            assert list(inspect.signature(got).parameters) == list(inspect.signature(want).parameters), name
            assert inspect.iscoroutinefunction(got) == inspect.iscoroutinefunction(want), name
        elif isinstance(want, property):
            assert isinstance(getattr(JobManager, name), property), name
        else:  # data members: set on each manager
            assert name in JobManager.__init__.__code__.co_names, name


async def test_capacity_queues_in_order(make_manager):
    m = await make_manager(max_running_clusters=1)
    a = await m.submit(interactive())
    await wait_for(m, a.id, "RUNNING")
    b = await m.submit(interactive())
    c = await m.submit(interactive())
    await wait_for(m, b.id, "QUEUED", phase="WaitingForCapacity 1/1")
    assert m.store.get(c.id).state == State.QUEUED
    await m.cancel(a.id)
    await wait_for(m, b.id, "RUNNING")
    assert m.store.get(c.id).state == State.QUEUED  # in order: b first, c still waits
    await m.cancel(b.id)
    await wait_for(m, c.id, "RUNNING")
    await m.cancel(c.id, wait=True)
    assert not FakeBackend.live
    await m.stop()


async def test_automated_on_a_cluster_job_needs_no_capacity(make_manager):
    m = await make_manager(max_running_clusters=1)
    cl = await m.submit(interactive())
    await wait_for(m, cl.id, "RUNNING")
    job = await m.submit(automated({"exit_status": 0}, cluster_job=cl.id))
    await wait_for(m, job.id, "COMPLETE")
    assert m.store.get(cl.id).state == State.RUNNING  # the interactive cluster is left running
    assert job.id not in FakeBackend.started
    await m.cancel(cl.id, wait=True)
    await m.stop()


@pytest.mark.parametrize("where", ["QUEUED", "INITIALIZING", "RUNNING"])
async def test_cancel_interactive_in_every_state(make_manager, where):
    m = await make_manager(max_running_clusters=1)
    blocker = await m.submit(interactive()) if where == "QUEUED" else None
    if blocker:
        await wait_for(m, blocker.id, "RUNNING")
    job = await m.submit(interactive("fake/slow" if where == "INITIALIZING" else "fake/ok"))
    await wait_for(m, job.id, where)
    await m.cancel(job.id)
    again = await m.cancel(job.id)  # repeating it is harmless
    assert again.state in (State.CANCELING, State.COMPLETE)
    done = await wait_for(m, job.id, "COMPLETE")
    assert done.exit_code is None
    assert job.id not in FakeBackend.live
    states = [e["state"] for e in events(m, job.id, "STATE")]
    assert states[-2:] == ["CANCELING", "COMPLETE"]
    if blocker:
        await m.cancel(blocker.id, wait=True)
    await m.stop()


@pytest.mark.parametrize("where", ["QUEUED", "INITIALIZING", "RUNNING"])
async def test_cancel_automated_in_every_state_is_14(make_manager, where):
    m = await make_manager(max_running_clusters=1)
    blocker = await m.submit(interactive()) if where == "QUEUED" else None
    if blocker:
        await wait_for(m, blocker.id, "RUNNING")
    job = await m.submit(automated({"run_delay": 30}, image="fake/slow" if where == "INITIALIZING" else "fake/ok"))
    await wait_for(m, job.id, where)
    await m.cancel(job.id)
    done = await wait_for(m, job.id, "CANCELED")
    assert done.exit_code == 14 and done.exit_message == "Job has been aborted by user."
    assert job.id not in FakeBackend.live
    if blocker:
        await m.cancel(blocker.id, wait=True)
    await m.stop()


async def test_interactive_failures_carry_codes_and_clean_up(make_manager):
    m = await make_manager()
    j51 = await m.submit(interactive("fake/fail51"))
    j50 = await m.submit(interactive("fake/fail50"))
    for jid, code in ((j51.id, 51), (j50.id, 50)):
        job = await wait_for(m, jid, "SYSTEM_ERROR")
        assert job.exit_code == code and job.id not in FakeBackend.live
        assert any("fake log line 2" in (e["description"] or "") for e in events(m, jid, "LOGS"))
    assert "sql" in m.store.get(j50.id).exit_message
    FakeBackend.engine_down = True
    j52 = await m.submit(interactive())
    job = await wait_for(m, j52.id, "SYSTEM_ERROR")
    assert job.exit_code == 52 and "fake engine" in job.exit_message
    await m.stop()


async def test_start_retries_then_success_and_history_attempts(make_manager):
    m = await make_manager()
    job = await m.submit(automated({"exit_status": 0}, image="fake/flaky", policy={"retries": 2}))
    done = await wait_for(m, job.id, "COMPLETE")
    assert done.attempt == 2
    starts = [e for e in events(m, job.id, "STATE") if e["phase"] == "StartFailed"]
    assert len(starts) == 1 and "attempt 1 of 3" in starts[0]["description"]
    assert starts[0]["state"] == "QUEUED"
    await m.stop()


async def test_retries_exhausted_is_24_and_no_retry_is_20_or_21(make_manager):
    m = await make_manager()
    j24 = await m.submit(automated(image="fake/fail51", policy={"retries": 2}))
    j20 = await m.submit(automated(image="fake/fail50"))
    j21 = await m.submit(automated(image="fake/failmaster"))
    job = await wait_for(m, j24.id, "SYSTEM_ERROR")
    assert job.exit_code == 24 and job.attempt == 3 and "3 attempts" in job.exit_message
    attempts = {e["attempt"] for e in events(m, j24.id)}
    assert attempts == {1, 2, 3}
    assert (await wait_for(m, j20.id, "SYSTEM_ERROR")).exit_code == 20
    assert (await wait_for(m, j21.id, "SYSTEM_ERROR")).exit_code == 21
    await m.stop()


@pytest.mark.parametrize(
    ("fake", "state", "code", "kernel"),
    [
        ({"exit_status": 1, "output": "AssertionError: expected 3 rows"}, "EXECUTOR_ERROR", 18, 1),
        ({"exit_status": 3, "output": "nothing useful"}, "EXECUTOR_ERROR", 18, 2),
        ({"exit_status": 1, "output": "[PATH_NOT_FOUND] Path does not exist: file:/nope"}, "EXECUTOR_ERROR", 18, 3),
        ({"exit_status": 1, "output": "IntegrityError: integrity check failed"}, "EXECUTOR_ERROR", 18, 4),
        ({"exit_status": 1, "output": "sparkdock: declared output missing: /out"}, "EXECUTOR_ERROR", 18, 5),
        ({"exit_status": 1, "output": "java.lang.ClassNotFoundException: x.Y"}, "EXECUTOR_ERROR", 18, 6),
        ({"exit_status": 1, "output": "RuntimeError: boom"}, "EXECUTOR_ERROR", 18, 7),
        ({"exit_status": 1, "output": "java.lang.OutOfMemoryError: Java heap space"}, "SYSTEM_ERROR", 16, None),
        ({"exit_status": 134, "output": "# A fatal error has been detected by the JRE"}, "SYSTEM_ERROR", 29, None),
        ({"exit_status": 1, "output": "Error: Unrecognized option: --bogus"}, "SYSTEM_ERROR", 17, None),
        ({"exit_status": 1, "output": "WARN Initial job has not accepted any resources"}, "CANCELED", 15, None),
    ],
)
async def test_driver_outcomes_map_to_codes(make_manager, fake, state, code, kernel):
    m = await make_manager()
    job = await m.submit(automated(fake))
    done = await wait_for(m, job.id, state)
    assert done.exit_code == code
    if kernel:
        assert done.exit_message == f"Task fails with kernel exit code: {kernel}"
    if code == 15:
        assert "enlarge the cluster" in done.exit_message
    await m.stop()


async def test_staging_errors_are_11_and_12(make_manager):
    m = await make_manager()
    j11 = await m.submit({"kind": "automated", "application": {"type": "pyspark", "path": "no/such/file.py"},
                    "cluster": {"image": "fake/ok"}})
    j12 = await m.submit(automated(code="def broken(:\n"))
    j12b = await m.submit({"kind": "automated", "application": {"type": "sql", "code": "-- only a comment"}})
    assert (await wait_for(m, j11.id, "SYSTEM_ERROR")).exit_code == 11
    done = await wait_for(m, j12.id, "SYSTEM_ERROR")
    assert done.exit_code == 12 and "syntax error at line 1" in done.exit_message
    assert (await wait_for(m, j12b.id, "SYSTEM_ERROR")).exit_code == 12
    assert not FakeBackend.live  # nothing was provisioned for an application that cannot run
    await m.stop()


def _path_job(path: str) -> dict:
    return {"kind": "automated", "application": {"type": "pyspark", "path": path}, "cluster": {"image": "fake/ok"}}


async def test_application_paths_stay_under_the_root(make_manager, tmp_path):
    m = await make_manager(max_running_clusters=1)
    root = m.root_dir
    (root / "apps").mkdir()
    (root / "apps" / "ok.py").write_text("# fake: {}\nprint(1)\n")
    outside = tmp_path / "outside.py"
    outside.write_text("print('secret')\n")
    (root / "escape.py").symlink_to(outside)
    (root / "apps" / "up").symlink_to(tmp_path)
    refused = {"/etc/passwd": "under the server's root directory", "../x": "'..'", "apps/../apps/ok.py": "'..'",
               str(outside): "under the server's root directory", "escape.py": "under the server's root directory",
               "apps/up/outside.py": "under the server's root directory"}
    for path, why in refused.items():
        with pytest.raises(SpecError) as err:
            await m.submit(_path_job(path))
        assert err.value.status == 400 and err.value.fields == ["application.path"], path
        assert why in str(err.value), path
    # inside the root: relative or absolute; a file swapped for a symlink out of the root after submission is
    # refused when it is staged (11), and nothing outside is read
    ok = [await m.submit(_path_job("apps/ok.py")), await m.submit(_path_job(str(root / "apps" / "ok.py")))]
    for job in ok:
        await wait_for(m, job.id, "COMPLETE")
    swapped = root / "apps" / "swap.py"
    swapped.write_text("print(1)\n")
    hold = await m.submit(interactive())  # takes the only cluster slot: the job waits in QUEUED, not yet staged
    await wait_for(m, hold.id, "RUNNING")
    job = await m.submit(_path_job("apps/swap.py"))
    await wait_for(m, job.id, "QUEUED", phase="WaitingForCapacity 1/1")
    swapped.unlink()
    swapped.symlink_to(outside)
    await m.cancel(hold.id, wait=True)
    done = await wait_for(m, job.id, "SYSTEM_ERROR")
    assert done.exit_code == 11 and "root directory" in done.exit_message
    await m.stop()


async def test_sizes_and_images_over_the_limits_are_refused(make_manager):
    m = await make_manager(limits=Limits(allowed_images=frozenset({"fake/ok"}), max_workers=2, max_worker_cores=2,
                                         max_worker_memory="2g"))
    over = {"workers": (3, "max_workers"), "worker_cores": (3, "max_worker_cores"),
            "worker_memory": ("3g", "max_worker_memory"), "image": ("fake/slow", "allowed_images")}
    for field, (value, setting) in over.items():
        for body in (interactive(**{field: value}),
                     {"kind": "automated", "application": {"type": "sql", "code": "SELECT 1"},
                      "cluster": {"image": "fake/ok", field: value}}):
            with pytest.raises(SpecError) as err:
                await m.submit(body)
            assert err.value.status == 400 and err.value.fields == [f"cluster.{field}"], body
            assert setting in str(err.value)
    # an empty list allows no image to be named: only the server's own is used
    with pytest.raises(SpecError, match="allowed_images") as err:
        Limits(allowed_images=frozenset()).check_cluster(ClusterSpec(image="fake/ok"))
    assert err.value.fields == ["cluster.image"]
    Limits(allowed_images=frozenset()).check_cluster(ClusterSpec())
    at_limit = await m.submit(interactive(workers=2, worker_cores=2, worker_memory="2g"))
    assert (await wait_for(m, at_limit.id, "RUNNING")).spec["cluster"]["workers"] == 2
    await m.cancel(at_limit.id, wait=True)
    await m.stop()


async def test_drivers_per_cluster_wait_in_queued(make_manager):
    m = await make_manager(max_drivers_per_cluster=1)
    cl = await m.submit(interactive())
    await wait_for(m, cl.id, "RUNNING")
    first = await m.submit(automated({"gate": "first"}, cluster_job=cl.id))
    await wait_for(m, first.id, "RUNNING")
    second = await m.submit(automated({"exit_status": 0}, cluster_job=cl.id))
    await wait_for(m, second.id, "QUEUED", phase="WaitingForDriverSlot 1/1")
    assert any("max_drivers_per_cluster" in (e.get("description") or "") for e in m.store.history(second.id))
    other = await m.submit(interactive())  # another cluster's drivers are not counted against this one
    await wait_for(m, other.id, "RUNNING")
    third = await m.submit(automated({"exit_status": 0}, cluster_job=other.id))
    await wait_for(m, third.id, "COMPLETE")
    assert m.store.get(second.id).state == State.QUEUED
    FakeBackend.open_gate("first")
    await wait_for(m, first.id, "COMPLETE")
    assert (await wait_for(m, second.id, "COMPLETE")).attempt == 1
    for job in (cl, other):
        await m.cancel(job.id, wait=True)
    await m.stop()


async def test_rerun_on_listed_kernel_exit_code(make_manager):
    m = await make_manager()
    job = await m.submit(automated({"exit_status": 1, "output": "FileNotFoundException: /in"},
                             policy={"rerun_on_exit_codes": [3], "retries": 2}))
    done = await wait_for(m, job.id, "EXECUTOR_ERROR")
    assert done.attempt == 3 and done.exit_code == 18
    reruns = [e for e in events(m, job.id, "STATE") if e["phase"] == "Rerun"]
    assert [e["attempt"] for e in reruns] == [2, 3]
    other = await m.submit(automated({"exit_status": 1, "output": "RuntimeError: x"},
                                     policy={"rerun_on_exit_codes": [3]}))
    assert (await wait_for(m, other.id, "EXECUTOR_ERROR")).attempt == 1  # kernel code 7 is not listed
    await m.stop()


async def test_overrun_warn_cancel_and_underrun(make_manager):
    m = await make_manager()
    # the warned job runs until the test has seen its overrun: no race between its end and the watchdog
    warn = await m.submit(automated({"gate": "warned"}, policy={"max_runtime": 0.3}))
    cancel = await m.submit(automated({"run_delay": 30}, policy={"max_runtime": 0.3, "overrun_action": "cancel"}))
    under = await m.submit(automated({"run_delay": 0.05}, policy={"min_runtime": 60}))
    deadline = asyncio.get_running_loop().time() + 10
    while not events(m, warn.id, "OVERRUN"):
        assert asyncio.get_running_loop().time() < deadline, await describe(m, warn.id)
        await asyncio.sleep(0.02)
    assert m.store.get(warn.id).state == State.RUNNING  # warn: the job goes on
    FakeBackend.open_gate("warned")
    done = await wait_for(m, warn.id, "COMPLETE")
    assert "Overrun" in done.runtime_status["warning"]
    assert any(e["event"] == "OVERRUN" for e in events(m, warn.id))
    done = await wait_for(m, cancel.id, "CANCELED")
    assert done.exit_code == 15 and "max_runtime" in done.exit_message
    done = await wait_for(m, under.id, "COMPLETE")
    assert "Underrun" in done.runtime_status["warning"]
    await m.stop()


async def test_idle_timeout_and_max_lifetime_are_schedule_cancels(make_manager):
    m = await make_manager()
    idle = await m.submit(interactive(idle_timeout=0.5))
    life = await m.submit(interactive(max_lifetime=1.0))
    for jid, word in ((idle.id, "idle"), (life.id, "max_lifetime")):
        done = await wait_for(m, jid, "COMPLETE", timeout=15)
        canceling = next(e for e in events(m, jid, "STATE") if e["state"] == "CANCELING")
        assert canceling["phase"] == "TimedOut" and word in canceling["description"]
        assert done.exit_code is None
    # the card says why
    assert m.store.get(idle.id).phase == "IdleTimeout" and m.store.get(life.id).phase == "MaxLifetime"
    final = events(m, life.id, "STATE")[-1]["description"]
    assert final.startswith("ended: max_lifetime of 1 s reached (running since ") and "resources removed" in final
    final = events(m, idle.id, "STATE")[-1]["description"]
    assert final.startswith("ended: idle for ") and "no SQL session or statement, no busy lab kernel" in final
    await m.stop()


async def test_idle_counts_sql_sessions_statements_and_lab_kernels(make_manager):
    """The idle timer is due, but what the cluster says keeps it: an open session with a running statement, a
    statement that ended after the last recorded use, a busy lab kernel. When nothing is in use it is culled
    (the history says why); when its use cannot be read it is kept and read again later."""
    m = await make_manager()
    sql = await m.submit(interactive(idle_timeout=0.5))
    blind = await m.submit(interactive(idle_timeout=0.5))
    FakeBackend.sql_use[sql.id] = SqlActivity(sessions=1, running=1)
    FakeBackend.use_unreadable.add(blind.id)
    for job in (sql, blind):
        await wait_for(m, job.id, "RUNNING")

    async def kept_at_two_due_checks(job_id: str) -> None:  # each one moved its timer on: it runs on
        first = m.store.get(job_id).last_activity_at or ""
        await until(lambda: (m.store.get(job_id).last_activity_at or "") > first, "a first use")
        again = m.store.get(job_id).last_activity_at
        await until(lambda: m.store.get(job_id).last_activity_at > again, "a second use")
        assert m.store.get(job_id).state == State.RUNNING

    await kept_at_two_due_checks(sql.id)
    ended = time.time()  # the statement ended now: the timer counts from its end
    FakeBackend.sql_use[sql.id] = SqlActivity(sessions=0, running=0, last_statement_end=ended)
    done = await wait_for(m, sql.id, "COMPLETE", timeout=15)
    assert done.phase == "IdleTimeout" and parse_time(done.ended_at).timestamp() >= ended + 0.5
    FakeBackend.lab_use = LabActivity(busy_kernels=1, last_activity=None)
    lab = await m.submit(interactive(idle_timeout=0.5))
    await wait_for(m, lab.id, "RUNNING")
    await kept_at_two_due_checks(lab.id)
    FakeBackend.lab_use = LabActivity(busy_kernels=0, last_activity=ended - 3600)  # an idle kernel: no use
    done = await wait_for(m, lab.id, "COMPLETE", timeout=15)
    why = next(e for e in events(m, lab.id, "STATE") if e["state"] == "CANCELING")["description"]
    assert "idle for" in why and "(idle_timeout 0.5 s)" in why and "no busy lab kernel" in why
    assert m.store.get(blind.id).state == State.RUNNING  # never culled on a guess
    FakeBackend.use_unreadable.clear()
    await wait_for(m, blind.id, "COMPLETE", timeout=40)  # read again (after idle/2 s): nothing in use
    await m.stop()


async def test_idle_timeout_and_max_lifetime_hold_across_a_server_restart(make_manager, store):
    """The server restarts (a new manager on the same store, the clusters kept running): a cluster past its
    max_lifetime and one idle since before the restart are ended at once, from their stored times."""
    m = await make_manager()
    idle = await m.submit(interactive(idle_timeout=2.0))
    await wait_for(m, idle.id, "RUNNING")
    await m.touch(idle.id)  # used now: the restarted server counts from this stored time
    used = m.store.get(idle.id).last_activity_at
    life = await m.submit(interactive(max_lifetime=2.0))
    kept = await m.submit(interactive(idle_timeout=3600))
    for job in (life, kept):
        await wait_for(m, job.id, "RUNNING")
    await m.stop()
    past = max(parse_time(used).timestamp(), parse_time(m.store.get(life.id).started_at).timestamp()) + 2.0
    await until(lambda: time.time() > past, "2 s past the last use and the start")
    restarted = await make_manager()
    for job in (life, idle):  # ended by the start-up itself, not by a later watchdog pass
        assert restarted.store.get(job.id).state in (State.CANCELING, State.COMPLETE), restarted.store.get(job.id)
    assert (await wait_for(restarted, life.id, "COMPLETE")).phase == "MaxLifetime"
    assert (await wait_for(restarted, idle.id, "COMPLETE")).phase == "IdleTimeout"
    why = next(e for e in events(restarted, idle.id, "STATE") if e["state"] == "CANCELING")["description"]
    assert f"since {used}" in why
    assert restarted.store.get(kept.id).state == State.RUNNING
    await restarted.cancel(kept.id, wait=True)
    await restarted.stop()


async def test_health_errors_flag_the_job_and_block_reuse(make_manager):
    """Seed 001 through the health loop: one dead worker of two is a warning, the master an error (flagged, not
    reused); a master that comes back clears the error the loop wrote."""
    m = await make_manager(health_interval=0.05, health_grace=600)
    cl = await m.submit(interactive(workers=2))
    await wait_for(m, cl.id, "RUNNING")
    FakeBackend.kill(cl.id, "worker-1", "the worker-1 container exited with code 137")
    await until(lambda: m.store.get(cl.id).runtime_status["warning"], "a warning")
    job = m.store.get(cl.id)
    assert "1 of 2 workers" in job.runtime_status["warning"] and "137" in job.runtime_status["warning"]
    assert not job.flagged and job.runtime_status["error"] is None
    FakeBackend.kill(cl.id, "master", "the master container exited with code 1")
    await until(lambda: m.store.get(cl.id).flagged, "an error")
    job = m.store.get(cl.id)
    assert job.runtime_status["error"].startswith("master stopped: the master container exited with code 1")
    assert any(e["event"] == "HEALTH" for e in events(m, cl.id))
    with pytest.raises(JobConflict, match="not reused"):
        await m.submit(automated(cluster_job=cl.id))
    del FakeBackend.dead[cl.id]["master"]
    await until(lambda: not m.store.get(cl.id).flagged, "the error cleared")
    assert m.store.get(cl.id).state == State.RUNNING and m.store.get(cl.id).runtime_status["warning"]
    await m.cancel(cl.id, wait=True)
    await m.stop()


async def test_last_worker_is_an_error_and_a_lost_sql_endpoint_ends_in_50(make_manager):
    """Every worker dead is an error; an SQL endpoint down past health_grace ends the job in SYSTEM_ERROR 50,
    its cluster removed and its capacity slot free for the queued job."""
    m = await make_manager(health_interval=0.05, health_grace=0.3, max_running_clusters=1)
    cl = await m.submit(interactive(workers=2))
    await wait_for(m, cl.id, "RUNNING")
    waiting = await m.submit(interactive())
    for k in (1, 2):
        FakeBackend.kill(cl.id, f"worker-{k}", f"the worker-{k} process exited with status 1")
    await until(lambda: m.store.get(cl.id).flagged, "an error")
    assert "all 2 worker(s) stopped" in m.store.get(cl.id).runtime_status["error"]
    assert m.store.get(cl.id).state == State.RUNNING  # no executor can run, but the endpoints still answer
    FakeBackend.kill(cl.id, "sql", "the sql container exited with code 137")
    done = await wait_for(m, cl.id, "SYSTEM_ERROR", timeout=10)
    assert done.exit_code == 50 and done.phase == "EndpointLost"
    assert "stopped while running" in done.exit_message and "sql container exited with code 137" in done.exit_message
    assert "health_grace" in done.exit_message
    assert cl.id in FakeBackend.stopped
    assert any(e["event"] == "LOGS" and "sql log of" in e["description"] for e in events(m, cl.id))
    await wait_for(m, waiting.id, "RUNNING")  # the slot was freed
    await m.cancel(waiting.id, wait=True)
    await m.stop()


async def test_an_endpoint_that_does_not_answer_counts_after_several_rounds(make_manager):
    """A live lab that does not answer its probe is a warning only after health_probe_failures rounds in a row;
    the probe never counts as use of the cluster (the idle timer is not reset)."""
    m = await make_manager(health_interval=0.05, health_grace=600, health_probe_failures=3)
    cl = await m.submit(interactive(idle_timeout=3600))
    await wait_for(m, cl.id, "RUNNING")
    idle_since = m.store.get(cl.id).last_activity_at
    FakeBackend.unanswered["lab"] = "the lab endpoint does not answer: refused"
    rounds = m.health.rounds
    await until(lambda: m.store.get(cl.id).runtime_status["warning"], "a lab warning")
    assert m.health.rounds >= rounds + 3
    assert "lab does not answer: the lab endpoint does not answer" in m.store.get(cl.id).runtime_status["warning"]
    assert m.store.get(cl.id).last_activity_at == idle_since
    FakeBackend.unanswered.clear()
    await until(lambda: not m.store.get(cl.id).runtime_status["warning"], "the warning cleared")
    await m.cancel(cl.id, wait=True)
    await m.stop()


async def test_health_watches_an_automated_jobs_ephemeral_cluster(make_manager):
    """The master of an automated job's ephemeral cluster dying stops its driver (27); the teardown of a cluster
    that ended normally writes no health flag on the job."""
    m = await make_manager(health_interval=0.05, health_grace=600)
    ok = await m.submit(automated({"run_delay": 0.3}))
    done = await wait_for(m, ok.id, "COMPLETE", timeout=15)
    assert done.runtime_status["error"] is None and done.runtime_status["warning"] is None
    lost = await m.submit(automated({"gate": "never"}))
    await wait_for(m, lost.id, "RUNNING", timeout=15)
    await until(lambda: m.health.rounds > 2 and lost.id in FakeBackend.live, "health rounds")
    FakeBackend.kill(lost.id, "master", "the master container exited with code 137")
    job = await wait_for(m, lost.id, "SYSTEM_ERROR", timeout=15)
    assert job.exit_code == 27 and "lost its master" in job.exit_message
    await m.stop()


async def test_an_engine_outage_warns_then_reattaches_or_ends_what_did_not_survive(make_manager):
    """While the engine does not answer, a RUNNING cluster gets a warning that says so and nothing is concluded;
    when it answers again the cluster is re-attached (read again: REATTACHED) and the warning goes. A cluster
    whose SQL endpoint did not survive the outage ends at once (no health_grace) in 50, with that reason."""
    m = await make_manager(health_interval=0.05, health_grace=600)
    kept = await m.submit(interactive())
    lost = await m.submit(interactive())
    for job in (kept, lost):
        await wait_for(m, job.id, "RUNNING")
    FakeBackend.engine_down = True
    for job in (kept, lost):
        await until(lambda j=job: m.store.get(j.id).runtime_status["warning"], "an engine warning")
        warning = m.store.get(job.id).runtime_status["warning"]
        assert warning.startswith("the fake backend does not answer (") and "re-attached" in warning
        assert not m.store.get(job.id).flagged
    rounds = m.health.rounds
    await until(lambda: m.health.rounds > rounds + 3, "rounds while the engine is down")
    assert m.store.get(kept.id).state == State.RUNNING  # nothing concluded while it cannot tell
    FakeBackend.kill(lost.id, "sql", "the sql container exited with code 143")
    FakeBackend.engine_down = False
    await until(lambda: any(e["event"] == "REATTACHED" for e in events(m, kept.id)), "re-attached")
    note = next(e for e in events(m, kept.id) if e["event"] == "REATTACHED")["description"]
    assert "did not answer for" in note and "read again (4 of 4 running)" in note
    await until(lambda: m.store.get(kept.id).runtime_status["warning"] is None, "the engine warning cleared")
    done = await wait_for(m, lost.id, "SYSTEM_ERROR", timeout=5)
    assert done.exit_code == 50 and done.phase == "LostInEngineOutage"
    assert "did not survive the engine's outage" in done.exit_message and "code 143" in done.exit_message
    assert lost.id in FakeBackend.stopped
    await m.cancel(kept.id, wait=True)
    await m.stop()


async def test_queue_quota(make_manager):
    m = await make_manager(max_running_clusters=1, max_queued_jobs=2)
    first = await m.submit(interactive("fake/slow"))
    await wait_for(m, first.id, "INITIALIZING")
    await m.submit(interactive())
    await m.submit(interactive())
    with pytest.raises(QuotaExceeded):
        await m.submit(interactive())
    over = await m.submit(automated())
    assert over.state == State.SYSTEM_ERROR and over.exit_code == 23
    for j in m.store.list(limit=100)[0]:
        await m.cancel(j.id, wait=True)
    await m.stop()


async def test_restart_adopts_running_requeues_initializing_and_removes_orphans(make_manager):
    m1 = await make_manager()
    running = await m1.submit(interactive())
    await wait_for(m1, running.id, "RUNNING")
    init = await m1.submit(interactive("fake/slow"))
    await wait_for(m1, init.id, "INITIALIZING")
    await m1.stop()  # the server stops; clusters are the user's and keep running
    assert running.id in FakeBackend.live
    assert m1.store.get(init.id).state == State.INITIALIZING
    FakeBackend.live["orphan12345"] = {}  # resources without a job
    m2 = await make_manager()  # a new manager and backend object on the same store: a server restart
    assert m2.store.get(running.id).state == State.RUNNING
    assert any(e["event"] == "ADOPTED" for e in events(m2, running.id))
    assert FakeBackend.started.count(running.id) == 1  # adopted, not started again
    hist = [e for e in events(m2, init.id, "STATE") if e["phase"] == "Requeued"]
    assert hist and "restarted" in hist[0]["description"]
    await wait_for(m2, init.id, "RUNNING")  # resumed
    assert "orphan12345" not in FakeBackend.live
    for jid in (running.id, init.id):
        await m2.cancel(jid, wait=True)
    assert not FakeBackend.live
    await m2.stop()


async def test_restart_fails_a_running_cluster_that_is_gone(make_manager):
    m1 = await make_manager()
    job = await m1.submit(interactive())
    await wait_for(m1, job.id, "RUNNING")
    await m1.stop()
    FakeBackend.live.clear()  # the containers went away while the server was down
    m2 = await make_manager()  # a new manager and backend object on the same store: a server restart
    done = m2.store.get(job.id)
    assert done.state == State.SYSTEM_ERROR and done.exit_code == 50
    assert "none of its resources were found" in done.exit_message
    await m2.stop()


async def test_restart_with_the_backend_down_keeps_running_jobs(make_manager):
    m1 = await make_manager()
    job = await m1.submit(interactive())
    await wait_for(m1, job.id, "RUNNING")
    await m1.stop()
    FakeBackend.engine_down = True  # e.g. dockerd is restarting while the server starts
    m2 = await make_manager()  # a new manager and backend object on the same store: a server restart
    kept = m2.store.get(job.id)
    assert kept.state == State.RUNNING and kept.flagged and "cannot be reached" in kept.runtime_status["error"]
    assert job.id in FakeBackend.live  # nothing was destroyed
    FakeBackend.engine_down = False  # back: the health loop re-attaches (adopts) it, and the flag goes
    await until(lambda: any(e["event"] == "REATTACHED" for e in events(m2, job.id)), "re-attached")
    await until(lambda: not m2.store.get(job.id).flagged, "the flag cleared")
    assert m2.store.get(job.id).state == State.RUNNING and m2._rt[job.id].cluster is not None
    await m2.cancel(job.id, wait=True)
    await m2.stop()


def test_assess_follows_seed_001():
    """The verdict alone (pure): errors in the order master, SQL, workers; only a dead master or SQL endpoint
    is fatal, and only on an interactive cluster; an automated job's cluster is judged on master and workers."""
    from sparkdock.server.health import assess

    workers = ["worker-1", "worker-2"]
    assert assess({}, workers) == assess({}, workers, unanswered={})
    assert assess({}, workers).warning is None and assess({}, workers).error is None
    v = assess({"worker-2": "w2 gone", "sql": "sql gone", "master": "m gone"}, workers)
    assert v.error == "master stopped: m gone; sql stopped: sql gone" and v.fatal == ("master", "m gone")
    assert v.warning.startswith("1 of 2 workers stopped") and "w2 gone" in v.warning
    v = assess({}, workers, unanswered={"sql": "slow"})
    assert v.error == "sql does not answer: slow" and v.fatal is None
    v = assess({"lab": "lab gone"}, workers)
    assert v.error is None and v.warning.startswith("lab stopped: lab gone")
    v = assess({"sql": "sql gone", "lab": "lab gone", "worker-1": "x", "worker-2": "y"}, workers,
               interactive=False)
    assert v.fatal is None and v.warning is None and v.error.startswith("all 2 worker(s) stopped")
    v = assess({"master": "m gone"}, ["worker-1"], interactive=False)
    assert v.error.startswith("master stopped") and v.fatal is None


async def test_retention_prunes_old_finished_jobs_and_keeps_the_rest(make_manager, store):
    """history_retention_days: a job that ended longer ago goes (its row, its history, its folder), at start-up
    and then every retention_interval; a recent finished job, and a job that has not ended however old, stay."""
    m = await make_manager()
    old = await m.submit(automated({"exit_status": 0}))
    old_failed = await m.submit(automated({"exit_status": 1, "output": "RuntimeError: x"}))
    recent = await m.submit(automated({"exit_status": 0}))
    running = await m.submit(interactive())
    for job, state in ((old, "COMPLETE"), (old_failed, "EXECUTOR_ERROR"), (recent, "COMPLETE"),
                       (running, "RUNNING")):
        await wait_for(m, job.id, state)
    folders = {j.id: m.backend.job_dir(j.id) for j in (old, old_failed, recent)}
    assert all(f.is_dir() for f in folders.values())  # the staged application and its logs
    await m.stop()
    long_ago = "2026-01-01T00:00:00.000Z"  # the jobs as the store would have them 40+ days later
    with store._write() as conn:
        conn.execute("UPDATE jobs SET created_at=?, ended_at=? WHERE id IN (?, ?)", (long_ago, long_ago, old.id,
                                                                                     old_failed.id))
        conn.execute("UPDATE jobs SET created_at=? WHERE id=?", (long_ago, running.id))
    m2 = await make_manager(retention_days=30)  # pruned by the start-up pass
    await until(lambda: store.find(old.id) is None and store.find(old_failed.id) is None, "the old jobs pruned")
    for gone in (old, old_failed):
        assert not folders[gone.id].exists()
        assert store._conn().execute("SELECT count(*) FROM events WHERE job_id=?", (gone.id,)).fetchone()[0] == 0
    assert folders[recent.id].is_dir() and store.get(recent.id).state == State.COMPLETE
    assert store.get(running.id).state == State.RUNNING  # never pruned while it has not ended
    assert store.delete([running.id]) == 0 and store.get(running.id)  # not even when named
    assert await m2.prune_history() == []  # nothing more to prune
    await m2.cancel(running.id, wait=True)
    await m2.stop()
    assert await JobManager(store, m2.backend, config=ManagerConfig()).prune_history() == []  # 0: keep forever

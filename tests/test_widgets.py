"""The ipywidgets panels without a frontend (ipywidgets 8 uses a dummy comm when there is no kernel),
following the event stream of a live server (FakeBackend lifecycle)."""

from __future__ import annotations

import asyncio
import time

from client_fixtures import client, run, server_token, server_url  # noqa: F401
from sparkdock.notebook.widgets import ClusterPanel, JobCard, JobMonitor, JobSubmitPanel


async def _until(pred, timeout=15.0):
    """Wait for ``pred()`` with a deadline. The deadline only bounds a broken run: how fast a card follows the
    server is measured by ``bench/widget_latency.py``, not asserted here."""
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
    return time.monotonic()


async def test_card_follows_state_changes(client):  # noqa: F811
    panel = await run(ClusterPanel, client)
    assert await run(client.events().wait_connected, 5)
    job = await run(client.launch_cluster, name="w", image="fake/slow")
    await _until(lambda: job.id in panel.cards)
    card = panel.cards[job.id]
    # INITIALIZING comes first with the scheduler's phase "Initializing", then the backend's phases; the card
    # is updated from the event stream's thread, its header before its progress bar, so wait for both
    await _until(lambda: card.state == "INITIALIZING"
                 and ("StartingMaster" in card.header.value or "WaitingForWorkers" in card.header.value)
                 and 0 < card.progress.value < 7)
    # the server reaches RUNNING (fake/slow: 3 s); the card follows (bench/widget_latency.py measures how fast)
    await run(job.wait, timeout=20)
    await _until(lambda: card.state == "RUNNING"
                 and card.jdbc.value.startswith("jdbc:hive2://") and "lab" in card.lab.value.lower()
                 and "#43a047" in card.header.value)  # RUNNING's colour from lifecycle.STYLES
    # Terminate from the card ends the job
    await run(card.terminate_button.click)
    await _until(lambda: card.state == "COMPLETE" and card.terminate_button.disabled)
    assert (await run(job.refresh)).state == "COMPLETE"
    panel.close()


async def test_the_final_card_says_why_a_cluster_ended(client):  # noqa: F811
    """A cluster nobody uses ends after its idle timeout: the card's header and text say so."""
    job = await run(client.launch_cluster, name="unused", image="fake/ok", idle_timeout=1)
    card = await run(lambda: JobCard(client, job.data).follow())
    await _until(lambda: card.state == "COMPLETE", timeout=30)
    assert "IdleTimeout" in card.header.value
    assert "Ended: nobody used it for 1 s (idle_timeout)." in card.failure.value
    card.close()


async def test_cluster_form_shows_server_message_next_to_field(client):  # noqa: F811
    panel = await run(ClusterPanel, client)
    panel.worker_memory.value = "lots"
    assert await run(panel.launch) is None
    errs = panel.errors.fields
    assert "size like" in errs["cluster.worker_memory"].value
    assert errs["cluster.workers"].value == "" and panel.general_error.value == ""
    assert await run(client.jobs) == []
    panel.worker_memory.value = "512m"
    job = await run(panel.launch)
    assert job is not None and errs["cluster.worker_memory"].value == ""
    await run(job.wait, timeout=20)
    await run(job.terminate)
    panel.close()


async def test_failed_cluster_card_shows_catalog_action(client):  # noqa: F811
    job = await run(client.launch_cluster, image="fake/fail51")
    card = await run(lambda: JobCard(client, job.data).follow())
    await _until(lambda: card.state == "SYSTEM_ERROR")
    await _until(lambda: "Exit code 51" in card.failure.value)
    assert "Action:" in card.failure.value
    card.close()


async def test_submit_panel_validates_and_targets_running_clusters(client):  # noqa: F811
    panel = await run(JobSubmitPanel, client)
    # client-side: conf lines must be key=value
    panel.code.value = "print(1)"
    panel.conf.value = "spark.x=1\nnonsense"
    assert await run(panel.submit) is None
    assert "key=value" in panel.errors.fields["application.conf"].value
    # server-side: both code and path → the server's message next to the code field
    panel.conf.value = ""
    panel.path.value = "/x.py"
    assert await run(panel.submit) is None
    assert "exactly one" in panel.errors.fields["application.code"].value
    panel.path.value = ""
    panel.retries.value = 50
    assert await run(panel.submit) is None
    assert panel.errors.fields["policy.retries"].value
    panel.retries.value = 0
    # a RUNNING cluster appears in the target dropdown, live
    cluster = await run(client.launch_cluster, name="target")
    await run(cluster.wait, timeout=20)
    await _until(lambda: cluster.id in [v for _, v in panel.target.options])
    panel.target.value = cluster.id
    job = await run(panel.submit)
    assert job is not None and job.data["spec"]["cluster_job"] == cluster.id
    await run(job.wait, timeout=20)
    assert job.state == "COMPLETE"
    await run(cluster.terminate)
    await _until(lambda: cluster.id not in [v for _, v in panel.target.options])
    panel.close()


async def test_monitor_table_filters_history_logs_cancel(client):  # noqa: F811
    mon = await run(JobMonitor, client)
    assert await run(client.events().wait_connected, 5)
    cluster = await run(client.launch_cluster, name="mon")
    await _until(lambda: cluster.id in mon.table.value)
    await run(cluster.wait, timeout=20)
    await _until(lambda: mon.jobs[cluster.id]["state"] == "RUNNING")
    bad = await run(client.submit, code='# fake: {"exit_status": 1, "output": "driver log: bad exit"}\n'
                    'raise SystemExit(1)', cluster_job=cluster)
    await run(bad.wait, timeout=20, raise_on_error=False)
    await _until(lambda: mon.jobs.get(bad.id, {}).get("state") == "EXECUTOR_ERROR")
    mon.kind_filter.value = "automated"
    assert bad.id in mon.table.value and cluster.id not in mon.table.value
    mon.kind_filter.value = ""
    mon.state_filter.value = "RUNNING"
    assert [j["id"] for j in mon.visible_jobs()] == [cluster.id]
    mon.state_filter.value = ""
    await run(mon.select, bad.id)
    assert "CREATED" in mon.history.value and "EXECUTOR_ERROR" in mon.history.value
    assert "driver log: bad exit" in mon.logs.value
    await _until(lambda: "Action:" in mon.card.failure.value)
    await run(mon.select, cluster.id)
    assert list(mon.component.options) == ["master", "worker-1", "sql", "lab"]
    await run(setattr, mon.component, "value", "sql")
    await _until(lambda: "sql log" in mon.logs.value)
    await run(mon.cancel_selected)
    await _until(lambda: mon.jobs[cluster.id]["state"] == "COMPLETE")
    await _until(lambda: "CANCELING" in mon.history.value)
    mon.close()


async def test_a_health_error_is_flagged_in_every_view(client, capsys, monkeypatch, server_url,  # noqa: F811
                                                        server_token):  # noqa: F811
    """Seed 001: a RUNNING cluster whose master the health loop finds dead is flagged in the card (the error first
    and in red), the monitor's table (a red E), the job's summary and the CLI's list (FLAGS E)."""
    from fake_backend import FakeBackend
    from sparkdock.cli import main

    mon = await run(JobMonitor, client)
    assert await run(client.events().wait_connected, 5)
    job = await run(client.launch_cluster, name="sick")
    await run(job.wait, timeout=20)
    FakeBackend.kill(job.id, "master", "the master container exited with code 137")
    await _until(lambda: (mon.jobs.get(job.id, {}).get("runtime_status") or {}).get("error"))
    await _until(lambda: '<span style="color:#b71c1c;font-weight:700">E' in mon.table.value)  # E, then W/A
    await run(mon.select, job.id)
    await _until(lambda: mon.card is not None and "error: master stopped" in mon.card.status.value)
    assert "#b71c1c" in mon.card.status.value
    summary = (await run(job.refresh)).summary()
    assert "error: master stopped: the master container exited with code 137" in summary
    monkeypatch.setenv("SPARKDOCK_URL", server_url)
    monkeypatch.setenv("SPARKDOCK_TOKEN", server_token)
    capsys.readouterr()
    assert await run(main, ["jobs", "--state", "RUNNING"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()]
    assert ["FLAGS"] in [r[-1:] for r in rows] and [r[-1] for r in rows if r and r[0] == job.id] == ["E"], out
    await run(job.terminate)
    await _until(lambda: mon.jobs[job.id]["state"] == "COMPLETE")
    mon.close()

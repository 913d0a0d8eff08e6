"""Email notifications (seed 002), end to end: a real Jupyter server (pytest-jupyter, jobs on the backend
interface's test double) mails through a real SMTP server on loopback (aiosmtpd: STARTTLS with a test CA's
certificate, a required login), with retries on a schedule of fractions of a second.

Also the panels' Notify field, the monitor's notifications (live), and ``sparkdock notifications JOB``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace

import pytest

import notify_helpers as nh
from client_fixtures import client, run, server_token, server_url  # noqa: F401
from job_helpers import captured_log
from smtp_server import PASSWORD, USER, SmtpServer
from sparkdock import cli
from sparkdock.model import exit_codes
from sparkdock.notebook.widgets import ClusterPanel, JobMonitor, JobSubmitPanel
from sparkdock.server.outbox import Delivery
from sparkdock.server.webhooks.mailer import Mailer, SmtpSettings, read_password

PUBLIC_URL = "https://jupyter.example.org/user/alice/"
SENDER = "sparkdock@jupyter.example.org"


@pytest.fixture
def smtp(tmp_path):
    with SmtpServer(tmp_path) as server:
        yield server


@pytest.fixture
def password_file(tmp_path):
    path = tmp_path / "smtp-password"
    path.write_text(PASSWORD + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def sparkdock_config(smtp, password_file):
    return {"smtp_host": smtp.host, "smtp_port": smtp.port, "smtp_tls": "starttls", "smtp_user": USER,
            "smtp_password_file": str(password_file), "smtp_ca_file": str(smtp.ca_file), "smtp_from": SENDER,
            "smtp_timeout": 10.0, "webhook_retry_schedule": [0.2, 0.4, 0.8], "webhook_retry_jitter": 0.1,
            "public_url": PUBLIC_URL}


async def test_an_email_tells_the_owner_what_happened_with_the_exit_code_and_links(jp_fetch, smtp):
    with captured_log(logging.getLogger("tornado.access"), logging.getLogger("ServerApp")) as log:
        body = nh.job_body(exit_status=3, name="nightly load", notifications=[
            {"url": "mailto:alice@example.org", "event": "EXECUTOR_ERROR"},
            {"url": "ops@example.org", "event": "RUNNING"},
        ])
        code, job = await nh.call(jp_fetch, "POST", "jobs", body=body)
        assert code == 201, job
        jid = job["id"]
        deliveries = await nh.settled(jp_fetch, jid, 2)
    final = (await nh.call(jp_fetch, "GET", "jobs", jid))[1]
    assert final["state"] == "EXECUTOR_ERROR" and final["exit_code"] is not None
    by_event = {d["event"]: d for d in deliveries}
    failed = by_event["EXECUTOR_ERROR"]
    assert failed["channel"] == "email" and failed["url"] == "mailto:alice@example.org"
    assert failed["status"] == "delivered", failed
    assert [(a["outcome"], a["status_code"]) for a in failed["attempts"]] == [("delivered", 250)]
    assert by_event["RUNNING"]["url"] == "mailto:ops@example.org" and by_event["RUNNING"]["status"] == "delivered"

    # what the SMTP server got: over STARTTLS (it refuses mail before it), after a login with the password
    # read from the file, one message per delivery
    assert len(smtp.inbox.messages) == 2 and smtp.inbox.logins == [(USER, True), (USER, True)]
    mail = next(m for m in smtp.inbox.messages if m["To"] == "alice@example.org")
    assert (SENDER, ["alice@example.org"]) in smtp.inbox.envelopes
    entry = exit_codes.get(final["exit_code"])
    assert mail["From"] == SENDER
    subject = f'sparkdock: job "nightly load" ({jid}) is EXECUTOR_ERROR (exit code {entry.code})'
    assert mail["Subject"].strip() == subject
    assert mail["Message-ID"] == f"<{failed['id']}@sparkdock>"  # the same for every attempt: receivers dedupe
    assert mail["Auto-Submitted"] == "auto-generated"
    text = mail.get_content().replace("\r\n", "\n")
    assert text.startswith(f'The state of job "nightly load" ({jid}) has changed to EXECUTOR_ERROR.\n')
    body, _, signature = text.partition("\n-- \n")
    assert signature == "Sent by sparkdock: a notification of this job asked for this email.\n"
    fields = dict(ln.split(": ", 1) for ln in body.splitlines() if ": " in ln and not ln.startswith("The state"))
    fields = {k.rstrip(":").strip(): v.strip() for k, v in fields.items()}
    kernel = exit_codes.KERNEL_EXIT_CODES[2]  # the fake application exits with 3: kernel code 2, "the command failed"
    job_url = f"{PUBLIC_URL}sparkdock/api/jobs/{jid}"
    assert fields == {
        "Job": f"{jid} (automated, fake backend)", "Name": "nightly load",
        "State": "EXECUTOR_ERROR: The Spark application failed.",
        "Exit code": f"{entry.code}: {entry.description}", "Message": final["exit_message"],
        "Action": entry.action, "Kernel code": f"2: {kernel.description}", "Then": kernel.action,
        "Owner": final["owner"], "Submitted": final["created_at"], "Started": final["started_at"],
        "Ended": final["ended_at"], "URL": job_url, "Logs": f"{job_url}/logs", "History": f"{job_url}/history",
    }, text
    running = next(m for m in smtp.inbox.messages if m["To"] == "ops@example.org")
    assert running["Subject"].strip() == f'sparkdock: job "nightly load" ({jid}) is RUNNING'
    assert "Exit code" not in running.get_content()

    # the history says where each went; the password is nowhere in the server's log
    code, history = await nh.call(jp_fetch, "GET", "jobs", jid, "history")
    lines = [e["description"] for e in history["events"] if e["event"] == "NOTIFICATION"]
    assert any(ln.startswith("email EXECUTOR_ERROR to alice@example.org (attempt 1): delivered, SMTP 250")
               for ln in lines), lines
    assert log and not any(PASSWORD in line for line in log)


async def test_a_busy_smtp_server_is_tried_again_and_the_email_arrives_once(jp_fetch, smtp):
    smtp.inbox.answers = ["451 4.3.0 Try again later"]
    code, job = await nh.call(jp_fetch, "POST", "jobs", body=nh.job_body(notifications=[
        {"url": "ops@example.org", "event": "COMPLETE"}]))
    assert code == 201, job
    [d] = await nh.settled(jp_fetch, job["id"], 1)
    assert d["status"] == "delivered", d
    assert [(a["number"], a["outcome"], a["status_code"]) for a in d["attempts"]] == [
        (1, "retry", 451), (2, "delivered", 250)]
    assert d["attempts"][0]["error"] == "SMTP 451: 4.3.0 Try again later"
    assert smtp.inbox.attempts == 2 and len(smtp.inbox.messages) == 1  # offered twice, accepted once
    assert smtp.inbox.messages[0]["Message-ID"] == f"<{d['id']}@sparkdock>"

    # a 5xx is final: one attempt, nothing accepted
    smtp.inbox.answers = ["550 5.1.1 Mailbox unknown"]
    code, job = await nh.call(jp_fetch, "POST", "jobs", body=nh.job_body(notifications=[
        {"url": "nobody@example.org", "event": "COMPLETE"}]))
    [d] = await nh.settled(jp_fetch, job["id"], 1)
    assert d["status"] == "failed" and len(d["attempts"]) == 1, d
    assert d["last_error"] == "SMTP 550: 5.1.1 Mailbox unknown"
    assert smtp.inbox.attempts == 3 and len(smtp.inbox.messages) == 1


def _delivery(payload: dict[str, str]) -> Delivery:
    return Delivery(id="msg_test", job_id="j1", notification="job:0", event="COMPLETE", channel="email",
                    url=f"mailto:{payload['to']}", payload=json.dumps(payload), created_at="", status="pending",
                    attempts=0, next_attempt_at=None, delivered_at=None, last_error=None)


async def test_the_mailer_says_what_each_failure_means(smtp, tmp_path):
    mail = _delivery({"to": "ops@example.org", "subject": "s", "text": "t"})
    good = SmtpSettings(host=smtp.host, port=smtp.port, user=USER, password=PASSWORD, sender=SENDER, timeout=5,
                        ca_file=str(smtp.ca_file))
    assert (await Mailer(good).send(mail)).outcome == "delivered"
    # a wrong password: the server's 535 is final
    wrong = await Mailer(replace(good, password="nope")).send(mail)
    assert (wrong.outcome, wrong.status_code) == ("failed", 535), wrong
    # a certificate the system's CAs do not trust: TLS fails (retried: the admin may fix the CA file)
    untrusted = await Mailer(replace(good, ca_file="")).send(mail)
    assert untrusted.outcome == "retry" and "TLS" in (untrusted.error or ""), untrusted
    # nobody listening: retried
    nobody = await Mailer(replace(good, port=1)).send(mail)
    assert nobody.outcome == "retry" and "ConnectionRefusedError" in (nobody.error or ""), nobody
    # not configured: failed, with what to set
    off = await Mailer(SmtpSettings()).send(mail)
    assert off.outcome == "failed" and "SparkDockApp.smtp_host" in (off.error or "")
    assert len(smtp.inbox.messages) == 1 and PASSWORD not in repr(good)


def test_smtp_settings_refuse_a_password_in_clear_and_read_it_from_a_file_or_the_environment(tmp_path):
    clear = SmtpSettings(host="mail.example.org", tls="none", user="u", password="p")
    assert any("in clear" in p for p in clear.problems())
    assert any("both a user" in p for p in SmtpSettings(host="h", user="u").problems())
    assert SmtpSettings(host="h", tls="tls", user="u", password="p").problems() == []
    assert SmtpSettings(host="h", sender="Spark jobs <jobs@example.org>").problems() == []
    assert any("smtp_from" in p for p in SmtpSettings(host="h", sender="nobody").problems())
    path = tmp_path / "pw"
    path.write_text("s3cret\n")
    path.chmod(0o644)
    password, warning = read_password(str(path), {})
    assert password == "s3cret" and warning and "chmod 600" in warning
    path.chmod(0o600)
    assert read_password(str(path), {}) == ("s3cret", None)
    assert read_password("", {"SPARKDOCK_SMTP_PASSWORD": "from-env"}) == ("from-env", None)
    with pytest.raises(ValueError, match="cannot be read"):
        read_password(str(tmp_path / "missing"), {})


async def test_the_panels_take_a_notification_and_the_monitor_shows_its_attempts_live(client, smtp, capsys,  # noqa: F811
                                                                                      server_url, server_token):  # noqa: F811
    # the cluster panel: a bad target is shown next to the Notify field; an address is taken
    panel = await run(ClusterPanel, client)
    panel.notify.value = "not an address"
    assert await run(panel.launch) is None
    assert "http:// or https://" in panel.errors.fields["notifications"].value
    panel.notify.value = "ops@example.org"
    cluster = await run(panel.launch)
    assert cluster is not None
    assert [(n["url"], n["event"]) for n in cluster.data["spec"]["notifications"]] == [
        ("ops@example.org", "RUNNING"), ("ops@example.org", "EXECUTOR_ERROR"), ("ops@example.org", "SYSTEM_ERROR")]
    await run(cluster.terminate)
    panel.close()

    # the submit panel: an email when the job ends; the monitor follows its attempts (the first one answered 451)
    mon = await run(JobMonitor, client)
    assert await run(client.events().wait_connected, 5)
    smtp.inbox.answers = ["451 4.7.1 Greylisted, try again"]
    form = await run(JobSubmitPanel, client)
    form.code.value = '# fake: {"exit_status": 0, "run_delay": 0.5}\nprint(1)'
    form.notify.value = "me@example.org"
    assert form.notify_on.value == "end"
    job = await run(form.submit)
    assert job is not None and len(job.data["spec"]["notifications"]) == 4
    await run(mon.select, job.id)
    deadline = asyncio.get_running_loop().time() + 30
    while not ("delivered" in mon.notifications.value and "Greylisted" in mon.notifications.value):
        assert asyncio.get_running_loop().time() < deadline, mon.notifications.value
        await asyncio.sleep(0.02)
    shown = mon.notifications.value
    assert "me@example.org" in shown and ">451<" in shown and ">250<" in shown and "COMPLETE" in shown
    assert len([m for m in smtp.inbox.messages if m["To"] == "me@example.org"]) == 1
    form.close()
    mon.close()

    # the CLI lists the same attempts
    code = await run(cli.main, ["--url", server_url, "--token", server_token, "notifications", job.id])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split() == ["EVENT", "CHANNEL", "TO", "ATTEMPT", "TIME", "CODE", "LATENCY", "OUTCOME", "DETAIL"]
    assert any(ln.split()[:4] == ["COMPLETE", "email", "mailto:me@example.org", "1"] and " 451 " in ln
               and "retry" in ln for ln in lines), out
    assert any(" 250 " in ln and "delivered" in ln for ln in lines), out
    code = await run(cli.main, ["--url", server_url, "--token", server_token, "notifications", job.id, "--json"])
    assert json.loads(capsys.readouterr().out)[0]["status"] == "delivered"
    code = await run(cli.main, ["--url", server_url, "--token", server_token, "notifications", "nosuchjob1"])
    assert code == 2 and "nosuchjob1" in capsys.readouterr().err

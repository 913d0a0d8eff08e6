"""Email notifications (seed 002): a notification whose ``url`` is an email address is mailed through the
SMTP server the admin configures.

The planner writes the message into the outbox when the job changes state (:func:`compose`: the subject names
the job and the state; the text has the job, its state, the exit code with the catalog's description and action,
and links), so a retry sends the same message, with the same ``Message-ID`` (the delivery's id). The dispatcher
hands each attempt to :class:`Mailer`, which opens one SMTP session (STARTTLS, implicit TLS or plain), logs in
when credentials are configured, and says what the answer means, like a webhook's:

- 250: ``delivered``;
- a 4xx reply (the server is busy, greylisting, a mailbox temporarily full), a timeout, a refused connection, a
  TLS failure: ``retry`` on the webhooks' schedule;
- a 5xx reply (an unknown mailbox, a refused login, a refused sender): ``failed``.

The password is read from a file or the environment (:func:`read_password`), never from a command line, and is
never logged; it is sent only over TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import smtplib
import ssl
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate, parseaddr
from pathlib import Path
from typing import TYPE_CHECKING

from sparkdock.model import exit_codes
from sparkdock.model.lifecycle import STYLES, State
from sparkdock.server.outbox import Delivery
from sparkdock.server.webhooks.attempt import DELIVERED, FAILED, RETRY, AttemptResult

if TYPE_CHECKING:
    from sparkdock.server.store import Job

#: the ways to protect an SMTP session
TLS_MODES = ("starttls", "tls", "none")
#: what a From address must look like (the address of ``Name <address>`` or a bare one)
_SENDER_RE = re.compile(r"[^@\s<>]+@[^@\s<>]+")
#: the kernel exit code (1-7) in the message of exit code 18
_KERNEL_RE = re.compile(r"kernel exit code:? (\d+)")
#: the environment variables the SMTP credentials may come from
USER_ENV, PASSWORD_ENV = "SPARKDOCK_SMTP_USER", "SPARKDOCK_SMTP_PASSWORD"


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how email notifications are sent (from the extension's ``smtp_*`` traitlets)."""

    host: str = ""
    """the SMTP server; empty: email notifications are not enabled"""
    port: int = 587
    tls: str = "starttls"
    """``starttls`` (upgrade a plain connection, port 587), ``tls`` (implicit TLS, port 465) or ``none``"""
    user: str = ""
    password: str = field(default="", repr=False)
    sender: str = "sparkdock@localhost"
    """the From address"""
    timeout: float = 30.0
    """seconds for the connection and for each reply"""
    ca_file: str = ""
    """CA certificates (PEM) that verify the server's certificate; empty: the system's"""

    @property
    def enabled(self) -> bool:
        """True when an SMTP server is configured."""
        return bool(self.host)

    def problems(self) -> list[str]:
        """What is wrong with these settings (empty: nothing)."""
        out = []
        if self.tls not in TLS_MODES:
            out.append(f"SparkDockApp.smtp_tls must be one of {', '.join(TLS_MODES)}, not {self.tls!r}")
        if bool(self.user) != bool(self.password):
            out.append("SMTP credentials need both a user (SparkDockApp.smtp_user or $SPARKDOCK_SMTP_USER) and a "
                       "password (SparkDockApp.smtp_password_file or $SPARKDOCK_SMTP_PASSWORD)")
        if self.user and self.tls == "none":
            out.append("SparkDockApp.smtp_tls is 'none': the SMTP password would be sent in clear; use 'starttls' "
                       "or 'tls'")
        if not _SENDER_RE.fullmatch(parseaddr(self.sender)[1]) or any(c in self.sender for c in "\r\n"):
            out.append(f"SparkDockApp.smtp_from must be an address like sparkdock@example.org, not {self.sender!r}")
        if self.ca_file and not Path(self.ca_file).is_file():
            out.append(f"SparkDockApp.smtp_ca_file {self.ca_file!r} is not a file")
        return out

    def describe(self) -> str:
        """A line for the log (never the password)."""
        if not self.enabled:
            return "email notifications are off (no SparkDockApp.smtp_host)"
        login = f", as {self.user}" if self.user else ""
        return f"email notifications through {self.host}:{self.port} ({self.tls}{login}), from {self.sender}"


def read_password(path: str, environ: dict[str, str]) -> tuple[str, str | None]:
    """The SMTP password: the content of ``path`` (its last line break removed) or ``$SPARKDOCK_SMTP_PASSWORD``.
    Returns (password, a warning or None); raises ``ValueError`` when the file cannot be read."""
    if not path:
        return environ.get(PASSWORD_ENV, ""), None
    p = Path(path)
    try:
        text = p.read_text()
        mode = p.stat().st_mode
    except OSError as exc:
        raise ValueError(f"SparkDockApp.smtp_password_file {path!r} cannot be read: {exc.strerror}") from None
    warning = (f"SparkDockApp.smtp_password_file {path!r} can be read by other users; chmod 600 it"
               if mode & 0o077 else None)
    return text.rstrip("\r\n"), warning


# ---- the message ------------------------------------------------------------------------------------------------
def compose(job: Job, event: str, values: dict[str, str], address: str) -> dict[str, str]:
    """The message of ``event`` of ``job`` to ``address`` (``values``: the template variables of the event):
    ``{"to", "subject", "text"}``, stored in the outbox as the delivery's payload."""
    named = f'"{job.name}" ({job.id})' if job.name else job.id
    code = job.exit_code
    subject = f"sparkdock: job {named} is {event}" + (f" (exit code {code})" if code is not None else "")
    lines = [f"The state of job {named} has changed to {event}.", ""]
    rows = [("Job", f"{job.id} ({job.kind.value}" + (f", {job.backend} backend" if job.backend else "") + ")")]
    if job.name:
        rows.append(("Name", job.name))
    rows.append(("State", f"{event}: {STYLES[State(event)].description}"))
    if code is not None:
        entry = exit_codes.CATALOG.get(code)
        rows += [("Exit code", f"{code}: {entry.description}" if entry else str(code)),
                 ("Message", job.exit_message or "")]
        if entry:
            rows.append(("Action", entry.action))
        kernel = _KERNEL_RE.search(job.exit_message or "") if code == 18 else None
        if kernel and int(kernel.group(1)) in exit_codes.KERNEL_EXIT_CODES:
            k = exit_codes.KERNEL_EXIT_CODES[int(kernel.group(1))]
            rows += [("Kernel code", f"{k.code}: {k.description}"), ("Then", k.action)]
    rows += [("Owner", job.owner or ""), ("Submitted", job.created_at), ("Started", job.started_at or "-"),
             ("Ended", job.ended_at or "-")]
    width = max(len(k) for k, _ in rows) + 2
    lines += [f"{k + ':':<{width}}{v}" for k, v in rows]
    lines += ["", f"{'URL:':<{width}}{values['JOB_URL']}", f"{'Logs:':<{width}}{values['JOB_ARCHIVE_URL']}",
              f"{'History:':<{width}}{values['JOB_URL']}/history", "",
              "-- ", "Sent by sparkdock: a notification of this job asked for this email."]
    return {"to": address, "subject": subject, "text": "\n".join(lines) + "\n"}


def message(d: Delivery, sender: str) -> EmailMessage:
    """The email of a delivery (its ``Message-ID`` is the delivery's id: the same for every attempt)."""
    content = json.loads(d.payload)
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = sender
    msg["To"] = content["to"]
    msg["Subject"] = content["subject"]
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = f"<{d.id}@sparkdock>"
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies
    msg.set_content(content["text"])
    return msg


# ---- sending ----------------------------------------------------------------------------------------------------
class Mailer:
    """Sends the email of one delivery per call, in a worker thread (smtplib blocks)."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    async def send(self, d: Delivery) -> AttemptResult:
        """One attempt: an SMTP session that sends the delivery's message (see the module's docstring)."""
        if not self.settings.enabled:
            return AttemptResult(FAILED, error="email notifications are not enabled on this server "
                                 "(SparkDockApp.smtp_host)")
        try:
            msg = message(d, self.settings.sender)
        except (ValueError, KeyError, TypeError) as exc:
            return AttemptResult(FAILED, error=f"the message cannot be built: {exc}")
        return await asyncio.to_thread(self._send, msg)

    def _send(self, msg: EmailMessage) -> AttemptResult:
        t0 = time.monotonic()
        result = self._session(msg)
        result.latency_ms = int((time.monotonic() - t0) * 1000)
        return result

    def _session(self, msg: EmailMessage) -> AttemptResult:
        s = self.settings
        context = ssl.create_default_context(cafile=s.ca_file or None)
        smtp: smtplib.SMTP | None = None
        try:
            if s.tls == "tls":
                smtp = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=context)
            else:
                smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
            smtp.ehlo()
            if s.tls == "starttls":
                smtp.starttls(context=context)
                smtp.ehlo()
            if s.user:
                smtp.login(s.user, s.password)
            smtp.send_message(msg)  # raises unless the server answered 250 to the message
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            return _reply(code, text)
        except smtplib.SMTPResponseException as exc:  # a reply code: to the login, the sender, the message
            return _reply(exc.smtp_code, exc.smtp_error)
        except smtplib.SMTPNotSupportedError as exc:  # no STARTTLS or no AUTH: a setting to fix
            return AttemptResult(FAILED, error=f"the SMTP server {s.host}:{s.port} refused: {exc}")
        except (ssl.SSLError, ssl.CertificateError) as exc:
            return AttemptResult(RETRY, error=f"TLS with {s.host}:{s.port} failed: {exc}")
        except (smtplib.SMTPException, OSError) as exc:  # refused, reset, timed out, disconnected, unknown host
            what = f"no answer within {s.timeout:g} s" if isinstance(exc, TimeoutError) else str(exc)
            return AttemptResult(RETRY, error=f"SMTP {s.host}:{s.port}: {type(exc).__name__}: {what}")
        finally:
            if smtp is not None:
                with contextlib.suppress(Exception):  # sent is sent: a failing QUIT changes nothing
                    smtp.quit()
                with contextlib.suppress(Exception):
                    smtp.close()
        return AttemptResult(DELIVERED, status_code=250)


def _reply(code: int, text: bytes | str) -> AttemptResult:
    """What an SMTP reply means: 4xx is worth another try, 5xx is not."""
    words = (text.decode(errors="replace") if isinstance(text, bytes) else str(text)).strip()[:200]
    error = f"SMTP {code}: {words}" if words else f"SMTP {code}"
    if 400 <= code < 500 or code < 0:
        return AttemptResult(RETRY, status_code=code if code > 0 else None, error=error)
    return AttemptResult(FAILED, status_code=code, error=error)

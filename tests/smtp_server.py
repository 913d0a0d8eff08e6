"""A real SMTP server on loopback for the tests (aiosmtpd, in its own thread): STARTTLS with a certificate of a
test CA (trustme), a required login, and scripted answers to the message (``451 ...`` then ``250``).

Tests wait on its condition (:meth:`Inbox.wait_for`), never on a length of time.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

USER = "sparkdock-mailer"
PASSWORD = "pw-Zq7!x-never-logged"


class Inbox:
    """The aiosmtpd handler: keeps what it accepted, answers the message as scripted."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.answers: list[str] = []
        """what the next messages are answered (then 250)"""
        self.attempts = 0
        self.logins: list[tuple[str, bool]] = []
        """(user, accepted) of each login"""
        self._cond = threading.Condition()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._cond:
            self.attempts += 1
            answer = self.answers.pop(0) if self.answers else "250 Message accepted for delivery"
            if answer.startswith("250"):
                self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
                self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            self._cond.notify_all()
        return answer

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        user = data.login.decode() if isinstance(data.login, bytes) else str(data.login)
        password = data.password.decode() if isinstance(data.password, bytes) else str(data.password)
        ok = user == USER and password == PASSWORD
        with self._cond:
            self.logins.append((user, ok))
        return AuthResult(success=ok, handled=False)  # aiosmtpd answers 535 when it fails

    def wait_for(self, pred: Any, timeout: float = 30.0) -> None:
        """Wait until ``pred(inbox)`` holds (fails after ``timeout``: a broken run only)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pred(self):
                left = deadline - time.monotonic()
                assert left > 0, "the SMTP server did not get what was expected in time"
                self._cond.wait(left)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class SmtpServer:
    """An SMTP server on ``host`` with STARTTLS and a required login; ``ca_file`` verifies its certificate."""

    def __init__(self, folder: Path, host: str = "127.0.0.1") -> None:
        self.host = host
        self.inbox = Inbox()
        ca = trustme.CA()
        cert = ca.issue_cert(host, "localhost")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        self.ca_file = folder / "smtp-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        self.port = _free_port(host)
        self.controller = Controller(self.inbox, hostname=host, port=self.port, tls_context=context,
                                     require_starttls=True, authenticator=self.inbox.authenticate,
                                     auth_required=True, auth_require_tls=True)

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

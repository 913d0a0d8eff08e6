"""Signatures as Standard Webhooks make them (https://www.standardwebhooks.com).

The signed content is ``{webhook-id}.{webhook-timestamp}.{body}``; the signature is HMAC-SHA256 of it with the
secret's key (the base64 after ``whsec_``), written ``v1,<base64>``. Several signatures (one per secret, during
a rotation's grace period) are separated by spaces in the ``webhook-signature`` header; a receiver accepts the
delivery when one of them matches.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

SECRET_PREFIX = "whsec_"


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of one delivery attempt."""
    mac = hmac.new(_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def headers(secrets: list[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of an attempt, signed with each of ``secrets``."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, msg_id, timestamp, body) for s in secrets),
    }


def verify(secret: str, msg_id: str, timestamp: str, body: bytes, signature_header: str) -> bool:
    """Whether one of the header's signatures is ``secret``'s (for receivers written in Python, and tests)."""
    expected = sign(secret, msg_id, int(timestamp), body)
    return any(hmac.compare_digest(expected, sig) for sig in signature_header.split())

"""Webhook signatures, secrets and the retry schedule. Pure, no I/O.

Each delivery carries `X-EstateOps-Timestamp` (Unix seconds when it was sent) and
`X-EstateOps-Signature: sha256=<hex>`, the HMAC-SHA256, keyed with the endpoint's secret
(its UTF-8 bytes, exactly as shown at creation), of `<timestamp>.<body>`. A receiver
recomputes it over the raw body, compares in constant time, and refuses a timestamp too far
from its clock (a replay). `X-EstateOps-Event-Id` is the same for every attempt of one
event: deliveries are at least once, so receivers drop ids they have seen.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta
from typing import Final

__all__ = [
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "EVENT_ID_HEADER",
    "MAX_ATTEMPTS",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "new_secret",
    "retry_after",
    "retry_delay",
    "seal_context",
    "sign",
    "verify",
]

SIGNATURE_HEADER: Final = "X-EstateOps-Signature"
TIMESTAMP_HEADER: Final = "X-EstateOps-Timestamp"
EVENT_HEADER: Final = "X-EstateOps-Event"
EVENT_ID_HEADER: Final = "X-EstateOps-Event-Id"
DELIVERY_HEADER: Final = "X-EstateOps-Delivery"

MAX_ATTEMPTS: Final = 10
"""Attempts before a delivery is given up (about three hours of retries)."""
_FIRST_RETRY: Final = timedelta(seconds=30)
_LONGEST_RETRY: Final = timedelta(hours=1)


def new_secret() -> str:
    """A fresh signing secret (256 random bits)."""
    return "whsec_" + secrets.token_urlsafe(32)


def seal_context(site_id: int, endpoint_id: int) -> bytes:
    """The associated data a secret is sealed with: it opens only for its own endpoint."""
    return f"webhook-secret:{site_id}:{endpoint_id}".encode()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: str,
    timestamp: str | None,
    body: bytes,
    signature: str | None,
    now: float,
    tolerance_s: float = 300.0,
) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent."""
    if not timestamp or not signature or not timestamp.isdigit():
        return False
    if abs(now - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)


def retry_delay(attempts: int) -> timedelta:
    """How long to wait after `attempts` failed attempts: 30 s, doubling, at most an hour."""
    if attempts < 1:
        raise ValueError("a retry follows at least one attempt")
    doubled: timedelta = _FIRST_RETRY * (1 << min(attempts - 1, 16))
    return min(_LONGEST_RETRY, doubled)


def retry_after(header: str | None) -> timedelta | None:
    """A `Retry-After` in seconds (429, 503), bounded to the longest retry; None otherwise."""
    if header is None or not header.strip().isdigit():
        return None
    return min(_LONGEST_RETRY, timedelta(seconds=int(header.strip())))

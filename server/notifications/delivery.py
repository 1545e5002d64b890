"""The scheduler's delivery of the outbox: signed POSTs, retries with exponential backoff.

A pass claims due rows (FOR UPDATE SKIP LOCKED, so several schedulers never send one row
twice at once), posts them concurrently with a timeout, and records each outcome in the
same transaction. A 2xx is delivered; anything else (an error status, a refused connection,
a timeout) is retried after 30 s, 1 min, 2 min ... up to an hour apart, honouring a
`Retry-After`, and given up after MAX_ATTEMPTS. A crash between a receiver's 2xx and the
commit sends that event again: delivery is at least once, receivers dedupe by event id.
Redirects are not followed (a signed body goes only where the manager pointed it).
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from urllib.parse import urlsplit

import asyncpg
import httpx
import msgspec

from server.config import Settings
from server.db import Connection
from server.notifications import store
from server.notifications.signing import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    EVENT_ID_HEADER,
    MAX_ATTEMPTS,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    retry_after,
    retry_delay,
    seal_context,
    sign,
)
from server.sealed import SealError, unseal

__all__ = ["deliver_due", "delivery_task"]

TIMEOUT_S: Final = 10.0
CONCURRENCY: Final = 16
BATCH: Final = 100
USER_AGENT: Final = "EstateOps-Webhooks/1"


def _error(exc: Exception) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:1000]


@dataclass(frozen=True, slots=True)
class _Attempt:
    status: int | None = None  # None when no answer came back
    error: str | None = None  # None when delivered
    retry_after: str | None = None
    hopeless: bool = False  # retrying cannot help


async def private_target(url: str) -> str | None:
    """Why a webhook URL must not be called from inside the estate's network, or None.

    A manager could point a webhook at the database, the metadata service or another
    internal host and read the delivery errors back; outside development mode only
    public addresses are called. Checked at each delivery, since DNS answers change.
    """
    host = urlsplit(url).hostname or ""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None)
    except OSError as exc:
        return f"cannot resolve {host}: {exc}"
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global or address.is_multicast:
            return f"{host} resolves to a non-public address ({address})"
    return None


async def _post(
    client: httpx.AsyncClient, row: asyncpg.Record, kek: bytes, allow_private: bool
) -> _Attempt:
    """One signed POST of an outbox row."""
    if not allow_private and (why := await private_target(row["url"])) is not None:
        return _Attempt(error=why)
    context = seal_context(row["site_id"], row["endpoint_id"])
    try:
        secret = unseal(kek, bytes(row["secret_sealed"]), context=context).decode()
    except SealError as exc:
        return _Attempt(
            error=f"the secret cannot be opened ({exc}): recreate the endpoint", hopeless=True
        )
    body = msgspec.json.encode(row["payload"])
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
        EVENT_HEADER: row["event"],
        EVENT_ID_HEADER: str(row["event_id"]),
        DELIVERY_HEADER: str(row["id"]),
    }
    try:
        # Streamed and not read: a receiver's answer body is of no use and may be large.
        async with client.stream("POST", row["url"], content=body, headers=headers) as response:
            status = response.status_code
            if 200 <= status < 300:
                return _Attempt(status)
            return _Attempt(status, f"HTTP {status}", response.headers.get("Retry-After"))
    except (httpx.HTTPError, OSError) as exc:
        return _Attempt(error=_error(exc))


async def deliver_due(
    conn: Connection,
    now: datetime,
    *,
    kek: bytes,
    transport: httpx.AsyncBaseTransport | None = None,
    limit: int = BATCH,
    allow_private: bool = False,
) -> list[int]:
    """Deliver the due outbox rows; returns the ids delivered in this pass."""
    rows = await store.claim_due(conn, now, limit)
    if not rows:
        return []
    gate = asyncio.Semaphore(CONCURRENCY)

    async def attempt(row: asyncpg.Record) -> _Attempt:
        async with gate:
            return await _post(client, row, kek, allow_private)

    async with httpx.AsyncClient(
        timeout=TIMEOUT_S,
        follow_redirects=False,
        transport=transport,
        headers={"User-Agent": USER_AGENT},
    ) as client:
        outcomes = await asyncio.gather(*(attempt(r) for r in rows))
    records: list[store.AttemptRow] = []
    delivered: list[int] = []
    for row, outcome in zip(rows, outcomes, strict=True):
        if outcome.error is None:
            delivered.append(row["id"])
            records.append((row["id"], True, outcome.status, None, None, False))
            continue
        attempts = row["attempts"] + 1
        if attempts >= MAX_ATTEMPTS or outcome.hopeless:
            records.append((row["id"], False, outcome.status, outcome.error, None, True))
            continue
        delay = retry_delay(attempts)
        asked = retry_after(outcome.retry_after)
        if asked is not None and asked > delay:
            delay = asked
        records.append((row["id"], False, outcome.status, outcome.error, now + delay, False))
    await store.record_attempts(conn, records, now)
    return delivered


def delivery_task(settings: Settings) -> Callable[[Connection, datetime], Awaitable[Any]]:
    """The scheduler task: deliver_due with the KEK that opens the endpoints' secrets."""
    kek = settings.keys.kek

    async def deliver_notifications(conn: Connection, now: datetime) -> list[int]:
        # Development (and the tests) deliver to loopback receivers; production never.
        return await deliver_due(conn, now, kek=kek, allow_private=settings.is_dev)

    return deliver_notifications

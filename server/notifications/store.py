"""SQL for webhook endpoints and the notification outbox."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from server.db import Connection
from server.notifications.models import Delivery, WebhookEndpoint

_ENDPOINT_COLS = "id, site_id, url, events, description, active, created_by, created_at, updated_at"
_DELIVERY_COLS = (
    "id, endpoint_id, event_id::text AS event_id, event, "
    "CASE WHEN delivered_at IS NOT NULL THEN 'delivered' WHEN failed_at IS NOT NULL "
    "THEN 'failed' ELSE 'pending' END AS state, attempts, next_attempt_at, delivered_at, "
    "failed_at, last_status, last_error, created_at"
)


def _endpoint(row: asyncpg.Record) -> WebhookEndpoint:
    return msgspec.convert(dict(row), WebhookEndpoint)


# --- endpoints ----------------------------------------------------------------------------


async def next_endpoint_id(conn: Connection) -> int:
    """An id for a new endpoint, known before the insert: its secret is sealed to it."""
    value: int = await conn.fetchval(
        "SELECT nextval(pg_get_serial_sequence('webhook_endpoints', 'id'))"
    )
    return value


async def insert_endpoint(
    conn: Connection,
    endpoint_id: int,
    site_id: int,
    url: str,
    secret_sealed: bytes,
    events: Sequence[str],
    description: str,
    created_by: int,
) -> WebhookEndpoint:
    row = await conn.fetchrow(
        "INSERT INTO webhook_endpoints (id, site_id, url, secret_sealed, events, description, "
        "created_by) OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6, $7) "
        f"RETURNING {_ENDPOINT_COLS}",
        endpoint_id,
        site_id,
        url,
        secret_sealed,
        list(events),
        description,
        created_by,
    )
    assert row is not None
    return _endpoint(row)


async def list_endpoints(
    conn: Connection, site_id: int, after: int, limit: int
) -> list[WebhookEndpoint]:
    rows = await conn.fetch(
        f"SELECT {_ENDPOINT_COLS} FROM webhook_endpoints WHERE site_id = $1 AND id > $2 "
        "ORDER BY id LIMIT $3",
        site_id,
        after,
        limit + 1,
    )
    return [_endpoint(r) for r in rows]


async def get_endpoint(
    conn: Connection, site_id: int, endpoint_id: int, *, lock: bool = False
) -> WebhookEndpoint | None:
    row = await conn.fetchrow(
        f"SELECT {_ENDPOINT_COLS} FROM webhook_endpoints WHERE site_id = $1 AND id = $2"
        + (" FOR UPDATE" if lock else ""),
        site_id,
        endpoint_id,
    )
    return _endpoint(row) if row else None


async def update_endpoint(
    conn: Connection,
    endpoint_id: int,
    active: bool | None,
    events: Sequence[str] | None,
    description: str | None,
) -> WebhookEndpoint:
    row = await conn.fetchrow(
        "UPDATE webhook_endpoints SET active = coalesce($2, active), "
        "events = coalesce($3, events), description = coalesce($4, description), "
        f"updated_at = now() WHERE id = $1 RETURNING {_ENDPOINT_COLS}",
        endpoint_id,
        active,
        list(events) if events is not None else None,
        description,
    )
    assert row is not None
    return _endpoint(row)


async def give_up_pending(conn: Connection, endpoint_id: int, reason: str, now: datetime) -> int:
    """Give up the deliveries still pending for an endpoint; returns how many."""
    result: str = await conn.execute(
        "UPDATE notification_outbox SET failed_at = $2, last_error = $3 "
        "WHERE endpoint_id = $1 AND delivered_at IS NULL AND failed_at IS NULL",
        endpoint_id,
        now,
        reason,
    )
    return int(result.rsplit(" ", 1)[1])


async def list_deliveries(
    conn: Connection, endpoint_id: int, after: int, limit: int
) -> list[Delivery]:
    rows = await conn.fetch(
        f"SELECT {_DELIVERY_COLS} FROM notification_outbox WHERE endpoint_id = $1 AND id > $2 "
        "ORDER BY id LIMIT $3",
        endpoint_id,
        after,
        limit + 1,
    )
    return [msgspec.convert(dict(r), Delivery) for r in rows]


# --- the outbox ---------------------------------------------------------------------------

OutboundRow = tuple[int, UUID, str, dict[str, Any]]
"""site_id, event_id, event, payload"""


async def enqueue(conn: Connection, events: Sequence[OutboundRow], now: datetime) -> int:
    """One outbox row per event and active endpoint of its site that wants it; returns
    how many rows were written (none when the site has no endpoint)."""
    if not events:
        return 0
    sites = [e[0] for e in events]
    ids = [e[1] for e in events]
    kinds = [e[2] for e in events]
    # As JSON text: jsonb[] would depend on the connection's codecs.
    payloads = [msgspec.json.encode(e[3]).decode() for e in events]
    result: str = await conn.execute(
        "INSERT INTO notification_outbox (site_id, endpoint_id, event_id, event, payload, "
        "next_attempt_at, created_at) "
        "SELECT u.site_id, e.id, u.event_id, u.event, u.payload::jsonb, $5, $5 "
        "FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::text[]) "
        "AS u(site_id, event_id, event, payload) "
        "JOIN webhook_endpoints e ON e.site_id = u.site_id AND e.active "
        "AND u.event = ANY (e.events) "
        "ORDER BY e.id, u.event_id ON CONFLICT (endpoint_id, event_id) DO NOTHING",
        sites,
        ids,
        kinds,
        payloads,
        now,
    )
    return int(result.rsplit(" ", 1)[1])


async def claim_due(conn: Connection, now: datetime, limit: int) -> list[asyncpg.Record]:
    """Due deliveries of active endpoints, locked (SKIP LOCKED: other schedulers take others)."""
    return await conn.fetch(
        "SELECT o.id, o.site_id, o.endpoint_id, o.event_id, o.event, o.payload, o.attempts, "
        "e.url, e.secret_sealed FROM notification_outbox o "
        "JOIN webhook_endpoints e ON e.id = o.endpoint_id "
        "WHERE o.delivered_at IS NULL AND o.failed_at IS NULL AND o.next_attempt_at <= $1 "
        "AND e.active ORDER BY o.next_attempt_at, o.id LIMIT $2 FOR UPDATE OF o SKIP LOCKED",
        now,
        limit,
    )


AttemptRow = tuple[int, bool, int | None, str | None, datetime | None, bool]
"""id, delivered, HTTP status (or None), error (or None), next attempt (or None), given up"""


async def record_attempts(conn: Connection, rows: Sequence[AttemptRow], now: datetime) -> None:
    if not rows:
        return
    columns: list[list[Any]] = [list(c) for c in zip(*rows, strict=True)]
    await conn.execute(
        "UPDATE notification_outbox o SET attempts = o.attempts + 1, "
        "delivered_at = CASE WHEN u.delivered THEN $7::timestamptz END, "
        "failed_at = CASE WHEN u.given_up THEN $7::timestamptz END, "
        "last_status = u.status, last_error = u.error, "
        "next_attempt_at = coalesce(u.next_at, o.next_attempt_at) "
        "FROM unnest($1::bigint[], $2::boolean[], $3::integer[], $4::text[], "
        "$5::timestamptz[], $6::boolean[]) AS u(id, delivered, status, error, next_at, given_up) "
        "WHERE o.id = u.id",
        *columns,
        now,
    )

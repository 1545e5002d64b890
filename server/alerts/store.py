"""SQL for alerts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from server.alerts.models import Alert
from server.db import Connection
from server.live import hub as live

_COLS = (
    "id, site_id, kind, subject_type, subject_id, message, data, created_at,"
    " acknowledged_at, acknowledged_by"
)


async def raise_alert(
    conn: Connection,
    *,
    site_id: int,
    kind: str,
    subject_type: str,
    subject_id: int,
    message: str,
    data: Mapping[str, Any],
    event: Mapping[str, Any],
) -> bool:
    """Alert the site's supervisors once per (kind, subject); a new alert also goes on the
    live feed (as `event`) when the transaction commits. Returns whether it was new."""
    created = await conn.fetchval(
        "INSERT INTO alerts (site_id, kind, subject_type, subject_id, message, data)"
        " VALUES ($1, $2, $3, $4, $5, $6)"
        " ON CONFLICT (kind, subject_type, subject_id) DO NOTHING RETURNING id",
        site_id,
        kind,
        subject_type,
        subject_id,
        message,
        dict(data),
    )
    if created is not None:
        await live.publish(conn, {"type": kind, "site_id": site_id, **event})
    return created is not None


async def list_alerts(
    conn: Connection,
    visible: list[int] | None,
    site_id: int | None,
    unacknowledged: bool,
    after: int,
    limit: int,
) -> list[Alert]:
    rows = await conn.fetch(
        f"SELECT {_COLS} FROM alerts WHERE id > $1"
        " AND ($2::bigint[] IS NULL OR site_id = ANY($2))"
        " AND ($3::bigint IS NULL OR site_id = $3)"
        " AND (NOT $4 OR acknowledged_at IS NULL)"
        " ORDER BY id LIMIT $5",
        after,
        visible,
        site_id,
        unacknowledged,
        limit + 1,
    )
    return [msgspec.convert(dict(r), Alert) for r in rows]


async def get_alert(conn: Connection, alert_id: int) -> Alert | None:
    row = await conn.fetchrow(f"SELECT {_COLS} FROM alerts WHERE id = $1", alert_id)
    return msgspec.convert(dict(row), Alert) if row else None


async def acknowledge(conn: Connection, alert_id: int, user_id: int) -> Alert:
    row = await conn.fetchrow(
        "UPDATE alerts SET acknowledged_at = coalesce(acknowledged_at, now()),"
        " acknowledged_by = coalesce(acknowledged_by, $2) WHERE id = $1"
        f" RETURNING {_COLS}",
        alert_id,
        user_id,
    )
    assert row is not None
    return msgspec.convert(dict(row), Alert)

"""SQL for alarms."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from server.alarms.models import Alarm, AlarmStatus
from server.db import Connection

_COLS = (
    "id, site_id, device_id, zone_id, type, severity, status, count, first_at, last_at, "
    "cleared_at, acked_at, acked_by, created_at, updated_at"
)
# The more severe of two severities, in SQL (rules.more_severe in Python).
_RANKED = "ARRAY['info', 'warning', 'minor', 'major', 'critical']"


def _alarm(row: asyncpg.Record) -> Alarm:
    return msgspec.convert(dict(row), Alarm)


async def open_alarms(
    conn: Connection, site_ids: Sequence[int], device_ids: Sequence[str]
) -> list[asyncpg.Record]:
    """The open (not cleared) alarms of these devices."""
    return await conn.fetch(
        "SELECT a.id, a.site_id, a.device_id, a.type, a.severity, a.zone_id FROM alarms a "
        "JOIN unnest($1::bigint[], $2::text[]) AS k(site_id, device_id) "
        "ON a.site_id = k.site_id AND a.device_id = k.device_id WHERE a.cleared_at IS NULL",
        site_ids,
        device_ids,
    )


AlarmUpdateRow = tuple[int, int, datetime | None, str, datetime | None]
"""id, count increment, latest activation (or None), severity, cleared_at (or None)"""


async def update_open_alarms(conn: Connection, rows: Sequence[AlarmUpdateRow]) -> dict[int, str]:
    """Bump and/or clear open alarms; returns their new status by id.

    The status is computed here, not in Python: an acknowledgement may commit between
    our read and this write, and a clear must keep it (active_ack -> cleared_ack).
    """
    if not rows:
        return {}
    columns: list[list[Any]] = [list(c) for c in zip(*rows, strict=True)]
    updated = await conn.fetch(
        "UPDATE alarms a SET count = a.count + u.delta, "
        "last_at = greatest(a.last_at, u.last_at), "
        f"severity = CASE WHEN array_position({_RANKED}, u.severity) "
        f"  > array_position({_RANKED}, a.severity) THEN u.severity ELSE a.severity END, "
        "status = CASE WHEN u.cleared_at IS NULL THEN a.status "
        "  WHEN a.status = 'active_ack' THEN 'cleared_ack' ELSE 'cleared_unack' END, "
        "cleared_at = u.cleared_at, updated_at = now() "
        "FROM unnest($1::bigint[], $2::integer[], $3::timestamptz[], $4::text[], "
        "$5::timestamptz[]) AS u(id, delta, last_at, severity, cleared_at) "
        "WHERE a.id = u.id AND a.cleared_at IS NULL RETURNING a.id, a.status",
        *columns,
    )
    return {r["id"]: r["status"] for r in updated}


NewAlarmRow = tuple[
    int, str, int | None, str, str, str, int, datetime, datetime, datetime | None
]  # fmt: skip
"""site_id, device_id, zone_id, type, severity, status, count, first_at, last_at, cleared_at"""


async def insert_alarms(conn: Connection, rows: Sequence[NewAlarmRow]) -> list[int]:
    """Insert alarms; an open one that meets an open alarm of its device and type (the
    partial unique index) is folded into it. Returns the ids in the order of `rows`."""
    if not rows:
        return []
    columns: list[list[Any]] = [list(c) for c in zip(*rows, strict=True)]
    # RETURNING follows the order of the rows fed from unnest (a plain insert, no sort).
    inserted = await conn.fetch(
        "INSERT INTO alarms (site_id, device_id, zone_id, type, severity, status, count, "
        "first_at, last_at, cleared_at) "
        "SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[], "
        "$6::text[], $7::integer[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[]) "
        "ON CONFLICT (site_id, device_id, type) WHERE cleared_at IS NULL DO UPDATE SET "
        "count = alarms.count + excluded.count, "
        "last_at = greatest(alarms.last_at, excluded.last_at), "
        f"severity = CASE WHEN array_position({_RANKED}, excluded.severity) "
        f"  > array_position({_RANKED}, alarms.severity) "
        "  THEN excluded.severity ELSE alarms.severity END, "
        "updated_at = now() "
        "RETURNING id, site_id, device_id, type",
        *columns,
    )
    for row, new in zip(inserted, rows, strict=True):
        if (row["site_id"], row["device_id"], row["type"]) != (new[0], new[1], new[3]):
            raise RuntimeError("INSERT ... RETURNING came back out of order")
    return [r["id"] for r in inserted]


async def list_alarms(
    conn: Connection,
    site_ids: list[int] | None,
    statuses: Sequence[AlarmStatus] | None,
    after: int,
    limit: int,
) -> list[Alarm]:
    """Alarms of these sites (None: every site), optionally of these statuses."""
    rows = await conn.fetch(
        f"SELECT {_COLS} FROM alarms WHERE ($1::bigint[] IS NULL OR site_id = ANY($1)) "
        "AND ($2::text[] IS NULL OR status = ANY($2)) AND id > $3 ORDER BY id LIMIT $4",
        site_ids,
        list(statuses) if statuses else None,
        after,
        limit + 1,
    )
    return [_alarm(r) for r in rows]


async def get_alarm(conn: Connection, alarm_id: int) -> Alarm | None:
    row = await conn.fetchrow(f"SELECT {_COLS} FROM alarms WHERE id = $1", alarm_id)
    return _alarm(row) if row else None


async def ack_alarm(conn: Connection, alarm_id: int, user_id: int) -> Alarm | None:
    """Acknowledge; None when it was already acknowledged (or does not exist)."""
    row = await conn.fetchrow(
        "UPDATE alarms SET status = CASE WHEN cleared_at IS NULL THEN 'active_ack' "
        "ELSE 'cleared_ack' END, acked_at = now(), acked_by = $2, updated_at = now() "
        f"WHERE id = $1 AND acked_at IS NULL RETURNING {_COLS}",
        alarm_id,
        user_id,
    )
    return _alarm(row) if row else None

"""SQL for devices, their event inbox, state history and dead letters."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from server.db import Connection
from server.devices.kinds import DeviceKind
from server.devices.models import DeadLetter, Device, DeviceIn, DeviceState

_DEVICE_COLS = (
    "id, site_id, kind, name, zone_id, gateway_id, inactivity_timeout_s, state, state_reason, "
    "state_changed_at, last_seen_at, last_boot, last_seq, created_at, updated_at"
)

# --- the HTTP side -----------------------------------------------------------------------


async def device_kind(conn: Connection, site_id: int, device_id: str) -> DeviceKind | None:
    kind: DeviceKind | None = await conn.fetchval(
        "SELECT kind FROM devices WHERE site_id = $1 AND id = $2", site_id, device_id
    )
    return kind


async def zone_exists(conn: Connection, site_id: int, zone_id: int) -> bool:
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM zones WHERE site_id = $1 AND id = $2)", site_id, zone_id
    )
    return found


async def create_device(
    conn: Connection, site_id: int, data: DeviceIn, inactivity_timeout_s: int
) -> Device | None:
    """The new device, or None when the site already has a device with this id."""
    try:
        row = await conn.fetchrow(
            "INSERT INTO devices (site_id, id, kind, name, zone_id, gateway_id, "
            "inactivity_timeout_s) VALUES ($1, $2, $3, $4, $5, $6, $7) "
            f"RETURNING {_DEVICE_COLS}",
            site_id,
            data.id,
            data.kind,
            data.name,
            data.zone_id,
            data.gateway_id,
            inactivity_timeout_s,
        )
    except asyncpg.UniqueViolationError:
        return None
    return msgspec.convert(dict(row), Device)  # type: ignore[arg-type]


async def get_device(conn: Connection, site_id: int, device_id: str) -> Device | None:
    row = await conn.fetchrow(
        f"SELECT {_DEVICE_COLS} FROM devices WHERE site_id = $1 AND id = $2", site_id, device_id
    )
    return msgspec.convert(dict(row), Device) if row else None


async def list_devices(
    conn: Connection, site_id: int, state: DeviceState | None, after: str, limit: int
) -> list[Device]:
    rows = await conn.fetch(
        f"SELECT {_DEVICE_COLS} FROM devices WHERE site_id = $1 AND id > $2 "
        "AND ($3::text IS NULL OR state = $3) ORDER BY id LIMIT $4",
        site_id,
        after,
        state,
        limit + 1,
    )
    return [msgspec.convert(dict(r), Device) for r in rows]


def _dead_letter(row: asyncpg.Record) -> DeadLetter:
    raw: bytes = row["raw"]
    try:
        text: str | None = raw.decode()
    except UnicodeDecodeError:
        text = None
    return DeadLetter(
        id=row["id"],
        site_id=row["site_id"],
        topic=row["topic"],
        reason=row["reason"],
        detail=row["detail"],
        size=row["size"],
        raw=raw,
        text=text,
        received_at=row["received_at"],
    )


async def list_dead_letters(
    conn: Connection, site_ids: list[int] | None, reason: str | None, after: int, limit: int
) -> list[DeadLetter]:
    """Dead letters of these sites; site_ids None means all, those of no site included."""
    rows = await conn.fetch(
        "SELECT id, site_id, topic, raw, size, reason, detail, received_at FROM dead_letters "
        "WHERE ($1::bigint[] IS NULL OR site_id = ANY($1)) AND ($2::text IS NULL OR reason = $2) "
        "AND id > $3 ORDER BY id LIMIT $4",
        site_ids,
        reason,
        after,
        limit + 1,
    )
    return [_dead_letter(r) for r in rows]


# --- the ingest side (called by server.alarms.ingest inside the bridge's transaction) ----

_LOCK_COLS = (
    "d.site_id, d.id, d.kind, d.zone_id, d.gateway_id, d.state, d.state_reason, "
    "d.state_changed_at, d.last_seen_at, "
    "d.last_boot, d.last_seq, d.status_boot, d.status_seq, d.conditions::text AS conditions"
)


async def lock_devices_by_code(
    conn: Connection, codes: Sequence[str], device_ids: Sequence[str]
) -> list[asyncpg.Record]:
    """Lock the named devices (site code, device id), always in the same order.

    Every change to a device and its alarms happens under this row lock, so concurrent
    bridges serialise per device, and the fixed order keeps them from deadlocking.
    """
    return await conn.fetch(
        f"SELECT s.code, {_LOCK_COLS} "
        "FROM unnest($1::text[], $2::text[]) AS k(code, device_id) "
        "JOIN sites s ON s.code = k.code "
        "JOIN devices d ON d.site_id = s.id AND d.id = k.device_id "
        "ORDER BY d.site_id, d.id FOR UPDATE OF d",
        codes,
        device_ids,
    )


async def lock_devices(
    conn: Connection, site_ids: Sequence[int], device_ids: Sequence[str]
) -> list[asyncpg.Record]:
    """Lock devices by (site id, device id), in the same order as lock_devices_by_code."""
    return await conn.fetch(
        f"SELECT s.code, {_LOCK_COLS} "
        "FROM unnest($1::bigint[], $2::text[]) AS k(site_id, device_id) "
        "JOIN devices d ON d.site_id = k.site_id AND d.id = k.device_id "
        "JOIN sites s ON s.id = d.site_id "
        "ORDER BY d.site_id, d.id FOR UPDATE OF d",
        site_ids,
        device_ids,
    )


async def site_ids_by_code(conn: Connection, codes: Sequence[str]) -> dict[str, int]:
    rows = await conn.fetch("SELECT code, id FROM sites WHERE code = ANY($1::text[])", codes)
    return {r["code"]: r["id"] for r in rows}


async def silent_devices(conn: Connection, now: datetime, limit: int) -> list[tuple[int, str]]:
    """Devices silent past their timeout whose gateway (if any) is online; claimed with
    SKIP LOCKED so that several checkers, and the bridges, never wait on each other."""
    rows = await conn.fetch(
        "SELECT d.site_id, d.id FROM devices d "
        "LEFT JOIN devices g ON g.site_id = d.site_id AND g.id = d.gateway_id "
        "WHERE d.state <> 'offline' AND d.last_seen_at IS NOT NULL "
        "AND greatest(d.last_seen_at, coalesce(d.state_changed_at, d.last_seen_at)) "
        "    + make_interval(secs => d.inactivity_timeout_s) < $1 "
        "AND (d.gateway_id IS NULL OR g.state = 'online') "
        "ORDER BY d.site_id, d.id LIMIT $2 FOR UPDATE OF d SKIP LOCKED",
        now,
        limit,
    )
    return [(r["site_id"], r["id"]) for r in rows]


class InboxRow(msgspec.Struct, frozen=True):
    """One event for the inbox; `i` is the caller's index of it, `payload` the raw JSON."""

    i: int
    site: int
    dev: str
    id: UUID
    boot: int
    seq: int
    ts: datetime
    type: str
    state: str
    payload: msgspec.Raw
    recv: datetime


async def insert_events(conn: Connection, rows: Sequence[InboxRow]) -> set[int]:
    """Put events in the inbox (ON CONFLICT DO NOTHING); returns the `i` of the duplicates.

    The batch travels as one JSON document with each payload embedded as it arrived:
    one parameter to encode instead of ten arrays, and nothing to decode but the
    (usually empty) list of duplicates.
    """
    if not rows:
        return set()
    duplicates: list[int] | None = await conn.fetchval(
        "WITH e AS (SELECT * FROM json_to_recordset($1::text::json) AS e(i integer, "
        "site bigint, dev text, id uuid, boot bigint, seq bigint, ts timestamptz, type text, "
        "state text, payload jsonb, recv timestamptz)), "
        "ins AS (INSERT INTO device_events (site_id, device_id, event_id, boot, seq, ts, type, "
        "state, payload, received_at) "
        "SELECT site, dev, id, boot, seq, ts, type, state, payload, recv FROM e "
        "ON CONFLICT DO NOTHING RETURNING site_id, device_id, event_id) "
        "SELECT array_agg(e.i) FROM e WHERE NOT EXISTS (SELECT 1 FROM ins "
        "WHERE ins.site_id = e.site AND ins.device_id = e.dev AND ins.event_id = e.id)",
        msgspec.json.encode(rows).decode(),
    )
    return set(duplicates or ())


DeviceRow = tuple[
    int, str, datetime | None, int | None, int | None, str, str | None, datetime | None,
    int | None, int | None, str,
]  # fmt: skip
"""site_id, id, last_seen_at, last_boot, last_seq, state, state_reason, state_changed_at,
status_boot, status_seq, conditions (JSON text)"""


async def update_devices(conn: Connection, rows: Sequence[DeviceRow]) -> None:
    if not rows:
        return
    columns: list[list[Any]] = [list(c) for c in zip(*rows, strict=True)]
    await conn.execute(
        "UPDATE devices d SET last_seen_at = u.last_seen_at, last_boot = u.last_boot, "
        "last_seq = u.last_seq, state = u.state, state_reason = u.state_reason, "
        "state_changed_at = u.state_changed_at, status_boot = u.status_boot, "
        "status_seq = u.status_seq, conditions = u.conditions::jsonb, updated_at = now() "
        "FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::bigint[], $5::bigint[], "
        "$6::text[], $7::text[], $8::timestamptz[], $9::bigint[], $10::bigint[], $11::text[]) "
        "AS u(site_id, id, last_seen_at, last_boot, last_seq, state, state_reason, "
        "state_changed_at, status_boot, status_seq, conditions) "
        "WHERE d.site_id = u.site_id AND d.id = u.id",
        *columns,
    )


async def mark_children_unknown(
    conn: Connection,
    gateways: Sequence[tuple[int, str, datetime]],
    handled: Sequence[tuple[int, str]],
) -> list[tuple[int, str, datetime]]:
    """Online devices behind these gateways (site id, gateway id, when) become `unknown`:
    nobody can hear them, which is not the same as them being down. Devices in `handled`
    were already dealt with by the caller. Returns (site id, device id, when) changed."""
    if not gateways:
        return []
    g_sites, g_ids, g_ats = (list(c) for c in zip(*gateways, strict=True))
    h_sites = [s for s, _ in handled]
    h_ids = [i for _, i in handled]
    rows = await conn.fetch(
        "UPDATE devices d SET state = 'unknown', state_reason = 'gateway_offline', "
        "state_changed_at = g.at, updated_at = now() "
        "FROM unnest($1::bigint[], $2::text[], $3::timestamptz[]) AS g(site_id, gateway_id, at) "
        "WHERE d.site_id = g.site_id AND d.gateway_id = g.gateway_id AND d.state = 'online' "
        "AND NOT EXISTS (SELECT 1 FROM unnest($4::bigint[], $5::text[]) AS h(site_id, id) "
        "                WHERE h.site_id = d.site_id AND h.id = d.id) "
        "RETURNING d.site_id, d.id, g.at",
        g_sites,
        g_ids,
        g_ats,
        h_sites,
        h_ids,
    )
    return [(r["site_id"], r["id"], r["at"]) for r in rows]


StateChangeRow = tuple[int, str, str, str, int | None, int | None, datetime]
"""site_id, device_id, state, reason, boot, seq, at"""


async def record_state_changes(conn: Connection, rows: Sequence[StateChangeRow]) -> None:
    if not rows:
        return
    columns: list[list[Any]] = [list(c) for c in zip(*rows, strict=True)]
    await conn.execute(
        "INSERT INTO device_state_changes (site_id, device_id, state, reason, boot, seq, at) "
        "SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], "
        "$6::bigint[], $7::timestamptz[])",
        *columns,
    )


DeadLetterRow = tuple[int | None, str, bytes, int, str, str, datetime]
"""site_id, topic, raw (already cut), size, reason, detail, received_at"""


async def insert_dead_letters(conn: Connection, rows: Sequence[DeadLetterRow]) -> None:
    if not rows:
        return
    columns: list[list[Any]] = [list(c) for c in zip(*rows, strict=True)]
    await conn.execute(
        "INSERT INTO dead_letters (site_id, topic, raw, size, reason, detail, received_at) "
        "SELECT * FROM unnest($1::bigint[], $2::text[], $3::bytea[], $4::integer[], $5::text[], "
        "$6::text[], $7::timestamptz[])",
        *columns,
    )

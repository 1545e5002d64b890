"""SQL for incidents, their steps, alarms and timeline. Set-based: the MQTT bridge calls
into this with whole batches.

Locks, always in this order, so that bridges, API workers and schedulers never deadlock:
a transaction-scoped advisory lock per site (sorted) before any incident opens, joins or
resolves from an alarm; then incident rows FOR NO KEY UPDATE (which lets foreign-key
checks of the timeline and links through); then step rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from server.db import Connection
from server.incidents.models import Incident, IncidentAlarm, TimelineEntry

_ACTIVE = "('open', 'mitigating')"
_COLS = (
    "id, site_id, zone_id, kind, status, title, description, source, opened_by, opened_at, "
    "mitigating_at, resolved_at, resolved_by, closed_at, closed_by, updated_at"
)
_STEP_COLS = (
    "id, incident_id, key, position, role, text, ack_minutes, ack_due, chain, escalation_level, "
    "escalated_to, escalated_at, escalate_at, assignee_id, acked_at, acked_by, done_at, "
    "done_by, note, opens_ticket, ticket_category, ticket_id"
)


def incident_of(row: asyncpg.Record | dict[str, Any]) -> Incident:
    return msgspec.convert({f: row[f] for f in Incident.__struct_fields__}, Incident)


def to_json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


# --- locks and context ------------------------------------------------------------------


async def lock_sites(conn: Connection, site_ids: Sequence[int]) -> None:
    """Serialise incident work per site until the transaction ends (ids in sorted order)."""
    if site_ids:
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('estateops.incidents:' || s, 0)) "
            "FROM unnest($1::bigint[]) AS s",
            sorted(set(site_ids)),
        )


async def site_settings(conn: Connection, site_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT id, settings FROM sites WHERE id = ANY($1::bigint[])", list(site_ids)
    )
    return {r["id"]: r["settings"] if isinstance(r["settings"], dict) else {} for r in rows}


async def site_locale(conn: Connection, site_id: int) -> str | None:
    locale: str | None = await conn.fetchval("SELECT locale FROM sites WHERE id = $1", site_id)
    return locale


async def zone_on_site(conn: Connection, site_id: int, zone_id: int) -> bool:
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM zones WHERE site_id = $1 AND id = $2)", site_id, zone_id
    )
    return found


async def facts(conn: Connection, incident_ids: Sequence[int]) -> list[asyncpg.Record]:
    """Incidents with their site's and zone's names: what notices and payloads need."""
    return await conn.fetch(
        f"SELECT i.{_COLS.replace(', ', ', i.')}, s.code AS site_code, s.name AS site_name, "
        "s.locale AS site_locale, s.timezone AS site_timezone, z.name AS zone_name "
        "FROM incidents i JOIN sites s ON s.id = i.site_id "
        "LEFT JOIN zones z ON z.id = i.zone_id WHERE i.id = ANY($1::bigint[]) ORDER BY i.id",
        list(incident_ids),
    )


# --- opening and joining ----------------------------------------------------------------

NewIncidentRow = tuple[
    int, int | None, str, str | None, str, str, int | None, str, str, str | None, int | None
]
"""site_id, zone_id, kind, title (None: the kind's), description, source, opened_by,
title in zh-CN, title in en, place (a building) or None, zone naming the place or None"""


async def insert_incidents(
    conn: Connection, rows: Sequence[NewIncidentRow], now: datetime
) -> list[asyncpg.Record]:
    """Open incidents whose (site, zone, kind) has none open; returns those it opened.

    A generated title is the kind's title in the site's language and the place (the
    building given, else the zone's name): "漏水 · 水泵房", "Power outage · Block 2".
    """
    if not rows:
        return []
    columns: list[list[Any]] = [list(c) for c in zip(*rows, strict=True)]
    return await conn.fetch(
        "INSERT INTO incidents (site_id, zone_id, kind, title, description, source, opened_by, "
        "opened_at, updated_at) "
        "SELECT u.site_id, u.zone_id, u.kind, left(coalesce(u.title, "
        "  CASE WHEN s.locale = 'en' THEN u.title_en ELSE u.title_zh END "
        "  || coalesce(' · ' || coalesce(u.place, z.name), '')), 200), "
        "u.description, u.source, u.opened_by, $12, $12 "
        "FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], "
        "$6::text[], $7::bigint[], $8::text[], $9::text[], $10::text[], $11::bigint[]) "
        "AS u(site_id, zone_id, kind, title, description, source, opened_by, title_zh, "
        "title_en, place, place_zone) "
        "JOIN sites s ON s.id = u.site_id LEFT JOIN zones z ON z.id = u.place_zone "
        "ORDER BY u.site_id, u.kind, u.zone_id "
        f"ON CONFLICT (site_id, zone_id, kind) WHERE status IN {_ACTIVE} DO NOTHING "
        f"RETURNING {_COLS}",
        *columns,
        now,
    )


async def lock_open(
    conn: Connection, keys: Sequence[tuple[int, int | None, str]]
) -> list[asyncpg.Record]:
    """The open incidents of these (site, zone, kind) keys, locked; an incident resolved
    meanwhile is not among them (the lock re-reads it)."""
    if not keys:
        return []
    columns: list[list[Any]] = [list(c) for c in zip(*keys, strict=True)]
    return await conn.fetch(
        f"SELECT i.{_COLS.replace(', ', ', i.')} FROM incidents i "
        "JOIN unnest($1::bigint[], $2::bigint[], $3::text[]) AS k(site_id, zone_id, kind) "
        "ON i.site_id = k.site_id AND i.zone_id IS NOT DISTINCT FROM k.zone_id "
        f"AND i.kind = k.kind WHERE i.status IN {_ACTIVE} ORDER BY i.id FOR NO KEY UPDATE OF i",
        *columns,
    )


async def lock_incident(conn: Connection, incident_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_COLS} FROM incidents WHERE id = $1 FOR NO KEY UPDATE", incident_id
    )


async def lock_incidents(conn: Connection, incident_ids: Sequence[int]) -> list[int]:
    """Lock these incidents (the open ones), in id order; returns their ids."""
    rows = await conn.fetch(
        f"SELECT id FROM incidents WHERE id = ANY($1::bigint[]) AND status IN {_ACTIVE} "
        "ORDER BY id FOR NO KEY UPDATE",
        sorted(set(incident_ids)),
    )
    return [r["id"] for r in rows]


StepRow = tuple[
    int, int, str, str, str, int, datetime, str, datetime | None, int | None, bool, str | None
]
"""incident_id, position, key, role, text JSON, ack_minutes, ack_due, chain (comma-joined),
escalate_at, assignee_id, opens_ticket, ticket_category"""


async def insert_steps(conn: Connection, rows: Sequence[StepRow]) -> list[asyncpg.Record]:
    if not rows:
        return []
    columns: list[list[Any]] = [list(c) for c in zip(*rows, strict=True)]
    return await conn.fetch(
        "INSERT INTO incident_steps (incident_id, position, key, role, text, ack_minutes, "
        "ack_due, chain, escalate_at, assignee_id, opens_ticket, ticket_category) "
        "SELECT u.incident_id, u.position, u.key, u.role, u.text::jsonb, u.ack_minutes, "
        "u.ack_due, string_to_array(u.chain, ','), u.escalate_at, u.assignee_id, "
        "u.opens_ticket, u.ticket_category "
        "FROM unnest($1::bigint[], $2::smallint[], $3::text[], $4::text[], $5::text[], "
        "$6::integer[], $7::timestamptz[], $8::text[], $9::timestamptz[], $10::bigint[], "
        "$11::boolean[], $12::text[]) AS u(incident_id, position, key, role, text, ack_minutes, "
        "ack_due, chain, escalate_at, assignee_id, opens_ticket, ticket_category) "
        "RETURNING id, incident_id, key, position, role, text, opens_ticket, ticket_category",
        *columns,
    )


async def set_step_tickets(conn: Connection, rows: Sequence[tuple[int, int, int | None]]) -> None:
    """step id, ticket id, the ticket's assignee (the step's assignee when it has none)."""
    if not rows:
        return
    columns: list[list[Any]] = [list(c) for c in zip(*rows, strict=True)]
    await conn.execute(
        "UPDATE incident_steps s SET ticket_id = u.ticket_id, "
        "assignee_id = coalesce(s.assignee_id, u.assignee_id) "
        "FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS u(id, ticket_id, assignee_id) "
        "WHERE s.id = u.id",
        *columns,
    )


async def ticket_assignee(conn: Connection, ticket_id: int) -> int | None:
    assignee: int | None = await conn.fetchval(
        "SELECT assignee_id FROM tickets WHERE id = $1", ticket_id
    )
    return assignee


async def link_alarms(
    conn: Connection, links: Sequence[tuple[int, int]], now: datetime
) -> list[tuple[int, int]]:
    """Link (incident, alarm) pairs; an alarm already linked stays where it is. Returns
    the links made."""
    if not links:
        return []
    incidents, alarms = (list(c) for c in zip(*links, strict=True))
    rows = await conn.fetch(
        "INSERT INTO incident_alarms (incident_id, alarm_id, linked_at) "
        "SELECT u.incident_id, u.alarm_id, $3 FROM unnest($1::bigint[], $2::bigint[]) "
        "AS u(incident_id, alarm_id) JOIN alarms a ON a.id = u.alarm_id "
        "ORDER BY u.alarm_id ON CONFLICT DO NOTHING RETURNING incident_id, alarm_id",
        incidents,
        alarms,
        now,
    )
    return [(r["incident_id"], r["alarm_id"]) for r in rows]


TimelineRow = tuple[int, datetime, int | None, str, str, str | None, str, dict[str, Any]]
"""incident_id, at, actor_id (None: system), actor_role, action, step_key, note, data"""


async def append_timeline(conn: Connection, rows: Sequence[TimelineRow]) -> None:
    if not rows:
        return
    columns: list[list[Any]] = [list(c) for c in zip(*rows, strict=True)]
    columns[7] = [to_json(d) for d in columns[7]]
    await conn.execute(
        "INSERT INTO incident_timeline (incident_id, at, actor_id, actor_role, action, "
        "step_key, note, data) SELECT u.incident_id, u.at, u.actor_id, u.actor_role, u.action, "
        "u.step_key, u.note, u.data::jsonb FROM unnest($1::bigint[], $2::timestamptz[], "
        "$3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[]) "
        "AS u(incident_id, at, actor_id, actor_role, action, step_key, note, data)",
        *columns,
    )


# --- outage grouping and offline gateways ------------------------------------------------


async def open_outages(conn: Connection, site_ids: Sequence[int]) -> dict[int, int]:
    """The open power-outage incident of each of these sites that has one."""
    rows = await conn.fetch(
        "SELECT id, site_id FROM incidents WHERE site_id = ANY($1::bigint[]) "
        f"AND zone_id IS NULL AND kind = 'power_outage' AND status IN {_ACTIVE}",
        list(site_ids),
    )
    return {r["site_id"]: r["id"] for r in rows}


async def recent_offline(
    conn: Connection, site_ids: Sequence[int], since: datetime
) -> list[asyncpg.Record]:
    """Open offline alarms of these sites since `since`, not yet in an incident, with the
    building of their zone."""
    return await conn.fetch(
        "SELECT a.id AS alarm_id, a.site_id, a.device_id, a.first_at AS at, z.building "
        "FROM alarms a LEFT JOIN zones z ON z.id = a.zone_id "
        "WHERE a.site_id = ANY($1::bigint[]) AND a.type = 'device_offline' "
        "AND a.cleared_at IS NULL AND a.first_at >= $2 "
        "AND NOT EXISTS (SELECT 1 FROM incident_alarms l WHERE l.alarm_id = a.id)",
        list(site_ids),
        since,
    )


async def silent_gateways(
    conn: Connection, now: datetime, default_window_s: float, limit: int
) -> list[asyncpg.Record]:
    """Gateways offline for longer than their site's outage window whose alarm is in no
    incident yet (claimed with SKIP LOCKED)."""
    return await conn.fetch(
        "SELECT a.id AS alarm_id, a.site_id, a.zone_id, a.device_id FROM alarms a "
        "JOIN devices d ON d.site_id = a.site_id AND d.id = a.device_id AND d.kind = 'gateway' "
        "JOIN sites s ON s.id = a.site_id "
        "WHERE a.type = 'device_offline' AND a.cleared_at IS NULL "
        "AND a.first_at <= $1::timestamptz - make_interval(secs => coalesce("
        "  (s.settings #>> '{incidents,outage_window_s}')::double precision, $2)) "
        "AND NOT EXISTS (SELECT 1 FROM incident_alarms l WHERE l.alarm_id = a.id) "
        "ORDER BY a.first_at LIMIT $3 FOR UPDATE OF a SKIP LOCKED",
        now,
        default_window_s,
        limit,
    )


# --- clears and resolution ---------------------------------------------------------------


async def active_links(conn: Connection, alarm_ids: Sequence[int]) -> list[asyncpg.Record]:
    """The open incidents these alarms belong to: (incident_id, alarm_id)."""
    return await conn.fetch(
        "SELECT l.incident_id, l.alarm_id FROM incident_alarms l "
        "JOIN incidents i ON i.id = l.incident_id "
        f"WHERE l.alarm_id = ANY($1::bigint[]) AND i.status IN {_ACTIVE}",
        list(alarm_ids),
    )


async def resolve_if_done(
    conn: Connection, incident_ids: Sequence[int], now: datetime
) -> list[asyncpg.Record]:
    """Resolve those of these (locked) incidents whose alarms have all cleared and whose
    steps are all done; returns the incidents resolved."""
    if not incident_ids:
        return []
    return await conn.fetch(
        "UPDATE incidents i SET status = 'resolved', resolved_at = $2, updated_at = $2 "
        f"WHERE i.id = ANY($1::bigint[]) AND i.status IN {_ACTIVE} "
        "AND NOT EXISTS (SELECT 1 FROM incident_alarms l JOIN alarms a ON a.id = l.alarm_id "
        "  WHERE l.incident_id = i.id AND a.cleared_at IS NULL) "
        "AND NOT EXISTS (SELECT 1 FROM incident_steps s "
        "  WHERE s.incident_id = i.id AND s.done_at IS NULL) "
        f"RETURNING {_COLS}",
        list(incident_ids),
        now,
    )


async def resolve(
    conn: Connection, incident_id: int, user_id: int, now: datetime
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "UPDATE incidents SET status = 'resolved', resolved_at = $3, resolved_by = $2, "
        f"updated_at = $3 WHERE id = $1 AND status IN {_ACTIVE} RETURNING {_COLS}",
        incident_id,
        user_id,
        now,
    )


async def stop_escalations(conn: Connection, incident_ids: Sequence[int]) -> None:
    if incident_ids:
        await conn.execute(
            "UPDATE incident_steps SET escalate_at = NULL "
            "WHERE incident_id = ANY($1::bigint[]) AND escalate_at IS NOT NULL",
            list(incident_ids),
        )


async def close(
    conn: Connection, incident_id: int, user_id: int, now: datetime
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "UPDATE incidents SET status = 'closed', closed_at = $3, closed_by = $2, "
        f"updated_at = $3 WHERE id = $1 AND status = 'resolved' RETURNING {_COLS}",
        incident_id,
        user_id,
        now,
    )


async def mark_mitigating(conn: Connection, incident_id: int, now: datetime) -> bool:
    done: str = await conn.execute(
        "UPDATE incidents SET status = 'mitigating', mitigating_at = $2, updated_at = $2 "
        "WHERE id = $1 AND status = 'open'",
        incident_id,
        now,
    )
    return done.endswith(" 1")


async def touch(conn: Connection, incident_ids: Sequence[int], now: datetime) -> None:
    if incident_ids:
        await conn.execute(
            "UPDATE incidents SET updated_at = $2 WHERE id = ANY($1::bigint[])",
            list(incident_ids),
            now,
        )


# --- steps -------------------------------------------------------------------------------


async def get_step(conn: Connection, incident_id: int, key: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_STEP_COLS} FROM incident_steps WHERE incident_id = $1 AND key = $2",
        incident_id,
        key,
    )


async def ack_step(conn: Connection, step_id: int, user_id: int, note: str, now: datetime) -> bool:
    """Acknowledge (stops its escalation); False when it already was."""
    done: str = await conn.execute(
        "UPDATE incident_steps SET acked_at = $3, acked_by = $2, escalate_at = NULL, "
        "note = CASE WHEN $4 = '' THEN note ELSE $4 END WHERE id = $1 AND acked_at IS NULL",
        step_id,
        user_id,
        now,
        note,
    )
    return done.endswith(" 1")


async def complete_step(
    conn: Connection, step_id: int, user_id: int, note: str, now: datetime
) -> bool:
    """Mark done (and acknowledged, if it was not); False when it already was done."""
    done: str = await conn.execute(
        "UPDATE incident_steps SET done_at = $3, done_by = $2, "
        "acked_at = coalesce(acked_at, $3), acked_by = coalesce(acked_by, $2), "
        "escalate_at = NULL, note = CASE WHEN $4 = '' THEN note ELSE $4 END "
        "WHERE id = $1 AND done_at IS NULL",
        step_id,
        user_id,
        now,
        note,
    )
    return done.endswith(" 1")


async def claim_escalations(conn: Connection, now: datetime, limit: int) -> list[asyncpg.Record]:
    """Steps due to escalate, locked (SKIP LOCKED: other schedulers take others)."""
    return await conn.fetch(
        "SELECT s.id, s.incident_id, s.key, s.role, s.text, s.ack_minutes, s.ack_due, s.chain, "
        "s.escalation_level, i.site_id, i.status FROM incident_steps s "
        "JOIN incidents i ON i.id = s.incident_id "
        "WHERE s.escalate_at <= $1 ORDER BY s.escalate_at, s.id LIMIT $2 "
        "FOR UPDATE OF s SKIP LOCKED",
        now,
        limit,
    )


EscalationRow = tuple[int, int, str, datetime | None]
"""step id, new level, role now asked, next escalation (None: end of the chain)"""


async def record_escalations(
    conn: Connection, rows: Sequence[EscalationRow], now: datetime
) -> None:
    if not rows:
        return
    columns: list[list[Any]] = [list(c) for c in zip(*rows, strict=True)]
    await conn.execute(
        "UPDATE incident_steps s SET escalation_level = u.level, escalated_to = u.role, "
        "escalated_at = $5, escalate_at = u.next_at FROM unnest($1::bigint[], $2::smallint[], "
        "$3::text[], $4::timestamptz[]) AS u(id, level, role, next_at) WHERE s.id = u.id",
        *columns,
        now,
    )


async def contacts(
    conn: Connection, site_ids: Sequence[int], roles: Sequence[str]
) -> list[asyncpg.Record]:
    """Active staff of these sites in these roles, with their phone numbers (for paging)."""
    return await conn.fetch(
        "SELECT m.site_id, u.id, u.role, u.full_name, u.phone FROM site_members m "
        "JOIN users u ON u.id = m.user_id WHERE m.site_id = ANY($1::bigint[]) "
        "AND u.role = ANY($2::text[]) AND u.active ORDER BY u.id",
        list(site_ids),
        list(roles),
    )


AlertRow = tuple[int, str, int, str, dict[str, Any]]
"""site_id, kind, step id (the subject), message, data"""


async def insert_alerts(conn: Connection, rows: Sequence[AlertRow]) -> None:
    if not rows:
        return
    columns: list[list[Any]] = [list(c) for c in zip(*rows, strict=True)]
    columns[4] = [to_json(d) for d in columns[4]]
    await conn.execute(
        "INSERT INTO alerts (site_id, kind, subject_type, subject_id, message, data) "
        "SELECT u.site_id, u.kind, 'incident_step', u.step_id, u.message, u.data::jsonb "
        "FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[]) "
        "AS u(site_id, kind, step_id, message, data) "
        "ON CONFLICT (kind, subject_type, subject_id) DO NOTHING",
        *columns,
    )


# --- reading -----------------------------------------------------------------------------


async def get_incident(conn: Connection, incident_id: int) -> Incident | None:
    row = await conn.fetchrow(f"SELECT {_COLS} FROM incidents WHERE id = $1", incident_id)
    return incident_of(row) if row else None


async def list_incidents(
    conn: Connection,
    visible: list[int] | None,
    site_id: int | None,
    statuses: Sequence[str] | None,
    after: int,
    limit: int,
) -> list[Incident]:
    rows = await conn.fetch(
        f"SELECT {_COLS} FROM incidents WHERE id > $1 "
        "AND ($2::bigint[] IS NULL OR site_id = ANY($2)) "
        "AND ($3::bigint IS NULL OR site_id = $3) "
        "AND ($4::text[] IS NULL OR status = ANY($4)) ORDER BY id LIMIT $5",
        after,
        visible,
        site_id,
        list(statuses) if statuses else None,
        limit + 1,
    )
    return [incident_of(r) for r in rows]


async def steps(conn: Connection, incident_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {_STEP_COLS} FROM incident_steps WHERE incident_id = $1 ORDER BY position",
        incident_id,
    )


async def alarms(conn: Connection, incident_id: int) -> list[IncidentAlarm]:
    rows = await conn.fetch(
        "SELECT a.id AS alarm_id, a.device_id, a.zone_id, a.type, a.severity, a.status, "
        "a.count, a.first_at, a.last_at, a.cleared_at, l.linked_at FROM incident_alarms l "
        "JOIN alarms a ON a.id = l.alarm_id WHERE l.incident_id = $1 ORDER BY a.id",
        incident_id,
    )
    return [msgspec.convert(dict(r), IncidentAlarm) for r in rows]


async def timeline(conn: Connection, incident_id: int) -> list[TimelineEntry]:
    rows = await conn.fetch(
        "SELECT id, at, action, actor_id, actor_role, step_key, note, data "
        "FROM incident_timeline WHERE incident_id = $1 ORDER BY id",
        incident_id,
    )
    return [
        TimelineEntry(
            id=r["id"],
            at=r["at"],
            action=r["action"],
            actor_id=r["actor_id"],
            actor_role=r["actor_role"],
            step_key=r["step_key"],
            note=r["note"],
            data=r["data"] if isinstance(r["data"], dict) else msgspec.json.decode(r["data"]),
        )
        for r in rows
    ]

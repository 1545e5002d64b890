"""SQL for tickets, their events, holds, attachments, SLA policies and site settings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg
import msgspec

from server.alerts import store as alerts
from server.db import Connection
from server.tickets.models import (
    Attachment,
    SlaPolicy,
    SlaPolicyIn,
    Ticket,
    TicketEvent,
    TicketSettings,
)
from server.tickets.sla import Hold

OPEN_STATUSES = ("new", "assigned", "in_progress", "on_hold", "reopened")
# Work on someone's plate: what "fewest open tickets" counts.
ASSIGNED_OPEN = ("assigned", "in_progress", "on_hold", "reopened")

# `breached` also covers a deadline that has passed before the scheduler flagged it (a
# deadline is NULL while on hold: not breached by that clock).
_TICKET_COLS = """
t.id, t.site_id, t.kind, t.category, t.priority, t.title, t.description, t.unit_id,
t.zone_id, t.channel, t.reporter_id, t.reporter_name, t.reporter_phone, t.created_by,
t.assignee_id, t.status, t.hold_reason, t.hold_until, t.reopen_count, t.respond_minutes,
t.resolve_minutes, t.response_due, t.resolve_due, t.responded_at, t.resolved_at, t.closed_at,
t.cancelled_at, t.response_breached, t.resolve_breached, t.is_repeat AS repeat, t.repeat_of,
t.attested_on_site, t.rating, t.rating_comment, t.satisfaction, t.followed_up_at,
t.incident_id, t.created_at, t.updated_at, t.hold_resume_status,
(t.response_breached OR t.resolve_breached OR (t.status NOT IN ('closed', 'cancelled') AND (
    (t.responded_at IS NULL AND coalesce(t.response_due < now(), false))
    OR (t.resolved_at IS NULL AND coalesce(t.resolve_due < now(), false))))) AS breached
"""


@dataclass(frozen=True, slots=True)
class TicketRow:
    """A ticket as stored, with the bookkeeping the wire type leaves out."""

    ticket: Ticket
    hold_resume_status: str | None


def _ticket_row(row: asyncpg.Record) -> TicketRow:
    data = dict(row)
    resume = data.pop("hold_resume_status")
    return TicketRow(msgspec.convert(data, Ticket), resume)


# --- sites: settings, timezone, membership --------------------------------------------


async def site_timezone(conn: Connection, site_id: int) -> str | None:
    tz: str | None = await conn.fetchval("SELECT timezone FROM sites WHERE id = $1", site_id)
    return tz


async def ticket_settings(conn: Connection, site_id: int) -> TicketSettings:
    raw = await conn.fetchval(
        "SELECT coalesce(settings->'tickets', '{}'::jsonb) FROM sites WHERE id = $1", site_id
    )
    return msgspec.convert(raw or {}, TicketSettings)


async def put_ticket_settings(conn: Connection, site_id: int, data: TicketSettings) -> None:
    # Only the "tickets" key: other domains keep their own settings in the same column.
    await conn.execute(
        "UPDATE sites SET settings = jsonb_set(settings, '{tickets}', $2::jsonb) WHERE id = $1",
        site_id,
        msgspec.to_builtins(data),
    )


async def unit_site(conn: Connection, unit_id: int) -> int | None:
    site: int | None = await conn.fetchval("SELECT site_id FROM units WHERE id = $1", unit_id)
    return site


async def place_on_site(
    conn: Connection, site_id: int, unit_id: int | None, zone_id: int | None
) -> bool:
    """Whether the unit (or zone) given belongs to the site; True when neither is given."""
    if unit_id is not None:
        return bool(
            await conn.fetchval(
                "SELECT true FROM units WHERE id = $1 AND site_id = $2", unit_id, site_id
            )
        )
    if zone_id is not None:
        return bool(
            await conn.fetchval(
                "SELECT true FROM zones WHERE id = $1 AND site_id = $2", zone_id, site_id
            )
        )
    return True


async def user_of_site(conn: Connection, user_id: int, site_id: int) -> bool:
    """An active user who lives on the site (resident) or works there (staff)."""
    found = await conn.fetchval(
        "SELECT true FROM users u LEFT JOIN units un ON un.id = u.unit_id"
        " WHERE u.id = $1 AND u.active AND (un.site_id = $2 OR EXISTS ("
        "   SELECT 1 FROM site_members m WHERE m.user_id = u.id AND m.site_id = $2))",
        user_id,
        site_id,
    )
    return bool(found)


@dataclass(frozen=True, slots=True)
class StaffRecord:
    id: int
    role: str
    active: bool
    skills: list[str]
    qualifications: list[dict[str, Any]]


async def staff_on_site(conn: Connection, user_id: int, site_id: int) -> StaffRecord | None:
    row = await conn.fetchrow(
        "SELECT u.id, u.role, u.active, u.skills, u.qualifications FROM users u"
        " JOIN site_members m ON m.user_id = u.id AND m.site_id = $2"
        " WHERE u.id = $1 AND u.role <> 'resident'",
        user_id,
        site_id,
    )
    if row is None:
        return None
    return StaffRecord(
        id=row["id"],
        role=row["role"],
        active=row["active"],
        skills=list(row["skills"]),
        qualifications=list(row["qualifications"]),
    )


# --- SLA policies ---------------------------------------------------------------------


async def policy_minutes(
    conn: Connection, site_id: int, priority: str, category: str
) -> tuple[int, int] | None:
    """The site's (respond, resolve) minutes for this priority, the category's row first."""
    row = await conn.fetchrow(
        "SELECT respond_minutes, resolve_minutes FROM sla_policies"
        " WHERE site_id = $1 AND priority = $2 AND (category = $3 OR category IS NULL)"
        " ORDER BY category IS NULL LIMIT 1",
        site_id,
        priority,
        category,
    )
    return (row["respond_minutes"], row["resolve_minutes"]) if row else None


async def site_policies(conn: Connection, site_id: int) -> list[SlaPolicy]:
    rows = await conn.fetch(
        "SELECT priority, category, respond_minutes, resolve_minutes, 'site' AS source"
        " FROM sla_policies WHERE site_id = $1",
        site_id,
    )
    return [msgspec.convert(dict(r), SlaPolicy) for r in rows]


async def replace_policies(
    conn: Connection, site_id: int, policies: Sequence[SlaPolicyIn], user_id: int
) -> None:
    await conn.execute("DELETE FROM sla_policies WHERE site_id = $1", site_id)
    await conn.executemany(
        "INSERT INTO sla_policies (site_id, priority, category, respond_minutes,"
        " resolve_minutes, updated_by) VALUES ($1, $2, $3, $4, $5, $6)",
        [
            (site_id, p.priority, p.category, p.respond_minutes, p.resolve_minutes, user_id)
            for p in policies
        ],
    )


# --- tickets --------------------------------------------------------------------------


async def insert_ticket(conn: Connection, values: Mapping[str, Any]) -> int:
    """Insert a ticket from column -> value (column names are ours, values are bound)."""
    cols = list(values)
    placeholders = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
    ticket_id: int = await conn.fetchval(
        f"INSERT INTO tickets ({', '.join(cols)}) VALUES ({placeholders}) RETURNING id",
        *values.values(),
    )
    return ticket_id


async def update_ticket(conn: Connection, ticket_id: int, changes: Mapping[str, Any]) -> None:
    """Set these columns (names are ours, values are bound) and updated_at."""
    if not changes:
        return
    cols = list(changes)
    sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(cols, start=2))
    await conn.execute(
        f"UPDATE tickets SET {sets}, updated_at = now() WHERE id = $1",
        ticket_id,
        *changes.values(),
    )


async def get_ticket(conn: Connection, ticket_id: int, *, lock: bool = False) -> TicketRow | None:
    row = await conn.fetchrow(
        f"SELECT {_TICKET_COLS} FROM tickets t WHERE t.id = $1"
        + (" FOR UPDATE OF t" if lock else ""),
        ticket_id,
    )
    return _ticket_row(row) if row else None


@dataclass(frozen=True, slots=True)
class TicketFilter:
    visible: list[int] | None  # sites the caller sees; None: all
    reporter_id: int | None  # residents: their own tickets only
    site_id: int | None = None
    status: str | None = None
    kind: str | None = None
    category: str | None = None
    priority: str | None = None
    assignee_id: int | None = None
    breached: bool | None = None
    repeat: bool | None = None
    incident_id: int | None = None


async def list_tickets(conn: Connection, f: TicketFilter, after: int, limit: int) -> list[Ticket]:
    rows = await conn.fetch(
        f"SELECT * FROM (SELECT {_TICKET_COLS} FROM tickets t WHERE t.id > $1"
        " AND ($2::bigint[] IS NULL OR t.site_id = ANY($2))"
        " AND ($3::bigint IS NULL OR t.reporter_id = $3)"
        " AND ($4::bigint IS NULL OR t.site_id = $4)"
        " AND ($5::text IS NULL OR t.status = $5)"
        " AND ($6::text IS NULL OR t.kind = $6)"
        " AND ($7::text IS NULL OR t.category = $7)"
        " AND ($8::text IS NULL OR t.priority = $8)"
        " AND ($9::bigint IS NULL OR t.assignee_id = $9)"
        " AND ($10::boolean IS NULL OR t.is_repeat = $10)"
        " AND ($11::bigint IS NULL OR t.incident_id = $11)) x"
        " WHERE ($12::boolean IS NULL OR x.breached = $12)"
        " ORDER BY x.id LIMIT $13",
        after,
        f.visible,
        f.reporter_id,
        f.site_id,
        f.status,
        f.kind,
        f.category,
        f.priority,
        f.assignee_id,
        f.repeat,
        f.incident_id,
        f.breached,
        limit + 1,
    )
    return [_ticket_row(r).ticket for r in rows]


async def earlier_at_place(
    conn: Connection,
    site_id: int,
    category: str,
    unit_id: int | None,
    zone_id: int | None,
    since: datetime,
) -> int | None:
    """The latest ticket of the same category at this unit (or zone) since ``since``."""
    if unit_id is None and zone_id is None:
        return None
    found: int | None = await conn.fetchval(
        "SELECT id FROM tickets WHERE site_id = $1 AND category = $2"
        " AND (unit_id = $3 OR zone_id = $4) AND created_at >= $5 AND status <> 'cancelled'"
        " ORDER BY created_at DESC, id DESC LIMIT 1",
        site_id,
        category,
        unit_id,
        zone_id,
        since,
    )
    return found


async def dispatch_lock(conn: Connection, site_id: int) -> None:
    """Serialise auto-assignment per site, so two new tickets see each other's load."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('estateops.tickets.dispatch', $1))",
        site_id,
    )


async def dispatch_candidate(
    conn: Connection,
    site_id: int,
    roles: Sequence[str],
    skill: str,
    qualification: str | None,
    today: date,
) -> int | None:
    """The site's active staff of these roles with the skill (and a qualification valid on
    ``today`` where one is needed) who has the fewest open tickets; lowest id on a tie."""
    found: int | None = await conn.fetchval(
        "SELECT u.id FROM users u JOIN site_members m ON m.user_id = u.id AND m.site_id = $1"
        " WHERE u.active AND u.role = ANY($2::text[]) AND $3 = ANY(u.skills)"
        " AND ($4::text IS NULL OR EXISTS ("
        "   SELECT 1 FROM jsonb_array_elements(u.qualifications) q"
        "   WHERE q->>'kind' = $4 AND (q->>'expires_on')::date >= $5))"
        " ORDER BY (SELECT count(*) FROM tickets t WHERE t.assignee_id = u.id"
        "           AND t.status = ANY($6::text[])), u.id"
        " LIMIT 1",
        site_id,
        list(roles),
        skill,
        qualification,
        today,
        list(ASSIGNED_OPEN),
    )
    return found


# --- holds ----------------------------------------------------------------------------


async def holds(conn: Connection, ticket_id: int) -> list[Hold]:
    rows = await conn.fetch(
        "SELECT started_at, ended_at FROM ticket_holds WHERE ticket_id = $1 ORDER BY started_at",
        ticket_id,
    )
    return [(r["started_at"], r["ended_at"]) for r in rows]


async def open_hold(
    conn: Connection,
    ticket_id: int,
    started_at: datetime,
    *,
    kind: str = "hold",
    reason: str = "",
    until: datetime | None = None,
    ended_at: datetime | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO ticket_holds (ticket_id, kind, reason, started_at, ended_at, until)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        ticket_id,
        kind,
        reason,
        started_at,
        ended_at,
        until,
    )


async def end_hold(conn: Connection, ticket_id: int, at: datetime) -> None:
    await conn.execute(
        "UPDATE ticket_holds SET ended_at = greatest($2, started_at)"
        " WHERE ticket_id = $1 AND ended_at IS NULL",
        ticket_id,
        at,
    )


# --- events and attachments -----------------------------------------------------------


async def append_event(
    conn: Connection,
    ticket_id: int,
    *,
    actor_id: int | None,
    actor_role: str,
    action: str,
    from_status: str | None,
    to_status: str,
    note: str,
    data: Mapping[str, Any],
    at: datetime,
) -> int:
    event_id: int = await conn.fetchval(
        "INSERT INTO ticket_events (ticket_id, actor_id, actor_role, action, from_status,"
        " to_status, note, data, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        ticket_id,
        actor_id,
        actor_role,
        action,
        from_status,
        to_status,
        note,
        dict(data),
        at,
    )
    return event_id


_EVENT_SELECT = """
SELECT e.id, e.ticket_id, e.action, e.actor_id, e.actor_role, e.from_status, e.to_status,
       e.note, e.data, e.at,
       coalesce((SELECT array_agg(a.id ORDER BY a.id) FROM ticket_attachments a
                 WHERE a.event_id = e.id), '{}') AS attachment_ids
FROM ticket_events e
"""


async def get_event(conn: Connection, event_id: int) -> TicketEvent:
    row = await conn.fetchrow(_EVENT_SELECT + " WHERE e.id = $1", event_id)
    assert row is not None
    return msgspec.convert(dict(row), TicketEvent)


async def list_events(
    conn: Connection, ticket_id: int, after: int, limit: int
) -> list[TicketEvent]:
    rows = await conn.fetch(
        _EVENT_SELECT + " WHERE e.ticket_id = $1 AND e.id > $2 ORDER BY e.id LIMIT $3",
        ticket_id,
        after,
        limit + 1,
    )
    return [msgspec.convert(dict(r), TicketEvent) for r in rows]


_ATTACHMENT_COLS = (
    "id, ticket_id, event_id, content_type, size, original_name, sha256, uploaded_by, created_at"
)


async def add_attachment(
    conn: Connection,
    *,
    ticket_id: int,
    event_id: int,
    sha256: str,
    content_type: str,
    size: int,
    original_name: str,
    uploaded_by: int,
) -> int:
    attachment_id: int = await conn.fetchval(
        "INSERT INTO ticket_attachments (ticket_id, event_id, sha256, content_type, size,"
        " original_name, uploaded_by) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        ticket_id,
        event_id,
        sha256,
        content_type,
        size,
        original_name,
        uploaded_by,
    )
    return attachment_id


async def attachments(conn: Connection, ticket_id: int) -> list[Attachment]:
    rows = await conn.fetch(
        f"SELECT {_ATTACHMENT_COLS} FROM ticket_attachments WHERE ticket_id = $1 ORDER BY id",
        ticket_id,
    )
    return [msgspec.convert(dict(r), Attachment) for r in rows]


async def get_attachment(conn: Connection, ticket_id: int, attachment_id: int) -> Attachment | None:
    row = await conn.fetchrow(
        f"SELECT {_ATTACHMENT_COLS} FROM ticket_attachments WHERE id = $1 AND ticket_id = $2",
        attachment_id,
        ticket_id,
    )
    return msgspec.convert(dict(row), Attachment) if row else None


# --- the scheduler's claims -----------------------------------------------------------


async def claim_overdue(conn: Connection, now: datetime, batch: int) -> list[asyncpg.Record]:
    """Open tickets whose response or resolution deadline passed and is not yet flagged."""
    return await conn.fetch(
        "SELECT t.id FROM tickets t WHERE t.status NOT IN ('closed', 'cancelled') AND ("
        " (NOT t.response_breached AND t.responded_at IS NULL AND t.response_due < $1)"
        " OR (NOT t.resolve_breached AND t.resolved_at IS NULL AND t.resolve_due < $1))"
        " ORDER BY t.id LIMIT $2 FOR UPDATE OF t SKIP LOCKED",
        now,
        batch,
    )


async def claim_idle_resolved(
    conn: Connection, now: datetime, default_days: int, batch: int
) -> list[asyncpg.Record]:
    """Resolved tickets left alone longer than their site's auto-close days."""
    return await conn.fetch(
        "SELECT t.id, d.days FROM tickets t JOIN sites s ON s.id = t.site_id"
        " CROSS JOIN LATERAL (SELECT coalesce((s.settings->'tickets'->>'auto_close_days')::int,"
        "   $2) AS days) d"
        " WHERE t.status = 'resolved' AND t.resolved_at + make_interval(days => d.days) <= $1"
        " ORDER BY t.resolved_at LIMIT $3 FOR UPDATE OF t SKIP LOCKED",
        now,
        default_days,
        batch,
    )


async def raise_alert(
    conn: Connection,
    site_id: int,
    kind: str,
    ticket_id: int,
    message: str,
    data: Mapping[str, Any],
) -> bool:
    """An alert for the site's supervisors (once per ticket and kind), also on the live feed."""
    return await alerts.raise_alert(
        conn,
        site_id=site_id,
        kind=kind,
        subject_type="ticket",
        subject_id=ticket_id,
        message=message,
        data=data,
        event={"ticket_id": ticket_id},
    )

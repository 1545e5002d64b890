"""The ticket report: the figures the service standard asks supervisors to watch.

Tickets filed in ``[from, to)`` on the site count, except the backlog, which is every
ticket of the site still open (filed before ``to``), by its age at ``to`` (or now, if
earlier). Times are wall-clock minutes from filing (what the reporter lived through);
the SLA figures use the clocks, which pause on hold. Cancelled tickets count by status
only.
"""

from __future__ import annotations

from datetime import date, datetime

import msgspec

from server.db import Connection
from server.tickets.lifecycle import KINDS, STATUSES
from server.tickets.store import OPEN_STATUSES


class Backlog(msgspec.Struct, frozen=True):
    """Open tickets by age."""

    total: int
    under_1_day: int
    days_1_to_3: int
    days_3_to_7: int
    over_7_days: int


class DayCount(msgspec.Struct, frozen=True):
    day: date  # on the site's calendar
    count: int


class RepeatPlace(msgspec.Struct, frozen=True):
    """A unit or zone where the same category came back."""

    unit_id: int | None
    zone_id: int | None
    place: str
    category: str
    tickets: int


class TicketReport(msgspec.Struct, frozen=True, rename={"period_from": "from", "period_to": "to"}):
    site_id: int
    period_from: datetime
    period_to: datetime
    total: int
    by_status: dict[str, int]
    by_kind: dict[str, int]
    by_category: dict[str, int]
    mean_minutes_to_acknowledge: float | None
    mean_minutes_to_resolve: float | None
    # Of the tickets whose clock has an outcome (stopped, or run out), the share on time.
    response_compliance_pct: float | None
    resolution_compliance_pct: float | None
    sla_compliance_pct: float | None
    breached: int
    # Of the tickets resolved at least once, the share the reporter returned.
    reopen_rate_pct: float | None
    backlog: Backlog
    average_rating: float | None
    ratings: int
    satisfaction: dict[str, int]
    repair_requests: int
    repair_requests_per_day: float
    repair_requests_by_day: list[DayCount]
    repeat_tickets: int
    repeat_places: list[RepeatPlace]


_FIGURES = """
SELECT count(*) AS total,
       avg(extract(epoch FROM responded_at - created_at) / 60)
           FILTER (WHERE responded_at IS NOT NULL) AS ack_minutes,
       avg(extract(epoch FROM resolved_at - created_at) / 60)
           FILTER (WHERE resolved_at IS NOT NULL) AS resolve_minutes,
       count(*) FILTER (WHERE status <> 'cancelled'
                        AND (responded_at IS NOT NULL OR response_breached)) AS response_known,
       count(*) FILTER (WHERE status <> 'cancelled' AND responded_at IS NOT NULL
                        AND NOT response_breached) AS response_ok,
       count(*) FILTER (WHERE status <> 'cancelled'
                        AND (resolved_at IS NOT NULL OR resolve_breached)) AS resolution_known,
       count(*) FILTER (WHERE status <> 'cancelled' AND resolved_at IS NOT NULL
                        AND NOT resolve_breached) AS resolution_ok,
       count(*) FILTER (WHERE status <> 'cancelled' AND (resolved_at IS NOT NULL
                        OR response_breached OR resolve_breached)) AS sla_known,
       count(*) FILTER (WHERE status <> 'cancelled' AND resolved_at IS NOT NULL
                        AND NOT response_breached AND NOT resolve_breached) AS sla_ok,
       count(*) FILTER (WHERE response_breached OR resolve_breached) AS breached,
       count(*) FILTER (WHERE resolved_at IS NOT NULL OR reopen_count > 0) AS ever_resolved,
       count(*) FILTER (WHERE reopen_count > 0) AS reopened,
       avg(rating) AS average_rating,
       count(rating) AS ratings,
       count(*) FILTER (WHERE kind = 'repair') AS repairs,
       count(*) FILTER (WHERE is_repeat) AS repeats
FROM tickets WHERE site_id = $1 AND created_at >= $2 AND created_at < $3
"""

_GROUPS = """
SELECT 'status' AS dim, status AS key, count(*) AS n FROM tickets
 WHERE site_id = $1 AND created_at >= $2 AND created_at < $3 GROUP BY status
UNION ALL
SELECT 'kind', kind, count(*) FROM tickets
 WHERE site_id = $1 AND created_at >= $2 AND created_at < $3 GROUP BY kind
UNION ALL
SELECT 'category', category, count(*) FROM tickets
 WHERE site_id = $1 AND created_at >= $2 AND created_at < $3 GROUP BY category
UNION ALL
SELECT 'satisfaction', satisfaction, count(*) FROM tickets
 WHERE site_id = $1 AND created_at >= $2 AND created_at < $3 AND satisfaction IS NOT NULL
 GROUP BY satisfaction
"""

_BACKLOG = """
SELECT count(*) AS total,
       count(*) FILTER (WHERE age < interval '1 day') AS under_1_day,
       count(*) FILTER (WHERE age >= interval '1 day' AND age < interval '3 days') AS days_1_to_3,
       count(*) FILTER (WHERE age >= interval '3 days' AND age < interval '7 days')
           AS days_3_to_7,
       count(*) FILTER (WHERE age >= interval '7 days') AS over_7_days
FROM (SELECT least($2::timestamptz, now()) - created_at AS age FROM tickets
      WHERE site_id = $1 AND created_at < $2 AND status = ANY($3::text[])) o
"""

_REPAIRS_BY_DAY = """
SELECT (t.created_at AT TIME ZONE s.timezone)::date AS day, count(*) AS count
FROM tickets t JOIN sites s ON s.id = t.site_id
WHERE t.site_id = $1 AND t.created_at >= $2 AND t.created_at < $3 AND t.kind = 'repair'
GROUP BY day ORDER BY day
"""

_REPEAT_PLACES = """
SELECT t.unit_id, t.zone_id, t.category, count(*) AS tickets,
       coalesce(z.name, u.building || '-' || u.number) AS place
FROM tickets t
LEFT JOIN units u ON u.id = t.unit_id
LEFT JOIN zones z ON z.id = t.zone_id
WHERE t.site_id = $1 AND t.created_at >= $2 AND t.created_at < $3
  AND (t.unit_id IS NOT NULL OR t.zone_id IS NOT NULL) AND t.status <> 'cancelled'
GROUP BY t.unit_id, t.zone_id, t.category, z.name, u.building, u.number
HAVING count(*) >= 2
ORDER BY tickets DESC, t.category, t.unit_id NULLS LAST, t.zone_id NULLS LAST
LIMIT 20
"""


def _pct(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 1) if whole else None


def _round(value: object) -> float | None:
    return None if value is None else round(float(value), 1)  # type: ignore[arg-type]


async def ticket_report(
    conn: Connection, site_id: int, start: datetime, end: datetime
) -> TicketReport:
    f = await conn.fetchrow(_FIGURES, site_id, start, end)
    assert f is not None
    groups: dict[str, dict[str, int]] = {
        "status": dict.fromkeys(STATUSES, 0),
        "kind": dict.fromkeys(KINDS, 0),
        "category": {},
        "satisfaction": {},
    }
    for g in await conn.fetch(_GROUPS, site_id, start, end):
        groups[g["dim"]][g["key"]] = g["n"]
    b = await conn.fetchrow(_BACKLOG, site_id, end, list(OPEN_STATUSES))
    assert b is not None
    days = max((end - start).total_seconds() / 86400, 1e-9)
    return TicketReport(
        site_id=site_id,
        period_from=start,
        period_to=end,
        total=f["total"],
        by_status=groups["status"],
        by_kind=groups["kind"],
        by_category=dict(sorted(groups["category"].items())),
        mean_minutes_to_acknowledge=_round(f["ack_minutes"]),
        mean_minutes_to_resolve=_round(f["resolve_minutes"]),
        response_compliance_pct=_pct(f["response_ok"], f["response_known"]),
        resolution_compliance_pct=_pct(f["resolution_ok"], f["resolution_known"]),
        sla_compliance_pct=_pct(f["sla_ok"], f["sla_known"]),
        breached=f["breached"],
        reopen_rate_pct=_pct(f["reopened"], f["ever_resolved"]),
        backlog=Backlog(
            total=b["total"],
            under_1_day=b["under_1_day"],
            days_1_to_3=b["days_1_to_3"],
            days_3_to_7=b["days_3_to_7"],
            over_7_days=b["over_7_days"],
        ),
        average_rating=None
        if f["average_rating"] is None
        else round(float(f["average_rating"]), 2),
        ratings=f["ratings"],
        satisfaction=groups["satisfaction"],
        repair_requests=f["repairs"],
        repair_requests_per_day=round(f["repairs"] / days, 2),
        repair_requests_by_day=[
            DayCount(day=r["day"], count=r["count"])
            for r in await conn.fetch(_REPAIRS_BY_DAY, site_id, start, end)
        ],
        repeat_tickets=f["repeats"],
        repeat_places=[
            msgspec.convert(dict(r), RepeatPlace)
            for r in await conn.fetch(_REPEAT_PLACES, site_id, start, end)
        ],
    )

"""The patrol report: what the service standard asks supervisors to look at."""

from __future__ import annotations

from datetime import datetime

import msgspec

from server.db import Connection


class RoundCounts(msgspec.Struct, frozen=True):
    total: int
    scheduled: int
    in_progress: int
    completed: int
    incomplete: int
    missed: int


class GapMinutes(msgspec.Struct, frozen=True):
    shortest: float | None
    average: float | None
    longest: float | None


class MissedCheckpoint(msgspec.Struct, frozen=True):
    checkpoint_id: int
    name: str
    missed: int


class GuardFigures(msgspec.Struct, frozen=True):
    guard_id: int
    name: str
    scans: int
    flagged_scans: int
    rounds: int
    average_minutes_between_scans: float | None


class CheckpointCoverage(msgspec.Struct, frozen=True):
    checkpoint_id: int
    name: str
    scans: int
    longest_unvisited_minutes: float


class PatrolReport(msgspec.Struct, frozen=True, rename={"period_from": "from", "period_to": "to"}):
    site_id: int
    period_from: datetime
    period_to: datetime
    rounds: RoundCounts
    # Checkpoints scanned / expected, over rounds that have started.
    completion_pct: float | None
    most_missed: list[MissedCheckpoint]
    guards: list[GuardFigures]
    minutes_between_scans: GapMinutes
    checkpoints: list[CheckpointCoverage]


# One statement, one pass over the period's scans (materialised once in `s`), so the
# report costs one round trip and one index range scan however many figures it shows.
_REPORT = """
WITH s AS MATERIALIZED (
    SELECT scanned_at, checkpoint_id, guard_id, round_id, cardinality(flags) > 0 AS flagged
    FROM scans
    WHERE site_id = $1 AND scanned_at >= $2 AND scanned_at < least($3, now())
),
r AS MATERIALIZED (
    SELECT status, scanned_count, expected, scanned, starts_at
    FROM rounds WHERE site_id = $1 AND starts_at >= $2 AND starts_at < $3
),
site_gaps AS (
    SELECT extract(epoch FROM scanned_at - lag(scanned_at) OVER (ORDER BY scanned_at)) / 60
           AS gap
    FROM s
),
guards AS (
    SELECT s.guard_id, u.full_name AS name, count(*) AS scans,
           count(*) FILTER (WHERE s.flagged) AS flagged_scans,
           count(DISTINCT s.round_id) AS rounds,
           round((extract(epoch FROM max(s.scanned_at) - min(s.scanned_at))
                  / 60 / nullif(count(*) - 1, 0))::numeric, 2) AS average_minutes_between_scans
    FROM s JOIN users u ON u.id = s.guard_id
    GROUP BY s.guard_id, u.full_name
    ORDER BY scans DESC, s.guard_id
    LIMIT 200
),
cps AS (SELECT id, name FROM checkpoints WHERE site_id = $1 AND active),
-- Per checkpoint, the longest stretch without a scan, counting from the period's start
-- to the first scan and from the last scan to the period's end (or now).
marks AS (
    SELECT id AS checkpoint_id, $2::timestamptz AS t, 0 AS scan FROM cps
    UNION ALL
    SELECT id, least($3::timestamptz, now()), 0 FROM cps
    UNION ALL
    SELECT checkpoint_id, scanned_at, 1 FROM s
),
cp_gaps AS (
    SELECT checkpoint_id, scan, t - lag(t) OVER (PARTITION BY checkpoint_id ORDER BY t) AS gap
    FROM marks
),
coverage AS (
    SELECT c.id AS checkpoint_id, c.name, coalesce(sum(g.scan), 0)::int AS scans,
           round(coalesce(extract(epoch FROM max(g.gap)) / 60, 0)::numeric, 1)
               AS longest_unvisited_minutes
    FROM cps c LEFT JOIN cp_gaps g ON g.checkpoint_id = c.id
    GROUP BY c.id, c.name
    ORDER BY longest_unvisited_minutes DESC, c.id
    LIMIT 500
),
missed AS (
    SELECT m.checkpoint_id, c.name, count(*) AS missed
    FROM r CROSS JOIN LATERAL unnest(r.expected) AS m(checkpoint_id)
    JOIN checkpoints c ON c.id = m.checkpoint_id
    WHERE r.status IN ('incomplete', 'missed') AND NOT (m.checkpoint_id = ANY(r.scanned))
    GROUP BY m.checkpoint_id, c.name
    ORDER BY missed DESC, m.checkpoint_id
    LIMIT 10
)
SELECT
    (SELECT json_build_object(
        'total', count(*),
        'scheduled', count(*) FILTER (WHERE status = 'scheduled'),
        'in_progress', count(*) FILTER (WHERE status = 'in_progress'),
        'completed', count(*) FILTER (WHERE status = 'completed'),
        'incomplete', count(*) FILTER (WHERE status = 'incomplete'),
        'missed', count(*) FILTER (WHERE status = 'missed'),
        'scanned', coalesce(sum(scanned_count) FILTER (WHERE starts_at <= now()), 0),
        'expected', coalesce(sum(cardinality(expected)) FILTER (WHERE starts_at <= now()), 0))
     FROM r) AS rounds,
    (SELECT json_build_object('shortest', round(min(gap)::numeric, 2),
                              'average', round(avg(gap)::numeric, 2),
                              'longest', round(max(gap)::numeric, 2))
     FROM site_gaps WHERE gap IS NOT NULL) AS gaps,
    (SELECT coalesce(json_agg(g ORDER BY g.scans DESC, g.guard_id), '[]')
     FROM guards g) AS guards,
    (SELECT coalesce(json_agg(c ORDER BY c.longest_unvisited_minutes DESC, c.checkpoint_id), '[]')
     FROM coverage c) AS coverage,
    (SELECT coalesce(json_agg(m ORDER BY m.missed DESC, m.checkpoint_id), '[]')
     FROM missed m) AS missed
"""


async def patrol_report(
    conn: Connection, site_id: int, start: datetime, end: datetime
) -> PatrolReport:
    row = await conn.fetchrow(_REPORT, site_id, start, end)
    assert row is not None
    r = row["rounds"]
    expected = r.pop("expected")
    scanned = r.pop("scanned")
    return PatrolReport(
        site_id=site_id,
        period_from=start,
        period_to=end,
        rounds=msgspec.convert(r, RoundCounts),
        completion_pct=round(100.0 * scanned / expected, 1) if expected else None,
        most_missed=msgspec.convert(row["missed"], list[MissedCheckpoint]),
        guards=msgspec.convert(row["guards"], list[GuardFigures]),
        minutes_between_scans=msgspec.convert(row["gaps"], GapMinutes),
        checkpoints=msgspec.convert(row["coverage"], list[CheckpointCoverage]),
    )

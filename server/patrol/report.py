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


_ROUNDS = """
SELECT count(*) AS total,
       count(*) FILTER (WHERE status = 'scheduled') AS scheduled,
       count(*) FILTER (WHERE status = 'in_progress') AS in_progress,
       count(*) FILTER (WHERE status = 'completed') AS completed,
       count(*) FILTER (WHERE status = 'incomplete') AS incomplete,
       count(*) FILTER (WHERE status = 'missed') AS missed,
       sum(scanned_count) FILTER (WHERE starts_at <= now()) AS scanned,
       sum(cardinality(expected)) FILTER (WHERE starts_at <= now()) AS expected
FROM rounds WHERE site_id = $1 AND starts_at >= $2 AND starts_at < $3
"""

_MOST_MISSED = """
SELECT m.checkpoint_id, c.name, count(*) AS missed
FROM rounds r
CROSS JOIN LATERAL unnest(r.expected) AS m(checkpoint_id)
JOIN checkpoints c ON c.id = m.checkpoint_id
WHERE r.site_id = $1 AND r.starts_at >= $2 AND r.starts_at < $3
  AND r.status IN ('incomplete', 'missed')
  AND NOT EXISTS (SELECT 1 FROM scans s WHERE s.round_id = r.id
                  AND s.checkpoint_id = m.checkpoint_id)
GROUP BY m.checkpoint_id, c.name
ORDER BY missed DESC, m.checkpoint_id
LIMIT 10
"""

_GUARDS = """
SELECT s.guard_id, u.full_name AS name, count(*) AS scans,
       count(*) FILTER (WHERE cardinality(s.flags) > 0) AS flagged_scans,
       count(DISTINCT s.round_id) AS rounds,
       extract(epoch FROM (max(s.scanned_at) - min(s.scanned_at)))
         / 60 / nullif(count(*) - 1, 0) AS average_minutes_between_scans
FROM scans s JOIN users u ON u.id = s.guard_id
WHERE s.site_id = $1 AND s.scanned_at >= $2 AND s.scanned_at < $3
GROUP BY s.guard_id, u.full_name
ORDER BY scans DESC, s.guard_id
LIMIT 200
"""

_SITE_GAPS = """
SELECT min(gap) AS shortest, avg(gap) AS average, max(gap) AS longest
FROM (SELECT extract(epoch FROM scanned_at - lag(scanned_at) OVER (ORDER BY scanned_at)) / 60
             AS gap
      FROM scans WHERE site_id = $1 AND scanned_at >= $2 AND scanned_at < $3) g
WHERE gap IS NOT NULL
"""

# Per checkpoint, the longest stretch without a scan, counting from the period's start
# to the first scan and from the last scan to the period's end (or now).
_COVERAGE = """
WITH cps AS (SELECT id, name FROM checkpoints WHERE site_id = $1 AND active),
marks AS (
    SELECT id AS checkpoint_id, $2::timestamptz AS t, 0 AS scan FROM cps
    UNION ALL
    SELECT id, least($3::timestamptz, now()), 0 FROM cps
    UNION ALL
    SELECT s.checkpoint_id, s.scanned_at, 1 FROM scans s
    WHERE s.site_id = $1 AND s.scanned_at >= $2 AND s.scanned_at < least($3, now())
),
gaps AS (
    SELECT checkpoint_id, scan,
           t - lag(t) OVER (PARTITION BY checkpoint_id ORDER BY t) AS gap
    FROM marks
)
SELECT c.id AS checkpoint_id, c.name, coalesce(sum(g.scan), 0) AS scans,
       coalesce(extract(epoch FROM max(g.gap)) / 60, 0) AS longest_unvisited_minutes
FROM cps c LEFT JOIN gaps g ON g.checkpoint_id = c.id
GROUP BY c.id, c.name
ORDER BY longest_unvisited_minutes DESC, c.id
LIMIT 500
"""


async def patrol_report(
    conn: Connection, site_id: int, start: datetime, end: datetime
) -> PatrolReport:
    r = await conn.fetchrow(_ROUNDS, site_id, start, end)
    assert r is not None
    expected = r["expected"] or 0
    gaps = await conn.fetchrow(_SITE_GAPS, site_id, start, end)
    assert gaps is not None
    return PatrolReport(
        site_id=site_id,
        period_from=start,
        period_to=end,
        rounds=RoundCounts(
            total=r["total"],
            scheduled=r["scheduled"],
            in_progress=r["in_progress"],
            completed=r["completed"],
            incomplete=r["incomplete"],
            missed=r["missed"],
        ),
        completion_pct=round(100.0 * (r["scanned"] or 0) / expected, 1) if expected else None,
        most_missed=[
            msgspec.convert(dict(x), MissedCheckpoint)
            for x in await conn.fetch(_MOST_MISSED, site_id, start, end)
        ],
        guards=[
            GuardFigures(
                guard_id=x["guard_id"],
                name=x["name"],
                scans=x["scans"],
                flagged_scans=x["flagged_scans"],
                rounds=x["rounds"],
                average_minutes_between_scans=_float(x["average_minutes_between_scans"]),
            )
            for x in await conn.fetch(_GUARDS, site_id, start, end)
        ],
        minutes_between_scans=GapMinutes(
            shortest=_float(gaps["shortest"]),
            average=_float(gaps["average"]),
            longest=_float(gaps["longest"]),
        ),
        checkpoints=[
            CheckpointCoverage(
                checkpoint_id=x["checkpoint_id"],
                name=x["name"],
                scans=int(x["scans"]),
                longest_unvisited_minutes=round(float(x["longest_unvisited_minutes"]), 1),
            )
            for x in await conn.fetch(_COVERAGE, site_id, start, end)
        ],
    )


def _float(value: object) -> float | None:
    return None if value is None else round(float(value), 2)  # type: ignore[arg-type]

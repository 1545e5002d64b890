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


# The report is one statement (one round trip) in two variants that share the rounds'
# figures, the active checkpoints and the final SELECT: the period's scans read raw, or the
# period's rolled-up days (server.patrol.rollup) combined with the raw scans around them.
# The raw variant is the definition that the rolled-up one must equal figure for figure;
# each provides `gaps`, `guards` and `coverage`.
_COMMON = """
WITH r AS MATERIALIZED (
    SELECT status, scanned_count, expected, scanned, starts_at
    FROM rounds WHERE site_id = $1 AND starts_at >= $2 AND starts_at < $3
),
missed AS (
    SELECT m.checkpoint_id, c.name, count(*) AS missed
    FROM r CROSS JOIN LATERAL unnest(r.expected) AS m(checkpoint_id)
    JOIN checkpoints c ON c.id = m.checkpoint_id
    WHERE r.status IN ('incomplete', 'missed') AND NOT (m.checkpoint_id = ANY(r.scanned))
    GROUP BY m.checkpoint_id, c.name
    ORDER BY missed DESC, m.checkpoint_id
    LIMIT 10
),
cps AS (SELECT id, name FROM checkpoints WHERE site_id = $1 AND active),
"""

# One pass over the period's scans (materialised once in `s`).
_RAW_SCANS = """
s AS MATERIALIZED (
    SELECT scanned_at, checkpoint_id, guard_id, round_id, cardinality(flags) > 0 AS flagged
    FROM scans
    WHERE site_id = $1 AND scanned_at >= $2 AND scanned_at < least($3, now())
),
site_gaps AS (
    SELECT extract(epoch FROM scanned_at - lag(scanned_at) OVER (ORDER BY scanned_at)) / 60
           AS gap
    FROM s
),
gaps AS (
    SELECT round(min(gap)::numeric, 2) AS shortest, round(avg(gap)::numeric, 2) AS average,
           round(max(gap)::numeric, 2) AS longest
    FROM site_gaps WHERE gap IS NOT NULL
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
)
"""

# The same figures from the period's full UTC days that are rolled up and clean, and the
# raw scans of the rest (the partial days at the edges, today, days not built or dirty).
# Both kinds are "runs" of scans (a day, or one scan) with their first and last scan, so the
# gaps between runs are those of consecutive scans across them; a day adds its own gaps.
_ROLLED_UP_SCANS = """
span AS MATERIALIZED (
    -- [$2, period_end) is the period up to now; its full UTC days [first_day, end_day)
    -- before the site's built_until are rolled up.
    SELECT p.period_end, p.first_day,
           greatest(p.first_day, least((p.period_end AT TIME ZONE 'UTC')::date,
                                       coalesce(b.built_until, p.first_day))) AS end_day
    FROM (SELECT least($3::timestamptz, now()) AS period_end,
                 (($2::timestamptz AT TIME ZONE 'UTC') - interval '1 microsecond')::date + 1
                     AS first_day) p
    LEFT JOIN patrol_days_built b ON b.site_id = $1
),
dirty AS MATERIALIZED (
    SELECT DISTINCT d.day FROM patrol_days_dirty d, span
    WHERE d.site_id = $1 AND d.day >= span.first_day AND d.day < span.end_day
),
-- The period less its clean rolled-up days: the ranges of time whose scans are read raw.
raw_ranges AS (
    SELECT unnest(
               tstzmultirange(tstzrange($2::timestamptz,
                                        greatest($2::timestamptz, span.period_end)))
               - tstzmultirange(tstzrange(span.first_day::timestamp AT TIME ZONE 'UTC',
                                          span.end_day::timestamp AT TIME ZONE 'UTC'))
               + (SELECT coalesce(range_agg(tstzrange(day::timestamp AT TIME ZONE 'UTC',
                                                      (day + 1)::timestamp AT TIME ZONE 'UTC')),
                                  '{}')
                  FROM dirty)) AS t
    FROM span
),
s AS MATERIALIZED (
    SELECT c.scanned_at, c.checkpoint_id, c.guard_id, c.round_id,
           cardinality(c.flags) > 0 AS flagged
    FROM raw_ranges x CROSS JOIN LATERAL (
        SELECT scanned_at, checkpoint_id, guard_id, round_id, flags FROM scans
        WHERE site_id = $1 AND scanned_at >= lower(x.t) AND scanned_at < upper(x.t)
    ) c
),
days AS MATERIALIZED (
    SELECT p.first_at, p.last_at, p.scans, p.shortest_gap, p.longest_gap, p.gap_minutes_sum
    FROM patrol_days p, span
    WHERE p.site_id = $1 AND p.day >= span.first_day AND p.day < span.end_day
      AND p.day NOT IN (SELECT day FROM dirty)
),
guard_days AS MATERIALIZED (
    SELECT p.guard_id, p.scans, p.flagged, p.first_at, p.last_at, p.round_ids
    FROM patrol_guard_days p, span
    WHERE p.site_id = $1 AND p.day >= span.first_day AND p.day < span.end_day
      AND p.day NOT IN (SELECT day FROM dirty)
),
checkpoint_days AS MATERIALIZED (
    SELECT p.checkpoint_id, p.scans, p.first_at, p.last_at, p.longest_gap
    FROM patrol_checkpoint_days p, span
    WHERE p.site_id = $1 AND p.day >= span.first_day AND p.day < span.end_day
      AND p.day NOT IN (SELECT day FROM dirty)
),
site_runs AS (
    SELECT first_at, last_at, scans - 1 AS gaps, shortest_gap, longest_gap, gap_minutes_sum
    FROM days
    UNION ALL
    SELECT scanned_at, scanned_at, 0, NULL, NULL, 0 FROM s
),
site_gaps AS (
    SELECT gaps, shortest_gap, longest_gap, gap_minutes_sum,
           extract(epoch FROM first_at - lag(last_at) OVER (ORDER BY first_at)) / 60
               AS gap_before
    FROM site_runs
),
-- The average is the sum of the gaps over their count, as avg() computes it on raw scans.
gaps AS (
    SELECT round(least(min(gap_before), extract(epoch FROM min(shortest_gap)) / 60), 2)
               AS shortest,
           round((coalesce(sum(gap_before), 0) + sum(gap_minutes_sum))
                 / nullif(count(gap_before) + sum(gaps), 0), 2) AS average,
           round(greatest(max(gap_before), extract(epoch FROM max(longest_gap)) / 60), 2)
               AS longest
    FROM site_gaps
),
guard_runs AS (
    SELECT guard_id, scans, flagged, first_at, last_at FROM guard_days
    UNION ALL
    SELECT guard_id, 1, flagged::int, scanned_at, scanned_at FROM s
),
guard_rounds AS (
    SELECT guard_id, count(DISTINCT round_id) AS rounds
    FROM (SELECT guard_id, unnest(round_ids) AS round_id FROM guard_days
          UNION ALL
          SELECT guard_id, round_id FROM s) x
    GROUP BY guard_id
),
guards AS (
    SELECT g.guard_id, u.full_name AS name, sum(g.scans) AS scans,
           sum(g.flagged) AS flagged_scans, coalesce(gr.rounds, 0) AS rounds,
           round((extract(epoch FROM max(g.last_at) - min(g.first_at))
                  / 60 / nullif(sum(g.scans) - 1, 0))::numeric, 2)
               AS average_minutes_between_scans
    FROM guard_runs g JOIN users u ON u.id = g.guard_id
    LEFT JOIN guard_rounds gr ON gr.guard_id = g.guard_id
    GROUP BY g.guard_id, u.full_name, gr.rounds
    ORDER BY scans DESC, g.guard_id
    LIMIT 200
),
-- The period's bounds are runs without scans; ties are ordered by the run's end too, so a
-- day whose first scan is at the period's start follows the start.
marks AS (
    SELECT checkpoint_id, first_at, last_at, scans, longest_gap FROM checkpoint_days
    UNION ALL
    SELECT checkpoint_id, scanned_at, scanned_at, 1, NULL FROM s
    UNION ALL
    SELECT id, $2::timestamptz, $2::timestamptz, 0, NULL FROM cps
    UNION ALL
    SELECT id, span.period_end, span.period_end, 0, NULL FROM cps, span
),
cp_gaps AS (
    SELECT checkpoint_id, scans,
           greatest(longest_gap, first_at - lag(last_at) OVER (PARTITION BY checkpoint_id
                                                                ORDER BY first_at, last_at))
               AS gap
    FROM marks
),
coverage AS (
    SELECT c.id AS checkpoint_id, c.name, coalesce(sum(g.scans), 0)::int AS scans,
           round(coalesce(extract(epoch FROM max(g.gap)) / 60, 0)::numeric, 1)
               AS longest_unvisited_minutes
    FROM cps c LEFT JOIN cp_gaps g ON g.checkpoint_id = c.id
    GROUP BY c.id, c.name
    ORDER BY longest_unvisited_minutes DESC, c.id
    LIMIT 500
)
"""

_FIGURES = """
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
    (SELECT row_to_json(g) FROM gaps g) AS gaps,
    (SELECT coalesce(json_agg(g ORDER BY g.scans DESC, g.guard_id), '[]')
     FROM guards g) AS guards,
    (SELECT coalesce(json_agg(c ORDER BY c.longest_unvisited_minutes DESC, c.checkpoint_id), '[]')
     FROM coverage c) AS coverage,
    (SELECT coalesce(json_agg(m ORDER BY m.missed DESC, m.checkpoint_id), '[]')
     FROM missed m) AS missed
"""

_REPORT = _COMMON + _ROLLED_UP_SCANS + _FIGURES
_RAW_REPORT = _COMMON + _RAW_SCANS + _FIGURES


async def patrol_report(
    conn: Connection, site_id: int, start: datetime, end: datetime, *, rolled_up: bool = True
) -> PatrolReport:
    """The site's figures over [start, end); rolled_up=False reads every scan (the reference
    the rolled-up figures are tested against)."""
    row = await conn.fetchrow(_REPORT if rolled_up else _RAW_REPORT, site_id, start, end)
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

"""Daily rollups of each site's scans, which the patrol report reads instead of the scans.

Per site and UTC day: the site's totals, each guard's and each checkpoint's (tables in
migrations/0007_patrol_days.sql). The scheduler builds the days that are over and rebuilds
the days marked dirty: a scan stored after its day marks the day in the statement that
stores it (server.patrol.store), and an UPDATE or DELETE of scans marks it by trigger.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from server.db import Connection

# A day is rolled up once it has been over for this long. A scan of today is stored
# unmarked; a transaction storing one just before midnight must commit (and the clocks
# of the processes storing scans and scheduling must agree) within this margin.
SETTLE = timedelta(hours=1)
# Site-days (re)built per pass: a pass stays a short transaction however far behind.
DAYS_PER_PASS = 400

# A site is first rolled up from the day of its first scan; one without scans from today.
_REGISTER_SITES = """
INSERT INTO patrol_days_built (site_id, built_until)
SELECT s.id, least($1::date, coalesce(
           (SELECT (min(c.scanned_at) AT TIME ZONE 'UTC')::date FROM scans c
            WHERE c.site_id = s.id), $1::date))
FROM sites s
WHERE NOT EXISTS (SELECT 1 FROM patrol_days_built b WHERE b.site_id = s.id)
ORDER BY s.id  -- one order: two passes registering the same new sites cannot deadlock
ON CONFLICT (site_id) DO NOTHING
"""

# Claims sites with work (days over and not built yet, dirty days), locked so that no other
# pass takes them; takes their earliest days up to the budget, clears what those days had
# (rollup rows and dirty marks: only marks this snapshot sees, whose scans the build will
# see) and moves each site's built_until past the days it took. The build follows.
_CLAIM_DAYS = """
WITH claimed AS (
    SELECT b.site_id, b.built_until FROM patrol_days_built b
    WHERE b.built_until < $1::date
       OR EXISTS (SELECT 1 FROM patrol_days_dirty d
                  WHERE d.site_id = b.site_id AND d.day < b.built_until)
    ORDER BY b.built_until, b.site_id
    LIMIT $2::int
    FOR UPDATE OF b SKIP LOCKED
),
due AS MATERIALIZED (
    SELECT site_id, day FROM (
        -- Days not built yet, in order from built_until (their marks go when they are built).
        SELECT c.site_id, c.built_until + i AS day
        FROM claimed c, generate_series(0, least($1::date - c.built_until, $2::int) - 1) AS i
        UNION
        -- Built days marked dirty.
        SELECT d.site_id, d.day FROM patrol_days_dirty d JOIN claimed c ON c.site_id = d.site_id
        WHERE d.day < c.built_until
    ) candidates
    ORDER BY day, site_id
    LIMIT $2::int
),
cleared_days AS (
    DELETE FROM patrol_days p USING due
    WHERE p.site_id = due.site_id AND p.day = due.day
),
cleared_guard_days AS (
    DELETE FROM patrol_guard_days p USING due
    WHERE p.site_id = due.site_id AND p.day = due.day
),
cleared_checkpoint_days AS (
    DELETE FROM patrol_checkpoint_days p USING due
    WHERE p.site_id = due.site_id AND p.day = due.day
),
cleared_marks AS (
    DELETE FROM patrol_days_dirty p USING due
    WHERE p.site_id = due.site_id AND p.day = due.day
),
advanced AS (
    -- A site's days not built yet are taken in order: those taken run on from built_until.
    UPDATE patrol_days_built b SET built_until = n.built_until
    FROM (SELECT site_id, max(day) + 1 AS built_until FROM due GROUP BY site_id) n
    WHERE b.site_id = n.site_id AND n.built_until > b.built_until
)
SELECT site_id, day FROM due
"""

# The figures of each day taken, from its scans; gaps exactly as the report computes them.
_BUILD_DAYS = """
WITH due AS (SELECT * FROM unnest($1::bigint[], $2::date[]) AS d(site_id, day)),
s AS MATERIALIZED (
    SELECT d.site_id, d.day, c.scanned_at, c.checkpoint_id, c.guard_id, c.round_id,
           cardinality(c.flags) > 0 AS flagged
    FROM due d CROSS JOIN LATERAL (
        SELECT scanned_at, checkpoint_id, guard_id, round_id, flags FROM scans
        WHERE site_id = d.site_id
          AND scanned_at >= d.day::timestamp AT TIME ZONE 'UTC'
          AND scanned_at < (d.day + 1)::timestamp AT TIME ZONE 'UTC'
    ) c
),
site_days AS (
    INSERT INTO patrol_days (site_id, day, scans, first_at, last_at, shortest_gap,
                             longest_gap, gap_minutes_sum)
    SELECT site_id, day, count(*), min(scanned_at), max(scanned_at), min(gap), max(gap),
           coalesce(sum(extract(epoch FROM gap) / 60), 0)
    FROM (SELECT site_id, day, scanned_at,
                 scanned_at - lag(scanned_at) OVER (PARTITION BY site_id, day
                                                    ORDER BY scanned_at) AS gap
          FROM s) g
    GROUP BY site_id, day
),
guard_days AS (
    INSERT INTO patrol_guard_days (site_id, day, guard_id, scans, flagged, first_at, last_at,
                                   round_ids)
    SELECT site_id, day, guard_id, count(*), count(*) FILTER (WHERE flagged),
           min(scanned_at), max(scanned_at),
           coalesce(array_agg(DISTINCT round_id) FILTER (WHERE round_id IS NOT NULL), '{}')
    FROM s
    GROUP BY site_id, day, guard_id
)
INSERT INTO patrol_checkpoint_days (site_id, day, checkpoint_id, scans, first_at, last_at,
                                    longest_gap)
SELECT site_id, day, checkpoint_id, count(*), min(scanned_at), max(scanned_at), max(gap)
FROM (SELECT site_id, day, checkpoint_id, scanned_at,
             scanned_at - lag(scanned_at) OVER (PARTITION BY site_id, day, checkpoint_id
                                                ORDER BY scanned_at) AS gap
      FROM s) g
GROUP BY site_id, day, checkpoint_id
"""


async def roll_up_patrol_days(
    conn: Connection, now: datetime, *, batch: int = DAYS_PER_PASS
) -> int:
    """Build the site-days over and not built yet, and rebuild the dirty ones; at most
    `batch` per pass. Sites are claimed with FOR UPDATE SKIP LOCKED, so concurrent
    schedulers never build the same day. Returns the site-days (re)built."""
    settled = (now - SETTLE).astimezone(UTC).date()
    await conn.execute(_REGISTER_SITES, settled)
    due = await conn.fetch(_CLAIM_DAYS, settled, batch)
    if due:
        await conn.execute(_BUILD_DAYS, [r["site_id"] for r in due], [r["day"] for r in due])
    return len(due)

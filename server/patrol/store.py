"""SQL for patrol routes, rounds (generation, closing, re-scoring), scans and the patrol log."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg
import msgspec

from server.alerts import store as alerts
from server.db import Connection
from server.errors import Conflict, Invalid
from server.patrol.models import (
    LogEntry,
    LogIn,
    Refusal,
    Round,
    RoundChange,
    RoundCheckpoint,
    RoundDetail,
    Route,
    RouteCheckpoint,
    RouteIn,
    ScanOut,
)
from server.patrol.schedule import RouteSchedule, default_interval, round_starts
from server.patrol.scoring import score_round

# Rounds are generated this far ahead, and a closed round's score stays provisional
# (late offline scans re-score it) for SYNC_HORIZON after its end plus grace.
GENERATE_AHEAD = timedelta(hours=24)
SYNC_HORIZON = timedelta(hours=24)
# A scan this long before a round's start still belongs to it (flagged early).
EARLY_MATCH = timedelta(minutes=15)

# --- routes -------------------------------------------------------------------------


async def create_route(conn: Connection, site_id: int, site_kind: str, data: RouteIn) -> int:
    found = await conn.fetch(
        "SELECT id FROM checkpoints WHERE site_id = $1 AND id = ANY($2::bigint[]) AND active",
        site_id,
        data.checkpoint_ids,
    )
    known = {r["id"] for r in found}
    for i, cp in enumerate(data.checkpoint_ids):
        if cp not in known:
            raise Invalid(f"checkpoint_ids[{i}]", f"no active checkpoint {cp} on this site")
    for cp in data.not_before_minutes:
        if cp not in known:
            raise Invalid("not_before_minutes", f"checkpoint {cp} is not on this route")
    if data.guard_ids:
        guards = await conn.fetch(
            "SELECT u.id FROM users u JOIN site_members m ON m.user_id = u.id"
            " WHERE m.site_id = $1 AND u.id = ANY($2::bigint[]) AND u.role <> 'resident'",
            site_id,
            data.guard_ids,
        )
        staff = {r["id"] for r in guards}
        for i, g in enumerate(data.guard_ids):
            if g not in staff:
                raise Invalid(f"guard_ids[{i}]", f"user {g} is not staff of this site")
    interval = data.interval_minutes or default_interval(site_kind)
    try:
        route_id: int = await conn.fetchval(
            "INSERT INTO patrol_routes (site_id, name, ordered, interval_minutes,"
            " duration_minutes, window_start, window_end, weekdays, grace_minutes)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
            site_id,
            data.name,
            data.ordered,
            interval,
            data.duration_minutes or interval,
            data.window_start,
            data.window_end,
            sorted(set(data.weekdays)),
            data.grace_minutes,
        )
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(f"A route named {data.name!r} exists on this site", field="name") from exc
    await conn.executemany(
        "INSERT INTO patrol_route_checkpoints (route_id, position, checkpoint_id,"
        " not_before_minutes) VALUES ($1, $2, $3, $4)",
        [
            (route_id, pos, cp, data.not_before_minutes.get(cp))
            for pos, cp in enumerate(data.checkpoint_ids)
        ],
    )
    await conn.executemany(
        "INSERT INTO patrol_route_guards (route_id, user_id) VALUES ($1, $2)",
        [(route_id, g) for g in sorted(set(data.guard_ids))],
    )
    return route_id


_ROUTE_SELECT = """
SELECT r.id, r.site_id, r.name, r.ordered, r.interval_minutes, r.duration_minutes,
       r.window_start, r.window_end, r.weekdays::int[] AS weekdays, r.grace_minutes, r.active,
       r.created_at,
       coalesce((SELECT json_agg(json_build_object('checkpoint_id', c.checkpoint_id,
                 'position', c.position, 'not_before_minutes', c.not_before_minutes)
                 ORDER BY c.position)
                 FROM patrol_route_checkpoints c WHERE c.route_id = r.id), '[]') AS checkpoints,
       coalesce((SELECT array_agg(g.user_id ORDER BY g.user_id)
                 FROM patrol_route_guards g WHERE g.route_id = r.id), '{}') AS guard_ids
FROM patrol_routes r
"""


def _route(row: asyncpg.Record) -> Route:
    data = dict(row)
    data["checkpoints"] = msgspec.convert(data["checkpoints"], list[RouteCheckpoint])
    return msgspec.convert(data, Route)


async def get_route(conn: Connection, route_id: int) -> Route | None:
    row = await conn.fetchrow(_ROUTE_SELECT + " WHERE r.id = $1", route_id)
    return _route(row) if row else None


async def list_routes(conn: Connection, site_id: int, after: int, limit: int) -> list[Route]:
    rows = await conn.fetch(
        _ROUTE_SELECT + " WHERE r.site_id = $1 AND r.id > $2 ORDER BY r.id LIMIT $3",
        site_id,
        after,
        limit + 1,
    )
    return [_route(r) for r in rows]


# --- round generation and closing (the scheduler's work) -----------------------------


async def generate_rounds(
    conn: Connection, now: datetime, *, route_id: int | None = None, batch: int = 50
) -> int:
    """Create the rounds of routes whose horizon runs short; idempotent, safe in parallel.

    Routes are claimed with FOR UPDATE SKIP LOCKED, so concurrent schedulers split the
    routes between them; (route_id, starts_at) is unique, so nothing is made twice.
    """
    routes = await conn.fetch(
        "SELECT r.id, r.site_id, r.ordered, r.interval_minutes, r.duration_minutes,"
        " r.window_start, r.window_end, r.weekdays, r.grace_minutes, r.generated_until,"
        " s.timezone,"
        " ARRAY(SELECT c.checkpoint_id FROM patrol_route_checkpoints c"
        "       WHERE c.route_id = r.id ORDER BY c.position) AS expected,"
        " ARRAY(SELECT coalesce(c.not_before_minutes, -1) FROM patrol_route_checkpoints c"
        "       WHERE c.route_id = r.id ORDER BY c.position) AS not_before"
        " FROM patrol_routes r JOIN sites s ON s.id = r.site_id"
        " WHERE r.active AND (r.generated_until IS NULL OR r.generated_until < $1)"
        " AND ($2::bigint IS NULL OR r.id = $2)"
        " ORDER BY r.id LIMIT $3 FOR UPDATE OF r SKIP LOCKED",
        now + GENERATE_AHEAD / 2,
        route_id,
        batch,
    )
    created = 0
    for r in routes:
        schedule = RouteSchedule(
            interval_minutes=r["interval_minutes"],
            duration_minutes=r["duration_minutes"],
            window_start=r["window_start"],
            window_end=r["window_end"],
            weekdays=frozenset(r["weekdays"]),
            timezone=r["timezone"],
        )
        # The round under way when a route is created counts too.
        start = r["generated_until"] or now - timedelta(minutes=r["duration_minutes"])
        until = now + GENERATE_AHEAD
        starts = round_starts(schedule, start, until)
        duration = timedelta(minutes=r["duration_minutes"])
        result = await conn.fetch(
            "INSERT INTO rounds (site_id, route_id, starts_at, ends_at, grace_minutes, ordered,"
            " expected, not_before)"
            " SELECT $1, $2, s, s + $3::interval, $4, $5, $6, $7 FROM unnest($8::timestamptz[]) s"
            " ON CONFLICT (route_id, starts_at) DO NOTHING RETURNING id",
            r["site_id"],
            r["id"],
            duration,
            r["grace_minutes"],
            r["ordered"],
            r["expected"],
            r["not_before"],
            starts,
        )
        created += len(result)
        await conn.execute(
            "UPDATE patrol_routes SET generated_until = $2 WHERE id = $1", r["id"], until
        )
    return created


async def close_due_rounds(conn: Connection, now: datetime, *, batch: int = 500) -> list[int]:
    """Score rounds past their end plus grace; alert supervisors of missed and incomplete ones.

    Claimed with FOR UPDATE SKIP LOCKED: two schedulers never close the same round.
    Returns the ids of rounds that became missed or incomplete.
    """
    rows = await conn.fetch(
        "SELECT r.id, r.site_id, r.expected, r.ends_at, r.grace_minutes, r.status, r.scanned"
        " FROM rounds r WHERE r.closed_at IS NULL"
        " AND r.ends_at + make_interval(mins => r.grace_minutes) < $1"
        " ORDER BY r.ends_at LIMIT $2 FOR UPDATE OF r SKIP LOCKED",
        now,
        batch,
    )
    alerted: list[int] = []
    for r in rows:
        score = score_round(
            r["expected"], r["scanned"], now=now, end=r["ends_at"], grace_minutes=r["grace_minutes"]
        )
        await conn.execute(
            "UPDATE rounds SET status = $2, scanned_count = $3, closed_at = $4, final_after = $5"
            " WHERE id = $1",
            r["id"],
            score.status,
            score.scanned_count,
            now,
            r["ends_at"] + timedelta(minutes=r["grace_minutes"]) + SYNC_HORIZON,
        )
        if score.status in ("missed", "incomplete"):
            await raise_round_alert(conn, r["site_id"], r["id"], score.status, score.missing)
            alerted.append(r["id"])
    return alerted


async def raise_round_alert(
    conn: Connection, site_id: int, round_id: int, status: str, missing: Sequence[int]
) -> None:
    message = (
        f"Round {round_id} was missed: no checkpoint scanned"
        if status == "missed"
        else f"Round {round_id} is incomplete: {len(missing)} checkpoint(s) not scanned"
    )
    await alerts.raise_alert(
        conn,
        site_id=site_id,
        kind=f"round_{status}",
        subject_type="round",
        subject_id=round_id,
        message=message,
        data={"round_id": round_id, "status": status, "missing_checkpoint_ids": list(missing)},
        event={"round_id": round_id},
    )


# --- scans ----------------------------------------------------------------------------


async def existing_scan(conn: Connection, scan_id: uuid.UUID) -> tuple[int, ScanOut] | None:
    """A scan already stored under this client id: (its guard, the first answer)."""
    row = await conn.fetchrow(
        "SELECT id, checkpoint_id, round_id, flags, scanned_at, guard_id FROM scans WHERE id = $1",
        scan_id,
    )
    if row is None:
        return None
    return row["guard_id"], ScanOut(
        id=row["id"],
        checkpoint_id=row["checkpoint_id"],
        round_id=row["round_id"],
        flags=list(row["flags"]),
        scanned_at=row["scanned_at"],
    )


# Scans are stored in two set-based statements, whether one scan or many arrive together
# (server.patrol.scans): the facts the flag rules need are read first, then every scan is
# written with its round and flags at once. Per-statement work (planning, executor start,
# locks, commit) is paid once per group rather than once per scan.

# Per scan: the checkpoint (a QR token's site and version must match; an inactive one never
# matches, and then the scan has no row here), whether its id is stored already, the round
# whose window holds it (preferring on-time over early or late), the guard's previous scan
# and its scans of other checkpoints in the minute before.
_FACTS_SELECT = """
SELECT coalesce(json_agg(f ORDER BY f.pos), '[]')::text FROM (
SELECT i.pos, c.site_id AS cp_site_id, c.lat AS cp_lat, c.lon AS cp_lon,
       c.radius_m AS cp_radius_m,
       EXISTS (SELECT 1 FROM scans s WHERE s.id = i.id) AS stored,
       rd.id AS round_id, rd.starts_at, rd.ends_at, rd.grace_minutes, rd.ordered,
       rd.not_before[array_position(rd.expected, c.id)] AS not_before,
       CASE WHEN rd.ordered THEN rd.expected END AS expected,
       CASE WHEN rd.ordered THEN rd.scanned END AS round_scanned,
       prev.scanned_at AS prev_at, prev.checkpoint_id AS prev_checkpoint,
       prev.lat AS prev_lat, prev.lon AS prev_lon,
       recent.at AS recent_others
FROM ROWS FROM (jsonb_to_recordset(:keys::jsonb)
         AS (id uuid, checkpoint_id bigint, claimed_site_id bigint, token_version int,
             guard_id bigint, scanned_at timestamptz))
     WITH ORDINALITY AS i(id, checkpoint_id, claimed_site_id, token_version, guard_id,
                          scanned_at, pos)
-- LATERAL: one index probe per scan, whatever the planner guesses of the group's size.
CROSS JOIN LATERAL (
    SELECT c.id, c.site_id, c.lat, c.lon, c.radius_m FROM checkpoints c
    WHERE c.id = i.checkpoint_id AND c.active
      AND (i.claimed_site_id IS NULL OR c.site_id = i.claimed_site_id)
      AND (i.token_version IS NULL OR c.token_version = i.token_version)
    LIMIT 1  -- (keeps the planner from flattening this into a join)
) c
LEFT JOIN LATERAL (
    SELECT r.id, r.starts_at, r.ends_at, r.grace_minutes, r.ordered, r.expected, r.not_before,
           r.scanned
    FROM rounds r
    WHERE r.site_id = c.site_id AND r.expected @> ARRAY[c.id]
      AND r.starts_at <= i.scanned_at + :early::interval
      AND r.ends_at + make_interval(mins => r.grace_minutes) >= i.scanned_at
      AND r.starts_at > i.scanned_at - interval '2 days'
      AND (NOT EXISTS (SELECT 1 FROM patrol_route_guards g WHERE g.route_id = r.route_id)
           OR EXISTS (SELECT 1 FROM patrol_route_guards g
                      WHERE g.route_id = r.route_id AND g.user_id = i.guard_id))
    ORDER BY (r.starts_at <= i.scanned_at AND i.scanned_at < r.ends_at) DESC,
             (r.starts_at <= i.scanned_at) DESC, r.starts_at DESC
    LIMIT 1
) rd ON true
LEFT JOIN LATERAL (
    SELECT p.scanned_at, p.checkpoint_id, p.lat, p.lon FROM scans p
    WHERE p.guard_id = i.guard_id AND p.scanned_at <= i.scanned_at
    ORDER BY p.scanned_at DESC LIMIT 1
) prev ON true
-- A few are enough to tell a burst; never the whole minute of a busy guard.
CROSS JOIN LATERAL (
    SELECT coalesce(array_agg(o.scanned_at), '{}') AS at FROM (
        SELECT s.scanned_at FROM scans s
        WHERE s.guard_id = i.guard_id AND s.checkpoint_id <> i.checkpoint_id
          AND s.scanned_at BETWEEN i.scanned_at - interval '60 seconds' AND i.scanned_at
        ORDER BY s.scanned_at DESC LIMIT 5) o
) recent
) f
"""


def _facts_sql(keys: str, early: str) -> str:
    """The facts statement with its two parameters at these placeholders (e.g. "$1")."""
    return _FACTS_SELECT.replace(":keys", keys).replace(":early", early)


_FACTS = _facts_sql("$1", "$2")


class ScanKey(msgspec.Struct, frozen=True):
    """What the facts of one scan are looked up by."""

    id: uuid.UUID
    checkpoint_id: int
    claimed_site_id: int | None  # a QR token's site, None for NFC (its tag named the row)
    token_version: int | None  # a QR token's version, None for NFC
    guard_id: int
    scanned_at: datetime


class ScanFact(msgspec.Struct, frozen=True):
    """What the flag rules need of one scan: its checkpoint, round, and the guard's scans."""

    pos: int
    cp_site_id: int
    cp_lat: float | None
    cp_lon: float | None
    cp_radius_m: float | None
    stored: bool  # the id is stored already: a retry
    round_id: int | None
    starts_at: datetime | None
    ends_at: datetime | None
    grace_minutes: int | None
    ordered: bool | None
    not_before: int | None  # this checkpoint's, -1 for none
    expected: list[int] | None  # an ordered round's route, else None
    round_scanned: list[int] | None  # an ordered round's distinct scans so far, else None
    prev_at: datetime | None
    prev_checkpoint: int | None
    prev_lat: float | None
    prev_lon: float | None
    recent_others: list[datetime]


_facts_decoder = msgspec.json.Decoder(list[ScanFact])


async def scan_facts(conn: Connection, keys: Sequence[ScanKey]) -> list[ScanFact | None]:
    """The facts of each scan, in order; None where the checkpoint did not pass.

    The group goes in and comes back as one JSON document: one parameter and one value
    instead of a dozen arrays and a record per scan."""
    if not keys:
        return []
    return _facts_in_order(await conn.fetchval(_FACTS, keys, EARLY_MATCH), len(keys))


def _facts_in_order(text: str, count: int) -> list[ScanFact | None]:
    found: list[ScanFact | None] = [None] * count
    for fact in _facts_decoder.decode(text):
        found[fact.pos - 1] = fact
    return found


# Insert the scans (a retried id stores nothing) and advance their rounds: each round's
# row is locked (in id order, so two groups never deadlock) and re-read under the lock, so
# scans of a round's last checkpoints arriving in two groups at once still complete it. A
# closed round is re-scored (completed or incomplete) until final_after, and the change is
# recorded. A scan of a checkpoint its round already has does not write the round at all.
_INSERT_CTES = """
WITH input AS (
    SELECT * FROM ROWS FROM (jsonb_to_recordset($1::jsonb)
             AS (id uuid, site_id bigint, checkpoint_id bigint, round_id bigint,
                 guard_id bigint, method text, scanned_at timestamptz, sent_at timestamptz,
                 lat float8, lon float8, accuracy_m float8, note text, nfc_counter int,
                 flags text[]))
         WITH ORDINALITY AS t(id, site_id, checkpoint_id, round_id, guard_id, method,
                              scanned_at, sent_at, lat, lon, accuracy_m, note, nfc_counter,
                              flags, pos)
),
ins AS (
    INSERT INTO scans (id, site_id, checkpoint_id, round_id, guard_id, method, scanned_at,
                       received_at, sent_at, lat, lon, accuracy_m, note, nfc_counter, flags)
    SELECT id, site_id, checkpoint_id, round_id, guard_id, method, scanned_at,
           $2::timestamptz, sent_at, lat, lon, accuracy_m, note, nfc_counter, flags
    FROM input ORDER BY pos
    ON CONFLICT (id) DO NOTHING
    RETURNING id, round_id, checkpoint_id, site_id, scanned_at
),
-- A scan stored after its UTC day marks the day for the report's rollups to be rebuilt
-- (server.patrol.rollup); today's scans are rolled up only once the day is over.
late_days AS (
    INSERT INTO patrol_days_dirty (site_id, day)
    SELECT DISTINCT site_id, (scanned_at AT TIME ZONE 'UTC')::date FROM ins
    WHERE scanned_at < date_trunc('day', $2::timestamptz, 'UTC')
),
added AS (
    SELECT ins.round_id, array_agg(ins.checkpoint_id ORDER BY i.pos) AS checkpoints,
           (array_agg(ins.id ORDER BY i.pos))[1] AS first_scan
    FROM ins JOIN input i ON i.id = ins.id
    WHERE ins.round_id IS NOT NULL
    GROUP BY ins.round_id
),
-- The rounds are found by id (= ANY of an array): an index probe each, whatever the planner
-- guesses of the group's size.
locked AS (
    SELECT r.id, r.status, r.scanned FROM rounds r
    WHERE r.id = ANY (ARRAY(SELECT round_id FROM added))
      AND NOT ((SELECT a.checkpoints FROM added a WHERE a.round_id = r.id) <@ r.scanned)
      AND (r.closed_at IS NULL OR r.final_after >= $2::timestamptz)
    ORDER BY r.id
    FOR NO KEY UPDATE OF r
),
progress AS (
    -- Distinct checkpoints in the order first scanned; a round's scanned are all expected.
    SELECT l.id, l.status AS old_status, a.first_scan,
           l.scanned || ARRAY(SELECT u.c FROM unnest(a.checkpoints) WITH ORDINALITY u(c, o)
                              WHERE u.c <> ALL(l.scanned) GROUP BY u.c ORDER BY min(u.o))
               AS scanned
    FROM locked l JOIN added a ON a.round_id = l.id
),
upd AS (
    UPDATE rounds r SET
        scanned = p.scanned,
        scanned_count = cardinality(p.scanned),
        status = CASE
            WHEN r.expected <@ p.scanned THEN 'completed'
            WHEN r.closed_at IS NULL THEN 'in_progress'
            ELSE 'incomplete' END
    FROM progress p
    WHERE r.id = p.id AND r.id = ANY (ARRAY(SELECT id FROM progress))
    RETURNING r.id, r.status
),
changes AS (
    INSERT INTO round_changes (round_id, from_status, to_status, scan_id, reason)
    SELECT u.id, p.old_status, u.status, p.first_scan, 'late offline scan'
    FROM upd u JOIN progress p ON p.id = u.id
    WHERE p.old_status IN ('incomplete', 'missed') AND u.status <> p.old_status
)
"""
_INSERT = _INSERT_CTES + "SELECT id FROM ins"
# The next group's facts ride along: one statement (one round trip, one plan start) per
# group. They are read in the statement's snapshot, from before this group's rows: the
# caller adds this group's scans to the next group's (server.patrol.scans).
_INSERT_THEN_FACTS = (
    _INSERT_CTES + "SELECT ARRAY(SELECT id FROM ins) AS stored, (" + _facts_sql("$3", "$4") + ")"
)


class NewScan(msgspec.Struct, frozen=True):
    id: uuid.UUID
    site_id: int
    checkpoint_id: int
    round_id: int | None
    guard_id: int
    method: str
    scanned_at: datetime
    sent_at: datetime | None
    lat: float | None
    lon: float | None
    accuracy_m: float | None
    note: str | None
    nfc_counter: int | None
    flags: tuple[str, ...]


async def insert_scans(
    conn: Connection, scans: Sequence[NewScan], received_at: datetime
) -> set[uuid.UUID]:
    """Store the scans and advance their rounds; the ids stored (a known id is not)."""
    if not scans:
        return set()
    rows = await conn.fetch(_INSERT, scans, received_at)
    return {r["id"] for r in rows}


async def insert_scans_then_facts(
    conn: Connection, scans: Sequence[NewScan], received_at: datetime, keys: Sequence[ScanKey]
) -> tuple[set[uuid.UUID], list[ScanFact | None]]:
    """insert_scans, and in the same statement the facts of the next scans, as scan_facts
    would read them just before these scans are stored."""
    if not scans:
        return set(), await scan_facts(conn, keys)
    if not keys:
        return await insert_scans(conn, scans, received_at), []
    row = await conn.fetchrow(_INSERT_THEN_FACTS, scans, received_at, keys, EARLY_MATCH)
    assert row is not None
    return set(row[0]), _facts_in_order(row[1], len(keys))


async def record_refusal(
    conn: Connection,
    *,
    client_id: uuid.UUID | None,
    site_id: int | None,
    checkpoint_id: int | None,
    guard_id: int,
    method: str,
    reason: str,
    detail: str,
    scanned_at: datetime | None,
) -> None:
    await conn.execute(
        "INSERT INTO scan_refusals (client_id, site_id, checkpoint_id, guard_id, method, reason,"
        " detail, scanned_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        client_id,
        site_id,
        checkpoint_id,
        guard_id,
        method,
        reason,
        detail,
        scanned_at,
    )


async def list_refusals(conn: Connection, site_id: int, after: int, limit: int) -> list[Refusal]:
    rows = await conn.fetch(
        "SELECT id, client_id, site_id, checkpoint_id, guard_id, method, reason, detail,"
        " scanned_at, received_at FROM scan_refusals WHERE site_id = $1 AND id > $2"
        " ORDER BY id LIMIT $3",
        site_id,
        after,
        limit + 1,
    )
    return [msgspec.convert(dict(r), Refusal) for r in rows]


# --- rounds: reading and the patrol log ---------------------------------------------

_ROUND_COLS = (
    "id, site_id, route_id, starts_at, ends_at, grace_minutes, status,"
    " cardinality(expected) AS expected_count, scanned_count,"
    " (closed_at IS NOT NULL AND final_after > now()) AS provisional"
)


async def list_rounds(
    conn: Connection,
    visible: list[int] | None,
    site_id: int | None,
    status: str | None,
    start: datetime | None,
    end: datetime | None,
    after: int,
    limit: int,
) -> list[Round]:
    rows = await conn.fetch(
        f"SELECT {_ROUND_COLS} FROM rounds WHERE id > $1"
        " AND ($2::bigint[] IS NULL OR site_id = ANY($2))"
        " AND ($3::bigint IS NULL OR site_id = $3)"
        " AND ($4::text IS NULL OR status = $4)"
        " AND ($5::timestamptz IS NULL OR starts_at >= $5)"
        " AND ($6::timestamptz IS NULL OR starts_at < $6)"
        " ORDER BY id LIMIT $7",
        after,
        visible,
        site_id,
        status,
        start,
        end,
        limit + 1,
    )
    return [msgspec.convert(dict(r), Round) for r in rows]


async def get_round(conn: Connection, round_id: int) -> Round | None:
    row = await conn.fetchrow(f"SELECT {_ROUND_COLS} FROM rounds WHERE id = $1", round_id)
    return msgspec.convert(dict(row), Round) if row else None


async def round_detail(conn: Connection, rnd: Round) -> RoundDetail:
    cps = await conn.fetch(
        "SELECT e.checkpoint_id, e.position - 1 AS position, c.name, s.id AS scan_id,"
        " s.scanned_at, s.guard_id, coalesce(s.flags, '{}') AS flags"
        " FROM rounds r CROSS JOIN LATERAL unnest(r.expected) WITH ORDINALITY"
        "   AS e(checkpoint_id, position)"
        " JOIN checkpoints c ON c.id = e.checkpoint_id"
        " LEFT JOIN LATERAL (SELECT * FROM scans s WHERE s.round_id = r.id"
        "   AND s.checkpoint_id = e.checkpoint_id ORDER BY s.scanned_at LIMIT 1) s ON true"
        " WHERE r.id = $1 ORDER BY e.position",
        rnd.id,
    )
    log = await conn.fetch(
        "SELECT id, round_id, scan_id, author_id, found, action_taken, created_at"
        " FROM patrol_log WHERE round_id = $1 ORDER BY id",
        rnd.id,
    )
    changes = await conn.fetch(
        "SELECT from_status, to_status, reason, scan_id, at FROM round_changes"
        " WHERE round_id = $1 ORDER BY id",
        rnd.id,
    )
    return RoundDetail(
        round=rnd,
        checkpoints=[msgspec.convert(dict(r), RoundCheckpoint) for r in cps],
        log=[msgspec.convert(dict(r), LogEntry) for r in log],
        changes=[msgspec.convert(dict(r), RoundChange) for r in changes],
    )


async def add_log(conn: Connection, round_id: int, author_id: int, data: LogIn) -> LogEntry:
    if data.scan_id is not None:
        ok = await conn.fetchval(
            "SELECT true FROM scans WHERE id = $1 AND round_id = $2", data.scan_id, round_id
        )
        if not ok:
            raise Invalid("scan_id", "no such scan in this round")
    row = await conn.fetchrow(
        "INSERT INTO patrol_log (round_id, scan_id, author_id, found, action_taken)"
        " VALUES ($1, $2, $3, $4, $5)"
        " RETURNING id, round_id, scan_id, author_id, found, action_taken, created_at",
        round_id,
        data.scan_id,
        author_id,
        data.found,
        data.action_taken,
    )
    return msgspec.convert(dict(row), LogEntry)  # type: ignore[arg-type]

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


# A scan in one statement, atomic without a transaction: check the checkpoint (and, for
# a QR token, its site and token version), find the round this scan belongs to (the one
# whose window holds it, preferring on-time over early or late), store the scan, and
# advance the round. It returns what the flag rules need -- the checkpoint, the round as
# it was, the guard's previous and recent scans -- read from the snapshot before the
# insert. The round's new status is computed from its own row under the row lock, so two
# scans of a round's last two checkpoints arriving together still complete it; a closed
# round is re-scored (completed or incomplete) until final_after.
_INGEST = """
WITH cp AS (
    SELECT id, site_id, zone_id, unit_id, lat, lon, radius_m FROM checkpoints
    WHERE id = $1 AND active
      AND ($2::bigint IS NULL OR site_id = $2)
      AND ($3::int IS NULL OR token_version = $3)
      AND ($4::bigint[] IS NULL OR site_id = ANY($4))
),
rd AS (
    SELECT r.id, r.starts_at, r.ends_at, r.grace_minutes, r.ordered, r.expected, r.not_before,
           r.scanned
    FROM rounds r, cp
    WHERE r.site_id = cp.site_id AND r.expected @> ARRAY[cp.id]
      AND r.starts_at <= $6::timestamptz + $16::interval
      AND r.ends_at + make_interval(mins => r.grace_minutes) >= $6::timestamptz
      AND r.starts_at > $6::timestamptz - interval '2 days'
      AND (NOT EXISTS (SELECT 1 FROM patrol_route_guards g WHERE g.route_id = r.route_id)
           OR EXISTS (SELECT 1 FROM patrol_route_guards g
                      WHERE g.route_id = r.route_id AND g.user_id = $5))
    ORDER BY (r.starts_at <= $6::timestamptz AND $6::timestamptz < r.ends_at) DESC,
             (r.starts_at <= $6::timestamptz) DESC, r.starts_at DESC
    LIMIT 1
),
prev AS (
    SELECT p.scanned_at, p.checkpoint_id, p.lat, p.lon FROM scans p
    WHERE p.guard_id = $5 AND p.scanned_at <= $6::timestamptz
    ORDER BY p.scanned_at DESC LIMIT 1
),
-- A few are enough to tell a burst; never the whole minute of a busy guard.
recent AS (
    SELECT coalesce(array_agg(o.scanned_at), '{}') AS at FROM (
        SELECT scanned_at FROM scans
        WHERE guard_id = $5 AND checkpoint_id <> $1
          AND scanned_at BETWEEN $6::timestamptz - interval '60 seconds' AND $6::timestamptz
        ORDER BY scanned_at DESC LIMIT 10) o
),
ins AS (
    INSERT INTO scans (id, site_id, checkpoint_id, round_id, guard_id, method, scanned_at,
                       received_at, sent_at, lat, lon, accuracy_m, note, nfc_counter)
    SELECT $7, cp.site_id, cp.id, (SELECT id FROM rd), $5, $8, $6, $9, $10, $11, $12, $13,
           $14, $15
    FROM cp
    ON CONFLICT (id) DO NOTHING
    RETURNING round_id
),
locked AS (
    SELECT r.id, r.status FROM rounds r JOIN ins ON r.id = ins.round_id FOR UPDATE OF r
),
upd AS (
    UPDATE rounds r SET
        scanned = CASE WHEN $1 = ANY(r.scanned) THEN r.scanned ELSE r.scanned || $1::bigint END,
        scanned_count = (SELECT count(DISTINCT e) FROM unnest(r.expected) e
                         WHERE e = ANY(r.scanned || $1::bigint)),
        status = CASE
            WHEN r.expected <@ (r.scanned || $1::bigint) THEN 'completed'
            WHEN r.closed_at IS NULL THEN 'in_progress'
            ELSE 'incomplete' END
    FROM locked
    WHERE r.id = locked.id AND (r.closed_at IS NULL OR r.final_after >= $9)
    RETURNING r.status
)
SELECT (SELECT count(*) FROM ins) AS inserted,
       (SELECT status FROM locked) AS old_status,
       (SELECT status FROM upd) AS new_status,
       cp.site_id AS cp_site_id, cp.zone_id AS cp_zone_id, cp.unit_id AS cp_unit_id,
       cp.lat AS cp_lat, cp.lon AS cp_lon, cp.radius_m AS cp_radius_m,
       rd.id AS round_id, rd.starts_at, rd.ends_at, rd.grace_minutes, rd.ordered, rd.expected,
       rd.not_before, rd.scanned AS round_scanned,
       prev.scanned_at AS prev_at, prev.checkpoint_id AS prev_checkpoint,
       prev.lat AS prev_lat, prev.lon AS prev_lon,
       (SELECT at FROM recent) AS recent_others
FROM (SELECT 1) one
LEFT JOIN cp ON true
LEFT JOIN rd ON true
LEFT JOIN prev ON true
"""


async def ingest_scan(
    conn: Connection,
    *,
    scan_id: uuid.UUID,
    checkpoint_id: int,
    claimed_site_id: int | None,
    token_version: int | None,
    visible_sites: list[int] | None,
    guard_id: int,
    method: str,
    scanned_at: datetime,
    received_at: datetime,
    sent_at: datetime | None,
    lat: float | None,
    lon: float | None,
    accuracy_m: float | None,
    note: str | None,
    nfc_counter: int | None,
) -> asyncpg.Record:
    """Store a scan and advance its round; returns the facts its flags are computed from.

    ``inserted`` is 0 when the checkpoint did not pass (unknown, inactive, another site,
    revoked token: the caller finds out which) or the scan id is already stored (a retry).
    """
    row = await conn.fetchrow(
        _INGEST,
        checkpoint_id,
        claimed_site_id,
        token_version,
        visible_sites,
        guard_id,
        scanned_at,
        scan_id,
        method,
        received_at,
        sent_at,
        lat,
        lon,
        accuracy_m,
        note,
        nfc_counter,
        EARLY_MATCH,
    )
    assert row is not None
    old, new = row["old_status"], row["new_status"]
    if old is not None and new is not None and old != new and old in ("incomplete", "missed"):
        await conn.execute(
            "INSERT INTO round_changes (round_id, from_status, to_status, scan_id, reason)"
            " VALUES ($1, $2, $3, $4, 'late offline scan')",
            row["round_id"],
            old,
            new,
            scan_id,
        )
    return row


async def set_flags(conn: Connection, scan_id: uuid.UUID, flags: Sequence[str]) -> None:
    """Most scans raise no doubt; only those that do pay for this second statement."""
    await conn.execute("UPDATE scans SET flags = $2 WHERE id = $1", scan_id, list(flags))


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

"""The patrol report from daily rollups equals the report from raw scans, figure for figure:
over random histories and periods, after late scans dirty a day and after it is rebuilt;
and concurrent rollup passes never build the same day."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import asyncpg

from server import scheduler
from server.config import Settings
from server.db import create_pool, init_connection
from server.patrol import store
from server.patrol.report import patrol_report
from server.patrol.rollup import SETTLE, roll_up_patrol_days
from tests.conftest import World

HISTORY_DAYS = 9  # the days before today with scans (some left empty), then today
EMPTY_DAYS = (2, 5)  # days (from the first) without scans


@dataclass
class History:
    """A site with guards, checkpoints (one inactive) and rounds, and random scans."""

    site: int
    guards: list[int]
    checkpoints: list[int]
    first_day: datetime  # UTC midnight of the first day with scans


def _utc_midnight(d: date) -> datetime:
    return datetime.combine(d, time(), UTC)


async def _history(world: World, code: str, rng: random.Random, now: datetime) -> History:
    conn = world.conn
    site = await world.site(code)
    guards = [(await world.user(f"{code}-g{i}", "guard", site)).id for i in range(3)]
    checkpoints = [
        await conn.fetchval(
            "INSERT INTO checkpoints (site_id, name, active) VALUES ($1, $2, $3) RETURNING id",
            site,
            f"CP{i}",
            i != 4,
        )
        for i in range(5)
    ]
    route = await conn.fetchval(
        "INSERT INTO patrol_routes (site_id, name, interval_minutes, duration_minutes)"
        " VALUES ($1, 'Night', 240, 180) RETURNING id",
        site,
    )
    first_day = _utc_midnight(now.date()) - timedelta(days=HISTORY_DAYS)
    # Rounds of 3 hours every 4 hours from 22:00, so some run across midnight.
    rounds = [
        (
            await conn.fetchval(
                "INSERT INTO rounds (site_id, route_id, starts_at, ends_at, grace_minutes,"
                " ordered, expected, not_before) VALUES ($1, $2, $3, $4, 0, false, $5, $6)"
                " RETURNING id",
                site,
                route,
                start,
                start + timedelta(hours=3),
                checkpoints,
                [-1] * len(checkpoints),
            ),
            start,
        )
        for start in (
            first_day - timedelta(hours=2) + timedelta(hours=4 * i)
            for i in range(6 * (HISTORY_DAYS + 1) + 1)
        )
    ]
    times: list[datetime] = []
    for day in range(HISTORY_DAYS + 1):
        midnight = first_day + timedelta(days=day)
        if day in EMPTY_DAYS:
            continue
        if day == 3:  # one scan only
            times.append(midnight + timedelta(hours=rng.uniform(0, 24)))
            continue
        times += [midnight + timedelta(hours=rng.uniform(0, 24)) for _ in range(rng.randint(5, 40))]
        # On the day's first and last instants (1 µs from the next day's first), and two
        # at the same instant.
        times += [midnight, midnight + timedelta(days=1, microseconds=-1)]
        times += [midnight + timedelta(hours=6)] * 2
    # Today's scans so far, and one of a phone whose clock runs ahead.
    times = [t for t in times if t < now] + [now + timedelta(hours=1)]
    rows = []
    for at in times:
        rnd = next((r for r, start in rounds if start <= at < start + timedelta(hours=3)), None)
        rows.append(
            (
                uuid.uuid4(),
                site,
                rng.choice(checkpoints),
                rnd if rng.random() < 0.8 else None,
                rng.choice(guards),
                at,
                rng.choice([[], [], ["late"], ["outside_geofence", "burst"]]),
            )
        )
    await conn.executemany(
        "INSERT INTO scans (id, site_id, checkpoint_id, round_id, guard_id, method, scanned_at,"
        " flags) VALUES ($1, $2, $3, $4, $5, 'qr', $6, $7)",
        rows,
    )
    return History(site, guards, checkpoints, first_day)


def _periods(rng: random.Random, h: History, now: datetime) -> list[tuple[datetime, datetime]]:
    """Periods on day bounds, mid-day, covering today, in the future, and without scans."""
    day = timedelta(days=1)
    midnights = [h.first_day + i * day for i in range(HISTORY_DAYS + 2)]
    periods = [
        (h.first_day - 3 * day, now + day),
        (midnights[1], midnights[-2]),
        (midnights[2], midnights[3]),  # an empty day
        (midnights[6], midnights[8]),  # starts at a scan: a checkpoint's day starts there
        (h.first_day - 5 * day, h.first_day - 2 * day),  # before any scan
        (now - timedelta(hours=30), now),
        (now + timedelta(hours=2), now + timedelta(hours=5)),
        (midnights[1] + timedelta(hours=7), midnights[-3] + timedelta(minutes=1)),
    ]
    anchors = [*midnights, now, now + timedelta(hours=3)]
    while len(periods) < 60:
        a, b = sorted(
            rng.choice(anchors)
            if rng.random() < 0.4
            else h.first_day + timedelta(seconds=rng.uniform(-86400, 11 * 86400))
            for _ in range(2)
        )
        if a < b:
            periods.append((a, b))
    return periods


async def _assert_equal_to_raw(
    conn: asyncpg.Connection[asyncpg.Record], site: int, periods: list[tuple[datetime, datetime]]
) -> None:
    for start, end in periods:
        raw = await patrol_report(conn, site, start, end, rolled_up=False)
        rolled = await patrol_report(conn, site, start, end)
        assert rolled == raw, (start, end)


async def _roll_up(conn: asyncpg.Connection[asyncpg.Record], now: datetime) -> int:
    """Passes until there is nothing left; the site-days (re)built."""
    total = 0
    while True:
        async with conn.transaction():
            done = await roll_up_patrol_days(conn, now, batch=4)
        if not done:
            return total
        total += done


async def _built_until(conn: asyncpg.Connection[asyncpg.Record], site: int) -> date:
    until: date = await conn.fetchval(
        "SELECT built_until FROM patrol_days_built WHERE site_id = $1", site
    )
    return until


async def test_rolled_up_report_equals_raw_over_random_periods(world: World) -> None:
    conn = world.conn
    await conn.execute("SET timezone = 'America/New_York'")  # days are UTC days regardless
    now = datetime.now(UTC)
    rng = random.Random(7)
    h = await _history(world, "garden", rng, now)
    periods = _periods(rng, h, now)
    await _assert_equal_to_raw(conn, h.site, periods)  # nothing rolled up yet
    # A scheduler that ran until 3 days ago: the days since are read raw.
    earlier = now - timedelta(days=3)
    await _roll_up(conn, earlier)
    assert await _built_until(conn, h.site) == (earlier - SETTLE).date()
    await _assert_equal_to_raw(conn, h.site, periods)

    settled = (now - SETTLE).date()
    assert await _roll_up(conn, now) == (settled - (earlier - SETTLE).date()).days
    assert await _built_until(conn, h.site) == settled
    built = await conn.fetchval("SELECT count(*) FROM patrol_days WHERE site_id = $1", h.site)
    assert built == HISTORY_DAYS - len(EMPTY_DAYS) - (settled < now.date())
    await _assert_equal_to_raw(conn, h.site, periods)

    # The rollups are what the report reads: a wrong rollup shows.
    whole = (h.first_day - timedelta(days=1), now)
    before = await patrol_report(conn, h.site, *whole)
    await conn.execute("UPDATE patrol_guard_days SET scans = scans + 1000")
    assert await patrol_report(conn, h.site, *whole) != before
    await conn.execute("UPDATE patrol_guard_days SET scans = scans - 1000")
    await conn.execute("UPDATE patrol_checkpoint_days SET longest_gap = longest_gap * 50")
    assert await patrol_report(conn, h.site, *whole) != before


async def test_average_gap_is_the_raw_average_to_the_last_digit(world: World) -> None:
    # Gaps of 1451, 3998, 1865 and 60 s average exactly 30.725 minutes; avg() over the gaps
    # in numeric minutes (each rounded to its digits) gives 30.72, and so must the rollups,
    # where (last - first) / (n - 1) would give 30.73. The second gap crosses midnight.
    conn = world.conn
    site = await world.site("garden")
    guard = (await world.user("guard1", "guard", site)).id
    cp = await conn.fetchval(
        "INSERT INTO checkpoints (site_id, name) VALUES ($1, 'Gate') RETURNING id", site
    )
    now = datetime.now(UTC)
    day = _utc_midnight(now.date()) - timedelta(days=3)
    at = day + timedelta(hours=23, minutes=10)
    times = [at]
    for gap in (1451, 3998, 1865, 60):
        times.append(times[-1] + timedelta(seconds=gap))
    await conn.executemany(
        "INSERT INTO scans (id, site_id, checkpoint_id, guard_id, method, scanned_at)"
        " VALUES ($1, $2, $3, $4, 'qr', $5)",
        [(uuid.uuid4(), site, cp, guard, t) for t in times],
    )
    await _roll_up(conn, now)
    assert await conn.fetchval("SELECT count(*) FROM patrol_days") == 2
    period = (day, day + timedelta(days=2))
    raw = await patrol_report(conn, site, *period, rolled_up=False)
    assert raw.minutes_between_scans.average == 30.72
    assert await patrol_report(conn, site, *period) == raw


async def test_late_and_changed_scans_dirty_their_day_until_rebuilt(world: World) -> None:
    conn = world.conn
    now = datetime.now(UTC)
    rng = random.Random(11)
    h = await _history(world, "garden", rng, now)
    periods = _periods(rng, h, now)
    await _roll_up(conn, now)
    late_day = h.first_day + timedelta(days=4)
    whole = (h.first_day, now)
    before = await patrol_report(conn, h.site, *whole, rolled_up=False)

    # An offline batch synced now: scans of a rolled-up day, and one of today.
    def scan(at: datetime, guard: int) -> store.NewScan:
        return store.NewScan(
            id=uuid.uuid4(),
            site_id=h.site,
            checkpoint_id=h.checkpoints[0],
            round_id=None,
            guard_id=guard,
            method="qr",
            scanned_at=at,
            sent_at=now,
            lat=None,
            lon=None,
            accuracy_m=None,
            note=None,
            nfc_counter=None,
            flags=("late",),
        )

    today = _utc_midnight(now.date())
    batch = [
        scan(late_day + timedelta(hours=3, seconds=0.5), h.guards[0]),
        scan(late_day + timedelta(hours=23, minutes=59), h.guards[1]),
        scan(max(today, now - timedelta(minutes=1)), h.guards[2]),
    ]
    async with conn.transaction():
        assert len(await store.insert_scans(conn, batch, now)) == 3
    marks = await conn.fetch("SELECT site_id, day FROM patrol_days_dirty")
    assert [(m["site_id"], m["day"]) for m in marks] == [(h.site, late_day.date())]
    after = await patrol_report(conn, h.site, *whole, rolled_up=False)
    assert after.guards != before.guards
    await _assert_equal_to_raw(conn, h.site, periods)

    assert await _roll_up(conn, now) == 1
    assert await conn.fetchval("SELECT count(*) FROM patrol_days_dirty") == 0
    assert await patrol_report(conn, h.site, *whole) == after
    await _assert_equal_to_raw(conn, h.site, periods)

    # Corrections by hand: a scan moved to another day, another deleted.
    moved = await conn.execute(
        "UPDATE scans SET scanned_at = scanned_at - interval '2 days'"
        " WHERE id = (SELECT id FROM scans WHERE site_id = $1 AND scanned_at >= $2"
        " ORDER BY scanned_at LIMIT 1)",
        h.site,
        h.first_day + timedelta(days=7),
    )
    deleted = await conn.execute(
        "DELETE FROM scans WHERE id = (SELECT id FROM scans WHERE site_id = $1"
        " AND scanned_at >= $2 ORDER BY scanned_at LIMIT 1)",
        h.site,
        h.first_day + timedelta(days=1, hours=12),
    )
    assert (moved, deleted) == ("UPDATE 1", "DELETE 1")
    assert await conn.fetchval("SELECT count(DISTINCT day) FROM patrol_days_dirty") == 3
    await _assert_equal_to_raw(conn, h.site, periods)
    assert await _roll_up(conn, now) == 3
    await _assert_equal_to_raw(conn, h.site, periods)


async def test_concurrent_rollup_passes_build_each_day_once(
    world: World, db_url: str, settings: Settings
) -> None:
    now = datetime.now(UTC)
    rng = random.Random(3)
    sites = [await _history(world, f"site{i}", rng, now) for i in range(5)]
    due = sum(((now - SETTLE).date() - h.first_day.date()).days for h in sites)
    async with world.conn.transaction():  # a first pass registers the sites
        first = await roll_up_patrol_days(world.conn, now, batch=1)

    a, b = await asyncpg.connect(db_url), await asyncpg.connect(db_url)
    try:
        await init_connection(a)
        await init_connection(b)
        in_a, in_b = a.transaction(), b.transaction()
        await in_a.start()
        await in_b.start()
        # A has claimed its sites and not committed: B takes other sites, without waiting.
        by_a = await roll_up_patrol_days(a, now, batch=2)
        by_b = await roll_up_patrol_days(b, now, batch=2)
        await in_b.commit()
        await in_a.commit()
    finally:
        await a.close()
        await b.close()
    assert (by_a, by_b) == (2, 2)
    # The scheduler's own pass, as `estateops scheduler` runs it, does the rest.
    pool = await create_pool(settings, min_size=1)
    try:
        rest = (await scheduler.run_once(pool, now))["roll_up_patrol_days"]
        assert (await scheduler.run_once(pool, now))["roll_up_patrol_days"] == 0
    finally:
        await pool.close()
    assert rest == due - first - by_a - by_b
    for h in sites:
        await _assert_equal_to_raw(world.conn, h.site, _periods(rng, h, now)[:10])

"""The patrol report and a deep list page over millions of scans.

Seeds SITES sites with checkpoints, guards, an every-2-hours route and its rounds over
enough days to reach --scans scans (default 10 million), rolls their days up as the
scheduler does (passes until none is left, timed), then times through the API:
- GET /api/reports/patrol for one site over 30 days and over 365 days, against a
  baseline on the same server: GET /api/rounds?site_id=&limit=1 (one indexed row).
- GET /api/rounds?site_id= first page against a page 90% deep (keyset `after`).

Targets: report p95 <= 100 ms; deep page no slower than 1.5x the first page.
Run: python bench/patrol_report.py [--scans 10000000] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

from harness import api_server, database, machine, today, write_section
from server.auth import Principal, issue_token, make_jwt_auth
from server.config import load_settings
from server.patrol.rollup import roll_up_patrol_days

SITES = 50
CHECKPOINTS = 20
GUARDS = 5
ROUNDS_PER_DAY = 12  # every 2 hours: the residential standard
SCANNED_SHARE = 0.95  # some checkpoints are missed


async def seed(url: str, scans: int) -> tuple[int, int, int]:
    """Returns (days of history, the site to report on, the scans stored)."""
    days = max(1, round(scans / (SITES * ROUNDS_PER_DAY * CHECKPOINTS * SCANNED_SHARE)))
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        await conn.execute(
            "INSERT INTO sites (code, name, kind, timezone, locale)"
            " SELECT 'site-' || s, 'Site ' || s, 'residential', 'Asia/Shanghai', 'zh-CN'"
            " FROM generate_series(1, $1) s",
            SITES,
        )
        await conn.execute(
            "INSERT INTO checkpoints (site_id, name, lat, lon)"
            " SELECT s.id, 'CP ' || c, 31 + c * 0.0003, 121 FROM sites s,"
            " generate_series(1, $1) c",
            CHECKPOINTS,
        )
        await conn.execute(
            "INSERT INTO users (username, password_hash, full_name, role)"
            " SELECT 'g-' || s.id || '-' || g, 'x', 'Guard ' || g, 'guard'"
            " FROM sites s, generate_series(1, $1) g",
            GUARDS,
        )
        await conn.execute(
            "INSERT INTO site_members (site_id, user_id) SELECT s.id, u.id FROM sites s"
            " JOIN users u ON u.username LIKE 'g-' || s.id || '-%'"
        )
        await conn.execute(
            "INSERT INTO patrol_routes (site_id, name, interval_minutes, duration_minutes,"
            " generated_until) SELECT id, 'Full', 120, 120, now() + interval '1 day' FROM sites"
        )
        await conn.execute(
            "INSERT INTO patrol_route_checkpoints (route_id, position, checkpoint_id)"
            " SELECT r.id, row_number() OVER (PARTITION BY r.id ORDER BY c.id) - 1, c.id"
            " FROM patrol_routes r JOIN checkpoints c ON c.site_id = r.site_id"
        )
        start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=days)
        await conn.execute(
            "INSERT INTO rounds (site_id, route_id, starts_at, ends_at, grace_minutes, ordered,"
            " expected, not_before, status, scanned, scanned_count, closed_at, final_after)"
            " SELECT r.site_id, r.id, t, t + interval '2 hours', 10, false,"
            "   (SELECT array_agg(checkpoint_id ORDER BY position)"
            "    FROM patrol_route_checkpoints WHERE route_id = r.id),"
            "   array_fill(-1, ARRAY[$3::int]), 'completed', '{}', 0,"
            "   t + interval '2 hours 10 minutes', t + interval '1 day 2 hours 10 minutes'"
            " FROM patrol_routes r,"
            "   generate_series($1::timestamptz, $2::timestamptz, interval '2 hours') t",
            start,
            start + timedelta(days=days) - timedelta(hours=2),
            CHECKPOINTS,
        )
        print(f"  {await conn.fetchval('SELECT count(*) FROM rounds'):,} rounds", flush=True)
        # Scans, site by site: each round's checkpoints ~6 minutes apart, some skipped.
        for site in range(1, SITES + 1):
            await conn.execute(
                "INSERT INTO scans (id, site_id, checkpoint_id, round_id, guard_id, method,"
                " scanned_at, received_at, lat, lon, flags)"
                " SELECT gen_random_uuid(), r.site_id, e.cp, r.id,"
                "   (SELECT min(user_id) FROM site_members m WHERE m.site_id = r.site_id)"
                "     + (r.id % $2), 'qr',"
                "   r.starts_at + make_interval(mins => 6 * e.pos::int),"
                "   r.starts_at + make_interval(mins => 6 * e.pos::int), 31, 121,"
                "   CASE WHEN random() < 0.03 THEN '{outside_geofence}'::text[] ELSE '{}' END"
                " FROM rounds r, unnest(r.expected) WITH ORDINALITY e(cp, pos)"
                " WHERE r.site_id = $1 AND random() < $3",
                site,
                GUARDS,
                SCANNED_SHARE,
            )
            if site % 10 == 0:
                print(f"  scans for {site}/{SITES} sites", flush=True)
        await conn.execute(
            "UPDATE rounds r SET scanned = s.cps, scanned_count = cardinality(s.cps),"
            " status = CASE WHEN cardinality(s.cps) = cardinality(r.expected) THEN 'completed'"
            "   WHEN cardinality(s.cps) = 0 THEN 'missed' ELSE 'incomplete' END"
            " FROM (SELECT round_id, array_agg(checkpoint_id) AS cps FROM scans"
            "   GROUP BY round_id) s WHERE s.round_id = r.id"
        )
        await conn.execute("VACUUM ANALYZE")
        total = await conn.fetchval("SELECT count(*) FROM scans")
        print(f"  {total:,} scans over {days} days in {time.perf_counter() - started:.0f} s")
        return days, 1, total
    finally:
        await conn.close()


async def roll_up(url: str) -> tuple[int, float]:
    """The scheduler's rollup passes until none is left: (site-days built, seconds)."""
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        built = 0
        while True:
            async with conn.transaction():
                done = await roll_up_patrol_days(conn, datetime.now(UTC))
            if not done:
                break
            built += done
        elapsed = time.perf_counter() - started
        print(f"  {built:,} site-days rolled up in {elapsed:.1f} s", flush=True)
        await conn.execute(
            "VACUUM ANALYZE patrol_days, patrol_guard_days, patrol_checkpoint_days,"
            " patrol_days_built, patrol_days_dirty"
        )
        return built, elapsed
    finally:
        await conn.close()


async def _deep_cursor(url: str, site: int) -> int:
    """The `after` cursor 90% of the way through a site's rounds."""
    conn = await asyncpg.connect(url)
    try:
        n = await conn.fetchval("SELECT count(*) FROM rounds WHERE site_id = $1", site)
        cursor: int = await conn.fetchval(
            "SELECT id FROM rounds WHERE site_id = $1 ORDER BY id OFFSET $2 LIMIT 1",
            site,
            int(n * 0.9),
        )
        return cursor
    finally:
        await conn.close()


def timed(client: httpx.Client, path: str, params: dict[str, object], n: int) -> dict[str, float]:
    for _ in range(3):  # warm
        client.get(path, params=params).raise_for_status()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        client.get(path, params=params).raise_for_status()
        samples.append((time.perf_counter() - t) * 1000)
    q = statistics.quantiles(samples, n=20)
    return {"p50": statistics.median(samples), "p95": q[18]}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scans", type=int, default=10_000_000)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    settings = load_settings()
    with database() as url:
        days, site, stored = asyncio.run(seed(url, args.scans))
        rolled_days, rollup_s = asyncio.run(roll_up(url))
        supervisor = Principal(id=1, username="bench", role="admin", site_ids=frozenset())
        token = issue_token(make_jwt_auth(settings), settings, supervisor)
        with (
            api_server(url) as base,
            httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60
            ) as client,
        ):
            now = datetime.now(UTC)
            baseline = timed(client, "/api/rounds", {"site_id": site, "limit": 1}, args.requests)
            month = timed(
                client,
                "/api/reports/patrol",
                {
                    "site_id": site,
                    "from": (now - timedelta(days=30)).isoformat(),
                    "to": now.isoformat(),
                },
                args.requests,
            )
            year = timed(
                client,
                "/api/reports/patrol",
                {
                    "site_id": site,
                    "from": (now - timedelta(days=365)).isoformat(),
                    "to": now.isoformat(),
                },
                max(10, args.requests // 3),
            )
            first = timed(client, "/api/rounds", {"site_id": site, "limit": 100}, args.requests)
            deep_after = asyncio.run(_deep_cursor(url, site))
            deep = timed(
                client,
                "/api/rounds",
                {"site_id": site, "limit": 100, "after": deep_after},
                args.requests,
            )
            assert client.get(
                "/api/rounds", params={"site_id": site, "limit": 100, "after": deep_after}
            ).json()["items"], "the deep page is empty"
    rows = [
        (
            "rollup of the seeded history (scheduler passes until none is left)",
            f"{rolled_days:,} site-days in {rollup_s:.1f} s",
            "",
        ),
        (
            "baseline: GET /api/rounds?limit=1",
            f"p50 {baseline['p50']:.1f} ms, p95 {baseline['p95']:.1f} ms",
            "",
        ),
        (
            "patrol report, 30 days of one site",
            f"p50 {month['p50']:.1f} ms, p95 {month['p95']:.1f} ms",
            f"{month['p95'] / baseline['p95']:.1f}x baseline p95 (target p95 <= 100 ms)",
        ),
        (
            "patrol report, 365 days of one site",
            f"p50 {year['p50']:.1f} ms, p95 {year['p95']:.1f} ms",
            f"{year['p95'] / baseline['p95']:.1f}x baseline p95",
        ),
        (
            "rounds list, first page (100)",
            f"p50 {first['p50']:.1f} ms, p95 {first['p95']:.1f} ms",
            "",
        ),
        (
            "rounds list, page 90% deep",
            f"p50 {deep['p50']:.1f} ms, p95 {deep['p95']:.1f} ms",
            f"{deep['p95'] / first['p95']:.2f}x first page p95 (target <= 1.5x)",
        ),
    ]
    table = "| measure | result | against target |\n|---|---|---|\n" + "\n".join(
        f"| {a} | {b} | {c} |" for a, b, c in rows
    )
    text = (
        f"## Patrol report and deep pages ({today()})\n\nMachine: {machine()}. {args.scans:,} "
        f"scans requested across {SITES} sites ({CHECKPOINTS} checkpoints, a 2-hourly route, "
        f"{days} days), {stored:,} stored; one API worker; sequential requests.\n"
        "Command: `python bench/patrol_report.py --write`\n\n" + table
    )
    print(text)
    if args.write:
        write_section("patrol_report", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

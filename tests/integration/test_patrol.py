"""Patrol end to end: routes, generated rounds, scans by QR and NFC, refusals, offline sync,
closing and re-scoring rounds, concurrent schedulers, the patrol report."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, time, timedelta
from typing import Any

import asyncpg
import pytest

from server.checkpoints import qr_token
from server.checkpoints.keys import qr_ring, seal_sun_keys
from server.db import init_connection
from server.patrol import store
from tests.conftest import World

AN12196_PICC = "EF963FF7828658A599F3041510671E88"
AN12196_CMAC = "94EED9EE65337086"
AN12196_UID = "04DE5F1EACC040"


class Patrol:
    """A site with three checkpoints on a route, a guard, a supervisor; helpers to scan."""

    def __init__(self, world: World, client: Any) -> None:
        self.world = world
        self.client = client

    async def setup(self, kind: str = "residential", tz: str = "Asia/Shanghai") -> Patrol:
        w = self.world
        self.site = await w.site("garden", kind=kind, tz=tz)
        self.other_site = await w.site("plaza", kind="commercial")
        self.zone = await w.zone(self.site)
        self.checkpoints = [
            await self.checkpoint(f"CP{i}", lat=31.0 + i * 0.001, lon=121.0) for i in range(3)
        ]
        self.foreign_cp = await self.checkpoint("Far", site=self.other_site)
        self.guard = await w.user("guard1", "guard", self.site)
        self.supervisor = await w.user("sup1", "supervisor", self.site)
        self.stranger = await w.user("guard2", "guard", self.other_site)
        return self

    async def checkpoint(
        self,
        name: str,
        *,
        site: int | None = None,
        lat: float | None = None,
        lon: float | None = None,
        nfc_uid: str | None = None,
        sun_keys: bytes | None = None,
    ) -> int:
        cp: int = await self.world.conn.fetchval(
            "INSERT INTO checkpoints (site_id, name, lat, lon, radius_m, nfc_uid, nfc_sun_keys)"
            " VALUES ($1, $2, $3, $4, 30, $5, $6) RETURNING id",
            site or self.site,
            name,
            lat,
            lon,
            nfc_uid,
            sun_keys,
        )
        return cp

    def token(self, cp: int, site: int | None = None, version: int = 1) -> str:
        return qr_token.sign(qr_ring(self.world.app.state.settings), site or self.site, cp, version)

    async def route(self, **overrides: Any) -> dict[str, Any]:
        body = {"name": "Night round", "checkpoint_ids": self.checkpoints, **overrides}
        r = await self.client.post(
            f"/api/sites/{self.site}/routes", json=body, headers=self.world.headers(self.supervisor)
        )
        assert r.status_code == 201, r.text
        result: dict[str, Any] = r.json()
        return result

    async def scan(self, who: Any = None, **body: Any) -> Any:
        body.setdefault("id", str(uuid.uuid4()))
        body.setdefault("scanned_at", datetime.now(UTC).isoformat())
        return await self.client.post(
            "/api/scans", json=body, headers=self.world.headers(who or self.guard)
        )


@pytest.fixture
async def patrol(world: World, client: Any) -> Patrol:
    return await Patrol(world, client).setup()


async def test_route_defaults_by_site_kind_and_generates_rounds(patrol: Patrol) -> None:
    route = await patrol.route()
    assert route["interval_minutes"] == 120  # residential: every 2 hours
    assert [c["checkpoint_id"] for c in route["checkpoints"]] == patrol.checkpoints
    rounds = await patrol.world.conn.fetch(
        "SELECT starts_at, ends_at, expected FROM rounds WHERE route_id = $1 ORDER BY starts_at",
        route["id"],
    )
    # 24 h ahead plus the one under way, every 2 hours.
    assert 12 <= len(rounds) <= 13
    assert all(r["ends_at"] - r["starts_at"] == timedelta(hours=2) for r in rounds)
    assert list(rounds[0]["expected"]) == patrol.checkpoints


async def test_commercial_route_defaults_to_hourly(world: World, client: Any) -> None:
    p = await Patrol(world, client).setup(kind="commercial")
    assert (await p.route())["interval_minutes"] == 60


async def test_route_refuses_checkpoint_of_another_site(patrol: Patrol) -> None:
    r = await patrol.client.post(
        f"/api/sites/{patrol.site}/routes",
        json={"name": "x", "checkpoint_ids": [patrol.checkpoints[0], patrol.foreign_cp]},
        headers=patrol.world.headers(patrol.supervisor),
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "checkpoint_ids[1]"


async def test_guard_cannot_create_routes(patrol: Patrol) -> None:
    r = await patrol.client.post(
        f"/api/sites/{patrol.site}/routes",
        json={"name": "x", "checkpoint_ids": patrol.checkpoints},
        headers=patrol.world.headers(patrol.guard),
    )
    assert r.status_code == 403


async def test_qr_scan_joins_current_round_and_is_idempotent(patrol: Patrol) -> None:
    route = await patrol.route()
    cp = patrol.checkpoints[0]
    scan_id = str(uuid.uuid4())
    body = {"id": scan_id, "qr": patrol.token(cp), "lat": 31.0, "lon": 121.0, "accuracy_m": 5}
    first = await patrol.scan(**body)
    assert first.status_code == 201, first.text
    out = first.json()
    assert out["checkpoint_id"] == cp
    assert out["round_id"] is not None
    assert out["flags"] == []
    again = await patrol.scan(**body)
    assert again.status_code == 200
    assert again.json() == out
    assert await patrol.world.conn.fetchval("SELECT count(*) FROM scans") == 1
    rnd = await patrol.world.conn.fetchrow(
        "SELECT status, scanned_count, route_id FROM rounds WHERE id = $1", out["round_id"]
    )
    assert (rnd["status"], rnd["scanned_count"], rnd["route_id"]) == ("in_progress", 1, route["id"])


async def test_round_completes_when_every_checkpoint_is_scanned(patrol: Patrol) -> None:
    await patrol.route()
    now = datetime.now(UTC)
    round_id = None
    for i, cp in enumerate(patrol.checkpoints):
        r = await patrol.scan(
            qr=patrol.token(cp),
            scanned_at=(now + timedelta(seconds=60 * i)).isoformat(),
            lat=31.0 + i * 0.001,
            lon=121.0,
        )
        assert r.status_code == 201
        round_id = r.json()["round_id"]
    detail = await patrol.client.get(
        f"/api/rounds/{round_id}", headers=patrol.world.headers(patrol.supervisor)
    )
    assert detail.status_code == 200
    d = detail.json()
    assert d["round"]["status"] == "completed"
    assert [c["scan_id"] is not None for c in d["checkpoints"]] == [True, True, True]


async def test_refusals_are_problems_and_kept(patrol: Patrol) -> None:
    cp = patrol.checkpoints[0]
    good = patrol.token(cp)
    forged = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    r = await patrol.scan(qr=forged)
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["reason"] == "invalid_qr"
    # Rotated: the old token's version is stale.
    await patrol.world.conn.execute("UPDATE checkpoints SET token_version = 2 WHERE id = $1", cp)
    assert (await patrol.scan(qr=good)).json()["reason"] == "revoked_qr"
    assert (await patrol.scan(qr=patrol.token(cp, version=2))).status_code == 201
    # A genuine token of another site, scanned by a guard of this one.
    foreign = patrol.token(patrol.foreign_cp, site=patrol.other_site)
    assert (await patrol.scan(qr=foreign)).json()["reason"] == "not_on_site"
    # A token whose signed site disagrees with the checkpoint's site.
    mixed = patrol.token(cp, site=patrol.other_site, version=2)
    assert (await patrol.scan(who=patrol.stranger, qr=mixed)).json()["reason"] == "invalid_qr"
    reasons = [
        r["reason"]
        for r in await patrol.world.conn.fetch("SELECT reason FROM scan_refusals ORDER BY id")
    ]
    assert reasons == ["invalid_qr", "revoked_qr", "not_on_site", "invalid_qr"]
    listed = await patrol.client.get(
        f"/api/sites/{patrol.site}/scan-refusals", headers=patrol.world.headers(patrol.supervisor)
    )
    assert listed.status_code == 200
    assert len(listed.json()["items"]) >= 2
    # Guards do not read the refusal log; other sites' supervisors get 404.
    assert (
        await patrol.client.get(
            f"/api/sites/{patrol.site}/scan-refusals", headers=patrol.world.headers(patrol.guard)
        )
    ).status_code == 403


async def test_exactly_one_proof_is_required(patrol: Patrol) -> None:
    cp = patrol.checkpoints[0]
    r = await patrol.scan(qr=patrol.token(cp), nfc_uid="04AABBCCDDEEFF")
    assert r.status_code == 422
    assert (await patrol.scan()).status_code == 422


async def test_nfc_uid_and_unknown_tag(patrol: Patrol) -> None:
    cp = await patrol.checkpoint("Tagged", nfc_uid="04AABBCCDDEEFF")
    r = await patrol.scan(nfc_uid="04:aa:bb:cc:dd:ee:ff")
    assert r.status_code == 201, r.text
    assert r.json()["checkpoint_id"] == cp
    assert "no_location" in r.json()["flags"]
    assert (await patrol.scan(nfc_uid="04AABBCCDDEE00")).json()["reason"] == "unknown_tag"


async def test_nfc_sun_an12196_example_and_replay(patrol: Patrol) -> None:
    kek = patrol.world.app.state.settings.keys.kek
    sealed = seal_sun_keys(kek, AN12196_UID, bytes(16), bytes(16))
    cp = await patrol.checkpoint("Secure tag", nfc_uid=AN12196_UID, sun_keys=sealed)
    sun = {"picc_data": AN12196_PICC, "cmac": AN12196_CMAC}
    first = await patrol.scan(nfc_sun=sun)
    assert first.status_code == 201, first.text
    assert first.json()["checkpoint_id"] == cp
    stored = await patrol.world.conn.fetchrow(
        "SELECT s.nfc_counter, c.nfc_counter AS last FROM scans s"
        " JOIN checkpoints c ON c.id = s.checkpoint_id"
    )
    assert (stored["nfc_counter"], stored["last"]) == (61, 61)
    # The same reading under a new scan id is a replay (or a clone).
    replay = await patrol.scan(nfc_sun=sun)
    assert replay.status_code == 422
    assert replay.json()["reason"] == "nfc_replay"
    # A wrong CMAC never verifies.
    bad = await patrol.scan(nfc_sun={"picc_data": AN12196_PICC, "cmac": "0" * 16})
    assert bad.json()["reason"] == "bad_sun"
    # The tag's UID alone is not accepted for a SUN tag.
    assert (await patrol.scan(nfc_uid=AN12196_UID)).json()["reason"] == "sun_required"


async def test_geofence_and_flags(patrol: Patrol) -> None:
    await patrol.route(ordered=True)
    now = datetime.now(UTC)
    # Third checkpoint first, far from where it is: out of order and outside the fence.
    r = await patrol.scan(
        qr=patrol.token(patrol.checkpoints[2]), lat=31.5, lon=121.5, scanned_at=now.isoformat()
    )
    flags = r.json()["flags"]
    assert "out_of_order" in flags
    assert "outside_geofence" in flags
    # Then another checkpoint 2 s later, 1 km away: too fast for walking.
    r = await patrol.scan(
        qr=patrol.token(patrol.checkpoints[0]),
        lat=31.0,
        lon=121.0,
        scanned_at=(now + timedelta(seconds=2)).isoformat(),
    )
    assert "too_fast" in r.json()["flags"]
    # A third checkpoint within seconds: a burst.
    r = await patrol.scan(
        qr=patrol.token(patrol.checkpoints[1]),
        lat=31.001,
        lon=121.0,
        scanned_at=(now + timedelta(seconds=4)).isoformat(),
    )
    assert "burst" in r.json()["flags"]
    # A phone clock 20 minutes off.
    r = await patrol.scan(
        qr=patrol.token(patrol.checkpoints[1]),
        lat=31.001,
        lon=121.0,
        scanned_at=(now + timedelta(minutes=20)).isoformat(),
    )
    assert "clock_skew" in r.json()["flags"]


async def test_batch_sync_is_idempotent_and_isolates_bad_items(patrol: Patrol) -> None:
    await patrol.route()
    now = datetime.now(UTC)
    items = [
        {
            "id": str(uuid.uuid4()),
            "qr": patrol.token(cp),
            "scanned_at": (now - timedelta(minutes=10 - i)).isoformat(),
            "lat": 31.0 + i * 0.001,
            "lon": 121.0,
        }
        for i, cp in enumerate(patrol.checkpoints)
    ]
    bad_schema = {"id": "not-a-uuid", "qr": "x", "scanned_at": now.isoformat()}
    forged = {"id": str(uuid.uuid4()), "qr": "v1.dev.1.1.1.AAAA", "scanned_at": now.isoformat()}
    body = {"sent_at": now.isoformat(), "scans": [items[0], bad_schema, items[1], forged, items[2]]}
    headers = patrol.world.headers(patrol.guard)
    r = await patrol.client.post("/api/scans/batch", json=body, headers=headers)
    assert r.status_code == 201, r.text
    out = r.json()
    assert (out["stored"], out["duplicates"], out["refused"]) == (3, 0, 2)
    assert [x["status"] for x in out["results"]] == [201, 422, 201, 422, 201]
    again = (await patrol.client.post("/api/scans/batch", json=body, headers=headers)).json()
    assert (again["stored"], again["duplicates"], again["refused"]) == (0, 3, 2)
    assert await patrol.world.conn.fetchval("SELECT count(*) FROM scans") == 3
    # The phone's clock is measured against its own sent_at.
    skewed = {
        "sent_at": (now - timedelta(hours=1)).isoformat(),
        "scans": [
            {
                "id": str(uuid.uuid4()),
                "qr": patrol.token(patrol.checkpoints[0]),
                "scanned_at": (now - timedelta(hours=1, minutes=1)).isoformat(),
            }
        ],
    }
    res = (await patrol.client.post("/api/scans/batch", json=skewed, headers=headers)).json()
    assert "clock_skew" in res["results"][0]["result"]["flags"]


async def test_batch_limit(patrol: Patrol) -> None:
    now = datetime.now(UTC).isoformat()
    scans = [{"id": str(uuid.uuid4()), "qr": "x", "scanned_at": now}] * 501
    r = await patrol.client.post(
        "/api/scans/batch",
        json={"sent_at": now, "scans": scans},
        headers=patrol.world.headers(patrol.guard),
    )
    assert r.status_code == 422


async def _round_at(
    conn: asyncpg.Connection[asyncpg.Record], route_id: int, at: datetime
) -> asyncpg.Record:
    row = await conn.fetchrow(
        "SELECT * FROM rounds WHERE route_id = $1 AND starts_at <= $2 AND ends_at > $2",
        route_id,
        at,
    )
    assert row is not None
    return row


async def test_missed_and_incomplete_rounds_alert_and_late_scan_rescores(patrol: Patrol) -> None:
    route = await patrol.route(grace_minutes=5)
    conn = patrol.world.conn
    now = datetime.now(UTC)
    current = await _round_at(conn, route["id"], now)
    # One checkpoint of the current round scanned; the next round untouched.
    r = await patrol.scan(qr=patrol.token(patrol.checkpoints[0]), lat=31.0, lon=121.0)
    assert r.json()["round_id"] == current["id"]
    later = current["ends_at"] + timedelta(hours=2, minutes=6)
    closed = await store.close_due_rounds(conn, later)
    statuses = dict(
        (r["id"], r["status"])
        for r in await conn.fetch("SELECT id, status FROM rounds WHERE closed_at IS NOT NULL")
    )
    assert statuses[current["id"]] == "incomplete"
    nxt = await conn.fetchval(
        "SELECT id FROM rounds WHERE route_id = $1 AND starts_at = $2",
        route["id"],
        current["ends_at"],
    )
    assert statuses[nxt] == "missed"
    assert set(closed) == {current["id"], nxt}
    alerts = {
        (a["kind"], a["subject_id"])
        for a in await conn.fetch("SELECT kind, subject_id FROM alerts")
    }
    assert alerts == {("round_incomplete", current["id"]), ("round_missed", nxt)}
    # A phone comes back online with the other two scans, made during the round.
    scanned_at = current["starts_at"] + timedelta(minutes=30)
    batch = {
        "sent_at": datetime.now(UTC).isoformat(),
        "scans": [
            {
                "id": str(uuid.uuid4()),
                "qr": patrol.token(cp),
                "scanned_at": (scanned_at + timedelta(minutes=i)).isoformat(),
            }
            for i, cp in enumerate(patrol.checkpoints[1:])
        ],
    }
    res = await patrol.client.post(
        "/api/scans/batch", json=batch, headers=patrol.world.headers(patrol.guard)
    )
    assert res.json()["stored"] == 2
    row = await conn.fetchrow(
        "SELECT status, scanned_count FROM rounds WHERE id = $1", current["id"]
    )
    assert (row["status"], row["scanned_count"]) == ("completed", 3)
    change = await conn.fetchrow("SELECT from_status, to_status FROM round_changes")
    assert (change["from_status"], change["to_status"]) == ("incomplete", "completed")
    detail = (
        await patrol.client.get(
            f"/api/rounds/{current['id']}", headers=patrol.world.headers(patrol.supervisor)
        )
    ).json()
    assert detail["changes"][0]["to_status"] == "completed"
    assert detail["round"]["provisional"] is True


async def test_two_schedulers_do_the_work_once(patrol: Patrol, db_url: str) -> None:
    route = await patrol.route()
    conn = patrol.world.conn
    await conn.execute("DELETE FROM rounds")
    await conn.execute("UPDATE patrol_routes SET generated_until = NULL")
    # More routes, so that both schedulers have something to claim.
    for i in range(6):
        await patrol.route(name=f"R{i}")
    await conn.execute("DELETE FROM rounds")
    await conn.execute("UPDATE patrol_routes SET generated_until = NULL")
    now = datetime.now(UTC)

    async def one_pass(at: datetime) -> tuple[int, list[int]]:
        c = await asyncpg.connect(db_url)
        await init_connection(c)
        try:
            async with c.transaction():
                made = await store.generate_rounds(c, at, batch=3)
            async with c.transaction():
                closed = await store.close_due_rounds(c, at + timedelta(days=2), batch=50)
            return made, closed
        finally:
            await c.close()

    results = await asyncio.gather(*(one_pass(now) for _ in range(4)))
    total_made = sum(m for m, _ in results)
    rows = await conn.fetchval("SELECT count(*) FROM rounds")
    assert total_made == rows
    assert rows == await conn.fetchval("SELECT count(DISTINCT (route_id, starts_at)) FROM rounds")
    closed_ids = [i for _, closed in results for i in closed]
    assert len(closed_ids) == len(set(closed_ids))
    assert await conn.fetchval("SELECT count(*) FROM alerts") == len(closed_ids)
    assert route["id"] in {r["route_id"] for r in await conn.fetch("SELECT route_id FROM rounds")}


async def test_window_across_midnight(world: World, client: Any) -> None:
    p = await Patrol(world, client).setup(tz="Asia/Shanghai")
    route = await p.route(
        interval_minutes=60,
        window_start="22:00:00",
        window_end="02:00:00",
        weekdays=[1, 2, 3, 4, 5, 6, 7],
    )
    starts = [
        r["starts_at"]
        for r in await world.conn.fetch(
            "SELECT starts_at FROM rounds WHERE route_id = $1", route["id"]
        )
    ]
    local = {s.astimezone(__import__("zoneinfo").ZoneInfo("Asia/Shanghai")).time() for s in starts}
    assert local <= {time(22), time(23), time(0), time(1)}
    assert starts


async def test_patrol_log_and_round_listing(patrol: Patrol) -> None:
    await patrol.route()
    r = await patrol.scan(qr=patrol.token(patrol.checkpoints[0]), lat=31.0, lon=121.0)
    round_id, scan_id = r.json()["round_id"], r.json()["id"]
    headers = patrol.world.headers(patrol.guard)
    log = await patrol.client.post(
        f"/api/rounds/{round_id}/log",
        json={
            "found": "消防通道被堵 Fire lane blocked",
            "action_taken": "Moved the bikes",
            "scan_id": scan_id,
        },
        headers=headers,
    )
    assert log.status_code == 201, log.text
    listed = await patrol.client.get(
        f"/api/rounds?site_id={patrol.site}&status=in_progress", headers=headers
    )
    assert [x["id"] for x in listed.json()["items"]] == [round_id]
    # Another site's guard sees neither the round nor its log.
    stranger = patrol.world.headers(patrol.stranger)
    assert (await patrol.client.get(f"/api/rounds/{round_id}", headers=stranger)).status_code == 404
    assert (
        await patrol.client.get(f"/api/rounds?site_id={patrol.site}", headers=stranger)
    ).status_code == 404


async def test_patrol_report_on_known_data(patrol: Patrol) -> None:
    conn = patrol.world.conn
    route = await patrol.route(grace_minutes=0, interval_minutes=60)
    base = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
    await conn.execute("DELETE FROM rounds")
    # Three past rounds: completed (3/3), incomplete (1/3), missed (0/3).
    ids = []
    for h in range(3):
        ids.append(
            await conn.fetchval(
                "INSERT INTO rounds (site_id, route_id, starts_at, ends_at, grace_minutes, ordered,"
                " expected, not_before) VALUES ($1, $2, $3, $4, 0, false, $5, '{-1,-1,-1}')"
                " RETURNING id",
                patrol.site,
                route["id"],
                base + timedelta(hours=h),
                base + timedelta(hours=h + 1),
                patrol.checkpoints,
            )
        )
    scans = [
        (ids[0], cp, base + timedelta(minutes=10 * (i + 1)))
        for i, cp in enumerate(patrol.checkpoints)
    ]
    scans.append((ids[1], patrol.checkpoints[0], base + timedelta(hours=1, minutes=20)))
    for round_id, cp, at in scans:
        await conn.execute(
            "INSERT INTO scans (id, site_id, checkpoint_id, round_id, guard_id, method, scanned_at,"
            " flags) VALUES ($1, $2, $3, $4, $5, 'qr', $6, $7)",
            uuid.uuid4(),
            patrol.site,
            cp,
            round_id,
            patrol.guard.id,
            at,
            ["late"] if round_id == ids[1] else [],
        )
    await conn.execute(
        "UPDATE rounds r SET scanned = coalesce((SELECT array_agg(DISTINCT s.checkpoint_id)"
        " FROM scans s WHERE s.round_id = r.id), '{}')"
    )
    await store.close_due_rounds(conn, base + timedelta(hours=5))
    r = await patrol.client.get(
        "/api/reports/patrol",
        params={
            "site_id": patrol.site,
            "from": base.isoformat(),
            "to": (base + timedelta(hours=3)).isoformat(),
        },
        headers=patrol.world.headers(patrol.supervisor),
    )
    assert r.status_code == 200, r.text
    rep = r.json()
    assert rep["rounds"] == {
        "total": 3,
        "scheduled": 0,
        "in_progress": 0,
        "completed": 1,
        "incomplete": 1,
        "missed": 1,
    }
    assert rep["completion_pct"] == round(100 * 4 / 9, 1)
    missed = {m["checkpoint_id"]: m["missed"] for m in rep["most_missed"]}
    assert missed == {patrol.checkpoints[0]: 1, patrol.checkpoints[1]: 2, patrol.checkpoints[2]: 2}
    guard = rep["guards"][0]
    assert (guard["scans"], guard["flagged_scans"], guard["rounds"]) == (4, 1, 2)
    # Scans at 00:10, 00:20, 00:30, 01:20: gaps 10, 10, 50 minutes.
    assert rep["minutes_between_scans"] == {"shortest": 10.0, "average": 23.33, "longest": 50.0}
    coverage = {c["checkpoint_id"]: c for c in rep["checkpoints"]}
    # CP0: scanned 00:10 and 01:20 -> longest gap 01:20 -> 03:00 = 100 minutes.
    assert coverage[patrol.checkpoints[0]]["longest_unvisited_minutes"] == 100.0
    # CP2: scanned 00:30 only -> 150 minutes to the end.
    assert coverage[patrol.checkpoints[2]]["longest_unvisited_minutes"] == 150.0
    # The foreign site's checkpoint is not in this site's report.
    assert patrol.foreign_cp not in coverage
    # Residents may not read patrol reports.
    unit = await patrol.world.unit(patrol.site)
    resident = await patrol.world.user("res", "resident", patrol.site, unit_id=unit)
    r = await patrol.client.get(
        "/api/reports/patrol",
        params={"site_id": patrol.site, "from": base.isoformat(), "to": base.isoformat()},
        headers=patrol.world.headers(resident),
    )
    assert r.status_code == 403


async def test_supervisors_see_and_acknowledge_missed_round_alerts(patrol: Patrol) -> None:
    route = await patrol.route(grace_minutes=0)
    conn = patrol.world.conn
    current = await _round_at(conn, route["id"], datetime.now(UTC))
    await store.close_due_rounds(conn, current["ends_at"] + timedelta(minutes=1))
    sup = patrol.world.headers(patrol.supervisor)
    listed = await patrol.client.get(
        f"/api/alerts?site_id={patrol.site}&unacknowledged=true", headers=sup
    )
    assert listed.status_code == 200
    alert = listed.json()["items"][0]
    assert (alert["kind"], alert["subject_id"]) == ("round_missed", current["id"])
    acked = await patrol.client.post(f"/api/alerts/{alert['id']}/ack", headers=sup)
    assert acked.status_code == 201
    assert acked.json()["acknowledged_by"] == patrol.supervisor.id
    again = await patrol.client.get(
        f"/api/alerts?site_id={patrol.site}&unacknowledged=true", headers=sup
    )
    assert again.json()["items"] == []
    # Guards do not get the supervisors' alerts; another site's supervisor gets 404.
    assert (
        await patrol.client.get("/api/alerts", headers=patrol.world.headers(patrol.guard))
    ).status_code == 403
    other_sup = await patrol.world.user("sup2", "supervisor", patrol.other_site)
    r = await patrol.client.post(
        f"/api/alerts/{alert['id']}/ack", headers=patrol.world.headers(other_sup)
    )
    assert r.status_code == 404

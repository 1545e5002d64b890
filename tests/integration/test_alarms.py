"""Alarms and devices without a broker: the ingest rules on a real PostgreSQL, the
inactivity check, the database refusing a payload, and the HTTP routes."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from mqtt_bridge.client import Received
from mqtt_bridge.ingest import Bridge, parse
from server.alarms import ingest as alarm_ingest
from server.alarms.ingest import IngestResult, ingest_batch, mark_silent_devices
from server.alarms.models import AlarmChange
from server.config import Settings
from server.db import create_pool
from tests.conftest import World
from tests.integration.conftest_mqtt import bridge_settings, event, topic

Conn = "asyncpg.Connection[asyncpg.Record]"


def message(t: str, payload: dict[str, Any] | bytes, at: float | None = None) -> Received:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Received(1, 1, 1, False, t, raw, at or time.time())


async def ingest(conn: Conn, *messages: Received) -> list[IngestResult]:
    async with conn.transaction():
        return await ingest_batch(conn, [parse(m, "estateops/v1") for m in messages])


def leak(**fields: Any) -> Received:
    return message(topic("garden", "leak-1"), event("leak-1", **fields))


async def seed(world: World, conn: Conn) -> int:
    site = await world.site("garden")
    await conn.executemany(
        "INSERT INTO devices (site_id, id, kind, name, gateway_id, inactivity_timeout_s)"
        " VALUES ($1, $2, $3, $2, $4, $5)",
        [
            (site, "leak-1", "water_leak", None, 3600),
            (site, "gw-1", "gateway", None, 300),
            (site, "s-1", "water_leak", "gw-1", 3600),
            (site, "s-2", "power", "gw-1", 600),
        ],
    )
    return site


async def leak_alarms(conn: Conn) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM alarms WHERE type = 'water_leak' ORDER BY id")


# --- the ingest rules -----------------------------------------------------------------------


async def test_duplicates_in_a_batch_and_across_batches_change_nothing(
    world: World, conn: Conn
) -> None:
    await seed(world, conn)
    first = leak(seq=1)
    results = await ingest(conn, first, first)
    assert [(r.outcome, r.effect) for r in results] == [("stored", "open"), ("duplicate", None)]
    assert results[0].alarm_id is not None
    (again,) = await ingest(conn, first)
    assert again.outcome == "duplicate"
    assert await conn.fetchval("SELECT count(*) FROM device_events") == 1
    assert [a["count"] for a in await leak_alarms(conn)] == [1]


async def test_late_events_are_ordered_by_boot_and_seq(world: World, conn: Conn) -> None:
    await seed(world, conn)
    await ingest(conn, leak(seq=10))
    # A late activation of the open alarm still counts; it does not move last_at back.
    later = datetime.now(UTC) + timedelta(minutes=1)
    await ingest(conn, leak(seq=11, ts=later))
    (late,) = await ingest(conn, leak(seq=9, ts=later - timedelta(minutes=5)))
    assert late.effect == "repeat"
    (alarm,) = await leak_alarms(conn)
    assert (alarm["count"], alarm["last_at"]) == (3, later)

    # The clear overtakes an activation sent before it: the alarm stays cleared.
    results = await ingest(conn, leak(seq=20, state="clear"), leak(seq=15))
    assert [r.effect for r in results] == ["clear", "stale"]
    (alarm,) = await leak_alarms(conn)
    assert alarm["status"] == "cleared_unack"
    # An old clear cannot clear a newer activation.
    await ingest(conn, leak(seq=30))
    (stale,) = await ingest(conn, leak(seq=25, state="clear"))
    assert stale.effect == "stale"
    assert [a["status"] for a in await leak_alarms(conn)] == ["cleared_unack", "active_unack"]
    # A reboot restarts seq and still comes after.
    (clear,) = await ingest(conn, leak(boot=2, seq=0, state="clear"))
    assert clear.effect == "clear"


async def test_an_activation_after_a_clear_opens_a_new_alarm_even_in_one_batch(
    world: World, conn: Conn
) -> None:
    await seed(world, conn)
    results = await ingest(
        conn,
        leak(seq=1, severity="minor"),
        leak(seq=2, severity="critical"),
        leak(seq=3, state="clear"),
        leak(seq=4, severity="warning"),
    )
    assert [r.effect for r in results] == ["open", "repeat", "clear", "open"]
    first, second = await leak_alarms(conn)
    assert (first["status"], first["count"], first["severity"]) == ("cleared_unack", 2, "critical")
    assert (second["status"], second["count"], second["severity"]) == ("active_unack", 1, "warning")
    assert [r.alarm_id for r in results] == [first["id"], first["id"], first["id"], second["id"]]
    # The partial unique index: never two open alarms of one device and type.
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(
            "INSERT INTO alarms (site_id, device_id, type, severity, status, first_at, last_at)"
            " SELECT site_id, device_id, type, severity, 'active_unack', now(), now() FROM alarms"
            " WHERE id = $1",
            second["id"],
        )


async def test_the_incidents_hook_hears_every_change_in_the_transaction(
    world: World, conn: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    await seed(world, conn)
    heard: list[AlarmChange] = []

    async def record(c: Any, changes: Any) -> None:
        assert c is conn  # the caller's connection (and so its transaction)
        heard.extend(changes)

    monkeypatch.setattr(alarm_ingest, "on_alarm_changes", record)
    await ingest(conn, leak(seq=1))
    await ingest(conn, leak(seq=2), leak(seq=3), leak(seq=4, state="clear"))
    (alarm,) = await leak_alarms(conn)
    assert [(h.change, h.alarm_id, h.device_kind) for h in heard] == [
        ("opened", alarm["id"], "water_leak"),
        ("repeated", alarm["id"], "water_leak"),
        ("cleared", alarm["id"], "water_leak"),
    ]


async def test_unknown_and_misrouted_senders_are_dead_letters(world: World, conn: Conn) -> None:
    site = await seed(world, conn)
    results = await ingest(
        conn,
        message(topic("garden", "ghost"), event("ghost")),
        message(topic("elsewhere", "leak-1"), event("leak-1")),
        message(topic("garden", "s-1", gateway="gw-9"), event("s-1")),
        message(topic("garden", "s-1", gateway="gw-1"), event("s-1", type="battery_low")),
    )
    assert [(r.outcome, r.reason) for r in results] == [
        ("dead_letter", "unknown_device"),
        ("dead_letter", "unknown_site"),
        ("dead_letter", "gateway_mismatch"),
        ("stored", None),
    ]
    rows = await conn.fetch("SELECT site_id, reason FROM dead_letters ORDER BY id")
    assert [(r["site_id"], r["reason"]) for r in rows] == [
        (site, "unknown_device"),
        (None, "unknown_site"),
        (site, "gateway_mismatch"),
    ]


async def test_after_a_last_will_only_a_newer_online_brings_the_device_back(
    world: World, conn: Conn
) -> None:
    await seed(world, conn)
    status = topic("garden", "leak-1", "status")
    await ingest(conn, message(status, {"state": "online", "boot": 3, "seq": 100}))
    await ingest(conn, message(status, {"state": "offline", "boot": 3, "seq": 100}))
    # An event sent on the connection that died, delivered after its will: still offline.
    await ingest(conn, leak(boot=3, seq=140))
    row = await conn.fetchrow("SELECT state, state_reason FROM devices WHERE id = 'leak-1'")
    assert (row["state"], row["state_reason"]) == ("offline", "status")
    (results,) = await ingest(conn, message(status, {"state": "online", "boot": 3, "seq": 100}))
    assert results.outcome == "status_ignored"  # the old online, redelivered
    await ingest(conn, message(status, {"state": "online", "boot": 3, "seq": 150}))
    assert await conn.fetchval("SELECT state FROM devices WHERE id = 'leak-1'") == "online"
    offline = await conn.fetchrow("SELECT * FROM alarms WHERE type = 'device_offline'")
    assert offline["status"] == "cleared_unack"
    # Plain `offline` (no boot/seq) applies in arrival order, and so does plain `online`.
    await ingest(conn, message(status, b"offline"))
    assert await conn.fetchval("SELECT state FROM devices WHERE id = 'leak-1'") == "offline"
    await ingest(conn, message(status, b"online"))
    assert await conn.fetchval("SELECT state FROM devices WHERE id = 'leak-1'") == "online"


async def test_silent_devices_go_offline_and_a_silent_gateways_children_unknown(
    world: World, conn: Conn
) -> None:
    await seed(world, conn)
    await conn.execute(
        "INSERT INTO devices (site_id, id, kind, name, inactivity_timeout_s)"
        " SELECT site_id, 'never', 'door', 'never', 60 FROM devices LIMIT 1"
    )
    t0 = time.time()
    gw = topic("garden", "gw-1", "status")
    await ingest(
        conn,
        message(gw, {"state": "online", "boot": 1, "seq": 1}, t0),
        leak(seq=1),
        message(topic("garden", "s-1", gateway="gw-1"), event("s-1", type="battery_low"), t0),
        message(topic("garden", "s-2", gateway="gw-1"), event("s-2", type="battery_low"), t0),
    )
    now = datetime.fromtimestamp(t0, UTC)
    assert await mark_silent_devices(conn, now + timedelta(seconds=200)) == []

    # Past the gateway's 5 minutes (and s-2's 10): the gateway goes offline, its children
    # are unknown (one alarm, not three); leak-1 (1 hour) and `never` (unheard) stay.
    changes = await mark_silent_devices(conn, now + timedelta(minutes=15))
    assert [(c.device_id, c.change, c.type) for c in changes] == [
        ("gw-1", "opened", "device_offline")
    ]
    states = await conn.fetch("SELECT id, state, state_reason FROM devices ORDER BY id")
    assert {r["id"]: (r["state"], r["state_reason"]) for r in states} == {
        "gw-1": ("offline", "inactivity"),
        "leak-1": ("online", "event"),
        "never": ("unknown", None),
        "s-1": ("unknown", "gateway_offline"),
        "s-2": ("unknown", "gateway_offline"),
    }
    # The gateway back, s-1 heard, s-2 silent past its own timeout: s-2 offline then.
    t1 = t0 + 20 * 60
    await ingest(
        conn,
        message(gw, {"state": "online", "boot": 2, "seq": 1}, t1),
        message(topic("garden", "s-1", gateway="gw-1"), event("s-1", type="battery_low"), t1),
    )
    later = datetime.fromtimestamp(t1, UTC) + timedelta(minutes=4)
    assert await mark_silent_devices(conn, later) == []
    # The gateway's telemetry keeps it alive; s-2 says nothing.
    await ingest(conn, message(topic("garden", "gw-1", "tele"), {"cpu": 0.2}, t1 + 8 * 60))
    changes = await mark_silent_devices(conn, later + timedelta(minutes=8))
    assert [(c.device_id, c.change) for c in changes] == [("s-2", "opened")]
    assert await conn.fetchval("SELECT count(*) FROM alarms WHERE type = 'device_offline'") == 2


async def test_a_payload_the_database_refuses_is_isolated_into_a_dead_letter(
    world: World, conn: Conn, settings: Settings, amqtt_free_url: str
) -> None:
    await seed(world, conn)
    # Valid JSON that msgspec reads (as 0.0) and PostgreSQL's numeric cannot hold.
    refused = json.dumps(event("leak-1", seq=2)).replace('"v": 1', '"v": 1, "tiny": 1e-1000000')
    bridge = Bridge(bridge_settings(settings, amqtt_free_url))
    pool = await create_pool(settings, min_size=1)
    try:
        results = await bridge._store_once(
            pool,
            [
                parse(leak(seq=1), "estateops/v1"),
                parse(message(topic("garden", "leak-1"), refused.encode()), "estateops/v1"),
                parse(leak(seq=3), "estateops/v1"),
            ],
        )
    finally:
        await pool.close()
    assert [(r.outcome, r.reason) for r in results] == [
        ("stored", None),
        ("dead_letter", "not_storable"),
        ("stored", None),
    ]
    assert await conn.fetchval("SELECT count(*) FROM device_events") == 2
    (dead,) = await conn.fetch("SELECT reason, raw, detail FROM dead_letters")
    assert bytes(dead["raw"]) == refused.encode()
    assert "NumericValueOutOfRange" in dead["detail"]
    assert [a["count"] for a in await leak_alarms(conn)] == [2]


@pytest.fixture
def amqtt_free_url() -> str:
    return "mqtt://127.0.0.1:1?protocol=5"  # never connected: only the store path is used


# --- devices over HTTP ----------------------------------------------------------------------


async def test_devices_are_registered_with_defaults_by_kind_and_checked_links(
    client: AsyncTestClient[Litestar], world: World, conn: Conn
) -> None:
    site = await world.site("garden")
    other = await world.site("harbour")
    zone = await world.zone(site)
    foreign_zone = await world.zone(other)
    manager = await world.user("mia", "manager", site)
    guard = await world.user("gina", "guard", site)
    h = world.headers(manager)
    base = f"/api/sites/{site}/devices"

    r = await client.post(
        base, json={"id": "gw-1", "kind": "gateway", "name": "Gateway B1"}, headers=h
    )
    assert r.status_code == 201, r.text
    assert (r.json()["inactivity_timeout_s"], r.json()["state"]) == (300, "unknown")
    r = await client.post(
        base,
        json={"id": "leak-b1-3", "kind": "water_leak", "name": "Leak", "zone_id": zone,
              "gateway_id": "gw-1"},
        headers=h,
    )  # fmt: skip
    assert r.status_code == 201, r.text
    assert r.json()["inactivity_timeout_s"] == 4 * 3600
    r = await client.post(
        base,
        json={"id": "pwr-1", "kind": "power", "name": "Mains", "inactivity_timeout_s": 120},
        headers=h,
    )
    assert r.json()["inactivity_timeout_s"] == 120

    async def refused(body: dict[str, Any], status: int, field: str | None) -> None:
        r = await client.post(base, json=body, headers=h)
        assert r.status_code == status, r.text
        if field:
            assert [e["field"] for e in r.json()["errors"]] == [field]

    leak = {"kind": "water_leak", "name": "Leak"}
    await refused({"id": "x-1", "gateway_id": "pwr-1", **leak}, 422, "gateway_id")  # not a gateway
    await refused({"id": "x-2", "gateway_id": "gw-9", **leak}, 422, "gateway_id")  # unknown
    await refused({"id": "gw-2", "kind": "gateway", "name": "G", "gateway_id": "gw-1"}, 422,
                  "gateway_id")  # fmt: skip
    await refused({"id": "x-3", "zone_id": foreign_zone, **leak}, 422, "zone_id")
    await refused({"id": "bad id", **leak}, 422, "id")  # not a topic segment
    await refused({"id": "x-4", "inactivity_timeout_s": 5, **leak}, 422, "inactivity_timeout_s")
    r = await client.post(base, json={"id": "gw-1", "kind": "gateway", "name": "G"}, headers=h)
    assert r.status_code == 409

    r = await client.post(base, json={"id": "y", **leak}, headers=world.headers(guard))
    assert r.status_code == 403
    r = await client.get(base, params={"limit": 2}, headers=world.headers(guard))
    assert r.status_code == 200, r.text
    page = r.json()
    assert [d["id"] for d in page["items"]] == ["gw-1", "leak-b1-3"]
    r = await client.get(base, params={"after": page["next_after"]}, headers=world.headers(guard))
    assert [d["id"] for d in r.json()["items"]] == ["pwr-1"]
    assert r.json()["next_after"] is None
    await conn.execute("UPDATE devices SET state = 'offline' WHERE id = 'pwr-1'")
    r = await client.get(base, params={"state": "offline"}, headers=world.headers(guard))
    assert [d["id"] for d in r.json()["items"]] == ["pwr-1"]
    r = await client.get(f"{base}/leak-b1-3", headers=world.headers(guard))
    assert r.json()["gateway_id"] == "gw-1"
    # Another site's people see nothing of it.
    outsider = await world.user("otto", "manager", other)
    r = await client.get(base, headers=world.headers(outsider))
    assert r.status_code == 404
    r = await client.post(base, json={"id": "z", **leak}, headers=world.headers(outsider))
    assert r.status_code == 404


# --- alarms over HTTP -----------------------------------------------------------------------


async def test_alarms_are_listed_by_site_and_status_and_acknowledged_once(
    client: AsyncTestClient[Litestar], world: World, conn: Conn
) -> None:
    site = await seed(world, conn)
    other = await world.site("harbour")
    await ingest(
        conn,
        leak(seq=1),
        message(topic("garden", "s-1", gateway="gw-1"), event("s-1", seq=1)),
        message(topic("garden", "s-1", gateway="gw-1"), event("s-1", seq=2, state="clear")),
    )
    leak_alarm, s1_alarm = await leak_alarms(conn)
    guard = await world.user("gina", "guard", site)
    cleaner = await world.user("cleo", "cleaner", site)
    outsider = await world.user("otto", "guard", other)
    admin = await world.user("root", "admin")

    r = await client.get("/api/alarms", params={"site_id": site}, headers=world.headers(guard))
    assert [a["id"] for a in r.json()["items"]] == [leak_alarm["id"], s1_alarm["id"]]
    r = await client.get(
        "/api/alarms",
        params={"site_id": site, "status": ["active_unack", "active_ack"]},
        headers=world.headers(guard),
    )
    assert [a["id"] for a in r.json()["items"]] == [leak_alarm["id"]]
    r = await client.get("/api/alarms", params={"status": "nonsense"}, headers=world.headers(guard))
    assert r.status_code in (400, 422)
    r = await client.get("/api/alarms", params={"site_id": site}, headers=world.headers(outsider))
    assert r.status_code == 404
    r = await client.get("/api/alarms", headers=world.headers(outsider))
    assert r.json()["items"] == []  # only its own sites
    r = await client.get("/api/alarms", headers=world.headers(admin))
    assert len(r.json()["items"]) == 2

    ack = f"/api/alarms/{leak_alarm['id']}/ack"
    assert (await client.post(ack, headers=world.headers(cleaner))).status_code == 403
    assert (await client.post(ack, headers=world.headers(outsider))).status_code == 404
    r = await client.post(ack, headers=world.headers(guard))
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["acked_by"]) == ("active_ack", guard.id)
    r = await client.post(ack, headers=world.headers(admin))  # again: unchanged
    assert (r.json()["status"], r.json()["acked_by"]) == ("active_ack", guard.id)
    # Acknowledged, then cleared: cleared_ack. Cleared, then acknowledged: the same.
    await ingest(conn, leak(seq=2, state="clear"))
    r = await client.get(f"/api/alarms/{leak_alarm['id']}", headers=world.headers(guard))
    assert r.json()["status"] == "cleared_ack"
    r = await client.post(f"/api/alarms/{s1_alarm['id']}/ack", headers=world.headers(guard))
    assert r.json()["status"] == "cleared_ack"
    assert (await client.get("/api/alarms/999999", headers=world.headers(guard))).status_code == 404

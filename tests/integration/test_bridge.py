"""The MQTT bridge end to end: real brokers (amqtt in-process, Mosquitto as a process),
real PostgreSQL, bridges in this event loop or as child processes killed with SIGKILL."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from mqtt_bridge.payloads import MAX_EVENT_BYTES
from server.config import Settings
from tests.conftest import World
from tests.integration.conftest_mqtt import (  # the fixtures, and helpers
    BridgeProcess,
    Mosquitto,
    amqtt_url,
    devices,
    event,
    mosquitto,
    mosquitto_url,
    running_bridge,
    topic,
    wait_for,
)

__all__ = ["amqtt_url", "devices", "mosquitto", "mosquitto_url"]  # fixtures used by name

Conn = "asyncpg.Connection[asyncpg.Record]"


@pytest.fixture(params=["amqtt", pytest.param("mosquitto", marks=pytest.mark.mosquitto)])
def broker_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


async def seed(world: World, conn: Conn, extra: int = 0) -> int:
    """Site `garden`: leak-1 (direct), gateway gw-1 with s-1 and s-2 behind it, k-0.. k-N."""
    site = await world.site("garden")
    rows: list[tuple[int, str, str, str | None]] = [
        (site, "leak-1", "water_leak", None),
        (site, "gw-1", "gateway", None),
        (site, "s-1", "water_leak", "gw-1"),
        (site, "s-2", "power", "gw-1"),
    ]
    rows += [(site, f"k-{i}", "water_leak", None) for i in range(extra)]
    await conn.executemany(
        "INSERT INTO devices (site_id, id, kind, name, gateway_id, inactivity_timeout_s)"
        " VALUES ($1, $2, $3, $2, $4, 3600)",
        rows,
    )
    return site


async def caught_up(
    device: Any, conn: Conn, name: str = "leak-1", gateway: str | None = None
) -> None:
    """Publish a probe after what came before and wait until it is stored: the bridge
    handles one connection's messages in order, so everything before it was handled."""
    probe = event(name, type="probe", state="clear")
    await device.publish(topic("garden", name, gateway=gateway), probe)
    event_id = uuid.UUID(probe["event_id"])

    async def stored() -> Any:
        return await conn.fetchval("SELECT 1 FROM device_events WHERE event_id = $1", event_id)

    await wait_for(stored, what="the bridge to catch up")


async def alarms(conn: Conn, device: str = "leak-1") -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM alarms WHERE device_id = $1 AND type <> 'probe' ORDER BY id", device
    )


async def device_row(conn: Conn, device: str) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM devices WHERE id = $1", device)
    assert row is not None
    return row


# --- events into alarms -------------------------------------------------------------------


async def test_a_leak_event_becomes_one_alarm_repeats_count_and_a_clear_clears_it(
    broker_url: str, settings: Settings, world: World, conn: Conn, devices: Any
) -> None:
    await seed(world, conn)
    leak_topic = topic("garden", "leak-1")
    async with running_bridge(settings, broker_url):
        sensor = await devices(broker_url)
        first = event("leak-1", seq=10)
        await sensor.publish(leak_topic, first)

        async def one_alarm() -> list[asyncpg.Record]:
            return await alarms(conn)

        (alarm,) = await wait_for(one_alarm, what="the alarm")
        assert (alarm["type"], alarm["status"], alarm["count"]) == ("water_leak", "active_unack", 1)
        assert alarm["severity"] == "critical"  # a leak that did not say
        assert alarm["first_at"] == datetime.fromisoformat(first["ts"])

        # The same event again (the device retried): one inbox row, the count stays 1.
        await sensor.publish(leak_topic, first)
        await caught_up(sensor, conn)
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM device_events WHERE event_id = $1",
                uuid.UUID(first["event_id"]),
            )
            == 1
        )
        assert [a["count"] for a in await alarms(conn)] == [1]

        # A repeat (a new event id) bumps the count and the last time.
        later = datetime.now(UTC) + timedelta(seconds=30)
        await sensor.publish(leak_topic, event("leak-1", seq=11, ts=later))
        await caught_up(sensor, conn)
        (alarm,) = await alarms(conn)
        assert alarm["count"] == 2
        assert alarm["last_at"] == later

        # A clear clears it; the device is online and was seen.
        await sensor.publish(leak_topic, event("leak-1", seq=12, state="clear"))
        await caught_up(sensor, conn)
        (alarm,) = await alarms(conn)
        assert alarm["status"] == "cleared_unack"
        assert alarm["cleared_at"] is not None
        row = await device_row(conn, "leak-1")
        assert row["state"] == "online"
        assert row["last_seen_at"] is not None


async def test_bad_input_goes_to_dead_letters_and_the_bridge_goes_on(
    amqtt_url: str,
    settings: Settings,
    world: World,
    conn: Conn,
    devices: Any,
    client: AsyncTestClient[Litestar],
) -> None:
    site = await seed(world, conn)
    future = datetime.now(UTC) + timedelta(days=1)
    bad: list[tuple[str, bytes, str]] = [
        (topic("garden", "leak-1"), b'{"v": 1, "event_id": ', "bad_json"),
        (topic("garden", "leak-1"), json.dumps(event("leak-1", boot="x")).encode(), "bad_schema"),
        (topic("garden", "ghost"), json.dumps(event("ghost")).encode(), "unknown_device"),
        (topic("nowhere", "leak-1"), json.dumps(event("leak-1")).encode(), "unknown_site"),
        (topic("garden", "leak-1"), json.dumps(event("s-1")).encode(), "topic_mismatch"),
        (
            topic("garden", "leak-1"),
            json.dumps(event("leak-1", ts=future)).encode(),
            "future_timestamp",
        ),
        (
            topic("garden", "leak-1"),
            json.dumps(event("leak-1", data={"pad": "x" * MAX_EVENT_BYTES})).encode(),
            "too_large",
        ),
        # s-1 talks through gw-1; a topic naming itself as its gateway is refused.
        (topic("garden", "s-1"), json.dumps(event("s-1")).encode(), "gateway_mismatch"),
        ("estateops/v1/garden/gw 1/s-1/evt", json.dumps(event("s-1")).encode(), "bad_topic"),
    ]
    good = event("leak-1", seq=99)
    async with running_bridge(settings, amqtt_url):
        sensor = await devices(amqtt_url)
        for t, payload, _ in bad:
            await sensor.publish(t, payload)
        await sensor.publish(topic("garden", "leak-1"), good)

        async def good_stored() -> Any:
            return await conn.fetchval(
                "SELECT 1 FROM device_events WHERE event_id = $1", uuid.UUID(good["event_id"])
            )

        await wait_for(good_stored, what="the good event after the bad ones")

    rows = await conn.fetch("SELECT * FROM dead_letters ORDER BY id")
    assert [r["reason"] for r in rows] == [reason for _, _, reason in bad]
    for row, (t, payload, reason) in zip(rows, bad, strict=True):
        assert row["topic"] == t
        assert bytes(row["raw"]) == payload, reason
        assert row["size"] == len(payload)
        assert row["detail"]
        expected_site = None if reason in ("unknown_site", "bad_topic") else site
        assert row["site_id"] == expected_site, reason
    assert [a["type"] for a in await alarms(conn)] == ["water_leak"]  # only the good one

    # Supervisors read them through the API; admins also see those of no known site.
    supervisor = await world.user("sam", "supervisor", site)
    admin = await world.user("root", "admin")
    guard = await world.user("gina", "guard", site)
    r = await client.get(
        "/api/dead-letters", params={"site_id": site}, headers=world.headers(supervisor)
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert Counter(d["reason"] for d in body["items"]) == Counter(
        reason for _, _, reason in bad if reason not in ("unknown_site", "bad_topic")
    )
    first = body["items"][0]
    assert first["text"] == bad[0][1].decode()
    r = await client.get("/api/dead-letters", headers=world.headers(admin))
    assert len(r.json()["items"]) == len(bad)
    r = await client.get(
        "/api/dead-letters", params={"site_id": site}, headers=world.headers(guard)
    )
    assert r.status_code == 403


# --- device status -------------------------------------------------------------------------


async def test_offline_by_last_will_a_return_and_a_stale_will_ignored(
    broker_url: str, settings: Settings, world: World, conn: Conn, devices: Any
) -> None:
    await seed(world, conn)
    status = topic("garden", "leak-1", "status")
    async with running_bridge(settings, broker_url):
        boot1 = await devices(
            broker_url,
            "leak-1-boot1",
            topic=status,
            payload={"state": "offline", "boot": 1, "seq": 1},
        )
        await boot1.publish(status, {"state": "online", "boot": 1, "seq": 1}, retain=True)

        async def state() -> str:
            return str((await device_row(conn, "leak-1"))["state"])

        await wait_for(lambda: _is(state, "online"), what="online")

        boot1.crash()  # the broker publishes the Last Will
        await wait_for(lambda: _is(state, "offline"), what="offline by Last Will")
        (alarm,) = await alarms(conn)
        assert (alarm["type"], alarm["status"], alarm["severity"]) == (
            "device_offline",
            "active_unack",
            "major",
        )

        # It reboots and announces itself: online again, the offline alarm clears.
        boot2 = await devices(
            broker_url,
            "leak-1-boot2",
            topic=status,
            payload={"state": "offline", "boot": 2, "seq": 1},
        )
        await boot2.publish(status, {"state": "online", "boot": 2, "seq": 1}, retain=True)
        await wait_for(lambda: _is(state, "online"), what="online again")
        (alarm,) = await alarms(conn)
        assert alarm["status"] == "cleared_unack"

        # The will of the first boot, delivered late, changes nothing.
        await boot2.publish(status, {"state": "offline", "boot": 1, "seq": 1})
        await caught_up(boot2, conn)
        assert await state() == "online"
        history = await conn.fetch(
            "SELECT state, reason FROM device_state_changes WHERE device_id = 'leak-1' ORDER BY id"
        )
        assert [(h["state"], h["reason"]) for h in history] == [
            ("online", "status"),
            ("offline", "status"),
            ("online", "status"),
        ]
        assert len(await alarms(conn)) == 1


async def _is(read: Any, expected: str) -> bool:
    return bool(await read() == expected)


async def test_a_gateway_offline_makes_its_children_unknown_not_alarmed(
    amqtt_url: str, settings: Settings, world: World, conn: Conn, devices: Any
) -> None:
    await seed(world, conn)
    status = topic("garden", "gw-1", "status")
    async with running_bridge(settings, amqtt_url):
        gateway = await devices(
            amqtt_url, "gw-1", topic=status, payload={"state": "offline", "boot": 5, "seq": 1}
        )
        await gateway.publish(status, {"state": "online", "boot": 5, "seq": 1}, retain=True)
        for child in ("s-1", "s-2"):
            await gateway.publish(
                topic("garden", child, gateway="gw-1"), event(child, type="battery_low")
            )
        await caught_up(gateway, conn, "s-2", gateway="gw-1")
        states = await conn.fetch("SELECT id, state FROM devices WHERE id IN ('gw-1','s-1','s-2')")
        assert {r["id"]: r["state"] for r in states} == {
            "gw-1": "online",
            "s-1": "online",
            "s-2": "online",
        }

        gateway.crash()

        async def gateway_offline() -> bool:
            return bool((await device_row(conn, "gw-1"))["state"] == "offline")

        await wait_for(gateway_offline, what="the gateway offline")
        states = await conn.fetch(
            "SELECT id, state, state_reason FROM devices WHERE id IN ('s-1', 's-2')"
        )
        assert {(r["id"], r["state"], r["state_reason"]) for r in states} == {
            ("s-1", "unknown", "gateway_offline"),
            ("s-2", "unknown", "gateway_offline"),
        }
        offline = await conn.fetch("SELECT device_id FROM alarms WHERE type = 'device_offline'")
        assert [r["device_id"] for r in offline] == ["gw-1"]

        # Back, the gateway relays s-1: s-1 is heard again, s-2 is still unknown.
        gateway = await devices(amqtt_url, "gw-1-again")
        await gateway.publish(status, {"state": "online", "boot": 6, "seq": 1}, retain=True)
        await gateway.publish(
            topic("garden", "s-1", gateway="gw-1"), event("s-1", type="battery_low")
        )
        await caught_up(gateway, conn, "s-1", gateway="gw-1")
        states = await conn.fetch("SELECT id, state FROM devices WHERE id IN ('gw-1','s-1','s-2')")
        assert {r["id"]: r["state"] for r in states} == {
            "gw-1": "online",
            "s-1": "online",
            "s-2": "unknown",
        }


# --- crashes, outages and several bridges (Mosquitto) ---------------------------------------

N_DEVICES = 20


def stream(n: int, start: int = 0) -> list[tuple[str, bytes]]:
    """`n` leak events spread over k-0 .. k-19."""
    out = []
    for i in range(start, start + n):
        name = f"k-{i % N_DEVICES}"
        out.append((topic("garden", name), json.dumps(event(name, seq=i)).encode()))
    return out


async def stored_count(conn: Conn) -> int:
    n: int = await conn.fetchval("SELECT count(*) FROM device_events")
    return n


async def assert_exactly_once(conn: Conn, n: int) -> None:
    """Every event stored once, and every alarm counts each of its events once."""
    row = await conn.fetchrow(
        "SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM device_events"
    )
    assert (row["n"], row["ids"]) == (n, n)
    per_device = await conn.fetch(
        "SELECT device_id, count(*) AS alarms, sum(count) AS counted FROM alarms"
        " WHERE type = 'water_leak' GROUP BY device_id"
    )
    assert len(per_device) == N_DEVICES
    assert {(r["alarms"], r["counted"]) for r in per_device} == {(1, n // N_DEVICES)}
    assert await conn.fetchval("SELECT count(*) FROM dead_letters") == 0


@pytest.mark.mosquitto
async def test_the_bridge_killed_mid_stream_loses_and_doubles_nothing(
    mosquitto_url: str, db_url: str, world: World, conn: Conn, devices: Any
) -> None:
    await seed(world, conn, extra=N_DEVICES)
    url = mosquitto_url + "?protocol=5"
    bridge = BridgeProcess(db_url, url, "bridge-killed").start()
    await bridge.wait_subscribed()
    sensor = await devices(mosquitto_url)
    publishing = asyncio.create_task(sensor.publish_many(stream(2000)))

    async def some_stored() -> bool:
        return await stored_count(conn) >= 100

    await wait_for(some_stored, 30, "the first events")
    bridge.kill()  # SIGKILL: whatever was stored and not yet acked comes again
    at_kill = await stored_count(conn)
    await publishing  # the rest queues in the broker for the bridge's session

    again = BridgeProcess(db_url, url, "bridge-killed").start()

    async def all_stored() -> bool:
        return await stored_count(conn) >= 2000

    await wait_for(all_stored, 60, "all 2000 events")
    stats = again.stop()
    assert at_kill < 2000
    assert stats.get("dead_letter", 0) == 0
    await assert_exactly_once(conn, 2000)


@pytest.mark.mosquitto
async def test_two_bridges_on_a_shared_subscription_split_the_load(
    mosquitto_url: str, db_url: str, world: World, conn: Conn, devices: Any
) -> None:
    await seed(world, conn, extra=N_DEVICES)
    url = mosquitto_url + "?protocol=5"
    bridges = [
        BridgeProcess(db_url, url, f"bridge-{name}", shared_group="estateops").start()
        for name in ("a", "b")
    ]
    for b in bridges:
        await b.wait_subscribed()
    sensor = await devices(mosquitto_url)
    # A status goes to every bridge (status is never shared): applied once, ignored once.
    await sensor.publish(
        topic("garden", "leak-1", "status"), {"state": "online", "boot": 1, "seq": 1}
    )
    await sensor.publish_many(stream(2000))

    async def all_stored() -> bool:
        return await stored_count(conn) >= 2000

    await wait_for(all_stored, 60, "all 2000 events")
    await asyncio.sleep(0.3)  # let both settle the status
    a, b = (bridge.stop() for bridge in bridges)
    assert a.get("stored", 0) + b.get("stored", 0) == 2000
    assert min(a.get("stored", 0), b.get("stored", 0)) >= 200, (a, b)  # both took a share
    assert a.get("status", 0) + b.get("status", 0) == 1
    assert a.get("status_ignored", 0) + b.get("status_ignored", 0) == 1
    await assert_exactly_once(conn, 2000)
    assert (
        await conn.fetchval("SELECT count(*) FROM device_state_changes WHERE device_id = 'leak-1'")
        == 1
    )


@pytest.mark.mosquitto
async def test_a_database_outage_holds_the_acks_and_loses_nothing(
    mosquitto_url: str, settings: Settings, db_url: str, world: World, conn: Conn, devices: Any
) -> None:
    await seed(world, conn, extra=N_DEVICES)
    database = db_url.rsplit("/", 1)[1]
    async with running_bridge(settings, mosquitto_url + "?protocol=5"):
        sensor = await devices(mosquitto_url)
        publishing = asyncio.create_task(sensor.publish_many(stream(1000)))
        cuts = 0
        for _ in range(6):
            await asyncio.sleep(0.15)
            # Cut the bridge's database connections, as a failover or a restart would.
            cuts += await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = $1 AND application_name = 'estateops'"
                " AND pid <> pg_backend_pid()",
                database,
            )
        await publishing
        await wait_for(lambda: _at_least(conn, 1000), 30, "all 1000 events")
    assert cuts >= 1
    await assert_exactly_once(conn, 1000)


async def _at_least(conn: Conn, n: int) -> bool:
    return await stored_count(conn) >= n


@pytest.mark.faults
@pytest.mark.mosquitto
async def test_killed_three_times_and_the_broker_restarted_under_load(
    mosquitto: Mosquitto, db_url: str, world: World, conn: Conn, devices: Any
) -> None:
    await seed(world, conn, extra=N_DEVICES)
    url = mosquitto.url + "?protocol=5"
    n = 20_000
    bridge = BridgeProcess(db_url, url, "bridge-faults").start()
    await bridge.wait_subscribed()
    sensor = await devices(mosquitto.url)
    await sensor.publish_many(stream(n // 2))
    for round_ in range(3):
        target = (round_ + 1) * n // 8

        async def reached(target: int = target) -> bool:
            return await stored_count(conn) >= target

        await wait_for(reached, 60, f"{target} events")
        bridge.kill()
        bridge = BridgeProcess(db_url, url, "bridge-faults").start()
    # The broker goes away (and comes back with its persisted queue): the bridge reconnects.
    sensor.close()
    mosquitto.stop()
    mosquitto.start()
    sensor = await devices(mosquitto.url)
    await sensor.publish_many(stream(n // 2, start=n // 2))

    async def all_stored() -> bool:
        return await stored_count(conn) >= n

    await wait_for(all_stored, 180, f"all {n} events")
    bridge.stop()
    await assert_exactly_once(conn, n)
    incidents = await conn.fetchval("SELECT count(*) FROM incidents")
    assert incidents >= 1
    assert incidents == await conn.fetchval(
        "SELECT count(DISTINCT (site_id, coalesce(zone_id, 0), kind)) FROM incidents"
    )


@pytest.mark.faults
@pytest.mark.mosquitto
async def test_two_bridges_sharing_one_killed_mid_stream_loses_nothing(
    mosquitto_url: str, db_url: str, world: World, conn: Conn, devices: Any
) -> None:
    await seed(world, conn, extra=N_DEVICES)
    url = mosquitto_url + "?protocol=5"
    n = 4000

    def start(name: str) -> BridgeProcess:
        return BridgeProcess(db_url, url, f"bridge-{name}", shared_group="estateops").start()

    a, b = start("a"), start("b")
    for bridge in (a, b):
        await bridge.wait_subscribed()
    sensor = await devices(mosquitto_url)
    publishing = asyncio.create_task(sensor.publish_many(stream(n)))
    await wait_for(lambda: _at_least(conn, n // 5), 60, "a fifth of the events")
    a.kill()  # SIGKILL: its in-flight share stays with its session on the broker
    await publishing
    # Its session (same client id) comes back and takes what was left with it.
    a = start("a")
    await wait_for(lambda: _at_least(conn, n), 120, f"all {n} events")
    a.stop()
    b.stop()
    await assert_exactly_once(conn, n)
    # No incident doubled: one per site, zone and kind, however the events were split.
    incidents = await conn.fetchval("SELECT count(*) FROM incidents")
    assert incidents >= 1
    assert incidents == await conn.fetchval(
        "SELECT count(DISTINCT (site_id, coalesce(zone_id, 0), kind)) FROM incidents"
    )

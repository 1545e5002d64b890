"""Incidents end to end: alarms into incidents (through the bridge and the ingest), the
outage grouping, playbook steps and escalation, staff reports, locales, site scoping, and
the live feed, on a real PostgreSQL (and the embedded MQTT broker for the bridge path)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from mqtt_bridge.client import Received
from mqtt_bridge.ingest import parse
from server import scheduler
from server.alarms.ingest import ingest_batch
from server.config import Settings
from server.db import create_pool, init_connection
from server.incidents import service
from server.live.hub import LiveHub
from tests.conftest import World
from tests.integration.conftest_mqtt import (
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
Client = AsyncTestClient[Litestar]


# --- helpers ---------------------------------------------------------------------------------


def message(site: str, device: str, payload: dict[str, Any], kind: str = "evt") -> Received:
    return Received(
        1, 1, 1, False, topic(site, device, kind), json.dumps(payload).encode(), time.time()
    )


async def ingest(conn: Conn, *messages: Received) -> None:
    async with conn.transaction():
        await ingest_batch(conn, [parse(m, "estateops/v1") for m in messages])


async def add_devices(conn: Conn, site: int, *rows: tuple[str, str, int | None]) -> None:
    await conn.executemany(
        "INSERT INTO devices (site_id, id, kind, name, zone_id, inactivity_timeout_s)"
        " VALUES ($1, $2, $3, $2, $4, 3600)",
        [(site, device, kind, zone) for device, kind, zone in rows],
    )


async def incidents(conn: Conn, kind: str | None = None) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM incidents WHERE ($1::text IS NULL OR kind = $1) ORDER BY id", kind
    )


async def linked(conn: Conn, incident_id: int) -> list[str]:
    rows = await conn.fetch(
        "SELECT a.device_id FROM incident_alarms l JOIN alarms a ON a.id = l.alarm_id"
        " WHERE l.incident_id = $1 ORDER BY a.device_id",
        incident_id,
    )
    return [r["device_id"] for r in rows]


@pytest.fixture(params=["amqtt", pytest.param("mosquitto", marks=pytest.mark.mosquitto)])
def broker_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
async def hub(db_url: str) -> AsyncIterator[LiveHub]:
    live = LiveHub(db_url)
    await live.start()
    await asyncio.wait_for(live.connected.wait(), 10)
    try:
        yield live
    finally:
        await live.stop()


def drain(queue: asyncio.Queue[dict[str, Any]]) -> list[dict[str, Any]]:
    events = []
    while not queue.empty():
        events.append(queue.get_nowait())
    return events


async def settle(queue: asyncio.Queue[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Everything published so far, once an event of `kind` has arrived."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while not any(e["type"] == kind for e in events):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {kind} event; got {[e['type'] for e in events]}"
        events.append(await asyncio.wait_for(queue.get(), remaining))
    return events + drain(queue)


# --- alarms into incidents -------------------------------------------------------------------


async def test_a_leak_through_the_bridge_opens_one_incident_that_resolves_and_a_new_one(
    broker_url: str,
    settings: Settings,
    world: World,
    conn: Conn,
    devices: Any,
    client: Client,
    hub: LiveHub,
) -> None:
    site = await world.site("garden")
    pump_room = await world.zone(site, "水泵房", "plant_room")
    await add_devices(
        conn, site, ("leak-1", "water_leak", pump_room), ("leak-2", "water_leak", pump_room)
    )
    supervisor = await world.user("sam", "supervisor", site)
    leak = topic("garden", "leak-1")

    async with hub.subscribe() as feed, running_bridge(settings, broker_url):
        sensor = await devices(broker_url)
        first = event("leak-1", seq=1)
        await sensor.publish(leak, first)
        await sensor.publish(leak, first)  # the device retried: a duplicate
        await sensor.publish(leak, event("leak-1", seq=2))  # a repeat of the open alarm

        async def counted() -> Any:
            return await conn.fetchval(
                "SELECT count FROM alarms WHERE device_id = 'leak-1' AND count = 2"
            )

        await wait_for(counted, what="the alarm and its repeat")
        (incident,) = await incidents(conn)
        assert (incident["kind"], incident["status"], incident["source"]) == (
            "water_leak",
            "open",
            "alarm",
        )
        assert incident["title"] == "漏水 · 水泵房"
        assert incident["zone_id"] == pump_room
        assert await conn.fetchval("SELECT count(*) FROM alarms") == 1
        assert await linked(conn, incident["id"]) == ["leak-1"]
        steps = await conn.fetch(
            "SELECT * FROM incident_steps WHERE incident_id = $1 ORDER BY position", incident["id"]
        )
        assert [s["key"] for s in steps] == [
            "close_main_valve",
            "notify",
            "temporary_measures",
            "repair_and_restore",
        ]
        assert steps[0]["ack_due"] == incident["opened_at"] + timedelta(minutes=5)
        assert list(steps[0]["chain"]) == ["technician", "supervisor", "manager"]
        # The repair step opened a ticket, linked both ways.
        repair = steps[3]
        ticket = await conn.fetchrow("SELECT * FROM tickets WHERE id = $1", repair["ticket_id"])
        assert ticket is not None
        assert (ticket["incident_id"], ticket["category"], ticket["channel"]) == (
            incident["id"],
            "plumbing",
            "sensor",
        )
        published = await settle(feed, "incident_opened")
        opened = next(e for e in published if e["type"] == "incident_opened")
        assert (opened["site_id"], opened["incident_id"], opened["kind"]) == (
            site,
            incident["id"],
            "water_leak",
        )
        assert any(e["type"] == "alarm_opened" for e in published)

        # A second sensor of the same zone joins the incident.
        await sensor.publish(topic("garden", "leak-2"), event("leak-2", seq=1))

        async def both_linked() -> bool:
            return await linked(conn, incident["id"]) == ["leak-1", "leak-2"]

        await wait_for(both_linked, what="both alarms in one incident")
        assert len(await incidents(conn)) == 1

        # Both clear: the steps are not done, so it stays open.
        await sensor.publish(leak, event("leak-1", seq=3, state="clear"))
        await sensor.publish(topic("garden", "leak-2"), event("leak-2", seq=2, state="clear"))

        async def cleared() -> Any:
            return await conn.fetchval(
                "SELECT count(*) = 2 FROM alarms WHERE cleared_at IS NOT NULL"
            )

        await wait_for(cleared, what="both alarms cleared")
        assert (await incidents(conn))[0]["status"] == "open"

        # Staff do the steps; the last one resolves the incident by itself.
        for step in steps:
            r = await client.post(
                f"/api/incidents/{incident['id']}/steps/{step['key']}/done",
                json={"note": "done"},
                headers=world.headers(supervisor),
            )
            assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "resolved"
        assert body["resolved_by"] is None  # by itself
        actions = [t["action"] for t in body["timeline"]]
        assert actions[0] == "opened"
        assert actions.count("alarm_linked") == 2
        assert actions.count("alarm_cleared") == 2
        assert "mitigating" in actions
        assert actions[-1] == "resolved"
        assert "incident_resolved" in {e["type"] for e in await settle(feed, "incident_resolved")}

        # A new leak after that opens a new incident.
        await sensor.publish(leak, event("leak-1", seq=4))

        async def two_incidents() -> list[asyncpg.Record]:
            found = await incidents(conn)
            return found if len(found) == 2 else []

        second = (await wait_for(two_incidents, what="a second incident"))[1]
        assert second["status"] == "open"
        assert await linked(conn, second["id"]) == ["leak-1"]


async def test_offline_devices_of_a_building_make_one_power_outage(
    world: World, conn: Conn, client: Client
) -> None:
    site = await world.site("garden")
    block_1 = [
        await conn.fetchval(
            "INSERT INTO zones (site_id, name, kind, building) VALUES ($1, $2, 'lobby', '1号楼')"
            " RETURNING id",
            site,
            name,
        )
        for name in ("1号楼大堂", "1号楼电梯厅")
    ]
    block_2 = await conn.fetchval(
        "INSERT INTO zones (site_id, name, kind, building)"
        " VALUES ($1, '2号楼大堂', 'lobby', '2号楼') RETURNING id",
        site,
    )
    await add_devices(
        conn,
        site,
        ("p-1", "power", block_1[0]),
        ("p-2", "power", block_1[1]),
        ("p-3", "power", block_1[0]),
        ("p-4", "power", block_1[1]),
        ("q-1", "power", block_2),
        ("q-2", "power", block_2),
        ("m-1", "power", block_2),
    )

    def offline(device: str) -> Received:
        return message("garden", device, {"state": "offline", "boot": 1, "seq": 1}, "status")

    # Two devices of block 1, and one of block 2: no outage (no building has three).
    await ingest(conn, offline("p-1"))
    await ingest(conn, offline("p-2"), offline("q-1"))
    assert await incidents(conn) == []
    assert await conn.fetchval("SELECT count(*) FROM alarms WHERE type = 'device_offline'") == 3
    # The third of block 1 within the window: one power outage for the site, which takes in
    # the site's other devices that went offline in that window (q-1 of block 2).
    await ingest(conn, offline("p-3"))
    (outage,) = await incidents(conn)
    assert (outage["kind"], outage["source"], outage["zone_id"]) == ("power_outage", "outage", None)
    assert outage["title"] == "停电 · 1号楼"
    assert await linked(conn, outage["id"]) == ["p-1", "p-2", "p-3", "q-1"]
    # More devices going offline, of either building, join it; so does a power-loss alarm.
    await ingest(conn, offline("p-4"), offline("q-2"))
    await ingest(conn, message("garden", "m-1", event("m-1", type="power_loss")))
    assert len(await incidents(conn)) == 1
    assert await linked(conn, outage["id"]) == ["m-1", "p-1", "p-2", "p-3", "p-4", "q-1", "q-2"]
    steps = await conn.fetch(
        "SELECT key FROM incident_steps WHERE incident_id = $1 ORDER BY position", outage["id"]
    )
    assert [s["key"] for s in steps][:2] == ["notify_residents", "find_cause"]


async def test_power_loss_alarms_of_several_zones_make_one_incident_and_a_silent_gateway_waits(
    world: World, conn: Conn
) -> None:
    site = await world.site("plaza", kind="commercial", locale="en")
    a, b = await world.zone(site, "Lobby"), await world.zone(site, "Car park", "parking")
    await add_devices(
        conn, site, ("pw-a", "power", a), ("pw-b", "power", b), ("gw-1", "gateway", b)
    )
    await ingest(conn, message("plaza", "pw-a", event("pw-a", type="power_loss")))
    await ingest(conn, message("plaza", "pw-b", event("pw-b", type="mains_failure")))
    (outage,) = await incidents(conn)
    assert (outage["kind"], outage["source"], outage["title"]) == (
        "power_outage",
        "alarm",
        "Power outage · Lobby",
    )
    assert await linked(conn, outage["id"]) == ["pw-a", "pw-b"]

    # A gateway alone going offline is no outage: it opens a device_offline incident only
    # when it stays offline past the window (a flapping gateway opens nothing).
    other = await world.site("tower", kind="office", locale="en")
    await add_devices(conn, other, ("gw-9", "gateway", None))
    await ingest(
        conn, message("tower", "gw-9", {"state": "offline", "boot": 1, "seq": 1}, "status")
    )
    assert len(await incidents(conn)) == 1
    now = datetime.now(UTC)
    async with conn.transaction():
        assert await service.open_offline_incidents(conn, now) == []
    async with conn.transaction():
        (opened,) = await service.open_offline_incidents(conn, now + timedelta(minutes=3))
    async with conn.transaction():
        assert await service.open_offline_incidents(conn, now + timedelta(minutes=4)) == []
    row = await conn.fetchrow("SELECT * FROM incidents WHERE id = $1", opened)
    assert (row["site_id"], row["kind"], row["title"]) == (
        other,
        "device_offline",
        "Device offline · gw-9",
    )
    assert await linked(conn, opened) == ["gw-9"]


# --- escalation --------------------------------------------------------------------------------


async def test_an_unacknowledged_step_escalates_to_the_supervisor_then_the_manager(
    world: World, conn: Conn, client: Client, hub: LiveHub, settings: Settings
) -> None:
    site = await world.site("garden")
    guard = await world.user("gina", "guard", site)
    await world.user("sam", "supervisor", site)
    r = await client.post(
        "/api/incidents",
        json={"site_id": site, "kind": "fire", "description": "smoke from the bin room"},
        headers=world.headers(guard),
    )
    assert r.status_code == 201, r.text
    incident = r.json()
    opened_at = datetime.fromisoformat(incident["opened_at"])
    assert [s["ack_minutes"] for s in incident["steps"]] == [2, 3, 5, 10]

    async def step(key: str) -> asyncpg.Record:
        row = await conn.fetchrow(
            "SELECT * FROM incident_steps WHERE incident_id = $1 AND key = $2", incident["id"], key
        )
        assert row is not None
        return row

    async with hub.subscribe() as feed:
        # Through the scheduler's own pass, at a time when the 2-minute step is late.
        pool = await create_pool(settings, min_size=1)
        try:
            done = await scheduler.run_once(pool, opened_at + timedelta(minutes=2, seconds=30))
        finally:
            await pool.close()
        first = await step("alarm_and_evacuate")
        assert done["escalate_incident_steps"] == [first["id"]]
        assert (first["escalation_level"], first["escalated_to"]) == (1, "supervisor")
        assert first["escalate_at"] == opened_at + timedelta(minutes=4)
        alert = await conn.fetchrow("SELECT * FROM alerts WHERE subject_id = $1", first["id"])
        assert alert["kind"] == "incident_escalated_to_supervisor"
        assert alert["data"]["incident_id"] == incident["id"]
        assert "主管" in alert["message"]
        escalated = [
            e for e in await settle(feed, "incident_escalated") if e["type"] == "incident_escalated"
        ]
        assert [(e["step_key"], e["to_role"]) for e in escalated] == [
            ("alarm_and_evacuate", "supervisor")
        ]

    later = opened_at + timedelta(minutes=4, seconds=30)
    async with conn.transaction():
        moved = await service.escalate_due(conn, later)
    assert sorted(moved) == sorted(
        [
            (await step("alarm_and_evacuate"))["id"],
            (await step("first_response_extinguishing"))["id"],
        ]
    )
    assert (await step("alarm_and_evacuate"))["escalated_to"] == "manager"
    assert (await step("alarm_and_evacuate"))["escalate_at"] is None  # the end of the chain
    assert (await step("first_response_extinguishing"))["escalated_to"] == "supervisor"
    async with conn.transaction():
        assert await service.escalate_due(conn, later) == []  # nothing twice

    # Acknowledged, a step escalates no more; the escalated role may acknowledge it.
    supervisor = await world.user("sue", "supervisor", site)
    r = await client.post(
        f"/api/incidents/{incident['id']}/steps/first_response_extinguishing/ack",
        headers=world.headers(supervisor),
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "mitigating"
    async with conn.transaction():
        moved = await service.escalate_due(conn, opened_at + timedelta(hours=1))
    assert (await step("first_response_extinguishing"))["escalated_to"] == "supervisor"
    assert (await step("first_response_extinguishing"))["id"] not in moved
    r = await client.get(f"/api/incidents/{incident['id']}", headers=world.headers(guard))
    entries = [t for t in r.json()["timeline"] if t["action"] == "step_escalated"]
    assert {(t["step_key"], t["data"]["to_role"]) for t in entries} >= {
        ("alarm_and_evacuate", "supervisor"),
        ("alarm_and_evacuate", "manager"),
        ("first_response_extinguishing", "supervisor"),
    }


# --- staff -------------------------------------------------------------------------------------


async def test_staff_report_incidents_a_second_report_joins_and_roles_are_checked(
    world: World, conn: Conn, client: Client
) -> None:
    site = await world.site("garden")
    other = await world.site("plaza", kind="commercial")
    zone = await world.zone(site, "地下车库", "parking")
    other_zone = await world.zone(other, "Lobby")
    unit = await world.unit(site)
    guard = await world.user("gina", "guard", site)
    guard_2 = await world.user("gus", "guard", site)
    cleaner = await world.user("cleo", "cleaner", site)
    supervisor = await world.user("sam", "supervisor", site)
    resident = await world.user("rita", "resident", site, unit_id=unit)
    outsider = await world.user("mo", "manager", other)

    theft = {"site_id": site, "kind": "theft", "zone_id": zone, "title": "车库电动车被盗"}
    r = await client.post("/api/incidents", json=theft, headers=world.headers(guard))
    assert r.status_code == 201, r.text
    incident = r.json()
    assert (incident["title"], incident["source"], incident["opened_by"]) == (
        "车库电动车被盗",
        "manual",
        guard.id,
    )
    # The guard who found it is on the scene: the guards' steps are theirs.
    assignees = {s["key"]: s["assignee_id"] for s in incident["steps"]}
    assert assignees == {
        "call_police": guard.id,
        "protect_scene": guard.id,
        "seal_area": guard.id,
        "notify_owners": None,
    }
    # A second report of the same kind and place joins it.
    r = await client.post(
        "/api/incidents",
        json={**theft, "description": "saw two people"},
        headers=world.headers(guard_2),
    )
    assert r.status_code == 200, r.text
    assert r.json()["id"] == incident["id"]
    reported = [t for t in r.json()["timeline"] if t["action"] == "reported"]
    assert [(t["actor_id"], t["note"]) for t in reported] == [(guard_2.id, "saw two people")]

    # Who may do what.
    r = await client.post("/api/incidents", json=theft, headers=world.headers(resident))
    assert r.status_code == 403
    r = await client.post(
        "/api/incidents", json={**theft, "zone_id": other_zone}, headers=world.headers(guard)
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "zone_id"
    url = f"/api/incidents/{incident['id']}"
    r = await client.post(f"{url}/steps/call_police/ack", headers=world.headers(cleaner))
    assert r.status_code == 403
    r = await client.post(f"{url}/steps/no_such_step/ack", headers=world.headers(guard))
    assert r.status_code == 404
    r = await client.post(f"{url}/steps/call_police/ack", headers=world.headers(guard))
    assert r.status_code == 200
    acked = next(s for s in r.json()["steps"] if s["key"] == "call_police")
    assert (acked["acked_by"], r.json()["status"]) == (guard.id, "mitigating")
    r = await client.post(f"{url}/steps/call_police/ack", headers=world.headers(guard))
    assert r.status_code == 200  # again: nothing changes
    r = await client.post(f"{url}/notes", json={"note": "警察已到场"}, headers=world.headers(guard))
    assert r.status_code == 201
    r = await client.post(f"{url}/resolve", headers=world.headers(guard))
    assert r.status_code == 403
    r = await client.post(f"{url}/close", headers=world.headers(supervisor))
    assert r.status_code == 409  # not resolved yet

    # Another site's manager sees none of it: 404, never 403.
    for method, path in [
        ("GET", url),
        ("POST", f"{url}/steps/call_police/ack"),
        ("POST", f"{url}/resolve"),
        ("GET", f"/api/incidents?site_id={site}"),
        ("POST", "/api/incidents"),
    ]:
        r = await client.request(
            method,
            path,
            json=theft if path == "/api/incidents" else None,
            headers=world.headers(outsider),
        )
        assert r.status_code == 404, (method, path, r.text)
    r = await client.get("/api/incidents", headers=world.headers(outsider))
    assert r.json()["items"] == []
    r = await client.get(url, headers=world.headers(resident))
    assert r.status_code == 403

    # A supervisor resolves with steps pending (recorded) and closes after review.
    r = await client.post(
        f"{url}/resolve", json={"note": "handed to police"}, headers=world.headers(supervisor)
    )
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["resolved_by"]) == ("resolved", supervisor.id)
    entry = r.json()["timeline"][-1]
    assert entry["action"] == "resolved"
    assert entry["data"]["pending_steps"] == [
        "call_police",
        "protect_scene",
        "seal_area",
        "notify_owners",
    ]
    r = await client.post(f"{url}/resolve", headers=world.headers(supervisor))
    assert (r.status_code, r.json()["status"]) == (200, "resolved")  # a retry: no change
    r = await client.post(f"{url}/close", headers=world.headers(supervisor))
    assert (r.status_code, r.json()["status"]) == (200, "closed")
    r = await client.post(f"{url}/close", headers=world.headers(supervisor))
    assert r.status_code == 200
    actions = [t["action"] for t in r.json()["timeline"]]
    assert (actions.count("resolved"), actions.count("closed")) == (1, 1)
    r = await client.post(f"{url}/steps/seal_area/done", headers=world.headers(guard))
    assert r.status_code == 409
    assert (
        await conn.fetchval("SELECT count(*) FROM incident_steps WHERE escalate_at IS NOT NULL")
        == 0
    )

    # After that, a new report opens a new incident; lists filter by status.
    r = await client.post("/api/incidents", json=theft, headers=world.headers(guard))
    assert r.status_code == 201
    r = await client.get(
        "/api/incidents",
        params={"site_id": site, "status": ["open", "mitigating"]},
        headers=world.headers(supervisor),
    )
    assert [i["status"] for i in r.json()["items"]] == ["open"]
    r = await client.get(
        "/api/incidents", params={"site_id": site, "limit": 1}, headers=world.headers(supervisor)
    )
    assert [i["id"] for i in r.json()["items"]] == [incident["id"]]
    r = await client.get(
        "/api/incidents",
        params={"site_id": site, "after": r.json()["next_after"]},
        headers=world.headers(supervisor),
    )
    assert len(r.json()["items"]) == 1
    assert r.json()["next_after"] is None
    # Completing the new incident's steps (a manual incident has no alarms) resolves it.
    new_id = r.json()["items"][0]["id"]
    for key in ("call_police", "protect_scene", "seal_area", "notify_owners"):
        r = await client.post(
            f"/api/incidents/{new_id}/steps/{key}/done", headers=world.headers(supervisor)
        )
        assert r.status_code == 200, r.text
    assert r.json()["status"] == "resolved"


@pytest.mark.parametrize(
    ("site_locale", "header", "expected"),
    [
        ("zh-CN", None, "zh-CN"),
        ("zh-CN", "en-US,en;q=0.9", "en"),
        ("en", None, "en"),
        ("en", "fr-FR, zh-TW;q=0.8, en;q=0.5", "zh-CN"),
        ("en", "de", "en"),
    ],
)
async def test_step_texts_follow_accept_language_else_the_sites_locale(
    world: World, client: Client, site_locale: str, header: str | None, expected: str
) -> None:
    site = await world.site("garden", locale=site_locale)
    guard = await world.user("gina", "guard", site)
    headers = world.headers(guard)
    r = await client.post(
        "/api/incidents", json={"site_id": site, "kind": "pipe_burst"}, headers=headers
    )
    assert r.status_code == 201
    if header:
        headers["Accept-Language"] = header
    r = await client.get(f"/api/incidents/{r.json()['id']}", headers=headers)
    body = r.json()
    assert r.headers["content-language"] == expected
    assert body["locale"] == expected
    first = body["steps"][0]["text"]
    if expected == "en":
        assert body["kind_title"] == "Burst pipe"
        assert first.startswith("Close the main valve")
    else:
        assert body["kind_title"] == "水管爆裂"
        assert first.startswith("立即关闭总阀")
    # The stored title is in the site's language, whoever asks.
    assert body["title"] == ("Burst pipe" if site_locale == "en" else "水管爆裂")


async def test_an_incident_event_reaches_the_live_feed_only_on_commit(
    world: World, conn: Conn, hub: LiveHub
) -> None:
    site = await world.site("garden")
    await add_devices(conn, site, ("smoke-1", "smoke", None))
    async with hub.subscribe() as feed:
        tx = conn.transaction()
        await tx.start()
        await ingest_batch(
            conn,
            [parse(message("garden", "smoke-1", event("smoke-1", type="smoke")), "estateops/v1")],
        )
        await tx.rollback()
        await ingest(conn, message("garden", "smoke-1", event("smoke-1", type="smoke")))
        published = await settle(feed, "incident_opened")
    (incident,) = await incidents(conn)
    assert incident["kind"] == "fire"
    assert [e["incident_id"] for e in published if e["type"] == "incident_opened"] == [
        incident["id"]
    ]


async def test_concurrent_batches_of_one_site_open_one_incident_and_see_each_others_outage(
    world: World, conn: Conn, db_url: str
) -> None:
    """Two bridges ingesting at once: the second waits for the first's site lock, then
    joins its incident, and counts its offline devices towards the outage."""
    site = await world.site("garden")
    zone = await world.zone(site, "B1", "parking")
    await add_devices(
        conn,
        site,
        ("leak-1", "water_leak", zone),
        ("leak-2", "water_leak", zone),
        ("p-1", "power", None),
        ("p-2", "power", None),
        ("p-3", "power", None),
    )
    other = await asyncpg.connect(db_url)
    try:
        await init_connection(other)
        for first, second in [
            (
                [message("garden", "leak-1", event("leak-1"))],
                [message("garden", "leak-2", event("leak-2"))],
            ),
            (
                [message("garden", d, {"state": "offline"}, "status") for d in ("p-1", "p-2")],
                [message("garden", "p-3", {"state": "offline"}, "status")],
            ),
        ]:
            tx = conn.transaction()
            await tx.start()
            await ingest_batch(conn, [parse(m, "estateops/v1") for m in first])
            waiting = asyncio.create_task(ingest(other, *second))
            await asyncio.sleep(0.3)
            assert not waiting.done()  # held by the first batch's site lock
            await tx.commit()
            await asyncio.wait_for(waiting, 10)
    finally:
        await other.close()
    leak, outage = await incidents(conn)
    assert (leak["kind"], outage["kind"]) == ("water_leak", "power_outage")
    assert await linked(conn, leak["id"]) == ["leak-1", "leak-2"]
    assert await linked(conn, outage["id"]) == ["p-1", "p-2", "p-3"]

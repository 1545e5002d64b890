"""The live feed: a supervisor's SSE stream receives what any process publishes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from server.live import hub as live
from tests.conftest import World
from tests.processes import api_process


async def _next_event(lines: Any) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        event: dict[str, Any] = {}
        async for line in lines:
            if line.startswith("event:"):
                event["event"] = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and line.split(":", 1)[1].strip():
                event["data"] = json.loads(line.split(":", 1)[1])
            elif line == "":
                if "data" in event:
                    return event
                event = {}
        raise AssertionError("stream ended")

    return await asyncio.wait_for(read(), 10)


@pytest.fixture
def api_server(db_url: str) -> Iterator[str]:
    """The API in its own process (SSE needs a real server: the test client buffers)."""
    with api_process(db_url) as base:
        yield base


async def test_live_feed_delivers_events_of_the_callers_sites(
    world: World, api_server: str, db_url: str
) -> None:
    site = await world.site("garden")
    other = await world.site("plaza", kind="commercial")
    sup = await world.user("sup", "supervisor", site)
    url = f"{api_server}/api/live?site_id={site}"
    async with (
        httpx.AsyncClient(timeout=20) as http,
        http.stream("GET", url, headers=world.headers(sup)) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.aiter_lines()
        assert (await anext(lines)).startswith(":")  # the hello comment: subscribed
        # Published by another connection (another worker, the scheduler, the bridge).
        publisher = await asyncpg.connect(db_url)
        try:
            await asyncio.sleep(1)  # let the server's listener settle
            async with publisher.transaction():
                await live.publish(
                    publisher, {"type": "incident_opened", "site_id": other, "id": 1}
                )
                await live.publish(publisher, {"type": "incident_opened", "site_id": site, "id": 2})
        finally:
            await publisher.close()
        event = await _next_event(lines)
    assert event["event"] == "incident_opened"
    assert event["data"] == {"type": "incident_opened", "site_id": site, "id": 2}


async def test_nothing_leaves_before_commit(world: World, db_url: str) -> None:
    hub = live.LiveHub(db_url)
    await hub.start()
    try:
        await asyncio.wait_for(hub.connected.wait(), 10)
        async with hub.subscribe() as queue:
            conn = await asyncpg.connect(db_url)
            try:
                tx = conn.transaction()
                await tx.start()
                await live.publish(conn, {"type": "x", "site_id": 1})
                await tx.rollback()
                async with conn.transaction():
                    await live.publish(conn, {"type": "y", "site_id": 1})
            finally:
                await conn.close()
            got = await asyncio.wait_for(queue.get(), 5)
            assert got["type"] == "y"
            assert queue.empty()
    finally:
        await hub.stop()


@pytest.mark.parametrize("role", ["guard", "resident"])
async def test_live_feed_is_for_supervisors(world: World, client: Any, role: str) -> None:
    site = await world.site("garden")
    unit = await world.unit(site) if role == "resident" else None
    user = await world.user("u1", role, site, unit_id=unit)
    r = await client.get("/api/live", headers=world.headers(user))
    assert r.status_code == 403


async def test_another_sites_feed_is_404(world: World, client: Any) -> None:
    site = await world.site("garden")
    other = await world.site("plaza", kind="commercial")
    sup = await world.user("sup", "supervisor", site)
    r = await client.get(f"/api/live?site_id={other}", headers=world.headers(sup))
    assert r.status_code == 404

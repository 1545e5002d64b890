"""Webhook endpoints and the notification outbox: managers configure endpoints (the secret
shown once, stored sealed), incidents queue signed events in their own transaction, and the
scheduler delivers them to a real HTTP server on loopback, retrying with backoff."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from server import scheduler
from server.config import Settings
from server.db import create_pool
from server.notifications.delivery import deliver_due
from server.notifications.signing import (
    EVENT_HEADER,
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify,
)
from server.sealed import SealError, unseal
from tests.conftest import World

Conn = "asyncpg.Connection[asyncpg.Record]"
Client = AsyncTestClient[Litestar]


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that records each POST and answers with the next status
    of `statuses` (the last one once they run out)."""

    statuses: list[int]
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/estateops"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append((headers, body))
            status = self.statuses[min(len(self.requests), len(self.statuses)) - 1]
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".encode()
            )
            await writer.drain()
        finally:
            writer.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver(statuses=[500, 200])
    server = await asyncio.start_server(found.handle, "127.0.0.1", 0)
    found.port = server.sockets[0].getsockname()[1]
    try:
        yield found
    finally:
        server.close()
        await server.wait_closed()


async def outbox(conn: Conn) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM notification_outbox ORDER BY id")


async def test_signed_webhooks_are_delivered_with_retries(
    world: World, conn: Conn, client: Client, receiver: Receiver, settings: Settings
) -> None:
    site = await world.site("garden")
    other = await world.site("plaza", kind="commercial")
    manager = await world.user("mia", "manager", site)
    supervisor = await world.user("sam", "supervisor", site)
    guard = await world.user("gina", "guard", site)
    outsider = await world.user("mo", "manager", other)
    hooks = f"/api/sites/{site}/webhooks"

    # Managers add endpoints; the secret is shown once and kept sealed.
    r = await client.post(
        hooks,
        json={"url": receiver.url, "description": "SMS gateway"},
        headers=world.headers(manager),
    )
    assert r.status_code == 201, r.text
    endpoint = r.json()
    secret = endpoint["secret"]
    assert secret.startswith("whsec_")
    assert endpoint["events"] == ["incident.opened", "incident.escalated", "incident.resolved"]
    sealed = await conn.fetchval(
        "SELECT secret_sealed FROM webhook_endpoints WHERE id = $1", endpoint["id"]
    )
    assert secret.encode() not in bytes(sealed)
    context = f"webhook-secret:{site}:{endpoint['id']}".encode()
    assert unseal(settings.keys.kek, bytes(sealed), context=context).decode() == secret
    with pytest.raises(SealError):  # bound to its endpoint
        unseal(settings.keys.kek, bytes(sealed), context=f"webhook-secret:{site}:999".encode())
    r = await client.get(hooks, headers=world.headers(manager))
    assert [e["id"] for e in r.json()["items"]] == [endpoint["id"]]
    assert "secret" not in r.json()["items"][0]
    assert (await client.get(hooks, headers=world.headers(supervisor))).status_code == 403
    assert (await client.get(hooks, headers=world.headers(outsider))).status_code == 404
    r = await client.post(
        hooks, json={"url": "ftp://example.com/x"}, headers=world.headers(manager)
    )
    assert r.status_code == 422

    # An incident queues `incident.opened` in its own transaction; nothing is sent yet.
    r = await client.post(
        "/api/incidents", json={"site_id": site, "kind": "fire"}, headers=world.headers(guard)
    )
    assert r.status_code == 201
    incident = r.json()
    (row,) = await outbox(conn)
    assert (row["event"], row["attempts"], row["delivered_at"]) == ("incident.opened", 0, None)
    assert receiver.requests == []

    # The first attempt meets a 500: retried 30 s later, not before.
    now = datetime.now(UTC)
    async with conn.transaction():
        assert await deliver_due(conn, now, kek=settings.keys.kek, allow_private=True) == []
    (row,) = await outbox(conn)
    assert (row["attempts"], row["last_status"], row["last_error"]) == (1, 500, "HTTP 500")
    assert row["next_attempt_at"] == now + timedelta(seconds=30)
    async with conn.transaction():
        assert (
            await deliver_due(
                conn, now + timedelta(seconds=29), kek=settings.keys.kek, allow_private=True
            )
            == []
        )
    assert len(receiver.requests) == 1
    async with conn.transaction():
        delivered = await deliver_due(
            conn, now + timedelta(seconds=31), kek=settings.keys.kek, allow_private=True
        )
    assert delivered == [row["id"]]
    (row,) = await outbox(conn)
    assert (row["attempts"], row["last_status"], row["last_error"]) == (2, 200, None)
    assert row["delivered_at"] is not None

    # Both attempts carried the same event, signed over "timestamp.body".
    (first_headers, first_body), (headers, body) = receiver.requests
    assert first_body == body
    assert first_headers[EVENT_ID_HEADER.lower()] == headers[EVENT_ID_HEADER.lower()]
    assert headers[EVENT_HEADER.lower()] == "incident.opened"
    assert headers["content-type"] == "application/json"
    signature = headers[SIGNATURE_HEADER.lower()]
    assert signature.startswith("sha256=")
    timestamp = headers[TIMESTAMP_HEADER.lower()]
    assert verify(secret, timestamp, body, signature, time.time())
    assert not verify(secret, timestamp, body + b" ", signature, time.time())
    assert not verify("whsec_other", timestamp, body, signature, time.time())
    assert not verify(secret, timestamp, body, signature, time.time() + 3600)  # a replay
    sent: dict[str, Any] = json.loads(body)
    assert sent["event"] == "incident.opened"
    assert sent["id"] == headers[EVENT_ID_HEADER.lower()]
    assert sent["incident"]["id"] == incident["id"]
    assert sent["site"]["code"] == "garden"
    assert sent["notice"]["zh-CN"].startswith("【火警】")
    assert sent["notice"]["en"].startswith("[Fire]")

    # Escalations and resolutions are queued too; the scheduler's passes deliver them.
    opened_at = datetime.fromisoformat(incident["opened_at"])
    pool = await create_pool(settings, min_size=1)
    try:
        done = await scheduler.run_once(
            pool, opened_at + timedelta(minutes=2, seconds=30), settings
        )
        assert len(done["escalate_incident_steps"]) == 1  # type: ignore[arg-type]
        assert len(done["deliver_notifications"]) == 1  # type: ignore[arg-type]
        r = await client.post(
            f"/api/incidents/{incident['id']}/resolve", headers=world.headers(supervisor)
        )
        assert r.status_code == 200
        done = await scheduler.run_once(pool, opened_at + timedelta(minutes=3), settings)
        assert len(done["deliver_notifications"]) == 1  # type: ignore[arg-type]
    finally:
        await pool.close()
    rows = await outbox(conn)
    assert [r["event"] for r in rows] == [
        "incident.opened",
        "incident.escalated",
        "incident.resolved",
    ]
    assert all(r["delivered_at"] is not None for r in rows)
    escalated = json.loads(receiver.requests[2][1])
    assert escalated["event"] == "incident.escalated"
    assert escalated["escalation"] == {"from_role": "guard", "to_role": "supervisor", "level": 1}
    assert {c["user_id"] for c in escalated["contacts"]} == {supervisor.id}
    assert escalated["step"]["key"] == "alarm_and_evacuate"
    resolved = json.loads(receiver.requests[3][1])
    assert (resolved["event"], resolved["incident"]["status"]) == ("incident.resolved", "resolved")
    assert resolved["incident"]["resolved_by"] == supervisor.id

    r = await client.get(f"{hooks}/{endpoint['id']}/deliveries", headers=world.headers(manager))
    assert r.status_code == 200
    assert {d["state"] for d in r.json()["items"]} == {"delivered"}
    assert r.json()["items"][0]["attempts"] == 2


async def test_failing_endpoints_back_off_give_up_and_deactivation_cancels(
    world: World, conn: Conn, client: Client, settings: Settings
) -> None:
    site = await world.site("garden")
    manager = await world.user("mia", "manager", site)
    guard = await world.user("gina", "guard", site)
    # Nothing listens there: every attempt is refused.
    r = await client.post(
        f"/api/sites/{site}/webhooks",
        json={"url": "http://127.0.0.1:9/hook", "events": ["incident.opened"]},
        headers=world.headers(manager),
    )
    assert r.status_code == 201
    endpoint = r.json()
    r = await client.post(
        "/api/incidents", json={"site_id": site, "kind": "fire"}, headers=world.headers(guard)
    )
    assert r.status_code == 201
    r = await client.post(
        f"/api/incidents/{r.json()['id']}/resolve", headers=world.headers(manager)
    )
    assert r.status_code == 200
    rows = await outbox(conn)
    assert [r["event"] for r in rows] == ["incident.opened"]  # as subscribed

    now = datetime.now(UTC)
    waits = []
    for _ in range(10):
        row = (await outbox(conn))[0]
        if row["failed_at"] is not None:
            break
        async with conn.transaction():
            await deliver_due(
                conn, row["next_attempt_at"], kek=settings.keys.kek, limit=1, allow_private=True
            )
        after = (await outbox(conn))[0]
        waits.append(after["next_attempt_at"] - row["next_attempt_at"])
        assert after["last_status"] is None
        assert after["last_error"].startswith("ConnectError")
    assert waits[:4] == [timedelta(seconds=s) for s in (30, 60, 120, 240)]
    given_up = (await outbox(conn))[0]
    assert (given_up["attempts"], given_up["delivered_at"]) == (10, None)
    assert given_up["failed_at"] is not None

    # Deactivating the endpoint gives up what is pending for it.
    r = await client.post(
        "/api/incidents", json={"site_id": site, "kind": "theft"}, headers=world.headers(guard)
    )
    assert r.status_code == 201
    r = await client.patch(
        f"/api/sites/{site}/webhooks/{endpoint['id']}",
        json={"active": False},
        headers=world.headers(manager),
    )
    assert (r.status_code, r.json()["active"]) == (200, False)
    second = (await outbox(conn))[1]
    assert (second["last_error"], second["attempts"]) == ("endpoint deactivated", 0)
    async with conn.transaction():
        assert (
            await deliver_due(
                conn, now + timedelta(days=1), kek=settings.keys.kek, allow_private=True
            )
            == []
        )


async def test_production_never_calls_internal_addresses() -> None:
    from server.notifications.delivery import private_target

    for url in (
        "https://127.0.0.1/x",
        "https://10.1.2.3/x",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/x",
        "https://localhost/x",
    ):
        assert await private_target(url) is not None, url
    assert await private_target("https://8.8.8.8/hook") is None

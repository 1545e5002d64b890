"""PostgreSQL restarts while scans stream in (run with `pytest -m faults`).

While the database is down the API answers 503 with Retry-After, never 500; it recovers
by itself within 5 s of the database's return; and every scan that got a 2xx is stored.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest

from server import migrate
from server.auth import Principal, issue_token, make_jwt_auth
from server.checkpoints import qr_token
from server.checkpoints.keys import qr_ring
from server.config import load_settings
from server.embedded import EmbeddedPostgres
from tests.processes import api_process

pytestmark = pytest.mark.faults


async def _seed(url: str) -> tuple[str, str]:
    conn = await asyncpg.connect(url)
    try:
        await migrate.apply(conn)
        site = await conn.fetchval(
            "INSERT INTO sites (code, name, kind, timezone, locale)"
            " VALUES ('garden', 'Garden', 'residential', 'Asia/Shanghai', 'zh-CN') RETURNING id"
        )
        guard = await conn.fetchval(
            "INSERT INTO users (username, password_hash, role) VALUES ('guard1', 'x', 'guard')"
            " RETURNING id"
        )
        await conn.execute(
            "INSERT INTO site_members (site_id, user_id) VALUES ($1, $2)", site, guard
        )
        cp = await conn.fetchval(
            "INSERT INTO checkpoints (site_id, name) VALUES ($1, 'Gate') RETURNING id", site
        )
    finally:
        await conn.close()
    settings = load_settings({"ESTATEOPS_ENV": "development"})
    principal = Principal(id=guard, username="guard1", role="guard", site_ids=frozenset({site}))
    return (
        issue_token(make_jwt_auth(settings), settings, principal),
        qr_token.sign(qr_ring(settings), site, cp, 1),
    )


def test_api_survives_a_database_restart(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg", durable=True, database="estateops")
    pg.start()
    try:
        bearer, token = asyncio.run(_seed(pg.url()))
        with api_process(pg.url(), log_level="ERROR") as base:
            results: list[tuple[float, str, int, str | None]] = []
            headers = {"Authorization": f"Bearer {bearer}"}
            with httpx.Client(base_url=base, headers=headers, timeout=10) as client:

                def send() -> None:
                    scan_id = str(uuid.uuid4())
                    body = {"id": scan_id, "qr": token, "scanned_at": datetime.now(UTC).isoformat()}
                    r = client.post("/api/scans", json=body)
                    results.append(
                        (time.monotonic(), scan_id, r.status_code, r.headers.get("retry-after"))
                    )

                for _ in range(40):  # the database is up
                    send()
                pg.stop()
                stopped_at = time.monotonic()
                while time.monotonic() - stopped_at < 3:  # the database is down
                    send()
                    time.sleep(0.02)
                pg.start()
                back_at = time.monotonic()
                recovered_at = None
                while time.monotonic() - back_at < 15:
                    send()
                    if results[-1][2] in (200, 201):
                        recovered_at = time.monotonic()
                        break
                    time.sleep(0.05)
                for _ in range(40):  # and after
                    send()
    finally:
        pg.stop()

    statuses = {status for _, _, status, _ in results}
    assert 500 not in statuses, statuses
    assert statuses <= {201, 503}, statuses
    down = [r for r in results if stopped_at <= r[0] < back_at]
    assert down, "no request was made while the database was down"
    assert all(status == 503 and retry for _, _, status, retry in down), down[:3]
    assert recovered_at is not None, "the API did not recover"
    assert recovered_at - back_at <= 5, f"recovered {recovered_at - back_at:.1f} s after"
    stored_ok = [scan_id for _, scan_id, status, _ in results if status == 201]

    async def count() -> int:
        conn = await asyncpg.connect(pg.url())
        try:
            n: int = await conn.fetchval(
                "SELECT count(*) FROM scans WHERE id = ANY($1::uuid[])", stored_ok
            )
            return n
        finally:
            await conn.close()

    pg.start()
    try:
        assert asyncio.run(count()) == len(stored_ok)
    finally:
        pg.stop()

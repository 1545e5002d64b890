"""Forged and replayed proofs through the API, beyond test_auth.py and test_patrol.py:
bearer tokens signed oddly or carried elsewhere, a verified token outliving its expiry in
the cache, QR codes signed with a key of our own making or of another site, and NFC SUN
readings replayed out of order, raced, or burnt by a guard of another site."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import jwt
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from server.checkpoints import qr_token
from server.checkpoints.keys import qr_ring, seal_sun_keys
from server.checkpoints.qr_token import QrKeyRing
from server.checkpoints.verify import ScanRefused, SunProof
from server.config import Settings
from server.db import init_connection
from server.patrol import scans
from server.patrol.models import ScanIn
from tests.conftest import World
from tests.integration.test_security_matrix import Estate, build_estate
from tests.unit.test_nfc import tag_sun

PROBLEM = "application/problem+json"


@pytest.fixture
async def estate(world: World, client: AsyncTestClient[Litestar]) -> Estate:
    return await build_estate(world, client)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(user_id: int, **overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": str(user_id),
        "iat": now,
        "exp": now + timedelta(hours=1),
        "extras": {"usr": "root", "role": "admin", "sites": [], "unit": None},
    }
    claims.update(overrides)
    return claims


def _assert_401(r: Any) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert r.json()["type"].endswith("/unauthorized")


# --- bearer tokens ---------------------------------------------------------------------


async def test_alg_none_in_any_spelling_and_with_a_real_signature_is_401(
    estate: Estate, settings: Settings
) -> None:
    admin = estate.people["adm"]
    payload = _b64(json.dumps(_claims(admin.id), default=lambda d: int(d.timestamp())).encode())
    key = settings.auth.jwt_secret
    real = jwt.encode(_claims(admin.id), key, algorithm="HS256")
    assert (
        await estate.client.get("/api/me", headers={"Authorization": f"Bearer {real}"})
    ).status_code == 200
    forged = []
    for alg in ("none", "None", "NONE", "nOnE"):
        header = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
        forged.append(f"{header}.{payload}.")
        # A genuine HS256 signature under a header that claims none.
        forged.append(f"{header}.{payload}.{real.rsplit('.', 1)[1]}")
    # A header naming HS256 with no signature at all.
    hs_header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    forged.append(f"{hs_header}.{payload}.")
    for token in forged:
        _assert_401(
            await estate.client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
        )


async def test_claims_that_do_not_hold_yet_or_are_missing_are_401(
    estate: Estate, settings: Settings
) -> None:
    admin = estate.people["adm"]
    key = settings.auth.jwt_secret
    later = datetime.now(UTC) + timedelta(hours=1)
    no_iat = _claims(admin.id)
    del no_iat["iat"]
    no_sub = _claims(admin.id)
    del no_sub["sub"]
    for claims in (
        _claims(admin.id, nbf=later),  # not valid before an hour from now
        no_iat,
        no_sub,
        _claims(admin.id, exp="tomorrow"),
    ):
        token = jwt.encode(claims, key, algorithm="HS256")
        _assert_401(
            await estate.client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
        )


async def test_a_token_is_read_from_the_authorization_header_only(estate: Estate) -> None:
    token = estate.world.token(estate.people["adm"])
    c = estate.client
    _assert_401(await c.get("/api/me", params={"token": token}))
    _assert_401(await c.get("/api/me", params={"access_token": token}))
    _assert_401(await c.get("/api/me", headers={"Cookie": f"token={token}; access_token={token}"}))
    _assert_401(await c.get("/api/me", headers={"X-Auth-Token": token}))
    _assert_401(await c.get("/api/me", headers={"Authorization": token}))  # no scheme
    _assert_401(await c.get("/api/me", headers={"Authorization": f"Bearer {token} {token}"}))
    assert (await c.get("/api/me", headers={"Authorization": f"Bearer {token}"})).status_code == 200


async def test_huge_or_binary_authorization_headers_are_refused_not_500(estate: Estate) -> None:
    for value in (b"Bearer " + b"a" * 60_000, b"Bearer " + b"a.b.c" * 5_000, b"Bearer \xff\xfe"):
        r = await estate.client.get("/api/me", headers={"Authorization": value})
        assert r.status_code in (400, 401, 431), r.text
        assert r.status_code < 500


async def test_a_cached_token_stops_working_when_it_expires(
    estate: Estate, settings: Settings
) -> None:
    """The middleware remembers verified tokens; it must not remember them past exp."""
    admin = estate.people["adm"]
    now = datetime.now(UTC)
    # PyJWT compares whole seconds: expire at the next second boundary but one.
    exp = datetime.fromtimestamp(int(now.timestamp()) + 2, UTC)
    token = jwt.encode(_claims(admin.id, iat=now, exp=exp), settings.auth.jwt_secret)
    h = {"Authorization": f"Bearer {token}"}
    assert (await estate.client.get("/api/me", headers=h)).status_code == 200
    assert (await estate.client.get("/api/me", headers=h)).status_code == 200  # from the cache
    await asyncio.sleep(max(0.0, exp.timestamp() - time.time()) + 1.1)
    _assert_401(await estate.client.get("/api/me", headers=h))


# --- QR codes ----------------------------------------------------------------------------


def _scan(**proof: Any) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "scanned_at": datetime.now(UTC).isoformat(), **proof}


async def _refusals(estate: Estate) -> list[str]:
    rows = await estate.world.conn.fetch("SELECT reason FROM scan_refusals ORDER BY id")
    return [r["reason"] for r in rows]


async def test_qr_codes_signed_with_a_key_of_our_own_are_refused_and_logged(
    estate: Estate, settings: Settings
) -> None:
    ring = qr_ring(settings)
    h = estate.headers("grd")
    # Same key id, same layout, the attacker's secret; and a key id the server never had.
    theirs = QrKeyRing({ring.current: os.urandom(32)}, current=ring.current)
    unknown = QrKeyRing({"k9": os.urandom(32)}, current="k9")
    forged = [
        qr_token.sign(theirs, estate.site_a, estate.checkpoint_a, 1),
        qr_token.sign(unknown, estate.site_a, estate.checkpoint_a, 1),
        estate.qr().replace(".1.", ".2.", 1),  # a bumped version without re-signing
    ]
    for code in forged:
        r = await estate.client.post("/api/scans", json=_scan(qr=code), headers=h)
        assert r.status_code == 422, r.text
        assert r.json()["reason"] == "invalid_qr"
    # Genuine code, a version ahead of the checkpoint's (as if printed after a rotation
    # that never happened): the key signs it, the row says otherwise.
    ahead = qr_token.sign(ring, estate.site_a, estate.checkpoint_a, 2)
    r = await estate.client.post("/api/scans", json=_scan(qr=ahead), headers=h)
    assert r.json()["reason"] == "revoked_qr"
    assert await _refusals(estate) == ["invalid_qr"] * 3 + ["revoked_qr"]
    assert await estate.world.conn.fetchval("SELECT count(*) FROM scans") == 0


async def test_a_code_of_another_site_is_refused_in_a_batch_and_as_proof_on_a_ticket(
    estate: Estate,
) -> None:
    conn = estate.world.conn
    b_checkpoint = await conn.fetchval(
        "INSERT INTO checkpoints (site_id, name) VALUES ($1, 'B gate') RETURNING id",
        estate.site_b,
    )
    b_code = qr_token.sign(qr_ring(estate.world.app.state.settings), estate.site_b, b_checkpoint, 1)
    now = datetime.now(UTC).isoformat()
    r = await estate.client.post(
        "/api/scans/batch",
        json={"sent_at": now, "scans": [_scan(qr=estate.qr()), _scan(qr=b_code)]},
        headers=estate.headers("grd"),
    )
    assert r.status_code == 201, r.text
    results = r.json()["results"]
    assert [i["status"] for i in results] == [201, 422]
    assert results[1]["problem"]["reason"] == "not_on_site"
    # The refusal is logged for the site whose code it is; the scan's own site sees nothing.
    refused = await conn.fetchrow("SELECT site_id, checkpoint_id FROM scan_refusals")
    assert (refused["site_id"], refused["checkpoint_id"]) == (estate.site_b, b_checkpoint)

    # A technician attesting presence on a ticket with another site's code is refused.
    tid = estate.ticket_a
    tech = estate.people["tec"]
    for action, extra in (("assign", {"assignee_id": tech.id}), ("accept", {})):
        who = "dsk" if action == "assign" else "tec"
        moved = await estate.client.post(
            f"/api/tickets/{tid}/events",
            json={"action": action, **extra},
            headers=estate.headers(who),
        )
        assert moved.status_code == 201, moved.text
    r = await estate.client.post(
        f"/api/tickets/{tid}/events",
        json={"action": "start", "scan": {"qr": b_code}},
        headers=estate.headers("tec"),
    )
    assert r.status_code == 422, r.text
    assert await conn.fetchval("SELECT status FROM tickets WHERE id = $1", tid) == "assigned"


# --- NFC SUN counters --------------------------------------------------------------------

UID = bytes.fromhex("04A1B2C3D4E5F6")


async def _sun_checkpoint(estate: Estate, site: int) -> tuple[int, bytes, bytes]:
    meta, file = os.urandom(16), os.urandom(16)
    kek = estate.world.app.state.settings.keys.kek
    cp: int = await estate.world.conn.fetchval(
        "INSERT INTO checkpoints (site_id, name, nfc_uid, nfc_sun_keys)"
        " VALUES ($1, 'Secure tag', $2, $3) RETURNING id",
        site,
        UID.hex().upper(),
        seal_sun_keys(kek, UID.hex().upper(), meta, file),
    )
    return cp, meta, file


def _sun(counter: int, meta: bytes, file: bytes) -> dict[str, str]:
    picc, mac = tag_sun(UID, counter, meta, file)
    return {"picc_data": picc, "cmac": mac}


async def test_an_older_reading_after_a_newer_one_is_a_replay(estate: Estate) -> None:
    cp, meta, file = await _sun_checkpoint(estate, estate.site_a)
    h = estate.headers("grd")
    r7 = _sun(7, meta, file)
    assert (
        await estate.client.post("/api/scans", json=_scan(nfc_sun=r7), headers=h)
    ).status_code == 201
    for stale in (_sun(5, meta, file), r7):
        r = await estate.client.post("/api/scans", json=_scan(nfc_sun=stale), headers=h)
        assert r.json()["reason"] == "nfc_replay", r.text
    r = await estate.client.post("/api/scans", json=_scan(nfc_sun=_sun(8, meta, file)), headers=h)
    assert r.status_code == 201
    assert (
        await estate.world.conn.fetchval("SELECT nfc_counter FROM checkpoints WHERE id = $1", cp)
        == 8
    )
    # In one offline batch too: the second use of a reading is refused, the others stored.
    now = datetime.now(UTC).isoformat()
    r10 = _sun(10, meta, file)
    batch = [_scan(nfc_sun=r10), _scan(nfc_sun=r10), _scan(nfc_sun=_sun(9, meta, file))]
    r = await estate.client.post(
        "/api/scans/batch", json={"sent_at": now, "scans": batch}, headers=h
    )
    results = r.json()["results"]
    assert [i["status"] for i in results] == [201, 422, 422]
    assert {i["problem"]["reason"] for i in results[1:]} == {"nfc_replay"}


async def test_two_phones_racing_with_one_reading_store_it_once(
    estate: Estate, db_url: str
) -> None:
    """The counter is a compare-and-set: of two concurrent uses of a reading, one wins."""
    _, meta, file = await _sun_checkpoint(estate, estate.site_a)
    settings = estate.world.app.state.settings
    reading = _sun(42, meta, file)
    guard = estate.people["grd"]
    conns = [await asyncpg.connect(db_url) for _ in range(2)]
    try:
        for c in conns:
            await init_connection(c)

        async def attempt(c: asyncpg.Connection[asyncpg.Record]) -> str:
            scan = ScanIn(
                id=uuid.uuid4(),
                scanned_at=datetime.now(UTC),
                nfc_sun=SunProof(**reading),
            )
            try:
                await scans.ingest(c, settings, guard, scan)
            except ScanRefused as refused:
                return refused.reason
            return "stored"

        outcomes = await asyncio.gather(*(attempt(c) for c in conns))
    finally:
        for c in conns:
            await c.close()
    assert sorted(outcomes) == ["nfc_replay", "stored"]
    assert await estate.world.conn.fetchval("SELECT count(*) FROM scans") == 1


async def test_a_guard_of_another_site_cannot_burn_a_tags_counter(estate: Estate) -> None:
    """A reading of site A's tag sent by site B's staff is refused without consuming it, so
    site A's guard who really stood there is still believed."""
    cp, meta, file = await _sun_checkpoint(estate, estate.site_a)
    reading = _sun(3, meta, file)
    r = await estate.client.post(
        "/api/scans", json=_scan(nfc_sun=reading), headers=estate.headers("B")
    )
    assert r.status_code == 422
    assert r.json()["reason"] == "bad_sun"
    assert (
        await estate.world.conn.fetchval("SELECT nfc_counter FROM checkpoints WHERE id = $1", cp)
        is None
    )
    r = await estate.client.post(
        "/api/scans", json=_scan(nfc_sun=reading), headers=estate.headers("grd")
    )
    assert r.status_code == 201, r.text
    assert r.json()["checkpoint_id"] == cp

"""Checkpoints through the HTTP API against a real PostgreSQL: NFC bindings and their
sealed keys, site scoping, roles, QR codes and sheets, token rotation, CSV import."""

from __future__ import annotations

import io
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from PIL import Image

from server.auth import Principal
from server.checkpoints import keys
from server.checkpoints.nfc import verify_sun
from server.checkpoints.qr_token import verify
from server.config import Settings
from tests.conftest import World

PROBLEM = "application/problem+json"
# NXP AN12196's public example: all-zero keys; it proves UID 04DE5F1EACC040, counter 61.
AN12196_UID = "04DE5F1EACC040"
AN12196_PICC = "EF963FF7828658A599F3041510671E88"
AN12196_CMAC = "94EED9EE65337086"

if TYPE_CHECKING:
    Conn: TypeAlias = asyncpg.Connection[asyncpg.Record]
    Client: TypeAlias = AsyncTestClient[Litestar]


@dataclass(frozen=True)
class Estate:
    """Two sites with their people: ``a`` is where most tests happen."""

    a: int
    b: int
    lobby: int  # zone on a
    garage: int  # zone on a
    b_zone: int  # zone on b
    unit_a: int
    unit_b: int
    admin: Principal
    sup_a: Principal
    sup_b: Principal
    manager_a: Principal
    guard_a: Principal
    resident_a: Principal


@pytest.fixture
async def estate(world: World) -> Estate:
    a = await world.site("alpha")
    b = await world.site("bravo", kind="commercial")
    unit_a = await world.unit(a, "101")
    return Estate(
        a=a,
        b=b,
        lobby=await world.zone(a, "Lobby", "lobby"),
        garage=await world.zone(a, "Garage", "parking"),
        b_zone=await world.zone(b, "Lobby", "lobby"),
        unit_a=unit_a,
        unit_b=await world.unit(b, "201"),
        admin=await world.user("root", "admin"),
        sup_a=await world.user("sam", "supervisor", a),
        sup_b=await world.user("sue", "supervisor", b),
        manager_a=await world.user("max", "manager", a),
        guard_a=await world.user("gina", "guard", a),
        resident_a=await world.user("rita", "resident", unit_id=unit_a),
    )


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def _fields(body: dict[str, Any]) -> list[str]:
    return [e["field"] for e in body.get("errors", [])]


async def _create(
    client: Client, world: World, who: Principal, site: int, **fields: Any
) -> dict[str, Any]:
    r = await client.post(f"/api/sites/{site}/checkpoints", json=fields, headers=world.headers(who))
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def _sun(uid: str = AN12196_UID, meta: str = "00" * 16, file: str = "00" * 16) -> dict[str, str]:
    return {"uid": uid, "meta_read_key": meta, "file_read_key": file}


def _ring(settings: Settings) -> Any:
    return keys.qr_ring(settings)


# --- creating, NFC options, sealed keys ---------------------------------------------


async def test_create_without_nfc_has_defaults_and_a_valid_token(
    client: Client, world: World, estate: Estate, settings: Settings
) -> None:
    body = await _create(client, world, estate.sup_a, estate.a, name="Front gate")

    assert body["site_id"] == estate.a
    assert body["name"] == "Front gate"
    assert body["nfc"] is None
    assert body["zone_id"] is None
    assert body["lat"] is None
    assert body["radius_m"] == 50
    assert body["instructions"] == ""
    assert body["active"] is True
    assert body["token_version"] == 1
    claims = verify(_ring(settings), body["qr_token"])
    assert (claims.site_id, claims.checkpoint_id, claims.token_version) == (
        estate.a,
        body["id"],
        1,
    )


async def test_create_with_plain_uid_normalises_it(
    client: Client, world: World, estate: Estate, conn: Conn
) -> None:
    body = await _create(
        client,
        world,
        estate.manager_a,
        estate.a,
        name="Stair B",
        zone_id=estate.lobby,
        unit_id=estate.unit_a,
        lat=31.2304,
        lon=121.4737,
        radius_m=12.3,
        nfc_uid="04:de:5f:1e:ac:c0:41",
        instructions="Check the fire door is shut",
    )

    assert body["nfc"] == {"uid": "04DE5F1EACC041", "sun": False}
    assert body["zone_id"] == estate.lobby
    assert body["unit_id"] == estate.unit_a
    assert (body["lat"], body["lon"], body["radius_m"]) == (31.2304, 121.4737, 12.3)
    assert body["instructions"] == "Check the fire door is shut"
    row = await conn.fetchrow(
        "SELECT nfc_uid, nfc_sun_keys FROM checkpoints WHERE id = $1", body["id"]
    )
    assert row is not None
    assert row["nfc_uid"] == "04DE5F1EACC041"
    assert row["nfc_sun_keys"] is None


async def test_sun_keys_are_sealed_never_returned_and_open_with_keys_py(
    client: Client, world: World, estate: Estate, conn: Conn, settings: Settings
) -> None:
    meta, file = secrets.token_bytes(16), secrets.token_bytes(16)
    created = await client.post(
        f"/api/sites/{estate.a}/checkpoints",
        json={
            "name": "Roof door",
            "nfc_sun": {
                "uid": "04de5f1eacc040",
                "meta_read_key": meta.hex(),
                "file_read_key": file.hex().upper(),
            },
        },
        headers=world.headers(estate.sup_a),
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["nfc"] == {"uid": AN12196_UID, "sun": True}

    h = world.headers(estate.sup_a)
    responses = [
        created,
        await client.get(f"/api/checkpoints/{body['id']}", headers=h),
        await client.get(f"/api/sites/{estate.a}/checkpoints", headers=h),
        await client.post(f"/api/checkpoints/{body['id']}/rotate-token", headers=h),
        await client.patch(f"/api/checkpoints/{body['id']}", json={"name": "Roof"}, headers=h),
    ]
    for r in responses:
        assert r.status_code in (200, 201), r.text
        for key in (meta, file):
            assert key.hex() not in r.text.lower()
        assert "read_key" not in r.text
        assert "sun_keys" not in r.text

    sealed: bytes = await conn.fetchval(
        "SELECT nfc_sun_keys FROM checkpoints WHERE id = $1", body["id"]
    )
    assert sealed is not None
    assert meta not in sealed
    assert file not in sealed
    assert sealed != meta + file
    assert keys.unseal_sun_keys(settings.keys.kek, AN12196_UID, sealed) == (meta, file)


async def test_sealed_example_keys_verify_the_an12196_message(
    client: Client, world: World, estate: Estate, conn: Conn, settings: Settings
) -> None:
    body = await _create(
        client,
        world,
        estate.sup_a,
        estate.a,
        name="Example tag",
        nfc_sun={"uid": AN12196_UID, "meta_read_key": "00" * 16, "file_read_key": "00" * 16},
    )
    sealed: bytes = await conn.fetchval(
        "SELECT nfc_sun_keys FROM checkpoints WHERE id = $1", body["id"]
    )
    meta, file = keys.unseal_sun_keys(settings.keys.kek, body["nfc"]["uid"], sealed)

    result = verify_sun(AN12196_PICC, AN12196_CMAC, meta, file)

    assert (result.uid, result.counter) == (AN12196_UID, 61)


async def test_a_bound_uid_is_a_conflict_even_on_another_site(
    client: Client, world: World, estate: Estate
) -> None:
    await _create(client, world, estate.sup_a, estate.a, name="Gate", nfc_uid="04A1B2C3")

    same_site = await client.post(
        f"/api/sites/{estate.a}/checkpoints",
        json={"name": "Other", "nfc_uid": "04-a1-b2-c3"},
        headers=world.headers(estate.sup_a),
    )
    other_site = await client.post(
        f"/api/sites/{estate.b}/checkpoints",
        json={
            "name": "Gate",
            "nfc_sun": _sun(uid="04A1B2C3D4E5F6", meta="11" * 16, file="22" * 16),
        },
        headers=world.headers(estate.sup_b),
    )
    assert other_site.status_code == 201, other_site.text
    sun_again = await client.post(
        f"/api/sites/{estate.a}/checkpoints",
        json={
            "name": "Copy",
            "nfc_sun": _sun(uid="04A1B2C3D4E5F6", meta="11" * 16, file="22" * 16),
        },
        headers=world.headers(estate.sup_a),
    )

    assert _problem(same_site, 409)["field"] == "nfc_uid"
    assert _problem(same_site, 409)["type"].endswith("/conflict")
    body = _problem(sun_again, 409)
    assert body["field"] == "nfc_sun.uid"
    assert "bravo" not in sun_again.text.lower()  # another site's checkpoint is not named


async def test_a_taken_name_is_a_conflict_on_the_same_site_only(
    client: Client, world: World, estate: Estate
) -> None:
    await _create(client, world, estate.sup_a, estate.a, name="Gate")
    again = await client.post(
        f"/api/sites/{estate.a}/checkpoints",
        json={"name": "Gate"},
        headers=world.headers(estate.sup_a),
    )
    assert _problem(again, 409)["field"] == "name"
    await _create(client, world, estate.sup_b, estate.b, name="Gate")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "X", "lat": 31.2}, "lon"),
        ({"name": "X", "lon": 121.4}, "lat"),
        ({"name": "X", "lat": 91, "lon": 0}, "lat"),
        ({"name": "X", "lat": 0, "lon": 181}, "lon"),
        ({"name": "X", "radius_m": 0}, "radius_m"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "X", "instructions": "x" * 2001}, "instructions"),
        ({"name": "X", "nfc_uid": "not-hex"}, "nfc_uid"),
        ({"name": "X", "nfc_uid": "04A1B2"}, "nfc_uid"),
        ({"name": "X", "nfc_uid": "04A1B2C3", "nfc_sun": _sun()}, "nfc_sun"),
        ({"name": "X", "nfc_sun": _sun(uid="04A1B2C3")}, "nfc_sun.uid"),
        ({"name": "X", "nfc_sun": _sun(meta="0" * 31)}, "nfc_sun.meta_read_key"),
        ({"name": "X", "nfc_sun": _sun(file="g" * 32)}, "nfc_sun.file_read_key"),
        (
            {"name": "X", "nfc_sun": {"uid": AN12196_UID, "meta_read_key": "0" * 32}},
            "nfc_sun.file_read_key",
        ),
        ({"name": "X", "colour": "red"}, "colour"),
        ({"name": "X", "zone_id": 0}, "zone_id"),
    ],
)
async def test_bad_input_is_a_problem_naming_the_field(
    client: Client, world: World, estate: Estate, payload: dict[str, Any], field: str, conn: Conn
) -> None:
    r = await client.post(
        f"/api/sites/{estate.a}/checkpoints", json=payload, headers=world.headers(estate.sup_a)
    )
    body = _problem(r, 422)
    assert body["type"].endswith("/validation")
    assert field in _fields(body), body
    assert await conn.fetchval("SELECT count(*) FROM checkpoints") == 0


async def test_a_rejected_key_is_not_echoed(client: Client, world: World, estate: Estate) -> None:
    secret = secrets.token_hex(16)
    bad = secret[:-1] + "z"  # not hex: refused, and must not be echoed either
    r = await client.post(
        f"/api/sites/{estate.a}/checkpoints",
        json={
            "name": "X",
            "nfc_sun": {"uid": AN12196_UID, "meta_read_key": bad, "file_read_key": secret},
        },
        headers=world.headers(estate.sup_a),
    )
    _problem(r, 422)
    assert bad not in r.text
    assert secret not in r.text


async def test_zone_and_unit_must_belong_to_the_site(
    client: Client, world: World, estate: Estate
) -> None:
    h = world.headers(estate.sup_a)
    url = f"/api/sites/{estate.a}/checkpoints"
    zone = await client.post(url, json={"name": "X", "zone_id": estate.b_zone}, headers=h)
    missing = await client.post(url, json={"name": "X", "zone_id": 999_999}, headers=h)
    unit = await client.post(url, json={"name": "X", "unit_id": estate.unit_b}, headers=h)

    assert _fields(_problem(zone, 422)) == ["zone_id"]
    assert _fields(_problem(missing, 422)) == ["zone_id"]
    assert _fields(_problem(unit, 422)) == ["unit_id"]


# --- scoping and roles ------------------------------------------------------------


async def test_another_sites_checkpoints_are_404(
    client: Client, world: World, estate: Estate
) -> None:
    theirs = await _create(client, world, estate.sup_b, estate.b, name="Their gate")
    h = world.headers(estate.sup_a)
    cp = theirs["id"]

    answers = [
        await client.get(f"/api/checkpoints/{cp}", headers=h),
        await client.patch(f"/api/checkpoints/{cp}", json={"name": "Mine"}, headers=h),
        await client.post(f"/api/checkpoints/{cp}/rotate-token", headers=h),
        await client.get(f"/api/checkpoints/{cp}/qr.png", headers=h),
        await client.get(f"/api/checkpoints/{cp}/qr.svg", headers=h),
        await client.get(f"/api/sites/{estate.b}/checkpoints", headers=h),
        await client.get(f"/api/sites/{estate.b}/checkpoints/qr-sheet.pdf", headers=h),
        await client.post(f"/api/sites/{estate.b}/checkpoints", json={"name": "X"}, headers=h),
        await client.post(
            f"/api/sites/{estate.b}/checkpoints/import",
            content=b"name\nX\n",
            headers={**h, "Content-Type": "text/csv"},
        ),
        await client.get("/api/checkpoints/987654", headers=h),
    ]
    for r in answers:
        assert _problem(r, 404)["type"].endswith("/not-found")
    # Nothing moved, and the admin sees it.
    r = await client.get(f"/api/checkpoints/{cp}", headers=world.headers(estate.admin))
    assert r.status_code == 200
    assert r.json()["name"] == "Their gate"
    assert r.json()["token_version"] == 1


async def test_guards_and_residents_may_not_create(
    client: Client, world: World, estate: Estate
) -> None:
    url = f"/api/sites/{estate.a}/checkpoints"
    for who in (estate.guard_a, estate.resident_a):
        r = await client.post(url, json={"name": "X"}, headers=world.headers(who))
        assert _problem(r, 403)["type"].endswith("/forbidden")


async def test_a_guard_lists_but_sees_no_tokens_and_no_codes(
    client: Client, world: World, estate: Estate
) -> None:
    cp = await _create(client, world, estate.sup_a, estate.a, name="Gate")
    g = world.headers(estate.guard_a)

    listed = await client.get(f"/api/sites/{estate.a}/checkpoints", headers=g)
    one = await client.get(f"/api/checkpoints/{cp['id']}", headers=g)

    assert listed.status_code == 200, listed.text
    assert [c["name"] for c in listed.json()["items"]] == ["Gate"]
    assert listed.json()["items"][0]["qr_token"] is None
    assert one.json()["qr_token"] is None
    assert cp["qr_token"] not in listed.text + one.text
    for path in (
        f"/api/checkpoints/{cp['id']}/qr.png",
        f"/api/checkpoints/{cp['id']}/qr.svg",
        f"/api/sites/{estate.a}/checkpoints/qr-sheet.pdf",
    ):
        _problem(await client.get(path, headers=g), 403)
    patched = await client.patch(f"/api/checkpoints/{cp['id']}", json={"name": "Y"}, headers=g)
    _problem(patched, 403)
    _problem(await client.post(f"/api/checkpoints/{cp['id']}/rotate-token", headers=g), 403)


async def test_residents_may_not_list(client: Client, world: World, estate: Estate) -> None:
    cp = await _create(client, world, estate.sup_a, estate.a, name="Gate")
    h = world.headers(estate.resident_a)
    _problem(await client.get(f"/api/sites/{estate.a}/checkpoints", headers=h), 403)
    _problem(await client.get(f"/api/checkpoints/{cp['id']}", headers=h), 403)


async def test_list_pages_by_keyset_and_filters_by_zone(
    client: Client, world: World, estate: Estate
) -> None:
    ids = []
    for n, zone in enumerate([estate.lobby, estate.garage, estate.lobby, None, estate.lobby]):
        body = await _create(client, world, estate.sup_a, estate.a, name=f"CP {n}", zone_id=zone)
        ids.append(body["id"])
    await _create(client, world, estate.sup_b, estate.b, name="Elsewhere")
    h = world.headers(estate.sup_a)
    url = f"/api/sites/{estate.a}/checkpoints"

    first = (await client.get(url, params={"limit": 2}, headers=h)).json()
    second = (
        await client.get(url, params={"limit": 2, "after": first["next_after"]}, headers=h)
    ).json()
    third = (
        await client.get(url, params={"limit": 2, "after": second["next_after"]}, headers=h)
    ).json()
    lobby = (await client.get(url, params={"zone_id": estate.lobby}, headers=h)).json()

    assert [c["id"] for c in first["items"] + second["items"] + third["items"]] == ids
    assert third["next_after"] is None
    assert [c["id"] for c in lobby["items"]] == [ids[0], ids[2], ids[4]]
    assert lobby["next_after"] is None


# --- changing ---------------------------------------------------------------------


async def test_patch_changes_only_what_is_given(
    client: Client, world: World, estate: Estate
) -> None:
    cp = await _create(
        client,
        world,
        estate.sup_a,
        estate.a,
        name="Gate",
        zone_id=estate.lobby,
        lat=1.0,
        lon=2.0,
        instructions="Look around",
    )
    h = world.headers(estate.sup_a)
    url = f"/api/checkpoints/{cp['id']}"

    r = await client.patch(
        url, json={"name": "North gate", "zone_id": estate.garage, "active": False}, headers=h
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["name"], body["zone_id"], body["active"]) == ("North gate", estate.garage, False)
    assert (body["lat"], body["lon"], body["instructions"]) == (1.0, 2.0, "Look around")

    r = await client.patch(url, json={"lat": None, "lon": None, "zone_id": None}, headers=h)
    assert r.status_code == 200, r.text
    assert (r.json()["lat"], r.json()["lon"], r.json()["zone_id"]) == (None, None, None)

    r = await client.patch(url, json={"lat": 5.5, "lon": 6.5, "radius_m": 20}, headers=h)
    assert (r.json()["lat"], r.json()["lon"], r.json()["radius_m"]) == (5.5, 6.5, 20)

    only_lat = await client.patch(url, json={"lat": 3.0}, headers=h)
    half_null = await client.patch(url, json={"lat": 3.0, "lon": None}, headers=h)
    foreign_zone = await client.patch(url, json={"zone_id": estate.b_zone}, headers=h)
    await _create(client, world, estate.sup_a, estate.a, name="South gate")
    taken_name = await client.patch(url, json={"name": "South gate"}, headers=h)
    unknown = await client.patch(url, json={"site_id": estate.b}, headers=h)
    assert _fields(_problem(only_lat, 422)) == ["lon"]
    assert _fields(_problem(half_null, 422)) == ["lon"]
    assert _fields(_problem(foreign_zone, 422)) == ["zone_id"]
    assert _problem(taken_name, 409)["field"] == "name"
    assert "site_id" in _fields(_problem(unknown, 422))

    final = (await client.get(url, headers=h)).json()
    assert (final["name"], final["lat"], final["lon"], final["zone_id"], final["site_id"]) == (
        "North gate",
        5.5,
        6.5,
        None,
        estate.a,
    )


async def test_patch_changes_the_nfc_binding(
    client: Client, world: World, estate: Estate, conn: Conn, settings: Settings
) -> None:
    cp = await _create(client, world, estate.sup_a, estate.a, name="Gate", nfc_uid="04A1B2C3")
    h = world.headers(estate.sup_a)
    url = f"/api/checkpoints/{cp['id']}"

    async def stored() -> asyncpg.Record:
        row = await conn.fetchrow(
            "SELECT nfc_uid, nfc_sun_keys, nfc_counter FROM checkpoints WHERE id = $1", cp["id"]
        )
        assert row is not None
        return row

    # Plain tag -> SUN tag.
    sun = {"uid": AN12196_UID, "meta_read_key": "00" * 16, "file_read_key": "00" * 16}
    r = await client.patch(url, json={"nfc_sun": sun}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["nfc"] == {"uid": AN12196_UID, "sun": True}
    await conn.execute("UPDATE checkpoints SET nfc_counter = 61 WHERE id = $1", cp["id"])

    # Same tag, new keys: the counter stays, so old SUN URLs stay replays.
    new_meta = secrets.token_bytes(16)
    r = await client.patch(
        url, json={"nfc_sun": {**sun, "meta_read_key": new_meta.hex()}}, headers=h
    )
    assert r.status_code == 200, r.text
    row = await stored()
    assert row["nfc_counter"] == 61
    assert keys.unseal_sun_keys(settings.keys.kek, AN12196_UID, row["nfc_sun_keys"]) == (
        new_meta,
        bytes(16),
    )

    # A name change leaves the keys alone.
    r = await client.patch(url, json={"name": "Gate 2"}, headers=h)
    assert r.json()["nfc"] == {"uid": AN12196_UID, "sun": True}
    assert (await stored())["nfc_sun_keys"] == row["nfc_sun_keys"]

    # SUN tag -> another plain tag: the keys and the counter go.
    r = await client.patch(url, json={"nfc_uid": "04:99:88:77"}, headers=h)
    assert r.json()["nfc"] == {"uid": "04998877", "sun": False}
    row = await stored()
    assert (row["nfc_uid"], row["nfc_sun_keys"], row["nfc_counter"]) == ("04998877", None, None)

    # Unbound.
    r = await client.patch(url, json={"nfc_uid": None}, headers=h)
    assert r.json()["nfc"] is None
    assert (await stored())["nfc_uid"] is None

    both = await client.patch(url, json={"nfc_uid": "04A1B2C3", "nfc_sun": sun}, headers=h)
    assert _fields(_problem(both, 422)) == ["nfc_sun"]


async def test_patch_to_a_bound_uid_is_a_conflict(
    client: Client, world: World, estate: Estate
) -> None:
    await _create(client, world, estate.sup_b, estate.b, name="Theirs", nfc_uid="04A1B2C3")
    mine = await _create(client, world, estate.sup_a, estate.a, name="Mine")
    r = await client.patch(
        f"/api/checkpoints/{mine['id']}",
        json={"nfc_uid": "04a1b2c3"},
        headers=world.headers(estate.sup_a),
    )
    assert _problem(r, 409)["field"] == "nfc_uid"


# --- QR codes and tokens ----------------------------------------------------------


async def test_qr_png_svg_and_sheet_have_their_types_and_magic(
    client: Client, world: World, estate: Estate
) -> None:
    cp = await _create(client, world, estate.sup_a, estate.a, name="Gate", zone_id=estate.lobby)
    for n in range(12):
        await _create(client, world, estate.sup_a, estate.a, name=f"门 {n}", zone_id=estate.garage)
    h = world.headers(estate.sup_a)

    png = await client.get(f"/api/checkpoints/{cp['id']}/qr.png", headers=h)
    svg = await client.get(f"/api/checkpoints/{cp['id']}/qr.svg", headers=h)
    pdf = await client.get(f"/api/sites/{estate.a}/checkpoints/qr-sheet.pdf", headers=h)
    lobby_pdf = await client.get(
        f"/api/sites/{estate.a}/checkpoints/qr-sheet.pdf",
        params={"zone_id": estate.lobby},
        headers=h,
    )

    assert png.status_code == 200, png.text
    assert png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png.content))
    assert image.format == "PNG"
    assert image.height > image.width  # the label sits under the code
    assert svg.status_code == 200, svg.text
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in svg.content[:400]
    assert pdf.status_code == 200, pdf.text
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-")
    assert 'filename="alpha-checkpoints.pdf"' in pdf.headers["content-disposition"]
    assert png.headers["cache-control"] == "no-store"
    # 13 codes, 12 to a page; the zone filter leaves one.
    assert len(re.findall(rb"/Type\s*/Page\b", pdf.content)) == 2
    assert len(re.findall(rb"/Type\s*/Page\b", lobby_pdf.content)) == 1


async def test_rotating_the_token_makes_the_old_one_stale(
    client: Client, world: World, estate: Estate, conn: Conn, settings: Settings
) -> None:
    cp = await _create(client, world, estate.sup_a, estate.a, name="Gate")
    old = cp["qr_token"]
    h = world.headers(estate.sup_a)

    r = await client.post(f"/api/checkpoints/{cp['id']}/rotate-token", headers=h)

    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_version"] == 2
    assert body["qr_token"] != old
    stored: int = await conn.fetchval(
        "SELECT token_version FROM checkpoints WHERE id = $1", cp["id"]
    )
    assert stored == 2
    ring = _ring(settings)
    # The old code still carries a valid signature; its version is what revokes it.
    assert verify(ring, old).token_version == 1 != stored
    assert verify(ring, body["qr_token"]).token_version == stored
    again = (await client.get(f"/api/checkpoints/{cp['id']}", headers=h)).json()
    assert again["qr_token"] == body["qr_token"]


# --- CSV import -------------------------------------------------------------------


async def _import(client: Client, world: World, who: Principal, site: int, csv: bytes) -> Any:
    return await client.post(
        f"/api/sites/{site}/checkpoints/import",
        content=csv,
        headers={**world.headers(who), "Content-Type": "text/csv; charset=utf-8"},
    )


async def test_csv_import_creates_every_row_in_order(
    client: Client, world: World, estate: Estate, conn: Conn
) -> None:
    csv = (
        "\ufeffname,zone,lat,lon,radius_m,nfc_uid,instructions\r\n"
        "Front gate,Lobby,31.23,121.47,25,04:a1:b2:c3,Check the barrier\r\n"
        "车库入口,Garage,,,,,\r\n"
        '"Stair, east",,,,,,"Two lines:\r\nfirst, second"\r\n'
    ).encode()

    r = await _import(client, world, estate.sup_a, estate.a, csv)

    assert r.status_code == 201, r.text
    body = r.json()
    assert body["created"] == 3
    listed = await client.get(
        f"/api/sites/{estate.a}/checkpoints", headers=world.headers(estate.sup_a)
    )
    items = listed.json()["items"]
    assert [c["id"] for c in items] == body["ids"]
    assert [c["name"] for c in items] == ["Front gate", "车库入口", "Stair, east"]
    gate, garage, stair = items
    assert (gate["zone_id"], gate["lat"], gate["lon"], gate["radius_m"]) == (
        estate.lobby,
        31.23,
        121.47,
        25,
    )
    assert gate["nfc"] == {"uid": "04A1B2C3", "sun": False}
    assert gate["instructions"] == "Check the barrier"
    assert (garage["zone_id"], garage["lat"], garage["radius_m"], garage["nfc"]) == (
        estate.garage,
        None,
        50,
        None,
    )
    assert stair["instructions"] == "Two lines:\r\nfirst, second"


async def test_csv_with_a_bom_and_only_some_columns(
    client: Client, world: World, estate: Estate
) -> None:
    with_bom = await _import(client, world, estate.sup_a, estate.a, "\ufeffname\nA\n".encode())
    without = await _import(client, world, estate.sup_a, estate.a, b"NAME , Zone\nB,Garage\n")

    assert with_bom.status_code == 201, with_bom.text
    assert without.status_code == 201, without.text
    assert with_bom.json()["created"] == without.json()["created"] == 1


async def test_csv_import_is_all_or_nothing_with_every_error_by_line(
    client: Client, world: World, estate: Estate, conn: Conn
) -> None:
    await _create(client, world, estate.sup_a, estate.a, name="Existing")
    await _create(client, world, estate.sup_b, estate.b, name="Tagged", nfc_uid="04FFFFFF")
    csv = (
        b"name,zone,lat,lon,radius_m,nfc_uid,instructions\n"  # 1
        b"Good one,Lobby,,,,,\n"  # 2
        b"Bad zone,Cellar,,,,,\n"  # 3
        b"Good one,,,,,,\n"  # 4: repeats line 2
        b"Existing,,,,,,\n"  # 5: already on the site
        b"Bad number,,abc,121,,,\n"  # 6
        b"Bad uid,,,,,xyz,\n"  # 7
        b"Half place,,31.2,,,,\n"  # 8
        b"Too far,,,,20000,,\n"  # 9
        b"Short row,Lobby\n"  # 10
        b"Taken tag,,,,,04:ff:ff:ff,\n"  # 11
        b",Lobby,,,,,\n"  # 12
        b"Fine too,Garage,1,2,3,04112233,ok\n"  # 13
    )
    before = await conn.fetchval("SELECT count(*) FROM checkpoints")

    r = await _import(client, world, estate.sup_a, estate.a, csv)

    body = _problem(r, 422)
    assert body["type"].endswith("/validation")
    got = {(e["line"], e["field"]) for e in body["errors"]}
    assert got == {
        (3, "zone"),
        (4, "name"),
        (6, "lat"),
        (7, "nfc_uid"),
        (8, "lon"),
        (9, "radius_m"),
        (10, "row"),
        (12, "name"),
    }, body["errors"]
    assert all(e["message"] for e in body["errors"])
    assert [e["line"] for e in body["errors"]] == sorted(e["line"] for e in body["errors"])
    assert "line 2" in next(e["message"] for e in body["errors"] if e["line"] == 4)
    assert await conn.fetchval("SELECT count(*) FROM checkpoints") == before

    # With the file's own errors fixed, the clashes with the database are listed too.
    clashes = (
        b"name,nfc_uid\n"  # 1
        b"New one,\n"  # 2
        b"Existing,\n"  # 3
        b"Taken tag,04:ff:ff:ff\n"  # 4
    )
    r = await _import(client, world, estate.sup_a, estate.a, clashes)
    body = _problem(r, 422)
    assert [(e["line"], e["field"]) for e in body["errors"]] == [(3, "name"), (4, "nfc_uid")]
    assert "bravo" not in r.text.lower()
    assert await conn.fetchval("SELECT count(*) FROM checkpoints") == before


async def test_csv_header_is_required(client: Client, world: World, estate: Estate) -> None:
    no_header = await _import(client, world, estate.sup_a, estate.a, b"Front gate,Lobby\n")
    empty = await _import(client, world, estate.sup_a, estate.a, b"")
    only_header = await _import(client, world, estate.sup_a, estate.a, b"name,zone\n")

    first = _problem(no_header, 422)["errors"][0]
    assert (first["line"], first["field"]) == (1, "header")
    assert "Front gate" in first["message"]
    assert _problem(empty, 422)["errors"][0]["field"] == "header"
    assert _problem(only_header, 422)["errors"][0]["line"] == 2


async def test_csv_limits_encoding_and_media_type(
    client: Client, world: World, estate: Estate, conn: Conn
) -> None:
    too_many = "name\n" + "".join(f"CP {n}\n" for n in range(5001))
    r = await _import(client, world, estate.sup_a, estate.a, too_many.encode())
    errors = _problem(r, 422)["errors"]
    assert errors[-1]["line"] == 5002
    assert "5000" in errors[-1]["message"]

    latin1 = "name\nGate\nCafé\n".encode("latin-1")
    r = await _import(client, world, estate.sup_a, estate.a, latin1)
    assert [(e["line"], e["field"]) for e in _problem(r, 422)["errors"]] == [(3, "file")]

    r = await client.post(
        f"/api/sites/{estate.a}/checkpoints/import",
        json=[{"name": "Gate"}],
        headers=world.headers(estate.sup_a),
    )
    assert _problem(r, 415)["type"].endswith("/unsupported-media-type")
    assert await conn.fetchval("SELECT count(*) FROM checkpoints") == 0

    exactly = "name\n" + "".join(f"CP {n}\n" for n in range(5000))
    r = await _import(client, world, estate.sup_a, estate.a, exactly.encode())
    assert r.status_code == 201, r.text
    assert r.json()["created"] == 5000
    assert len(set(r.json()["ids"])) == 5000


async def test_guards_may_not_import(
    client: Client, world: World, estate: Estate, conn: Conn
) -> None:
    r = await _import(client, world, estate.guard_a, estate.a, b"name\nX\n")
    assert _problem(r, 403)["type"].endswith("/forbidden")
    assert await conn.fetchval("SELECT count(*) FROM checkpoints WHERE name = 'X'") == 0

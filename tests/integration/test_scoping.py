"""Roles and site scoping: who may do what, and 404 (never 403) across sites."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from server.auth import Principal
from tests.conftest import PASSWORD, World

PROBLEM = "application/problem+json"
NEW_PASSWORD = "another-long-password"


@dataclass(frozen=True)
class Two:
    """Two sites, each with a zone, a unit, a manager and a guard; and an admin."""

    a: int
    b: int
    zone_a: int
    zone_b: int
    unit_a: int
    unit_b: int
    admin: Principal
    manager_a: Principal
    manager_b: Principal
    guard_a: Principal
    guard_b: Principal


@pytest.fixture
async def two(world: World) -> Two:
    a, b = await world.site("alpha"), await world.site("bravo", kind="commercial")
    return Two(
        a=a,
        b=b,
        zone_a=await world.zone(a),
        zone_b=await world.zone(b),
        unit_a=await world.unit(a),
        unit_b=await world.unit(b),
        admin=await world.user("root", "admin"),
        manager_a=await world.user("mia", "manager", a),
        manager_b=await world.user("mo", "manager", b),
        guard_a=await world.user("gina", "guard", a),
        guard_b=await world.user("gus", "guard", b),
    )


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def _same_problem(x: dict[str, Any], y: dict[str, Any]) -> None:
    for key in ("type", "title", "status", "detail"):
        assert x[key] == y[key]


def _user_in(username: str, role: str, **extra: Any) -> dict[str, Any]:
    return {"username": username, "password": PASSWORD, "role": role, **extra}


# --- sites -----------------------------------------------------------------------------


async def test_only_an_admin_creates_sites(
    client: AsyncTestClient[Litestar], world: World, two: Two
) -> None:
    site = {"code": "charlie", "name": "Charlie", "kind": "office", "timezone": "Europe/Paris"}

    r = await client.post("/api/sites", json=site, headers=world.headers(two.manager_a))
    assert _problem(r, 403)["type"].endswith("/forbidden")
    r = await client.post("/api/sites", json=site, headers=world.headers(two.guard_a))
    _problem(r, 403)

    r = await client.post("/api/sites", json=site, headers=world.headers(two.admin))
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["code"] == "charlie"
    assert created["locale"] == "zh-CN"  # the default
    assert created["created_at"].endswith("Z")
    got = await client.get(f"/api/sites/{created['id']}", headers=world.headers(two.admin))
    assert got.json() == created


async def test_a_manager_lists_only_their_own_sites(
    client: AsyncTestClient[Litestar], world: World, two: Two
) -> None:
    r = await client.get("/api/sites", headers=world.headers(two.manager_a))
    assert r.status_code == 200
    assert [s["id"] for s in r.json()["items"]] == [two.a]

    r = await client.get("/api/sites", headers=world.headers(two.admin))
    assert [s["id"] for s in r.json()["items"]] == [two.a, two.b]


async def test_site_listing_pages(
    client: AsyncTestClient[Litestar], world: World, two: Two
) -> None:
    h = world.headers(two.admin)
    first = (await client.get("/api/sites?limit=1", headers=h)).json()
    assert [s["id"] for s in first["items"]] == [two.a]
    assert first["next_after"] == two.a
    second = (await client.get(f"/api/sites?limit=1&after={two.a}", headers=h)).json()
    assert [s["id"] for s in second["items"]] == [two.b]
    assert second["next_after"] is None


async def test_another_sites_id_is_404_like_a_missing_one(
    client: AsyncTestClient[Litestar], world: World, two: Two
) -> None:
    h = world.headers(two.manager_a)
    assert (await client.get(f"/api/sites/{two.a}", headers=h)).status_code == 200

    other = _problem(await client.get(f"/api/sites/{two.b}", headers=h), 404)
    missing = _problem(await client.get(f"/api/sites/{two.b + 1000}", headers=h), 404)
    _same_problem(other, missing)
    # An admin asking for a missing id gets the very same answer.
    admin_missing = await client.get(f"/api/sites/{two.b + 1000}", headers=world.headers(two.admin))
    _same_problem(other, _problem(admin_missing, 404))


async def test_zones_and_units_of_another_site_are_404(
    client: AsyncTestClient[Litestar], world: World, two: Two
) -> None:
    h = world.headers(two.manager_a)
    new = {
        "zones": {"name": "Roof", "kind": "roof"},
        "units": {"building": "2", "floor": 3, "number": "301"},
    }
    for what, body in new.items():
        own = await client.get(f"/api/sites/{two.a}/{what}", headers=h)
        assert own.status_code == 200
        assert len(own.json()["items"]) == 1

        _problem(await client.get(f"/api/sites/{two.b}/{what}", headers=h), 404)
        _problem(await client.post(f"/api/sites/{two.b}/{what}", json=body, headers=h), 404)
        created = await client.post(f"/api/sites/{two.a}/{what}", json=body, headers=h)
        assert created.status_code == 201, created.text
        assert created.json()["site_id"] == two.a
    # Nothing was added to bravo.
    hb = world.headers(two.manager_b)
    for what in new:
        items = (await client.get(f"/api/sites/{two.b}/{what}", headers=hb)).json()["items"]
        assert len(items) == 1


async def test_guards_read_but_do_not_add_zones_and_residents_see_no_units(
    client: AsyncTestClient[Litestar], world: World, two: Two
) -> None:
    h = world.headers(two.guard_a)
    assert (await client.get(f"/api/sites/{two.a}/zones", headers=h)).status_code == 200
    assert (await client.get(f"/api/sites/{two.a}/units", headers=h)).status_code == 200
    r = await client.post(
        f"/api/sites/{two.a}/zones", json={"name": "X", "kind": "roof"}, headers=h
    )
    _problem(r, 403)

    resident = await world.user("rita", "resident", two.a, unit_id=two.unit_a)
    h = world.headers(resident)
    assert (await client.get(f"/api/sites/{two.a}", headers=h)).status_code == 200
    _problem(await client.get(f"/api/sites/{two.a}/units", headers=h), 403)


async def test_duplicate_zone_and_unit_are_409(
    client: AsyncTestClient[Litestar], world: World, two: Two
) -> None:
    h = world.headers(two.manager_a)
    r = await client.post(
        f"/api/sites/{two.a}/zones", json={"name": "Lobby", "kind": "lobby"}, headers=h
    )
    assert _problem(r, 409)["type"].endswith("/conflict")
    unit = {"building": "1", "floor": 1, "number": "101"}
    _problem(await client.post(f"/api/sites/{two.a}/units", json=unit, headers=h), 409)
    # The same zone name on another site is fine.
    hb = world.headers(two.manager_b)
    r = await client.post(
        f"/api/sites/{two.b}/zones", json={"name": "Roof", "kind": "roof"}, headers=hb
    )
    assert r.status_code == 201


# --- users -----------------------------------------------------------------------------


async def test_a_manager_creates_staff_on_their_own_site_only(
    client: AsyncTestClient[Litestar], world: World, two: Two
) -> None:
    h = world.headers(two.manager_a)

    r = await client.post(
        "/api/users", json=_user_in("tom", "technician", site_ids=[two.b]), headers=h
    )
    other = _problem(r, 404)
    r = await client.post(
        "/api/users", json=_user_in("tom", "technician", site_ids=[two.a, two.b]), headers=h
    )
    _problem(r, 404)
    missing = await client.post(
        "/api/users", json=_user_in("tom", "technician", site_ids=[two.b + 1000]), headers=h
    )
    _same_problem(other, _problem(missing, 404))

    r = await client.post(
        "/api/users",
        json=_user_in("tom", "technician", site_ids=[two.a], skills=["electrical"]),
        headers=h,
    )
    assert r.status_code == 201, r.text
    tom = r.json()
    assert tom["site_ids"] == [two.a]
    assert tom["skills"] == ["electrical"]
    assert "password" not in r.text
    # The new user can log in with the password given.
    login = await client.post("/api/auth/login", json={"username": "tom", "password": PASSWORD})
    assert login.status_code == 201


async def test_only_an_admin_creates_an_admin(
    client: AsyncTestClient[Litestar], world: World, two: Two
) -> None:
    r = await client.post(
        "/api/users", json=_user_in("boss", "admin"), headers=world.headers(two.manager_a)
    )
    assert _problem(r, 403)["type"].endswith("/forbidden")
    r = await client.post(
        "/api/users", json=_user_in("boss", "admin"), headers=world.headers(two.admin)
    )
    assert r.status_code == 201, r.text
    assert r.json()["site_ids"] == []


async def test_staff_need_a_site_and_usernames_are_unique(
    client: AsyncTestClient[Litestar], world: World, two: Two
) -> None:
    h = world.headers(two.admin)
    r = await client.post("/api/users", json=_user_in("tom", "guard"), headers=h)
    assert _problem(r, 422)["errors"][0]["field"] == "site_ids"
    r = await client.post("/api/users", json=_user_in("gina", "guard", site_ids=[two.a]), headers=h)
    assert _problem(r, 409)["type"].endswith("/conflict")


async def test_only_admins_and_managers_administer_users(
    client: AsyncTestClient[Litestar], world: World, two: Two
) -> None:
    for role in ("guard", "technician", "cleaner", "front_desk", "supervisor", "resident"):
        unit = two.unit_a if role == "resident" else None
        user = await world.user(f"x{role.replace('_', '')}", role, two.a, unit_id=unit)
        h = world.headers(user)
        new = _user_in("newbie", "guard", site_ids=[two.a])
        patch = {"full_name": "X"}
        refused = [
            await client.get("/api/users", headers=h),
            await client.get(f"/api/users/{two.guard_a.id}", headers=h),
            await client.post("/api/users", json=new, headers=h),
            await client.patch(f"/api/users/{user.id}", json=patch, headers=h),
        ]
        assert [_problem(r, 403)["status"] for r in refused] == [403] * 4, role
    assert await world.conn.fetchval("SELECT count(*) FROM users WHERE username = 'newbie'") == 0
    assert await world.conn.fetchval("SELECT count(*) FROM users WHERE full_name = 'X'") == 0


async def test_residents_need_a_unit_and_get_their_site_from_it(
    client: AsyncTestClient[Litestar], world: World, two: Two
) -> None:
    h = world.headers(two.manager_a)

    r = await client.post(
        "/api/users", json=_user_in("rita", "resident", site_ids=[two.a]), headers=h
    )
    assert _problem(r, 422)["errors"][0]["field"] == "unit_id"
    # A unit of another site is as unknown as a missing one.
    r = await client.post(
        "/api/users", json=_user_in("rita", "resident", unit_id=two.unit_b), headers=h
    )
    _problem(r, 404)
    r = await client.post(
        "/api/users", json=_user_in("rita", "resident", unit_id=two.unit_b + 1000), headers=h
    )
    _problem(r, 404)
    # Staff are not linked to units.
    r = await client.post(
        "/api/users", json=_user_in("tom", "guard", site_ids=[two.a], unit_id=two.unit_a), headers=h
    )
    assert _problem(r, 422)["errors"][0]["field"] == "unit_id"

    # site_ids given for a resident are ignored: the site is the unit's.
    r = await client.post(
        "/api/users",
        json=_user_in("rita", "resident", unit_id=two.unit_a, site_ids=[two.b]),
        headers=h,
    )
    assert r.status_code == 201, r.text
    assert r.json()["site_ids"] == [two.a]
    assert r.json()["unit_id"] == two.unit_a
    login = await client.post("/api/auth/login", json={"username": "rita", "password": PASSWORD})
    token = login.json()["access_token"]
    sites = await client.get("/api/sites", headers={"Authorization": f"Bearer {token}"})
    assert [s["id"] for s in sites.json()["items"]] == [two.a]


async def test_user_listing_is_scoped_to_the_callers_sites(
    client: AsyncTestClient[Litestar], world: World, two: Two
) -> None:
    both = await world.user("bo", "supervisor", two.a, two.b)

    r = await client.get("/api/users", headers=world.headers(two.manager_a))
    assert r.status_code == 200
    names = {u["username"] for u in r.json()["items"]}
    assert names == {"mia", "gina", "bo"}

    r = await client.get("/api/users", headers=world.headers(two.admin))
    assert {u["username"] for u in r.json()["items"]} == {"root", "mia", "mo", "gina", "gus", "bo"}
    assert both.id in {u["id"] for u in r.json()["items"]}


async def test_another_sites_user_is_404_like_a_missing_one(
    client: AsyncTestClient[Litestar], world: World, two: Two
) -> None:
    h = world.headers(two.manager_a)
    assert (await client.get(f"/api/users/{two.guard_a.id}", headers=h)).status_code == 200

    other = _problem(await client.get(f"/api/users/{two.guard_b.id}", headers=h), 404)
    missing = _problem(await client.get("/api/users/999999", headers=h), 404)
    _same_problem(other, missing)
    # An admin belongs to no site; a manager cannot see one either.
    _problem(await client.get(f"/api/users/{two.admin.id}", headers=h), 404)
    r = await client.patch(f"/api/users/{two.guard_b.id}", json={"full_name": "X"}, headers=h)
    _problem(r, 404)


async def test_patch_sets_skills_qualifications_and_password(
    client: AsyncTestClient[Litestar], world: World, two: Two
) -> None:
    h = world.headers(two.manager_a)
    patch = {
        "skills": ["elevator", "electrical"],
        "qualifications": [{"kind": "elevator", "expires_on": "2027-03-31", "number": "T-1"}],
        "full_name": "Gina Guard",
    }
    r = await client.patch(f"/api/users/{two.guard_a.id}", json=patch, headers=h)
    assert r.status_code == 200, r.text
    user = r.json()
    assert user["skills"] == ["elevator", "electrical"]
    assert user["qualifications"] == [
        {"kind": "elevator", "expires_on": "2027-03-31", "number": "T-1"}
    ]
    assert user["full_name"] == "Gina Guard"
    assert user["site_ids"] == [two.a]  # untouched

    # Stored, not just echoed; and fields left out keep their values.
    r = await client.patch(
        f"/api/users/{two.guard_a.id}", json={"password": NEW_PASSWORD}, headers=h
    )
    assert r.status_code == 200, r.text
    again = (await client.get(f"/api/users/{two.guard_a.id}", headers=h)).json()
    assert again["skills"] == ["elevator", "electrical"]
    assert again["full_name"] == "Gina Guard"
    login = await client.post(
        "/api/auth/login", json={"username": "gina", "password": NEW_PASSWORD}
    )
    assert login.status_code == 201

    r = await client.patch(
        f"/api/users/{two.guard_a.id}", json={"qualifications": [{"kind": "elevator"}]}, headers=h
    )
    assert _problem(r, 422)["errors"][0]["field"] == "qualifications[0].expires_on"
    r = await client.patch(
        f"/api/users/{two.guard_a.id}", json={"skills": ["Bad Skill"]}, headers=h
    )
    assert _problem(r, 422)["errors"][0]["field"] == "skills[0]"


async def test_a_manager_cannot_move_a_user_to_another_site_nor_touch_an_admin(
    client: AsyncTestClient[Litestar], world: World, two: Two
) -> None:
    h = world.headers(two.manager_a)
    r = await client.patch(
        f"/api/users/{two.guard_a.id}", json={"site_ids": [two.a, two.b]}, headers=h
    )
    assert _problem(r, 404)["type"].endswith("/not-found")
    sites = await world.conn.fetch(
        "SELECT site_id FROM site_members WHERE user_id = $1", two.guard_a.id
    )
    assert [row["site_id"] for row in sites] == [two.a]
    site_admin = await world.user("sadmin", "admin", two.a)
    r = await client.patch(f"/api/users/{site_admin.id}", json={"full_name": "X"}, headers=h)
    assert _problem(r, 403)["type"].endswith("/forbidden")
    name = await world.conn.fetchval("SELECT full_name FROM users WHERE id = $1", site_admin.id)
    assert name != "X"


async def test_a_manager_changing_sites_keeps_memberships_they_cannot_see(
    client: AsyncTestClient[Litestar], world: World, two: Two
) -> None:
    third = await world.site("charlie")
    both = await world.user("bo", "supervisor", two.a, two.b)

    r = await client.patch(
        f"/api/users/{both.id}",
        json={"site_ids": [two.a, third]},
        headers=world.headers(two.manager_a),
    )
    _problem(r, 404)  # charlie is not mia's
    manager_ac = await world.user("max", "manager", two.a, third)
    r = await client.patch(
        f"/api/users/{both.id}", json={"site_ids": [third]}, headers=world.headers(manager_ac)
    )
    assert r.status_code == 200, r.text
    # Bravo is not max's to take away: bo leaves alpha, joins charlie, stays on bravo.
    assert r.json()["site_ids"] == sorted([two.b, third])

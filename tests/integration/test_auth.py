"""Login, its throttling, and bearer tokens: what gets in and what answers 401."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import jwt
from litestar import Litestar
from litestar.testing import AsyncTestClient

from server.auth import Principal
from server.config import Settings
from tests.conftest import PASSWORD, World

LOGIN = "/api/auth/login"
PROBLEM = "application/problem+json"


async def _login(client: AsyncTestClient[Litestar], username: str, password: str = PASSWORD) -> Any:
    return await client.post(LOGIN, json={"username": username, "password": password})


def _problem(response: Any) -> dict[str, Any]:
    assert response.headers["content-type"].startswith(PROBLEM), response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code
    assert body["type"].startswith("https://")
    assert body["title"]
    return body


async def test_right_password_gives_a_token_that_works(
    client: AsyncTestClient[Litestar], world: World, settings: Settings
) -> None:
    site = await world.site("alpha")
    guard = await world.user("gina", "guard", site)

    r = await _login(client, "gina")

    assert 200 <= r.status_code < 300, r.text
    body = r.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == int(settings.auth.token_ttl.total_seconds())
    assert isinstance(body["access_token"], str)
    me = await client.get("/api/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200, me.text
    assert me.json()["id"] == guard.id
    assert me.json()["username"] == "gina"
    assert me.json()["site_ids"] == [site]
    assert "password_hash" not in me.text


async def test_username_is_case_insensitive(
    client: AsyncTestClient[Litestar], world: World
) -> None:
    await world.user("root", "admin")
    r = await _login(client, "  ROOT ")
    assert r.status_code == 201, r.text


async def test_wrong_password_and_unknown_user_look_the_same(
    client: AsyncTestClient[Litestar], world: World
) -> None:
    await world.user("root", "admin")

    wrong = await _login(client, "root", "not-the-password")
    unknown = await _login(client, "nobody", PASSWORD)

    assert wrong.status_code == unknown.status_code == 401
    a, b = _problem(wrong), _problem(unknown)
    for key in ("type", "title", "detail", "status"):
        assert a[key] == b[key]
    assert "root" not in wrong.text
    assert "nobody" not in unknown.text


async def test_inactive_user_cannot_log_in(
    client: AsyncTestClient[Litestar], world: World, conn: asyncpg.Connection[asyncpg.Record]
) -> None:
    site = await world.site("alpha")
    gone = await world.user("gone", "cleaner", site)
    await conn.execute("UPDATE users SET active = false WHERE id = $1", gone.id)

    r = await _login(client, "gone")

    assert r.status_code == 401
    assert _problem(r)["type"].endswith("/invalid-credentials")


async def test_login_body_is_validated(client: AsyncTestClient[Litestar]) -> None:
    r = await client.post(LOGIN, json={"username": "root"})
    assert r.status_code == 422
    assert [e["field"] for e in _problem(r)["errors"]] == ["password"]


async def _fail(
    conn: asyncpg.Connection[asyncpg.Record], n: int, username: str, address: str
) -> None:
    # Recorded straight in SQL: ten argon2 verifications would cost a second for nothing.
    await conn.executemany(
        "INSERT INTO login_failures (username, address) VALUES ($1, $2)",
        [(username, address)] * n,
    )


async def _failures(conn: asyncpg.Connection[asyncpg.Record], username: str) -> int:
    n: int = await conn.fetchval(
        "SELECT count(*) FROM login_failures WHERE username = $1", username
    )
    return n


async def test_failures_are_recorded_and_a_success_clears_them(
    client: AsyncTestClient[Litestar], world: World, conn: asyncpg.Connection[asyncpg.Record]
) -> None:
    await world.user("root", "admin")

    assert (await _login(client, "root", "wrong-password-1")).status_code == 401
    assert await _failures(conn, "root") == 1
    await _fail(conn, 8, "root", "10.9.9.9")  # nine in all: one short of the limit

    assert (await _login(client, "root")).status_code == 201
    assert await _failures(conn, "root") == 0

    # Cleared means counted from zero again: nine more failures still do not lock out.
    await _fail(conn, 9, "root", "10.9.9.9")
    assert (await _login(client, "root")).status_code == 201


async def test_too_many_failures_for_a_username_lock_it_even_with_the_right_password(
    client: AsyncTestClient[Litestar],
    world: World,
    conn: asyncpg.Connection[asyncpg.Record],
    settings: Settings,
) -> None:
    await world.user("root", "admin")
    await world.user("other", "admin")
    limit = settings.auth.login_max_failures_per_user
    await _fail(conn, limit - 1, "root", "10.1.1.1")
    assert (await _login(client, "root", "wrong-password-x")).status_code == 401  # the 10th

    r = await _login(client, "root")

    assert r.status_code == 429
    body = _problem(r)
    assert body["type"].endswith("/rate-limited")
    assert int(r.headers["retry-after"]) > 0
    assert await _failures(conn, "root") == limit  # the refused attempt cleared nothing
    # Only that username is locked; from the same address another one still logs in.
    assert (await _login(client, "other")).status_code == 201


async def test_too_many_failures_from_an_address_lock_every_username(
    client: AsyncTestClient[Litestar],
    world: World,
    conn: asyncpg.Connection[asyncpg.Record],
    settings: Settings,
) -> None:
    await world.user("root", "admin")
    # Learn the address the server sees for this client from one real failure.
    assert (await _login(client, "somebody", "wrong-password")).status_code == 401
    address: str = await conn.fetchval("SELECT address FROM login_failures")
    # Spread over many usernames so that no single username reaches its own limit.
    limit = settings.auth.login_max_failures_per_address
    for i in range(limit - 1):
        await _fail(conn, 1, f"user{i}", address)

    r = await _login(client, "root")

    assert r.status_code == 429
    assert "retry-after" in r.headers
    assert _problem(r)["type"].endswith("/rate-limited")


# --- tokens ----------------------------------------------------------------------------


def _claims(world: World, user_id: int, **overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": str(user_id),
        "iat": now,
        "exp": now + timedelta(hours=1),
        "extras": {"usr": "root", "role": "admin", "sites": [], "unit": None},
    }
    claims.update(overrides)
    return claims


def _assert_401(response: Any) -> None:
    assert response.status_code == 401, response.text
    body = _problem(response)
    assert body["type"].endswith("/unauthorized")
    assert response.headers["www-authenticate"].lower().startswith("bearer")
    assert "Traceback" not in response.text


async def test_missing_or_garbage_token_is_401(
    client: AsyncTestClient[Litestar], world: World
) -> None:
    await world.user("root", "admin")
    for authorization in [
        None,
        "Bearer",
        "Bearer not.a.token",
        "Bearer " + "x" * 40,
        "Basic cm9vdDpwdw==",
    ]:
        headers = {"Authorization": authorization} if authorization else {}
        _assert_401(await client.get("/api/me", headers=headers))


def _tampered(world: World, principal: Principal) -> str:
    """The principal's real token with the role in its payload swapped for admin."""
    header, payload, signature = world.token(principal).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["extras"]["role"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


async def test_expired_forged_unsigned_or_odd_tokens_are_401(
    client: AsyncTestClient[Litestar], world: World, settings: Settings
) -> None:
    site = await world.site("alpha")
    admin = await world.user("root", "admin")
    guard = await world.user("gina", "guard", site)
    key = settings.auth.jwt_secret

    def signed(**overrides: Any) -> str:
        return jwt.encode(_claims(world, admin.id, **overrides), key, algorithm="HS256")

    # The control: the same recipe with valid claims gets in, so the refusals below are
    # refusals of what each case changes and not of the recipe.
    ok = await client.get("/api/me", headers={"Authorization": f"Bearer {signed()}"})
    assert ok.status_code == 200, ok.text
    assert ok.json()["username"] == "root"

    past = datetime.now(UTC) - timedelta(hours=2)
    no_exp = _claims(world, admin.id)
    del no_exp["exp"]
    unsigned = jwt.encode(_claims(world, admin.id), None, algorithm="none")
    assert unsigned.endswith(".")
    cases = {
        "expired": signed(iat=past, exp=past + timedelta(minutes=30)),
        "other key": jwt.encode(_claims(world, admin.id), b"k" * 64, algorithm="HS256"),
        "alg none": unsigned,
        "HS512 with the right key": jwt.encode(_claims(world, admin.id), key, algorithm="HS512"),
        "tampered payload": _tampered(world, guard),
        "no exp": jwt.encode(no_exp, key, algorithm="HS256"),
        "unknown role": signed(extras={"usr": "root", "role": "superuser", "sites": []}),
        "no role": signed(extras={"usr": "root", "sites": []}),
        "no username": signed(extras={"role": "admin", "sites": []}),
        "bad sites": signed(extras={"usr": "root", "role": "guard", "sites": ["x"]}),
        "bad subject": signed(sub="root"),
    }
    for case, token in cases.items():
        r = await client.get("/api/users", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, f"{case}: {r.status_code} {r.text}"
        _assert_401(r)


async def test_login_and_probes_need_no_token(client: AsyncTestClient[Litestar]) -> None:
    assert (await client.get("/health")).status_code == 200
    assert (await _login(client, "nobody")).status_code == 401  # refused, but not for a token
    _assert_401(await client.get("/api/sites"))
    _assert_401(await client.get("/api/users"))

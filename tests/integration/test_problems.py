"""Errors as RFC 9457 problem details; the probes, metrics, OpenAPI and request ids."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import asyncpg
import pytest
from litestar import Litestar, get
from litestar.testing import AsyncTestClient

from server import migrate
from server.app import create_app
from server.auth import Principal
from server.config import Settings
from server.errors import EXCEPTION_HANDLERS
from server.observability import echo_request_id, request_id_middleware
from tests.conftest import PgServer, World

PROBLEM = "application/problem+json"
SITE = {"code": "alpha", "name": "Alpha", "kind": "residential", "timezone": "Asia/Shanghai"}


def _problem(response: Any, status: int) -> dict[str, Any]:
    """The body of a problem response, checked for the members every problem has."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body: dict[str, Any] = response.json()
    assert body["type"].startswith("https://estateops.dev/problems/")
    assert isinstance(body["title"], str)
    assert body["title"]
    assert body["status"] == status
    assert "Traceback" not in response.text
    assert 'File "' not in response.text
    assert ".py" not in response.text
    return body


def _fields(body: dict[str, Any]) -> list[str]:
    return [e["field"] for e in body["errors"]]


@pytest.fixture
async def admin(world: World) -> Principal:
    return await world.user("root", "admin")


@pytest.fixture
def h(world: World, admin: Principal) -> dict[str, str]:
    return world.headers(admin)


# --- bodies --------------------------------------------------------------------------


async def test_malformed_json_is_400(client: AsyncTestClient[Litestar], h: dict[str, str]) -> None:
    for raw in (b"{bad", b'{"code": "alpha",', b"not json at all", b"\xff\xfe"):
        r = await client.post(
            "/api/sites", content=raw, headers={**h, "Content-Type": "application/json"}
        )
        body = _problem(r, 400)
        assert body["type"].endswith("/malformed-body"), raw
        assert body["title"] == "Malformed request body"


async def test_missing_body_is_400(client: AsyncTestClient[Litestar], h: dict[str, str]) -> None:
    r = await client.post(
        "/api/sites", content=b"", headers={**h, "Content-Type": "application/json"}
    )
    assert _problem(r, 400)["type"].endswith("/malformed-body")


async def test_unknown_field_is_422_and_named(
    client: AsyncTestClient[Litestar], h: dict[str, str]
) -> None:
    r = await client.post("/api/sites", json={**SITE, "owner": "me"}, headers=h)
    body = _problem(r, 422)
    assert body["type"].endswith("/validation")
    assert _fields(body) == ["owner"]
    # Nested objects refuse unknown fields too, and say where.
    user = {
        "username": "tom",
        "password": "correct-horse-battery",
        "role": "guard",
        "site_ids": [1],
        "qualifications": [{"kind": "elevator", "expires_on": "2027-01-01", "grade": 3}],
    }
    r = await client.post("/api/users", json=user, headers=h)
    assert _fields(_problem(r, 422)) == ["qualifications[0].grade"]


async def test_missing_field_is_422_and_named(
    client: AsyncTestClient[Litestar], h: dict[str, str]
) -> None:
    r = await client.post(
        "/api/sites", json={k: v for k, v in SITE.items() if k != "name"}, headers=h
    )
    assert _fields(_problem(r, 422)) == ["name"]


async def test_bad_site_values_are_422_naming_the_field(
    client: AsyncTestClient[Litestar], h: dict[str, str], conn: asyncpg.Connection[asyncpg.Record]
) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"code": "Alpha Site!"}, "code"),
        ({"code": "a"}, "code"),
        ({"kind": "castle"}, "kind"),
        ({"locale": "fr"}, "locale"),
        ({"name": 42}, "name"),
        ({"name": ""}, "name"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
    ]
    for change, field in cases:
        r = await client.post("/api/sites", json={**SITE, **change}, headers=h)
        body = _problem(r, 422)
        assert _fields(body) == [field], change
        assert field in body["detail"]
    assert await conn.fetchval("SELECT count(*) FROM sites") == 0


async def test_wrong_type_is_422_naming_the_field(
    client: AsyncTestClient[Litestar], world: World, h: dict[str, str]
) -> None:
    site = await world.site("alpha")
    r = await client.post(
        f"/api/sites/{site}/units",
        json={"building": "1", "floor": "two", "number": "201"},
        headers=h,
    )
    assert _fields(_problem(r, 422)) == ["floor"]
    r = await client.post(
        f"/api/sites/{site}/units", json={"building": "1", "floor": 999, "number": "201"}, headers=h
    )
    assert _fields(_problem(r, 422)) == ["floor"]
    r = await client.post("/api/sites", json=[SITE], headers=h)
    _problem(r, 422)


async def test_bad_query_parameter_is_a_problem(
    client: AsyncTestClient[Litestar], h: dict[str, str]
) -> None:
    body = _problem(await client.get("/api/sites?after=x", headers=h), 422)
    assert _fields(body) == ["after"]
    _problem(await client.get("/api/sites?limit=-5", headers=h), 422)


async def test_page_size_out_of_bounds_is_422(
    client: AsyncTestClient[Litestar], h: dict[str, str]
) -> None:
    for limit in (0, 100_000):
        body = _problem(await client.get(f"/api/sites?limit={limit}", headers=h), 422)
        assert _fields(body) == ["limit"]


async def test_numbers_beyond_bigint_are_refused_not_500(
    client: AsyncTestClient[Litestar], h: dict[str, str]
) -> None:
    huge = "99999999999999999999"
    for path in (f"/api/sites/{huge}", f"/api/users/{huge}", f"/api/sites?after={huge}"):
        r = await client.get(path, headers=h)
        assert r.status_code in (404, 422), f"{path}: {r.text}"
        _problem(r, r.status_code)


async def test_ids_beyond_bigint_in_a_body_are_422_naming_the_field(
    client: AsyncTestClient[Litestar], h: dict[str, str]
) -> None:
    user = {"username": "tom", "password": "correct-horse-battery", "role": "guard"}
    r = await client.post("/api/users", json={**user, "site_ids": [2**64]}, headers=h)
    assert _fields(_problem(r, 422)) == ["site_ids[0]"]
    r = await client.post(
        "/api/users", json={**user, "role": "resident", "unit_id": 2**64}, headers=h
    )
    assert _fields(_problem(r, 422)) == ["unit_id"]


async def test_duplicate_site_code_is_409(
    client: AsyncTestClient[Litestar], h: dict[str, str], conn: asyncpg.Connection[asyncpg.Record]
) -> None:
    assert (await client.post("/api/sites", json=SITE, headers=h)).status_code == 201
    r = await client.post("/api/sites", json={**SITE, "name": "Other"}, headers=h)
    body = _problem(r, 409)
    assert body["type"].endswith("/conflict")
    assert body["field"] == "code"
    assert await conn.fetchval("SELECT name FROM sites") == "Alpha"  # the first one kept


async def test_body_over_the_limit_is_413(
    settings: Settings, world: World, admin: Principal
) -> None:
    small = create_app(replace(settings, max_body_bytes=512))
    async with AsyncTestClient(app=small) as client:
        h = world.headers(admin)  # same secret, so the token is good here too
        ok = await client.post("/api/sites", json=SITE, headers=h)
        assert ok.status_code == 201, ok.text
        big = {**SITE, "code": "bravo", "name": "x" * 1000}
        body = _problem(await client.post("/api/sites", json=big, headers=h), 413)
        assert body["type"].endswith("/payload-too-large")
        r = await client.get("/api/sites", headers=h)
        assert [s["code"] for s in r.json()["items"]] == ["alpha"]


# --- routes and methods ---------------------------------------------------------------


async def test_unknown_route_is_a_404_problem(
    client: AsyncTestClient[Litestar], h: dict[str, str]
) -> None:
    for path in ("/nowhere", "/api/nowhere", "/api/sites/abc"):
        assert _problem(await client.get(path, headers=h), 404)["type"].endswith("/not-found")


async def test_wrong_method_is_a_405_problem(client: AsyncTestClient[Litestar]) -> None:
    r = await client.delete("/health")
    assert _problem(r, 405)["type"].endswith("/method-not-allowed")
    assert "GET" in r.headers["allow"]


async def test_every_refusal_is_a_problem(
    client: AsyncTestClient[Litestar], world: World, h: dict[str, str]
) -> None:
    site = await world.site("alpha")
    guard = await world.user("gina", "guard", site)
    cases = [
        (await client.get("/api/me"), 401),
        (await client.get("/api/users", headers=world.headers(guard)), 403),
        (await client.get(f"/api/sites/{site + 1}", headers=h), 404),
        (await client.post("/api/auth/login", json={"username": "x", "password": "y"}), 401),
        (await client.put("/api/sites", json=SITE, headers=h), 405),
    ]
    slugs = {_problem(r, status)["type"].rsplit("/", 1)[1] for r, status in cases}
    assert slugs == {
        "unauthorized",
        "invalid-credentials",
        "forbidden",
        "not-found",
        "method-not-allowed",
    }


# --- no internals leak ----------------------------------------------------------------


@get("/boom")
async def boom() -> None:
    raise RuntimeError("password=hunter2 at /srv/app/server/secret.py line 3")


@get("/db-down")
async def db_down() -> None:
    raise ConnectionRefusedError("connect to 10.0.0.5:5432 refused")


async def test_unexpected_errors_hide_their_details() -> None:
    # The app's own error mapping on a throwaway app, since no real route fails on purpose.
    app = Litestar(
        route_handlers=[boom, db_down],
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[request_id_middleware],
        before_send=[echo_request_id],
        debug=False,
    )
    async with AsyncTestClient(app=app) as client:
        r = await client.get("/boom")
        body = _problem(r, 500)
        assert body["type"].endswith("/internal")
        assert "hunter2" not in r.text
        assert "RuntimeError" not in r.text
        assert r.headers["x-request-id"]

        r = await client.get("/db-down")
        body = _problem(r, 503)
        assert "10.0.0.5" not in r.text
        assert r.headers["retry-after"]


# --- request ids ----------------------------------------------------------------------


async def test_request_id_is_made_or_kept(
    client: AsyncTestClient[Litestar], h: dict[str, str]
) -> None:
    made = (await client.get("/health")).headers["x-request-id"]
    other = (await client.get("/health")).headers["x-request-id"]
    assert made
    assert made != other

    kept = await client.get("/health", headers={"X-Request-ID": "phone-42.retry_1"})
    assert kept.headers["x-request-id"] == "phone-42.retry_1"

    unsafe = await client.get("/health", headers={"X-Request-ID": 'a b"<script>'})
    assert unsafe.headers["x-request-id"] != 'a b"<script>'
    assert unsafe.headers["x-request-id"].isalnum()

    # Problems raised by a handler carry it too.
    problem = await client.get("/api/sites/999", headers={**h, "X-Request-ID": "trace-me"})
    assert problem.status_code == 404
    assert problem.headers["x-request-id"] == "trace-me"


async def test_request_id_on_refusals_outside_handlers(client: AsyncTestClient[Litestar]) -> None:
    for method, path in (("GET", "/api/me"), ("GET", "/nowhere"), ("DELETE", "/health")):
        r = await client.request(method, path, headers={"X-Request-ID": "trace-me"})
        assert r.status_code >= 400
        assert r.headers.get("x-request-id") == "trace-me", path


# --- probes, metrics, OpenAPI ---------------------------------------------------------


async def test_health(client: AsyncTestClient[Litestar]) -> None:
    r = await client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


async def test_ready_when_migrated(client: AsyncTestClient[Litestar]) -> None:
    r = await client.get("/ready")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ready"}


async def test_not_ready_when_a_migration_is_pending(
    client: AsyncTestClient[Litestar], conn: asyncpg.Connection[asyncpg.Record]
) -> None:
    await conn.execute("DELETE FROM schema_migrations WHERE name = '0001_foundation.sql'")
    body = _problem(await client.get("/ready"), 503)
    assert body["type"].endswith("/not-ready")
    assert "0001_foundation.sql" in body["pending"]


async def test_not_ready_when_an_applied_migration_was_edited(
    client: AsyncTestClient[Litestar], conn: asyncpg.Connection[asyncpg.Record]
) -> None:
    await conn.execute("UPDATE schema_migrations SET checksum = 'x' WHERE version = 1")
    body = _problem(await client.get("/ready"), 503)
    assert "checksum" in body["detail"]


@pytest.fixture
async def empty_db(pg_server: PgServer) -> AsyncIterator[str]:
    name = f"empty_{os.getpid()}"
    admin = await asyncpg.connect(pg_server.admin_url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {name}")
        yield pg_server.url(name)
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


async def test_not_ready_on_an_unmigrated_database(settings: Settings, empty_db: str) -> None:
    async with AsyncTestClient(app=create_app(settings.with_database(empty_db))) as client:
        assert (await client.get("/health")).status_code == 200
        body = _problem(await client.get("/ready"), 503)
        assert body["pending"] == [m.name for m in migrate.load()]
        assert body["pending"][0] == "0001_foundation.sql"


async def test_not_ready_when_the_database_is_unreachable(
    settings: Settings, pg_server: PgServer
) -> None:
    gone = settings.with_database(pg_server.url("no_such_database"))
    async with AsyncTestClient(app=create_app(gone)) as client:
        assert (await client.get("/health")).status_code == 200
        r = await client.get("/ready")
        body = _problem(r, 503)
        assert "database unreachable" in body["detail"]
        assert r.headers["retry-after"]


async def test_metrics(client: AsyncTestClient[Litestar]) -> None:
    await client.get("/health")
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert "estateops_requests_total" in r.text


async def test_openapi(client: AsyncTestClient[Litestar]) -> None:
    r = await client.get("/schema/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.1")
    assert "/api/auth/login" in doc["paths"]
    assert "post" in doc["paths"]["/api/auth/login"]
    assert "/metrics" not in doc["paths"]
    docs = await client.get("/schema")
    assert docs.status_code == 200
    assert "html" in docs.headers["content-type"]

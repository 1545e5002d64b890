"""schemathesis against the app's own OpenAPI schema: every operation, authenticated, on a
real database with one of everything. No 5xx, and no response that breaks the schema.

The app runs in-process (ASGI) on one database for the module, seeded like the security
matrix's estate; generated ids are swapped for the estate's half of the time, so requests
reach real rows and not only 404s. Each 2xx is also retried without a token and with a bad
one (both must be 401). Examples per operation are few in the quick suite; for a longer run:
ESTATEOPS_FUZZ_EXAMPLES=1000 pytest -m fuzz_deep tests/integration/test_schema_fuzz.py
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi as st_asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from server.app import create_app
from server.config import Settings, load_settings
from server.db import init_connection
from tests.conftest import PgServer, World
from tests.integration.test_security_matrix import Estate, build_estate

QUICK_EXAMPLES = 20
DEEP_EXAMPLES = int(os.environ.get("ESTATEOPS_FUZZ_EXAMPLES", "200"))
# Per example; a request that takes this long is a bug of its own (or a hang).
DEADLINE_MS = 5_000

CHECKS = [
    not_a_server_error,
    ignored_auth,  # a 2xx with a token is retried without one and with a bad one: 401 both
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]

# The live feed never ends by design (an event stream); its authorization is in the matrix.
ENDLESS = "/api/live"


def _operations() -> list[tuple[str, str]]:
    """(METHOD, path) of every documented operation, read from the app's schema."""
    dev = load_settings({"ESTATEOPS_ENV": "development", "ESTATEOPS_LOG_LEVEL": "WARNING"})
    paths = create_app(dev).openapi_schema.to_schema()["paths"]
    return sorted(
        (method.upper(), path)
        for path, item in paths.items()
        for method in item
        if method in {"get", "put", "post", "patch", "delete"} and path != ENDLESS
    )


OPERATIONS = _operations()


@pytest.fixture(scope="module")
async def fuzz_estate(
    pg_server: PgServer, template_db: str, password_hash: str, tmp_path_factory: Any
) -> AsyncIterator[tuple[Settings, Estate]]:
    """One database for the module (the checks hold whatever earlier calls stored)."""
    name = f"fuzz_{os.getpid()}"
    admin = await asyncpg.connect(pg_server.admin_url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {template_db} STRATEGY FILE_COPY")
        base = load_settings({"ESTATEOPS_ENV": "development", "ESTATEOPS_LOG_LEVEL": "WARNING"})
        settings = replace(
            base.with_database(pg_server.url(name)),
            attachments_dir=tmp_path_factory.mktemp("fuzz") / "attachments",
        )
        conn = await asyncpg.connect(pg_server.url(name))
        await init_connection(conn)
        try:
            app = create_app(settings)
            async with AsyncTestClient(app=app) as client:
                estate = await build_estate(World(conn, app, password_hash), client)
            yield settings, estate
        finally:
            await conn.close()
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_estate: tuple[Settings, Estate]) -> Iterator[Any]:
    """The schema as the running app serves it; the app is its own instance, whose lifespan
    (pool, live hub) schemathesis runs in its own event loop."""
    app = create_app(fuzz_estate[0])
    yield schemathesis.openapi.from_asgi("/schema/openapi.json", app)
    st_asgi.shutdown_lifespans()


def _aim(case: Any, estate: Estate) -> None:
    """Half the generated ids become the estate's, so requests reach real rows."""
    known = estate.ids()
    for params in (case.path_parameters, case.query):
        if not params:
            continue
        for name, value in list(params.items()):
            if name in known and isinstance(value, int) and value % 2 == 0:
                params[name] = known[name]


def fuzz(schema: Any, estate: Estate, method: str, path: str, examples: int) -> int:
    """Positive and negative cases of one operation, each call checked against the schema
    (a failed check raises); returns how many calls were made."""
    calls = 0
    operation = schema[path][method]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @settings(
        max_examples=examples,
        deadline=DEADLINE_MS,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate, Phase.shrink],
    )
    @given(case=cases)
    def run(case: Any) -> None:
        nonlocal calls
        _aim(case, estate)
        case.call_and_validate(headers=estate.headers("adm"), checks=CHECKS)
        calls += 1

    run()
    return calls


def test_every_refusal_in_the_schema_is_a_problem_and_every_token_is_documented() -> None:
    dev = load_settings({"ESTATEOPS_ENV": "development", "ESTATEOPS_LOG_LEVEL": "WARNING"})
    doc = create_app(dev).openapi_schema.to_schema()
    public = set()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            where = f"{method.upper()} {path}"
            codes = op["responses"]
            assert any(code.startswith("2") for code in codes), where
            for code, response in codes.items():
                if code[0] in "45":
                    assert set(response["content"]) == {"application/problem+json"}, where
            if op.get("security") == [{}]:
                public.add(path)
            else:
                assert "401" in codes, where
    assert public == {"/health", "/ready", "/api/auth/login"}
    assert ("POST", "/api/auth/login") in OPERATIONS
    assert len(OPERATIONS) == sum(
        1 for p, item in doc["paths"].items() for m in item if p != ENDLESS
    )


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=lambda v: v)
def test_operation_keeps_to_its_schema(
    fuzz_schema: Any, fuzz_estate: tuple[Settings, Estate], method: str, path: str
) -> None:
    assert fuzz(fuzz_schema, fuzz_estate[1], method, path, QUICK_EXAMPLES) >= 1


@pytest.mark.fuzz_deep
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=lambda v: v)
def test_operation_keeps_to_its_schema_deep(
    fuzz_schema: Any, fuzz_estate: tuple[Settings, Estate], method: str, path: str
) -> None:
    assert fuzz(fuzz_schema, fuzz_estate[1], method, path, DEEP_EXAMPLES) >= 1


# --- answers random data rarely reaches ------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _known(schema: Any, estate: Estate, method: str, path: str, caller: str, **kw: Any) -> Any:
    """Send one chosen request and check its answer against the schema like the fuzzer."""
    case = schema[path][method].Case(**kw)
    response = case.call(headers=estate.headers(caller))
    case.validate_response(response, checks=CHECKS)
    return response


async def test_retries_refusals_and_throttling_keep_to_the_schema(
    fuzz_schema: Any, fuzz_estate: tuple[Settings, Estate]
) -> None:
    estate = fuzz_estate[1]
    # A checkpoint of its own: the fuzzer may have rotated or retired the estate's.
    checkpoint = await estate.world.conn.fetchval(
        "INSERT INTO checkpoints (site_id, name) VALUES ($1, 'Known gate') RETURNING id",
        estate.site_a,
    )
    code = estate.qr(checkpoint)
    scan = {"id": "4b0c3e0e-6f5d-4e55-9d0e-0a1b2c3d4e5f", "scanned_at": _now(), "qr": code}
    first = _known(fuzz_schema, estate, "POST", "/api/scans", "grd", body=scan)
    again = _known(fuzz_schema, estate, "POST", "/api/scans", "grd", body=scan)
    assert (first.status_code, again.status_code) == (201, 200), first.text
    forged = {**scan, "id": "5b0c3e0e-6f5d-4e55-9d0e-0a1b2c3d4e5f", "qr": code[:-3] + "AAA"}
    refused = _known(fuzz_schema, estate, "POST", "/api/scans", "grd", body=forged)
    assert refused.status_code == 422

    # A move the resident may not make is a 409 naming what is allowed.
    moved = _known(
        fuzz_schema,
        estate,
        "POST",
        "/api/tickets/{ticket_id}/events",
        "res",
        path_parameters={"ticket_id": estate.ticket_a},
        body={"action": "start"},
        media_type="application/json",
    )
    assert moved.status_code == 409

    await estate.world.conn.execute(
        "INSERT INTO login_failures (username, address)"
        " SELECT 'grd-a', 'x' FROM generate_series(1, 10)"
    )
    throttled = _known(
        fuzz_schema,
        estate,
        "POST",
        "/api/auth/login",
        "anon",
        body={"username": "grd-a", "password": "whatever-it-is"},
    )
    assert throttled.status_code == 429


def test_reporting_an_open_incident_again_keeps_to_the_schema(
    fuzz_schema: Any, fuzz_estate: tuple[Settings, Estate]
) -> None:
    estate = fuzz_estate[1]
    body = {"site_id": estate.site_a, "kind": "water_leak", "zone_id": estate.zone_a}
    first = _known(fuzz_schema, estate, "POST", "/api/incidents", "grd", body=body)
    again = _known(fuzz_schema, estate, "POST", "/api/incidents", "grd", body=body)
    assert (first.status_code, again.status_code) == (201, 200)

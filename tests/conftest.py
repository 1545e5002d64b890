"""Fixtures: a real PostgreSQL (embedded, or DATABASE_URL), one fresh database per test.

The schema is migrated once into a template database; each test gets a copy
(CREATE DATABASE ... TEMPLATE), so tests run in any order and never share rows.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from server import migrate
from server.app import create_app
from server.auth import Principal, hash_password, issue_token
from server.config import Settings, load_settings
from server.db import init_connection
from server.embedded import EmbeddedPostgres

TEMPLATE = "estateops_template"
PASSWORD = "correct-horse-battery"
_counter = itertools.count()


@dataclass(frozen=True)
class PgServer:
    admin_url: str  # a URL whose user may CREATE DATABASE

    def url(self, database: str) -> str:
        base, _, _ = self.admin_url.rpartition("/")
        return f"{base}/{database}"


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        yield PgServer(given)
        return
    pg = EmbeddedPostgres(Path(tmp_path_factory.mktemp("pg")), durable=False, database="postgres")
    pg.start()
    try:
        yield PgServer(pg.url("postgres"))
    finally:
        pg.stop()


@pytest.fixture(scope="session")
async def template_db(pg_server: PgServer) -> str:
    conn = await asyncpg.connect(pg_server.admin_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {TEMPLATE}")
    finally:
        await conn.close()
    conn = await asyncpg.connect(pg_server.url(TEMPLATE))
    try:
        await migrate.apply(conn)
    finally:
        await conn.close()
    return TEMPLATE


@pytest.fixture
async def db_url(pg_server: PgServer, template_db: str) -> AsyncIterator[str]:
    name = f"test_{os.getpid()}_{next(_counter)}"
    admin = await asyncpg.connect(pg_server.admin_url)
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {template_db} STRATEGY FILE_COPY")
        yield pg_server.url(name)
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[asyncpg.Connection[asyncpg.Record]]:
    c = await asyncpg.connect(db_url)
    await init_connection(c)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture(scope="session")
def password_hash() -> str:
    return hash_password(PASSWORD)


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    base = load_settings({"ESTATEOPS_ENV": "development", "ESTATEOPS_LOG_LEVEL": "WARNING"})
    return replace(base.with_database(db_url), attachments_dir=tmp_path / "attachments")


@pytest.fixture
def app(settings: Settings) -> Litestar:
    return create_app(settings)


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=app) as c:
        yield c


class World:
    """Builds sites and users straight in SQL, and mints their tokens."""

    def __init__(self, conn: asyncpg.Connection[asyncpg.Record], app: Litestar, pw_hash: str):
        self.conn = conn
        self.app = app
        self.pw_hash = pw_hash

    async def site(
        self,
        code: str = "garden",
        kind: str = "residential",
        tz: str = "Asia/Shanghai",
        locale: str = "zh-CN",
    ) -> int:
        site_id: int = await self.conn.fetchval(
            "INSERT INTO sites (code, name, kind, timezone, locale)"
            " VALUES ($1, $2, $3, $4, $5) RETURNING id",
            code,
            code.title(),
            kind,
            tz,
            locale,
        )
        return site_id

    async def zone(self, site_id: int, name: str = "Lobby", kind: str = "lobby") -> int:
        zone_id: int = await self.conn.fetchval(
            "INSERT INTO zones (site_id, name, kind) VALUES ($1, $2, $3) RETURNING id",
            site_id,
            name,
            kind,
        )
        return zone_id

    async def unit(self, site_id: int, number: str = "101") -> int:
        unit_id: int = await self.conn.fetchval(
            "INSERT INTO units (site_id, building, floor, number)"
            " VALUES ($1, '1', 1, $2) RETURNING id",
            site_id,
            number,
        )
        return unit_id

    async def user(
        self, username: str, role: str, *site_ids: int, unit_id: int | None = None, **extra: Any
    ) -> Principal:
        user_id: int = await self.conn.fetchval(
            "INSERT INTO users"
            " (username, password_hash, full_name, role, unit_id, skills, qualifications)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            username,
            self.pw_hash,
            username.title(),
            role,
            unit_id,
            extra.get("skills", []),
            extra.get("qualifications", []),
        )
        for s in site_ids:
            await self.conn.execute(
                "INSERT INTO site_members (user_id, site_id) VALUES ($1, $2)", user_id, s
            )
        return Principal(
            id=user_id, username=username, role=role, site_ids=frozenset(site_ids), unit_id=unit_id
        )

    def token(self, principal: Principal) -> str:
        settings: Settings = self.app.state.settings
        return issue_token(self.app.state.jwt_auth, settings, principal)

    def headers(self, principal: Principal) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(principal)}"}


@pytest.fixture
def world(conn: asyncpg.Connection[asyncpg.Record], app: Litestar, password_hash: str) -> World:
    return World(conn, app, password_hash)

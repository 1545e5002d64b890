"""The asyncpg pool (opened and closed with the app) and the per-request transaction."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
import msgspec
from litestar import Litestar
from litestar.datastructures import State

from server.config import Settings

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]
    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
else:  # asyncpg's classes are not generic at run time; Litestar reads these annotations
    Connection = asyncpg.Connection
    Pool = asyncpg.Pool


def _encode_json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


async def init_connection(conn: Connection) -> None:
    """Per-connection setup shared by the pool and one-off connections: JSON codecs."""
    # jsonb in and out as Python objects; the codec is per connection.
    for name in ("jsonb", "json"):
        await conn.set_type_codec(
            name, encoder=_encode_json, decoder=msgspec.json.decode, schema="pg_catalog"
        )


async def _keep_session(conn: Connection) -> None:
    """Pool release without asyncpg's RESET ALL round trip (asyncpg still rolls back any
    open transaction). Rule: pool connections hold no session state; LISTEN, SET and
    advisory locks belong on dedicated connections."""


async def create_pool(settings: Settings, *, min_size: int | None = None) -> Pool:
    """A pool on settings.database.url; connections speak UTC and decode JSON."""
    if not settings.database.url:
        raise RuntimeError("DATABASE_URL is not set")
    pool = await asyncpg.create_pool(
        settings.database.url,
        min_size=settings.database.pool_min if min_size is None else min_size,
        max_size=settings.database.pool_max,
        command_timeout=settings.database.command_timeout_s,
        init=init_connection,
        reset=_keep_session,
        server_settings={"timezone": "UTC", "application_name": "estateops"},
    )
    assert pool is not None
    return pool


def lifespan(settings: Settings) -> Any:
    """An app lifespan that opens the pool lazily, so the API starts while the DB is down."""

    @asynccontextmanager
    async def _lifespan(app: Litestar) -> AsyncIterator[None]:
        # min_size=0: the process starts and answers /health (and 503s) even when the
        # database is unreachable; connections are made on first use and after a restart.
        pool = await create_pool(settings, min_size=0)
        app.state.pool = pool
        try:
            yield
        finally:
            await pool.close()

    return _lifespan


async def provide_db(state: State) -> AsyncGenerator[Connection, None]:
    """One connection and one transaction per request: committed before the response is sent."""
    pool: Pool = state.pool
    async with pool.acquire() as conn, conn.transaction():
        yield conn

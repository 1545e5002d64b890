"""The API plus a bare baseline endpoint, served by the same process and worker count."""

from __future__ import annotations

import uuid

import msgspec
from litestar import Litestar, post
from litestar.datastructures import State

from server.app import create_app


class BaselineIn(msgspec.Struct):
    id: uuid.UUID


@post("/bench/baseline", exclude_from_auth=True)
async def baseline(state: State, data: dict[str, object]) -> dict[str, object]:
    """One row inserted with asyncpg, JSON back: the floor our endpoints are measured against."""
    row_id = uuid.UUID(str(data["id"]))
    await state.pool.execute("INSERT INTO bench_baseline (id, body) VALUES ($1, $2)", row_id, data)
    return {"id": str(row_id), "stored": True}


def create() -> Litestar:
    app = create_app()
    app.register(baseline)
    return app

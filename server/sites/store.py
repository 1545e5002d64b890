"""SQL for sites, zones and units."""

from __future__ import annotations

import asyncpg
import msgspec

from server.db import Connection
from server.errors import Conflict
from server.sites.models import Site, SiteIn, Unit, UnitIn, Zone, ZoneIn

_SITE_COLS = "id, code, name, kind, timezone, locale, created_at"


async def create_site(conn: Connection, data: SiteIn) -> Site:
    try:
        row = await conn.fetchrow(
            f"INSERT INTO sites (code, name, kind, timezone, locale) VALUES ($1, $2, $3, $4, $5) "
            f"RETURNING {_SITE_COLS}",
            data.code,
            data.name,
            data.kind,
            data.timezone,
            data.locale,
        )
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(f"A site with code {data.code!r} exists", field="code") from exc
    return msgspec.convert(dict(row), Site)  # type: ignore[arg-type]


async def get_site(conn: Connection, site_id: int) -> Site | None:
    row = await conn.fetchrow(f"SELECT {_SITE_COLS} FROM sites WHERE id = $1", site_id)
    return msgspec.convert(dict(row), Site) if row else None


async def list_sites(
    conn: Connection, visible: list[int] | None, after: int, limit: int
) -> list[Site]:
    rows = await conn.fetch(
        f"SELECT {_SITE_COLS} FROM sites "
        "WHERE id > $1 AND ($2::bigint[] IS NULL OR id = ANY($2)) ORDER BY id LIMIT $3",
        after,
        visible,
        limit + 1,
    )
    return [msgspec.convert(dict(r), Site) for r in rows]


async def create_zone(conn: Connection, site_id: int, data: ZoneIn) -> Zone:
    try:
        row = await conn.fetchrow(
            "INSERT INTO zones (site_id, name, kind, building) VALUES ($1, $2, $3, $4) "
            "RETURNING id, site_id, name, kind, building, created_at",
            site_id,
            data.name,
            data.kind,
            data.building,
        )
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(f"Zone {data.name!r} exists on this site", field="name") from exc
    return msgspec.convert(dict(row), Zone)  # type: ignore[arg-type]


async def list_zones(conn: Connection, site_id: int, after: int, limit: int) -> list[Zone]:
    rows = await conn.fetch(
        "SELECT id, site_id, name, kind, building, created_at FROM zones "
        "WHERE site_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        site_id,
        after,
        limit + 1,
    )
    return [msgspec.convert(dict(r), Zone) for r in rows]


async def create_unit(conn: Connection, site_id: int, data: UnitIn) -> Unit:
    try:
        row = await conn.fetchrow(
            "INSERT INTO units (site_id, building, floor, number) VALUES ($1, $2, $3, $4) "
            "RETURNING id, site_id, building, floor, number, created_at",
            site_id,
            data.building,
            data.floor,
            data.number,
        )
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(
            f"Unit {data.building}-{data.number} exists on this site", field="number"
        ) from exc
    return msgspec.convert(dict(row), Unit)  # type: ignore[arg-type]


async def list_units(conn: Connection, site_id: int, after: int, limit: int) -> list[Unit]:
    rows = await conn.fetch(
        "SELECT id, site_id, building, floor, number, created_at FROM units "
        "WHERE site_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        site_id,
        after,
        limit + 1,
    )
    return [msgspec.convert(dict(r), Unit) for r in rows]


async def unit_site(conn: Connection, unit_id: int) -> int | None:
    site: int | None = await conn.fetchval("SELECT site_id FROM units WHERE id = $1", unit_id)
    return site

"""SQL for checkpoints.

Sealed NFC keys go in and never come out here: reads report only whether a tag has
keys on file (``nfc_sun``). Scan verification reads them with its own query.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg
import msgspec

from server.checkpoints.csv_import import ImportRow
from server.db import Connection
from server.errors import Conflict

# radius_m is a real: through numeric it comes back as written (12.3, not 12.300000190734863).
_COLS = (
    "id, site_id, name, zone_id, unit_id, lat, lon, radius_m::numeric::float8 AS radius_m, "
    "nfc_uid, nfc_sun_keys IS NOT NULL AS nfc_sun, instructions, active, token_version, "
    "created_at"
)
_UID_INDEX = "checkpoints_nfc_uid"


class CheckpointRecord(msgspec.Struct, frozen=True):
    """A checkpoint row without its sealed keys."""

    id: int
    site_id: int
    name: str
    zone_id: int | None
    unit_id: int | None
    lat: float | None
    lon: float | None
    radius_m: float
    nfc_uid: str | None
    nfc_sun: bool
    instructions: str
    active: bool
    token_version: int
    created_at: datetime


class CheckpointValues(msgspec.Struct, frozen=True, kw_only=True):
    """Everything about a checkpoint that a person sets, already checked."""

    name: str
    instructions: str
    zone_id: int | None
    unit_id: int | None
    lat: float | None
    lon: float | None
    radius_m: float
    active: bool = True
    nfc_uid: str | None


class SheetEntry(msgspec.Struct, frozen=True):
    id: int
    name: str
    token_version: int
    zone_name: str | None


def _record(row: asyncpg.Record | None) -> CheckpointRecord | None:
    return msgspec.convert(dict(row), CheckpointRecord) if row is not None else None


def _conflict(
    exc: asyncpg.UniqueViolationError, values: CheckpointValues, uid_field: str
) -> Conflict:
    if exc.constraint_name == _UID_INDEX:
        # UIDs are unique worldwide; which checkpoint (maybe of another site) is not said.
        return Conflict(
            f"NFC tag {values.nfc_uid} is already bound to another checkpoint", field=uid_field
        )
    return Conflict(f"A checkpoint named {values.name!r} exists on this site", field="name")


async def zone_on_site(conn: Connection, site_id: int, zone_id: int) -> bool:
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM zones WHERE id = $1 AND site_id = $2)", zone_id, site_id
    )
    return found


async def unit_on_site(conn: Connection, site_id: int, unit_id: int) -> bool:
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM units WHERE id = $1 AND site_id = $2)", unit_id, site_id
    )
    return found


async def zone_name(conn: Connection, zone_id: int) -> str | None:
    name: str | None = await conn.fetchval("SELECT name FROM zones WHERE id = $1", zone_id)
    return name


async def create_checkpoint(
    conn: Connection,
    site_id: int,
    values: CheckpointValues,
    sealed_keys: bytes | None,
    *,
    uid_field: str = "nfc_uid",
) -> CheckpointRecord:
    """Insert a checkpoint; 409 for a name taken on the site or a tag bound elsewhere."""
    try:
        row = await conn.fetchrow(
            "INSERT INTO checkpoints (site_id, name, instructions, zone_id, unit_id, lat, lon, "
            "radius_m, active, nfc_uid, nfc_sun_keys) "
            f"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {_COLS}",
            site_id,
            values.name,
            values.instructions,
            values.zone_id,
            values.unit_id,
            values.lat,
            values.lon,
            values.radius_m,
            values.active,
            values.nfc_uid,
            sealed_keys,
        )
    except asyncpg.UniqueViolationError as exc:
        raise _conflict(exc, values, uid_field) from exc
    record = _record(row)
    assert record is not None
    return record


async def get_checkpoint(
    conn: Connection, checkpoint_id: int, *, for_update: bool = False
) -> CheckpointRecord | None:
    """One checkpoint; ``for_update`` locks it until the transaction ends."""
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {_COLS} FROM checkpoints WHERE id = $1{lock}", checkpoint_id)
    return _record(row)


async def list_checkpoints(
    conn: Connection, site_id: int, zone_id: int | None, after: int, limit: int
) -> list[CheckpointRecord]:
    rows = await conn.fetch(
        f"SELECT {_COLS} FROM checkpoints "
        "WHERE site_id = $1 AND ($2::bigint IS NULL OR zone_id = $2) AND id > $3 "
        "ORDER BY id LIMIT $4",
        site_id,
        zone_id,
        after,
        limit + 1,
    )
    return [msgspec.convert(dict(r), CheckpointRecord) for r in rows]


async def update_checkpoint(
    conn: Connection,
    checkpoint_id: int,
    values: CheckpointValues,
    *,
    replace_keys: bool,
    sealed_keys: bytes | None,
    uid_field: str = "nfc_uid",
) -> CheckpointRecord | None:
    """Set every field a person sets; the sealed keys only when ``replace_keys``.

    The SUN counter survives as long as the UID does: a tag's read counter never goes
    back, even when it gets new keys, so resetting it would reopen old URLs to replay.
    """
    try:
        row = await conn.fetchrow(
            "UPDATE checkpoints SET name = $2, instructions = $3, zone_id = $4, unit_id = $5, "
            "lat = $6, lon = $7, radius_m = $8, active = $9, nfc_uid = $10, "
            "nfc_sun_keys = CASE WHEN $11 THEN $12 ELSE nfc_sun_keys END, "
            "nfc_counter = CASE WHEN nfc_uid IS NOT DISTINCT FROM $10 THEN nfc_counter END "
            f"WHERE id = $1 RETURNING {_COLS}",
            checkpoint_id,
            values.name,
            values.instructions,
            values.zone_id,
            values.unit_id,
            values.lat,
            values.lon,
            values.radius_m,
            values.active,
            values.nfc_uid,
            replace_keys,
            sealed_keys,
        )
    except asyncpg.UniqueViolationError as exc:
        raise _conflict(exc, values, uid_field) from exc
    return _record(row)


async def rotate_token(conn: Connection, checkpoint_id: int) -> CheckpointRecord | None:
    """Bump the token version: every code printed before no longer verifies."""
    row = await conn.fetchrow(
        f"UPDATE checkpoints SET token_version = token_version + 1 WHERE id = $1 RETURNING {_COLS}",
        checkpoint_id,
    )
    return _record(row)


async def sheet_entries(conn: Connection, site_id: int, zone_id: int | None) -> list[SheetEntry]:
    """The site's active checkpoints in print order: by zone, then by name."""
    rows = await conn.fetch(
        "SELECT c.id, c.name, c.token_version, z.name AS zone_name "
        "FROM checkpoints c LEFT JOIN zones z ON z.id = c.zone_id "
        "WHERE c.site_id = $1 AND c.active AND ($2::bigint IS NULL OR c.zone_id = $2) "
        "ORDER BY z.name NULLS LAST, c.name, c.id",
        site_id,
        zone_id,
    )
    return [msgspec.convert(dict(r), SheetEntry) for r in rows]


async def zone_ids_by_name(conn: Connection, site_id: int) -> dict[str, int]:
    rows = await conn.fetch("SELECT name, id FROM zones WHERE site_id = $1", site_id)
    return {r["name"]: r["id"] for r in rows}


async def taken_names(conn: Connection, site_id: int, names: Sequence[str]) -> set[str]:
    """Which of these names checkpoints of the site already have."""
    rows = await conn.fetch(
        "SELECT name FROM checkpoints WHERE site_id = $1 AND name = ANY($2::text[])",
        site_id,
        list(names),
    )
    return {r["name"] for r in rows}


async def bound_uids(conn: Connection, uids: Sequence[str]) -> set[str]:
    """Which of these tag UIDs are bound to a checkpoint (of any site)."""
    rows = await conn.fetch(
        "SELECT nfc_uid FROM checkpoints WHERE nfc_uid = ANY($1::text[])", list(uids)
    )
    return {r["nfc_uid"] for r in rows}


async def insert_rows(conn: Connection, site_id: int, rows: Sequence[ImportRow]) -> list[int]:
    """Insert imported rows in one statement; their ids in the rows' order."""
    try:
        inserted = await conn.fetch(
            "INSERT INTO checkpoints "
            "(site_id, name, zone_id, lat, lon, radius_m, nfc_uid, instructions) "
            "SELECT $1, r.name, r.zone_id, r.lat, r.lon, r.radius_m, r.nfc_uid, r.instructions "
            "FROM unnest($2::text[], $3::bigint[], $4::float8[], $5::float8[], $6::float4[], "
            "$7::text[], $8::text[]) "
            "AS r(name, zone_id, lat, lon, radius_m, nfc_uid, instructions) "
            "RETURNING id, name",
            site_id,
            [r.name for r in rows],
            [r.zone_id for r in rows],
            [r.lat for r in rows],
            [r.lon for r in rows],
            [r.radius_m for r in rows],
            [r.nfc_uid for r in rows],
            [r.instructions for r in rows],
        )
    except asyncpg.UniqueViolationError as exc:
        # Checked just before; only a concurrent change gets here.
        raise Conflict(
            "A checkpoint name or NFC tag in the file was taken meanwhile; nothing was imported"
        ) from exc
    # Names are unique per site, so they pair each new id with its row.
    ids = {r["name"]: r["id"] for r in inserted}
    return [ids[r.name] for r in rows]

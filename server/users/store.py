"""SQL for users, site membership and login throttling."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import msgspec

from server.db import Connection
from server.errors import Conflict
from server.users.models import User, UserIn, UserPatch

_USER_SELECT = """
SELECT u.id, u.username, u.role, u.full_name, u.phone, u.unit_id, u.skills,
       u.qualifications, u.active, u.created_at,
       coalesce(array_agg(m.site_id ORDER BY m.site_id) FILTER (WHERE m.site_id IS NOT NULL),
                '{}') AS site_ids
FROM users u LEFT JOIN site_members m ON m.user_id = u.id
"""


def _user(row: asyncpg.Record) -> User:
    return msgspec.convert(dict(row), User)


@dataclass(frozen=True)
class LoginRecord:
    id: int
    username: str
    password_hash: str
    role: str
    unit_id: int | None
    active: bool
    site_ids: list[int]


async def create_user(conn: Connection, data: UserIn, password_hash: str) -> User:
    try:
        user_id: int = await conn.fetchval(
            "INSERT INTO users (username, password_hash, full_name, phone, role, unit_id, skills,"
            " qualifications) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            data.username,
            password_hash,
            data.full_name,
            data.phone,
            data.role,
            data.unit_id,
            data.skills,
            msgspec.to_builtins(data.qualifications),
        )
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(f"Username {data.username!r} is taken", field="username") from exc
    await set_sites(conn, user_id, data.site_ids)
    user = await get_user(conn, user_id)
    assert user is not None
    return user


async def set_sites(conn: Connection, user_id: int, site_ids: list[int]) -> None:
    await conn.execute("DELETE FROM site_members WHERE user_id = $1", user_id)
    await conn.execute(
        "INSERT INTO site_members (user_id, site_id) SELECT $1, unnest($2::bigint[])"
        " ON CONFLICT DO NOTHING",
        user_id,
        sorted(set(site_ids)),
    )


async def existing_sites(conn: Connection, site_ids: list[int]) -> set[int]:
    rows = await conn.fetch("SELECT id FROM sites WHERE id = ANY($1::bigint[])", site_ids)
    return {r["id"] for r in rows}


async def get_user(conn: Connection, user_id: int) -> User | None:
    row = await conn.fetchrow(_USER_SELECT + " WHERE u.id = $1 GROUP BY u.id", user_id)
    return _user(row) if row else None


async def list_users(
    conn: Connection, visible: list[int] | None, after: int, limit: int
) -> list[User]:
    rows = await conn.fetch(
        _USER_SELECT + " WHERE u.id > $1 AND ($2::bigint[] IS NULL OR EXISTS ("
        "   SELECT 1 FROM site_members v WHERE v.user_id = u.id AND v.site_id = ANY($2)))"
        " GROUP BY u.id ORDER BY u.id LIMIT $3",
        after,
        visible,
        limit + 1,
    )
    return [_user(r) for r in rows]


async def patch_user(
    conn: Connection, user_id: int, patch: UserPatch, password_hash: str | None
) -> None:
    await conn.execute(
        "UPDATE users SET full_name = coalesce($2, full_name), phone = coalesce($3, phone),"
        " password_hash = coalesce($4, password_hash), skills = coalesce($5, skills),"
        " qualifications = coalesce($6, qualifications), active = coalesce($7, active)"
        " WHERE id = $1",
        user_id,
        patch.full_name,
        patch.phone,
        password_hash,
        patch.skills,
        None if patch.qualifications is None else msgspec.to_builtins(patch.qualifications),
        patch.active,
    )
    if patch.site_ids is not None:
        await set_sites(conn, user_id, patch.site_ids)


async def login_record(conn: Connection, username: str) -> LoginRecord | None:
    row = await conn.fetchrow(
        "SELECT u.id, u.username, u.password_hash, u.role, u.unit_id, u.active,"
        " coalesce(array_agg(m.site_id) FILTER (WHERE m.site_id IS NOT NULL), '{}') AS site_ids"
        " FROM users u LEFT JOIN site_members m ON m.user_id = u.id"
        " WHERE u.username = $1 GROUP BY u.id",
        username,
    )
    return LoginRecord(**dict(row)) if row else None


async def count_users(conn: Connection) -> int:
    n: int = await conn.fetchval("SELECT count(*) FROM users")
    return n


async def recent_failures(
    conn: Connection, username: str, address: str, window: timedelta
) -> tuple[int, int]:
    row = await conn.fetchrow(
        "SELECT"
        " (SELECT count(*) FROM login_failures WHERE username = $1 AND at > now() - $3::interval)"
        "   AS by_user,"
        " (SELECT count(*) FROM login_failures WHERE address = $2 AND at > now() - $3::interval)"
        "   AS by_address",
        username,
        address,
        window,
    )
    assert row is not None
    return int(row["by_user"]), int(row["by_address"])


async def record_failure(conn: Connection, username: str, address: str) -> None:
    await conn.execute(
        "INSERT INTO login_failures (username, address) VALUES ($1, $2)", username, address
    )
    # Keep the table small: forget failures older than a day.
    await conn.execute("DELETE FROM login_failures WHERE at < now() - interval '1 day'")


async def clear_failures(conn: Connection, username: str) -> None:
    await conn.execute("DELETE FROM login_failures WHERE username = $1", username)

"""The migration runner: numbered .sql files, applied in order, each once, checksummed.

A PostgreSQL advisory lock makes concurrent runners wait for each other; each
file runs in its own transaction together with its row in ``schema_migrations``;
a file edited after it was applied is refused (its checksum no longer matches).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from server.db import Connection

# Any fixed number unique to this application: the key of the advisory lock.
_LOCK_KEY = 0x45_53_54_41_54_45  # "ESTATE"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class MigrationError(RuntimeError):
    """The migrations on disk and in the database disagree."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def default_dir() -> Path:
    """migrations/ beside the package in a checkout, or the copy inside an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "migrations", here / "_migrations"):
        if candidate.is_dir():
            return candidate
    raise MigrationError(f"no migrations folder found next to {here}")


def load(directory: Path | None = None) -> list[Migration]:
    """The migrations on disk, in order; refuses misnamed files and duplicate numbers."""
    directory = directory or default_dir()
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_words.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"{path.name}: number {version} is used twice")
        found[version] = Migration(version, path.name, path.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


async def _applied(conn: Connection) -> dict[int, asyncpg.Record]:
    rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
    return {r["version"]: r for r in rows}


def _check(disk: list[Migration], applied: dict[int, asyncpg.Record]) -> list[Migration]:
    by_version = {m.version: m for m in disk}
    for version, row in sorted(applied.items()):
        m = by_version.get(version)
        if m is None:
            raise MigrationError(
                f"migration {row['name']} is applied in the database but missing on disk; "
                "this code is older than the database"
            )
        if m.checksum != row["checksum"]:
            raise MigrationError(
                f"migration {m.name} was edited after it was applied (checksum differs); "
                "add a new numbered migration instead of changing an applied one"
            )
    return [m for m in disk if m.version not in applied]


async def apply(conn: Connection, directory: Path | None = None) -> list[str]:
    """Apply pending migrations; returns the names applied. Safe to run concurrently."""
    disk = load(directory)
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(_BOOKKEEPING)
        pending = _check(disk, await _applied(conn))
        done: list[str] = []
        for m in pending:
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    m.version,
                    m.name,
                    m.checksum,
                )
            done.append(m.name)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


async def pending(conn: Connection, directory: Path | None = None) -> list[str]:
    """Names of migrations not yet applied (raises on a checksum mismatch)."""
    disk = load(directory)
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    applied = await _applied(conn) if exists else {}
    return [m.name for m in _check(disk, applied)]

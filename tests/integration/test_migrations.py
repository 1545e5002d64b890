"""The migration runner on folders of .sql files and a fresh, empty database each."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from server import migrate
from server.migrate import MigrationError
from tests.conftest import PgServer

_names = itertools.count()

LOG_TABLE = "CREATE TABLE applied_log (id serial PRIMARY KEY, migration text NOT NULL);\n"


def _log(name: str) -> str:
    """A migration whose only effect is one row in the log: applying it twice shows."""
    return f"INSERT INTO applied_log (migration) VALUES ('{name}');\n"


def _write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(exist_ok=True)
    for name, sql in files.items():
        (folder / name).write_text(sql, encoding="utf-8")
    return folder


@pytest.fixture
async def empty_url(pg_server: PgServer) -> AsyncIterator[str]:
    name = f"mig_{os.getpid()}_{next(_names)}"
    admin = await asyncpg.connect(pg_server.admin_url)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        yield pg_server.url(name)
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def db(empty_url: str) -> AsyncIterator[asyncpg.Connection[asyncpg.Record]]:
    conn = await asyncpg.connect(empty_url)
    try:
        yield conn
    finally:
        await conn.close()


async def _logged(conn: asyncpg.Connection[asyncpg.Record]) -> list[str]:
    rows = await conn.fetch("SELECT migration FROM applied_log ORDER BY id")
    return [r["migration"] for r in rows]


async def _recorded(conn: asyncpg.Connection[asyncpg.Record]) -> list[tuple[int, str]]:
    rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
    return [(r["version"], r["name"]) for r in rows]


async def test_applied_in_numeric_order_each_once(
    db: asyncpg.Connection[asyncpg.Record], tmp_path: Path
) -> None:
    # Written out of order; applied by number.
    folder = _write(
        tmp_path / "m",
        {
            "0010_ten.sql": _log("ten"),
            "0002_two.sql": _log("two"),
            "0001_log.sql": LOG_TABLE + _log("one"),
            "0003_three.sql": _log("three"),
        },
    )
    assert await migrate.pending(db, folder) == [
        "0001_log.sql",
        "0002_two.sql",
        "0003_three.sql",
        "0010_ten.sql",
    ]

    done = await migrate.apply(db, folder)

    assert done == ["0001_log.sql", "0002_two.sql", "0003_three.sql", "0010_ten.sql"]
    assert await _logged(db) == ["one", "two", "three", "ten"]
    assert await _recorded(db) == [
        (1, "0001_log.sql"),
        (2, "0002_two.sql"),
        (3, "0003_three.sql"),
        (10, "0010_ten.sql"),
    ]
    assert await migrate.apply(db, folder) == []
    assert await migrate.pending(db, folder) == []
    assert await _logged(db) == ["one", "two", "three", "ten"]

    # A new file later is the only one applied.
    _write(folder, {"0011_eleven.sql": _log("eleven")})
    assert await migrate.pending(db, folder) == ["0011_eleven.sql"]
    assert await migrate.apply(db, folder) == ["0011_eleven.sql"]
    assert await _logged(db) == ["one", "two", "three", "ten", "eleven"]


async def test_the_real_migrations_apply_to_an_empty_database(
    db: asyncpg.Connection[asyncpg.Record],
) -> None:
    names = [m.name for m in migrate.load()]
    assert names[0] == "0001_foundation.sql"
    assert await migrate.apply(db) == names
    assert await migrate.apply(db) == []
    assert await db.fetchval("SELECT to_regclass('users') IS NOT NULL")


async def test_an_edited_applied_migration_is_refused(
    db: asyncpg.Connection[asyncpg.Record], tmp_path: Path
) -> None:
    folder = _write(tmp_path / "m", {"0001_log.sql": LOG_TABLE, "0002_two.sql": _log("two")})
    await migrate.apply(db, folder)
    (folder / "0002_two.sql").write_text(_log("two, edited"), encoding="utf-8")
    _write(folder, {"0003_three.sql": _log("three")})

    with pytest.raises(MigrationError, match="checksum") as err:
        await migrate.apply(db, folder)
    assert "0002_two.sql" in str(err.value)
    with pytest.raises(MigrationError, match="checksum"):
        await migrate.pending(db, folder)
    # Nothing after the refusal ran, not even the new file.
    assert await _logged(db) == ["two"]
    assert len(await _recorded(db)) == 2
    # The lock was released: another session can take it at once.
    assert await db.fetchval("SELECT pg_try_advisory_lock($1)", migrate._LOCK_KEY)
    await db.execute("SELECT pg_advisory_unlock($1)", migrate._LOCK_KEY)


async def test_an_applied_migration_missing_on_disk_is_refused(
    db: asyncpg.Connection[asyncpg.Record], tmp_path: Path
) -> None:
    folder = _write(tmp_path / "m", {"0001_log.sql": LOG_TABLE, "0002_two.sql": _log("two")})
    await migrate.apply(db, folder)
    (folder / "0002_two.sql").unlink()

    with pytest.raises(MigrationError, match="missing on disk") as err:
        await migrate.apply(db, folder)
    assert "0002_two.sql" in str(err.value)
    with pytest.raises(MigrationError):
        await migrate.pending(db, folder)


async def test_a_failing_migration_rolls_back_alone(
    db: asyncpg.Connection[asyncpg.Record], tmp_path: Path
) -> None:
    folder = _write(
        tmp_path / "m",
        {
            "0001_log.sql": LOG_TABLE + _log("one"),
            "0002_two.sql": _log("two"),
            # Half of this one works before it fails; none of it may stay.
            "0003_bad.sql": "CREATE TABLE half_done (id int);\n"
            + _log("three")
            + "SELECT 1 / 0;\n",
            "0004_four.sql": _log("four"),
        },
    )

    with pytest.raises(asyncpg.DivisionByZeroError):
        await migrate.apply(db, folder)

    assert await _logged(db) == ["one", "two"]
    assert await _recorded(db) == [(1, "0001_log.sql"), (2, "0002_two.sql")]
    assert not await db.fetchval("SELECT to_regclass('half_done') IS NOT NULL")
    assert await migrate.pending(db, folder) == ["0003_bad.sql", "0004_four.sql"]
    # The session is usable and unlocked, and a fixed file then applies with the rest.
    (folder / "0003_bad.sql").write_text(_log("three"), encoding="utf-8")
    assert await migrate.apply(db, folder) == ["0003_bad.sql", "0004_four.sql"]
    assert await _logged(db) == ["one", "two", "three", "four"]


async def test_two_concurrent_runners_apply_each_file_once(empty_url: str, tmp_path: Path) -> None:
    # pg_sleep makes the first runner hold the lock long enough for the second to queue.
    folder = _write(
        tmp_path / "m",
        {
            "0001_log.sql": LOG_TABLE + _log("one"),
            "0002_slow.sql": "SELECT pg_sleep(0.2);\n" + _log("two"),
            "0003_three.sql": _log("three"),
        },
    )
    first, second = await asyncpg.connect(empty_url), await asyncpg.connect(empty_url)
    try:
        results = await asyncio.gather(migrate.apply(first, folder), migrate.apply(second, folder))
        applied = sorted(results, key=len)
        assert applied == [[], ["0001_log.sql", "0002_slow.sql", "0003_three.sql"]]
        assert await _logged(first) == ["one", "two", "three"]
        assert len(await _recorded(first)) == 3
    finally:
        await first.close()
        await second.close()


async def test_many_concurrent_runners_on_a_fresh_database(empty_url: str, tmp_path: Path) -> None:
    # Even the bookkeeping table is created under the lock: no runner trips over another.
    folder = _write(tmp_path / "m", {"0001_log.sql": LOG_TABLE + _log("one")})
    conns = [await asyncpg.connect(empty_url) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate.apply(c, folder) for c in conns))
        assert sorted(len(r) for r in results) == [0, 0, 0, 1]
        assert await _logged(conns[0]) == ["one"]
    finally:
        for c in conns:
            await c.close()


async def test_misnamed_files_are_refused(
    db: asyncpg.Connection[asyncpg.Record], tmp_path: Path
) -> None:
    bad = [
        "1_init.sql",
        "0001-init.sql",
        "0001_Init.sql",
        "0001_init .sql",
        "00001_x.sql",
        "ab_x.sql",
    ]
    for i, name in enumerate(bad):
        folder = _write(tmp_path / str(i), {"0001_log.sql": LOG_TABLE, name: _log("x")})
        with pytest.raises(MigrationError, match="named") as err:
            await migrate.apply(db, folder)
        assert name in str(err.value)
    # Refused before touching the database.
    assert not await db.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")


async def test_a_number_used_twice_is_refused(
    db: asyncpg.Connection[asyncpg.Record], tmp_path: Path
) -> None:
    folder = _write(tmp_path / "m", {"0001_log.sql": LOG_TABLE, "0001_again.sql": _log("x")})
    with pytest.raises(MigrationError, match="twice"):
        await migrate.apply(db, folder)


async def test_other_files_in_the_folder_are_ignored(
    db: asyncpg.Connection[asyncpg.Record], tmp_path: Path
) -> None:
    folder = _write(tmp_path / "m", {"0001_log.sql": LOG_TABLE + _log("one"), "README.md": "x"})
    assert await migrate.apply(db, folder) == ["0001_log.sql"]

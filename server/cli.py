"""The `estateops` command: up, serve, migrate, user, broker."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from server import migrate
from server.auth import ROLES, hash_password
from server.config import ConfigError, Settings, load_settings
from server.embedded import EmbeddedError, EmbeddedPostgres, port_is_free, run_broker


def say(message: str) -> None:
    print(message, flush=True)


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return 1


async def _connect(url: str) -> asyncpg.Connection[asyncpg.Record]:
    try:
        return await asyncpg.connect(url, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise EmbeddedError(
            f"cannot reach the database ({type(exc).__name__}: {exc}); check DATABASE_URL, "
            "that PostgreSQL is running and accepts this user"
        ) from exc


async def migrate_database(url: str) -> list[str]:
    conn = await _connect(url)
    try:
        return await migrate.apply(conn)
    finally:
        await conn.close()


async def ensure_admin(url: str) -> str | None:
    """On a first start with no users, create `admin`; returns a generated password to print."""
    conn = await _connect(url)
    try:
        if await conn.fetchval("SELECT count(*) FROM users"):
            return None
        given = os.environ.get("ESTATEOPS_ADMIN_PASSWORD")
        password = given or secrets.token_urlsafe(12)
        await conn.execute(
            "INSERT INTO users (username, password_hash, full_name, role) "
            "VALUES ('admin', $1, 'Administrator', 'admin') ON CONFLICT DO NOTHING",
            await asyncio.to_thread(hash_password, password),
        )
        return None if given else password
    finally:
        await conn.close()


def _database_url(settings: Settings) -> str:
    if not settings.database.url:
        raise EmbeddedError("DATABASE_URL is not set (or run `estateops up` for an embedded one)")
    return settings.database.url


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    done = asyncio.run(migrate_database(_database_url(settings)))
    say(f"applied {len(done)} migration(s): {', '.join(done)}" if done else "schema is current")
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    _database_url(settings)
    if not port_is_free(args.port, args.host):
        return fail(f"port {args.port} on {args.host} is taken; choose another with --port")
    uvicorn.run(
        "server.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    return 0


def cmd_bridge(args: argparse.Namespace, settings: Settings) -> int:
    from mqtt_bridge.run import main as bridge_main

    return bridge_main(args.bridge_args)


def cmd_scheduler(args: argparse.Namespace, settings: Settings) -> int:
    from server.scheduler import main as scheduler_main

    _database_url(settings)
    return scheduler_main(settings)


def cmd_mqtt_credentials(args: argparse.Namespace, settings: Settings) -> int:
    from mqtt_bridge.credentials import gateway_username, set_credentials

    if not args.bridge and not (args.site_code and args.gateway_id):
        return fail("give SITE_CODE and GATEWAY_ID, or --bridge")
    try:
        username = (
            "estateops-bridge" if args.bridge else gateway_username(args.site_code, args.gateway_id)
        )
    except ValueError as exc:
        return fail(str(exc))
    password = set_credentials(Path(args.file), username, os.environ.get("MQTT_NEW_PASSWORD"))
    say(f"{username} added to {args.file}; reload Mosquitto (SIGHUP) to apply")
    if not os.environ.get("MQTT_NEW_PASSWORD"):
        say(f"password: {password}")
    return 0


def cmd_broker(args: argparse.Namespace, settings: Settings) -> int:
    stop = asyncio.Event()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_broker(args.port, stop)

    asyncio.run(main())
    return 0


async def _create_user(url: str, args: argparse.Namespace, password: str) -> int:
    conn = await _connect(url)
    try:
        async with conn.transaction():
            site_ids = []
            for code in args.site or []:
                site_id = await conn.fetchval("SELECT id FROM sites WHERE code = $1", code)
                if site_id is None:
                    raise EmbeddedError(f"no site with code {code!r}")
                site_ids.append(site_id)
            user_id: int = await conn.fetchval(
                "INSERT INTO users (username, password_hash, full_name, role, unit_id) "
                "VALUES ($1, $2, $3, $4, $5) RETURNING id",
                args.username,
                await asyncio.to_thread(hash_password, password),
                args.full_name or "",
                args.role,
                args.unit,
            )
            if args.unit is not None:
                site_ids.append(
                    await conn.fetchval("SELECT site_id FROM units WHERE id = $1", args.unit)
                )
            await conn.executemany(
                "INSERT INTO site_members (user_id, site_id) VALUES ($1, $2)",
                [(user_id, s) for s in set(site_ids)],
            )
            return user_id
    except asyncpg.UniqueViolationError as exc:
        raise EmbeddedError(f"username {args.username!r} is taken") from exc
    except asyncpg.CheckViolationError as exc:
        raise EmbeddedError(
            f"refused: {exc.constraint_name} (usernames are lower-case; residents need --unit)"
        ) from exc
    finally:
        await conn.close()


def cmd_user_create(args: argparse.Namespace, settings: Settings) -> int:
    url = _database_url(settings)
    password = os.environ.get("ESTATEOPS_NEW_PASSWORD")
    generated = False
    if not password:
        if args.generate or not sys.stdin.isatty():
            password, generated = secrets.token_urlsafe(12), True
        else:
            password = getpass.getpass(f"password for {args.username}: ")
    if len(password) < 10:
        return fail("passwords have at least 10 characters")
    user_id = asyncio.run(_create_user(url, args, password))
    say(f"created user {args.username} (id {user_id}, role {args.role})")
    if generated:
        say(f"password: {password}")
    return 0


class _Supervisor:
    """Children of `estateops up`, stopped in reverse order on Ctrl-C or SIGTERM."""

    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.stopping = False

    def spawn(self, name: str, argv: Sequence[str], env: dict[str, str]) -> None:
        proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", *argv], env=env, start_new_session=True
        )
        self.children.append((name, proc))

    def exited(self) -> str | None:
        for name, proc in self.children:
            if proc.poll() is not None:
                return f"{name} exited with code {proc.returncode}"
        return None

    def stop(self) -> None:
        for _name, proc in reversed(self.children):
            if proc.poll() is None:
                proc.terminate()
        for _name, proc in reversed(self.children):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_ready(url: str, timeout: float, supervisor: _Supervisor) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if supervisor.exited():
            return False
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(url, timeout=1) as resp,  # noqa: S310 - our loopback URL
        ):
            if resp.status == 200:
                return True
        time.sleep(0.2)
    return False


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    if settings.using_dev_secrets:
        say("!" * 72)
        say("!! DEVELOPMENT MODE: using built-in development keys (JWT, QR, KEK).")
        say("!! Never expose this instance; set ESTATEOPS_ENV=production and real secrets.")
        say("!" * 72)
    if not port_is_free(args.port):
        return fail(f"port {args.port} on 127.0.0.1 is taken; choose another with --port")
    data_dir = Path(args.data_dir).resolve()
    pg: EmbeddedPostgres | None = None
    supervisor = _Supervisor()
    stop_requested = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        db_url = settings.database.url
        if db_url:
            say("database: DATABASE_URL")
        else:
            say(f"data folder: {data_dir}")
            say("starting embedded PostgreSQL ...")
            pg = EmbeddedPostgres(data_dir, port=args.pg_port)
            pg.start()
            db_url = pg.url()
            say(f"PostgreSQL ready on 127.0.0.1:{pg.port} (log: {pg.log_file})")
        say("applying migrations ...")
        applied = asyncio.run(migrate_database(db_url))
        say(f"  {len(applied)} applied" if applied else "  schema is current")
        password = asyncio.run(ensure_admin(db_url))
        if password:
            say(f"created user admin with password: {password}  (shown once; change it)")
        if args.demo:
            from server.demo import seed_demo

            for line in asyncio.run(seed_demo(db_url)):
                say(line)
        env = dict(os.environ, DATABASE_URL=db_url)
        mqtt_url = settings.mqtt.url
        if not mqtt_url:
            if not port_is_free(args.mqtt_port):
                raise EmbeddedError(
                    f"MQTT port {args.mqtt_port} is taken; choose another with --mqtt-port"
                )
            supervisor.spawn("broker", ["broker", "--port", str(args.mqtt_port)], env)
            mqtt_url = f"mqtt://127.0.0.1:{args.mqtt_port}?protocol=3.1.1"
            say(f"MQTT broker (embedded, MQTT 3.1.1) on {mqtt_url}")
        env["MQTT_URL"] = mqtt_url
        supervisor.spawn("api", ["serve", "--port", str(args.port)], env)
        supervisor.spawn("scheduler", ["scheduler"], env)
        supervisor.spawn("bridge", ["bridge"], env)
        base = f"http://127.0.0.1:{args.port}"
        if not _wait_ready(f"{base}/ready", 30, supervisor):
            raise EmbeddedError(supervisor.exited() or "the API did not become ready in 30s")
        say(f"API:  {base}/api   docs: {base}/schema   ready: {base}/ready")
        say("press Ctrl-C to stop")
        while not stop_requested:
            if problem := supervisor.exited():
                raise EmbeddedError(problem)
            time.sleep(0.3)
        say("stopping ...")
        return 0
    except (EmbeddedError, ConfigError, migrate.MigrationError) as exc:
        return fail(str(exc))
    finally:
        supervisor.stop()
        if pg is not None:
            pg.stop()
            say("PostgreSQL stopped")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="estateops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run everything on embedded PostgreSQL and MQTT")
    up.add_argument("--demo", action="store_true", help="seed demo sites, users and devices")
    up.add_argument("--data-dir", default=".estateops", help="where PostgreSQL keeps its data")
    up.add_argument("--port", type=int, default=8000, help="API port on 127.0.0.1")
    up.add_argument("--mqtt-port", type=int, default=1883, help="embedded MQTT broker port")
    up.add_argument("--pg-port", type=int, default=0, help="embedded PostgreSQL port (0: any)")
    up.set_defaults(func=cmd_up)

    serve = sub.add_parser("serve", help="run the API only (uses DATABASE_URL)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=cmd_serve)

    mig = sub.add_parser("migrate", help="apply pending migrations to DATABASE_URL")
    mig.set_defaults(func=cmd_migrate)

    bridge = sub.add_parser(
        "bridge", help="run the MQTT bridge (MQTT_URL, DATABASE_URL); --help for its options"
    )
    bridge.add_argument("bridge_args", nargs=argparse.REMAINDER)
    bridge.set_defaults(func=cmd_bridge)

    sched = sub.add_parser("scheduler", help="run the background loops (rounds, SLAs, ...)")
    sched.set_defaults(func=cmd_scheduler)

    broker = sub.add_parser("broker", help="run the embedded MQTT broker")
    broker.add_argument("--port", type=int, default=1883)
    broker.set_defaults(func=cmd_broker)

    creds = sub.add_parser(
        "mqtt-credentials",
        help="add a gateway's (or the bridge's) login to a Mosquitto password file",
    )
    creds.add_argument("site_code", nargs="?")
    creds.add_argument("gateway_id", nargs="?")
    creds.add_argument("--bridge", action="store_true", help="the bridge's own login")
    creds.add_argument("--file", default="secrets/mosquitto_passwords")
    creds.set_defaults(func=cmd_mqtt_credentials)

    user = sub.add_parser("user", help="manage users")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    create = user_sub.add_parser(
        "create",
        help="create a user (password from ESTATEOPS_NEW_PASSWORD, a prompt, or --generate)",
    )
    create.add_argument("username")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--site", action="append", help="site code (repeatable)")
    create.add_argument("--unit", type=int, help="unit id (residents)")
    create.add_argument("--full-name", default="")
    create.add_argument("--generate", action="store_true", help="generate and print a password")
    create.set_defaults(func=cmd_user_create)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        return fail(str(exc))
    try:
        code: int = args.func(args, settings)
    except (EmbeddedError, migrate.MigrationError) as exc:
        return fail(str(exc))
    return code


if __name__ == "__main__":
    raise SystemExit(main())

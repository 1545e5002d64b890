"""The API in its own process, for tests that need a real server (SSE, restarts)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from server.embedded import free_port

ROOT = Path(__file__).resolve().parents[1]


def wait_ready(base: str, within: float = 30.0) -> None:
    """Until GET /ready answers 200 (the database reachable, migrations current)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{base} was not ready within {within:.0f} s")


@contextmanager
def api_process(database_url: str, *, log_level: str = "WARNING") -> Iterator[str]:
    """uvicorn serving server.app:create_app on a free loopback port; yields its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "server.app:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=dict(os.environ, DATABASE_URL=database_url, ESTATEOPS_LOG_LEVEL=log_level),
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base)
        yield base
    finally:
        proc.terminate()
        proc.wait(20)

"""`estateops up` as a new user runs it: ready within 10 s, stops cleanly, no PostgreSQL left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

from server.embedded import free_port


def _postgres_on(data_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if proc.info.get("name") == "postgres" and any(str(data_dir) in c for c in cmdline):
            found.append(proc)
    return found


def test_up_serves_ready_within_10_s_and_stops_cleanly(tmp_path: Path) -> None:
    port, mqtt_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MQTT_URL")}
    env["ESTATEOPS_ADMIN_PASSWORD"] = "first-admin-password"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server.cli",
            "up",
            "--demo",
            "--data-dir",
            str(tmp_path / "data"),
            "--port",
            str(port),
            "--mqtt-port",
            str(mqtt_port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    started = time.monotonic()
    ready_after = None
    try:
        while time.monotonic() - started < 60:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as r:
                    if r.status == 200:
                        ready_after = time.monotonic() - started
                        break
            except OSError:
                time.sleep(0.1)
        assert ready_after is not None, "never ready"
        # A first start with embedded PostgreSQL (initdb included) is the slow case.
        assert ready_after < 10, f"ready after {ready_after:.1f} s"
        assert _postgres_on(tmp_path / "data")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert f"http://127.0.0.1:{port}/schema" in out
    assert str(tmp_path / "data") in out
    assert "demo-garden" in out
    assert "DEVELOPMENT MODE" in out
    deadline = time.monotonic() + 10
    while _postgres_on(tmp_path / "data") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _postgres_on(tmp_path / "data"), "PostgreSQL left running"

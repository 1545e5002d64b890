"""Shared benchmark plumbing: a PostgreSQL, an API server process, wrk, an open-loop load.

Benchmarks are not tests: they print their numbers (each against a baseline
measured in the same run) and can append them to docs/PERFORMANCE.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server import migrate  # noqa: E402
from server.embedded import EmbeddedPostgres, free_port  # noqa: E402


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    system = f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {system}"


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


@contextmanager
def database() -> Iterator[str]:
    """A migrated PostgreSQL: BENCH_DATABASE_URL if set, else an embedded one (fsync on)."""
    given = os.environ.get("BENCH_DATABASE_URL")
    if given:
        asyncio.run(_migrate(given))
        yield given
        return
    folder = Path(tempfile.mkdtemp(prefix="estateops-bench-"))
    durable = os.environ.get("BENCH_FSYNC", "1") != "0"
    pg = EmbeddedPostgres(folder, durable=durable, database="bench")
    pg.start()
    try:
        asyncio.run(_migrate(pg.url()))
        yield pg.url()
    finally:
        pg.stop()
        shutil.rmtree(folder, ignore_errors=True)


async def _migrate(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await migrate.apply(conn)
    finally:
        await conn.close()


class ApiServer(str):
    """The base URL of a running API, with the process id of its (single) worker."""

    pid: int


@contextmanager
def api_server(db_url: str, workers: int = 1) -> Iterator[ApiServer]:
    """The API plus a baseline route (bench/bench_app.py), under uvicorn."""
    port = free_port()
    env = dict(
        os.environ,
        DATABASE_URL=db_url,
        ESTATEOPS_LOG_LEVEL="WARNING",
        ESTATEOPS_DB_POOL_MAX="20",
        PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'bench'}",
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "bench_app:create",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(base + "/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        else:
            raise RuntimeError("the API did not become ready")
        server = ApiServer(base)
        server.pid = proc.pid
        yield server
    finally:
        proc.terminate()
        proc.wait(20)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


WRK_SCRIPT = r"""
local tokens = {TOKENS}
local bearers = {BEARERS}
local counter = 0
local prefix = "PREFIX"
request = function()
  counter = counter + 1
  local id = string.format("%s-%04x-4%03x-8%03x-%012x", prefix, counter % 65536,
      math.floor(counter / 65536) % 4096, math.random(0, 4095), counter)
  -- Guard g works at site g % SITES; tokens are listed site by site.
  local g = math.random(#bearers)
  local site = (g - 1) % SITES
  local token = tokens[site * PER_SITE + math.random(PER_SITE)]
  local body = '{"id":"' .. id .. '","scanned_at":"' .. os.date("!%Y-%m-%dT%H:%M:%SZ") ..
      '","qr":"' .. token .. '","lat":31.0,"lon":121.0,"accuracy_m":5}'
  return wrk.format("POST", nil, {["Content-Type"]="application/json",
      ["Authorization"]="Bearer " .. bearers[g]}, body)
end
"""


def wrk(
    url: str,
    bearers: list[str],
    qr_tokens: list[str],
    seconds: int = 10,
    connections: int = 16,
    sites: int = 1,
) -> float:
    """Requests per second that wrk sustains (closed loop, one thread), non-2xx counted out."""
    script = WRK_SCRIPT.replace("{TOKENS}", "{" + ",".join(json.dumps(t) for t in qr_tokens) + "}")
    script = script.replace("{BEARERS}", "{" + ",".join(json.dumps(b) for b in bearers) + "}")
    script = script.replace("PREFIX", os.urandom(4).hex())
    script = script.replace("PER_SITE", str(len(qr_tokens) // sites)).replace("SITES", str(sites))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", f.name, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(f.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    if bad:
        rps *= 1 - int(bad.group(1)) / total
        print(f"  warning: {bad.group(1)} of {total} responses were not 2xx", file=sys.stderr)
    return rps


async def open_loop(
    url: str,
    make_body: Callable[[int], bytes],
    headers: Callable[[int], dict[str, str]],
    rate: float,
    seconds: float,
    max_connections: int = 64,
) -> dict[str, float]:
    """Offer `rate` requests/s on a fixed schedule; latency counts from the scheduled time.

    A lean HTTP/1.1 client on asyncio streams (keep-alive, at most `max_connections`): a
    general-purpose client such as httpx costs more CPU per request than the server under
    test and, once behind, measures its own queue instead of the server.
    """
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = f"POST {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    opened = 0
    latencies: list[float] = []
    errors = 0

    async def connection() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        nonlocal opened
        if idle.empty() and opened < max_connections:
            opened += 1
            return await asyncio.open_connection(host, port)
        return await idle.get()

    async def one(i: int, due: float) -> None:
        nonlocal errors, opened
        body = make_body(i)
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers(i).items())
        request = f"{head}{extra}Content-Length: {len(body)}\r\n\r\n".encode() + body
        reader, writer = await connection()
        try:
            writer.write(request)
            status_line, _, rest = (await reader.readuntil(b"\r\n\r\n")).partition(b"\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", rest)
            await reader.readexactly(int(length.group(1)) if length else 0)
            if int(status_line.split()[1]) >= 300:
                errors += 1
            idle.put_nowait((reader, writer))
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            errors += 1
            writer.close()
            opened -= 1
        latencies.append(time.perf_counter() - due)

    start = time.perf_counter()
    tasks = []
    for i in range(int(rate * seconds)):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    while not idle.empty():
        idle.get_nowait()[1].close()
    latencies.sort()
    q = statistics.quantiles(latencies, n=100)
    return {"offered_rps": rate, "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000, "errors": errors}


def write_section(name: str, body: str) -> None:
    """Replace (or add) the section `name` of docs/PERFORMANCE.md."""
    path = ROOT / "docs" / "PERFORMANCE.md"
    text = path.read_text() if path.exists() else "# Performance\n"
    marker_start = f"<!-- bench:{name} -->"
    marker_end = f"<!-- /bench:{name} -->"
    block = f"{marker_start}\n{body.rstrip()}\n{marker_end}"
    if marker_start in text:
        pattern = re.escape(marker_start) + r".*?" + re.escape(marker_end)
        text = re.sub(pattern, block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)

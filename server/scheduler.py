"""The background loops: generate rounds ahead, close and score finished ones.

Each task runs in its own transaction and claims its rows with FOR UPDATE SKIP
LOCKED, so any number of scheduler processes can run side by side without doing
the same work twice. Other domains add their tasks to TASKS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from server.alarms.ingest import mark_silent_devices
from server.config import Settings, load_settings
from server.db import Connection, Pool, create_pool
from server.patrol import store as patrol
from server.tickets import service as tickets

log = logging.getLogger("estateops.scheduler")

Task = Callable[[Connection, datetime], Awaitable[object]]

TASKS: dict[str, Task] = {
    "generate_rounds": patrol.generate_rounds,
    "close_due_rounds": patrol.close_due_rounds,
    "detect_ticket_breaches": tickets.detect_breaches,
    "auto_close_tickets": tickets.auto_close,
    "mark_silent_devices": mark_silent_devices,
}


async def run_once(pool: Pool, now: datetime | None = None) -> dict[str, object]:
    """One pass of every task, each in its own transaction; returns what each did."""
    results: dict[str, object] = {}
    for name, task in TASKS.items():
        async with pool.acquire() as conn, conn.transaction():
            results[name] = await task(conn, now or datetime.now(UTC))
    return results


async def run_forever(pool: Pool, stop: asyncio.Event, every_s: float = 15.0) -> None:
    """Run the tasks every `every_s` seconds until stop is set; survives database outages."""
    delay = every_s
    while not stop.is_set():
        try:
            done = await run_once(pool)
            if any(done.values()):
                log.info("scheduler pass", extra={"done": {k: str(v) for k, v in done.items()}})
            delay = every_s
        except Exception:  # a database outage must not kill the loop: back off and retry
            log.exception("scheduler pass failed; retrying")
            delay = min(delay * 2, 120.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)


def main(settings: Settings | None = None) -> int:
    """`estateops scheduler`: run the loops until SIGINT or SIGTERM."""
    from server.observability import configure_logging

    settings = settings or load_settings()
    configure_logging(settings.log_level)

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        pool = await create_pool(settings, min_size=0)
        try:
            await run_forever(pool, stop)
        finally:
            await pool.close()

    asyncio.run(_main())
    return 0

"""The background loops: generate rounds ahead, close and score finished ones, roll up
the days of scans for the patrol report.

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
from server.incidents import service as incidents
from server.notifications.delivery import delivery_task
from server.patrol import store as patrol
from server.patrol.rollup import roll_up_patrol_days
from server.tickets import service as tickets

log = logging.getLogger("estateops.scheduler")

Task = Callable[[Connection, datetime], Awaitable[object]]

TASKS: dict[str, Task] = {
    "generate_rounds": patrol.generate_rounds,
    "close_due_rounds": patrol.close_due_rounds,
    "roll_up_patrol_days": roll_up_patrol_days,
    "detect_ticket_breaches": tickets.detect_breaches,
    "auto_close_tickets": tickets.auto_close,
    "mark_silent_devices": mark_silent_devices,
    "open_offline_incidents": incidents.open_offline_incidents,
    "escalate_incident_steps": incidents.escalate_due,
}
# Tasks that need the settings (the KEK opens the webhook secrets): see tasks().
SETTINGS_TASKS: dict[str, Callable[[Settings], Task]] = {
    "deliver_notifications": delivery_task,
}


def tasks(settings: Settings | None = None) -> dict[str, Task]:
    """TASKS, and with settings the tasks that need them too."""
    if settings is None:
        return dict(TASKS)
    return {**TASKS, **{name: make(settings) for name, make in SETTINGS_TASKS.items()}}


async def run_once(
    pool: Pool, now: datetime | None = None, settings: Settings | None = None
) -> dict[str, object]:
    """One pass of every task, each in its own transaction; returns what each did.

    Without settings, the tasks that need them (notification delivery) are left out.
    """
    results: dict[str, object] = {}
    for name, task in tasks(settings).items():
        async with pool.acquire() as conn, conn.transaction():
            results[name] = await task(conn, now or datetime.now(UTC))
    return results


async def run_forever(
    pool: Pool, stop: asyncio.Event, every_s: float = 15.0, settings: Settings | None = None
) -> None:
    """Run the tasks every `every_s` seconds until stop is set; survives database outages."""
    delay = every_s
    while not stop.is_set():
        try:
            done = await run_once(pool, settings=settings)
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
            await run_forever(pool, stop, settings=settings)
        finally:
            await pool.close()

    asyncio.run(_main())
    return 0

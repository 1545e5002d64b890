"""Group commit for live scans: scans that arrive together are stored together.

Each request waits for its own answer, given once its scan is committed, exactly as if
it had been stored alone (``scans.ingest_many`` keeps the order and the flags). Nothing
waits on a timer: a group is whatever queued while the previous one was being stored,
so a lone scan is stored at once and a busy minute pays the per-statement costs
(planning, executor start, locks, commit) once per group instead of once per scan.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from prometheus_client import Histogram

from server.auth import Principal
from server.config import Settings
from server.db import Connection, Pool
from server.patrol import scans
from server.patrol.models import ScanIn

# How well grouping works: scans per group (1 when quiet; more under load).
GROUP_SIZE = Histogram(
    "estateops_scan_group_size",
    "Live scans stored together in one group",
    buckets=(1, 2, 4, 8, 16, 32, 64, 100),
)


@dataclass(slots=True)
class _Waiting:
    principal: Principal
    scan: ScanIn
    answer: asyncio.Future[scans.Outcome] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class ScanBatcher:
    """Per process; ``max_groups`` groups are stored at once, each of at most ``max_size``."""

    def __init__(self, max_size: int = 100, max_groups: int = 2) -> None:
        self.max_size = max_size
        self.max_groups = max_groups
        self._queue: list[_Waiting] = []
        self._groups = 0  # drains running; counted without an await between check and change
        self._tasks: set[asyncio.Task[None]] = set()  # referenced, so none is collected early

    async def ingest(
        self, pool: Pool, settings: Settings, principal: Principal, scan: ScanIn
    ) -> scans.Outcome:
        waiting = _Waiting(principal, scan)
        self._queue.append(waiting)
        if self._groups < self.max_groups:
            self._groups += 1
            task = asyncio.create_task(self._drain(pool, settings))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # A client that hangs up cancels only its own wait, never the group's work.
        return await waiting.answer

    async def _drain(self, pool: Pool, settings: Settings) -> None:
        try:
            while self._queue:
                group = self._take()
                try:
                    async with pool.acquire() as conn:
                        await self._store(conn, settings, group)
                        while self._queue:  # the connection is kept while work waits
                            group = self._take()
                            await self._store(conn, settings, group)
                except Exception as exc:  # the database is away: the whole group hears it
                    for w in group:
                        if not w.answer.done():
                            w.answer.set_exception(exc)
        finally:
            self._groups -= 1

    def _take(self) -> list[_Waiting]:
        group, self._queue = self._queue[: self.max_size], self._queue[self.max_size :]
        GROUP_SIZE.observe(len(group))
        return group

    @staticmethod
    async def _store(conn: Connection, settings: Settings, group: list[_Waiting]) -> None:
        outcomes = await scans.ingest_many(conn, settings, [(w.principal, w.scan) for w in group])
        for w, outcome in zip(group, outcomes, strict=True):
            if not w.answer.done():
                w.answer.set_result(outcome)

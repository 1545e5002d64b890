"""Group commit for live scans: QR scans that arrive together are stored together.

Each request waits for its own answer, given once its scan is committed, exactly as if
it had been stored alone (the flags count every scan taken before it). Nothing waits on
a timer: a group is whatever queued while the previous statement ran, so a lone scan is
stored at once and a busy minute pays the per-statement costs (planning, executor
start, locks, commit) once per group instead of once per scan.

One pipeline per process, one statement per group: the statement that stores a group
also reads the facts of the group queued behind it (store.insert_scans_then_facts), and
that group's flags add the scans those facts could not yet see. An NFC scan consumes
its tag's counter in a transaction of its own and is stored alone, outside the pipeline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client import Histogram

from server.auth import Principal
from server.checkpoints.verify import ScanRefused
from server.config import Settings
from server.db import Connection, Pool
from server.errors import Problem
from server.patrol import scans, store
from server.patrol.models import ScanIn

# How well grouping works: scans per group (1 when quiet; more under load).
GROUP_SIZE = Histogram(
    "estateops_scan_group_size",
    "Live scans stored together in one group",
    buckets=(1, 2, 4, 8, 16, 32, 64, 100),
)


@dataclass(slots=True)
class _Waiting:
    item: scans.Item
    answer: asyncio.Future[scans.Outcome] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class ScanBatcher:
    """Per process; groups of at most ``max_size`` scans, received at ``clock()``."""

    def __init__(
        self, max_size: int = 100, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.max_size = max_size
        self.clock = clock
        self._queue: list[_Waiting] = []
        self._draining = False  # checked and set without an await between
        self._tasks: set[asyncio.Task[None]] = set()  # referenced, so none is collected early

    async def ingest(
        self, pool: Pool, settings: Settings, principal: Principal, scan: ScanIn
    ) -> scans.Outcome:
        try:
            taken = scans.take(settings, principal, scan)
        except (ScanRefused, Problem) as exc:
            return exc
        if not isinstance(taken, scans.Item):
            try:
                async with pool.acquire() as conn:
                    now = self.clock()
                    return await scans.ingest_nfc(conn, settings, principal, scan, taken, None, now)
            except (ScanRefused, Problem) as exc:
                return exc
        waiting = _Waiting(taken)
        self._queue.append(waiting)
        if not self._draining:
            self._draining = True
            task = asyncio.create_task(self._drain(pool))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # A client that hangs up cancels only its own wait, never the group's work.
        return await waiting.answer

    async def _drain(self, pool: Pool) -> None:
        try:
            while self._queue:
                queued = self._take()  # not yet read
                ready: list[_Waiting] = []  # facts read, not yet stored
                try:
                    async with pool.acquire() as conn:
                        facts: list[store.ScanFact | None] = []
                        unseen: list[tuple[scans.Item, int | None]] = []  # stored after `facts`
                        while queued or ready:
                            if not ready:
                                ready, queued, unseen = queued, [], []
                                facts = await store.scan_facts(conn, _keys(ready))
                            else:
                                facts, unseen = await self._store(
                                    conn, ready, facts, unseen, queued
                                )
                                ready, queued = queued, []
                            queued = self._take()
                except Exception as exc:  # the database is away: the scans in hand hear it
                    for w in ready + queued:
                        if not w.answer.done():
                            w.answer.set_exception(exc)
        finally:
            self._draining = False

    async def _store(
        self,
        conn: Connection,
        ready: list[_Waiting],
        facts: list[store.ScanFact | None],
        unseen: list[tuple[scans.Item, int | None]],
        queued: list[_Waiting],
    ) -> tuple[list[store.ScanFact | None], list[tuple[scans.Item, int | None]]]:
        """Store `ready` and answer it; the facts of `queued`, read in the same statement,
        and the scans they cannot see."""
        now = self.clock()
        items = [w.item for w in ready]
        group = scans.decide(items, facts, unseen, None, now)
        stored, next_facts = await store.insert_scans_then_facts(
            conn, group.rows, now, _keys(queued)
        )
        for w, outcome in zip(ready, await scans.answers(conn, items, group, stored), strict=True):
            if not w.answer.done():
                w.answer.set_result(outcome)
        return next_facts, group.new_scans

    def _take(self) -> list[_Waiting]:
        group, self._queue = self._queue[: self.max_size], self._queue[self.max_size :]
        if group:
            GROUP_SIZE.observe(len(group))
        return group


def _keys(group: list[_Waiting]) -> list[store.ScanKey]:
    """What the facts of these waiting scans are looked up by."""
    return scans.fact_keys([w.item for w in group])

"""One LISTEN connection per API process, fanned out to the SSE clients of that process.

Any transaction anywhere (another API worker, the scheduler, the MQTT bridge) publishes
with ``SELECT pg_notify('estateops_live', json)``; PostgreSQL delivers it on commit, so
a client never sees something that was rolled back, and every worker sees everything.
The listener reconnects with backoff when the database goes away. (Litestar's asyncpg
Channels backend does not reconnect, and needs the database at start-up.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import msgspec

log = logging.getLogger("estateops.live")

CHANNEL = "estateops_live"


async def publish(conn: Any, event: dict[str, Any]) -> None:
    """Queue an event for the live feed; it leaves when the caller's transaction commits."""
    await publish_many(conn, [event])


async def publish_many(conn: Any, events: Sequence[dict[str, Any]]) -> None:
    """Queue several events in one statement; they leave when the transaction commits."""
    if events:
        await conn.execute(
            "SELECT pg_notify($1, e) FROM unnest($2::text[]) AS e",
            CHANNEL,
            [msgspec.json.encode(e).decode() for e in events],
        )


class LiveHub:
    """Fan-out of NOTIFY payloads to in-process subscribers, each with a bounded queue."""

    def __init__(self, dsn: str, queue_size: int = 256) -> None:
        self._dsn = dsn
        self._queue_size = queue_size
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.connected = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="live-hub")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def _deliver(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        try:
            event = msgspec.json.decode(str(payload))
        except msgspec.DecodeError:
            log.warning("undecodable live payload dropped")
            return
        if not isinstance(event, dict):
            return
        for queue in list(self._subscribers):
            if queue.full():  # a slow client loses its oldest events, never blocks the others
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(event)

    async def _listen(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            conn: asyncpg.Connection[Any] | None = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=5)
                await conn.add_listener(CHANNEL, self._deliver)
                self.connected.set()
                delay = 0.5
                while not self._stop.is_set() and not conn.is_closed():
                    # A cheap round trip notices a dead connection that LISTEN alone would not.
                    await asyncio.sleep(2)
                    await conn.execute("SELECT 1")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("live feed listener lost the database: %s; retrying", exc)
            finally:
                self.connected.clear()
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=delay)
            delay = min(delay * 2, 10)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self._queue_size)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)


def lifespan(dsn: str | None) -> Any:
    """An app lifespan that runs this process's hub (app.state.live)."""

    @contextlib.asynccontextmanager
    async def _lifespan(app: Any) -> AsyncIterator[None]:
        hub = LiveHub(dsn or "")
        app.state.live = hub
        if dsn:
            await hub.start()
        try:
            yield
        finally:
            await hub.stop()

    return _lifespan

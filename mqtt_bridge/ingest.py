"""The bridge's consumer: batches of MQTT messages into PostgreSQL, then acks.

One asyncio task takes what paho's thread has received (up to `batch_max` messages),
parses it, stores it with server.alarms.ingest.ingest_batch in ONE transaction, and
after the commit acks the batch in arrival order. While a batch is in the database the
next one accumulates, so batches grow with the load (group commit): one message per
transaction when it is quiet, a thousand under a backlog. Up to `depth` batches are in
the database at once (each on its own connection: the next is parsed and sent while the
previous commits); they are acked strictly in the order they arrived. Two batches that
touch one device serialise on its row lock, and (boot, seq) orders what they say.

Failures:
- a message the parsers refuse is stored as a dead letter in the same transaction and
  acked like the others;
- the database unreachable (or a deadlock, a restart...): the batch is retried with
  backoff and nothing is acked meanwhile; the broker holds the rest (its in-flight
  window is full) and redelivers everything unacked if the bridge dies;
- the database refusing one message's content (SQLSTATE classes 22, 23, 54): the batch
  is retried one message at a time and that message becomes a `not_storable` dead letter.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from asyncio import FIRST_COMPLETED
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Final

import asyncpg

from mqtt_bridge.client import BrokerLink, BrokerOptions, Received, probe_protocol
from mqtt_bridge.errors import BadMessage
from mqtt_bridge.payloads import parse_message
from mqtt_bridge.topics import Topic, parse_topic
from server.alarms.ingest import Inbound, IngestResult, ingest_batch
from server.config import Settings
from server.db import Connection, Pool, create_pool

log = logging.getLogger("estateops.bridge")

DEFAULT_BATCH_MAX: Final = 1000
STATS_EVERY_S: Final = 30.0

# Worth retrying the whole batch: the database is away, restarting, or busy.
_TRANSIENT: Final = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # A connection the server cut mid-commit can be left in an impossible protocol state
    # (MagicStack/asyncpg#784): it is discarded like a closed one, and the batch retried.
    asyncpg.InternalClientError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.TransactionRollbackError,  # deadlock, serialization failure
)
# The database refuses the content of a message: that message, not the batch, is at fault.
_CONTENT: Final = (
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.IntegrityConstraintViolationError,
    asyncpg.exceptions.ProgramLimitExceededError,
)


class BridgeError(RuntimeError):
    """The bridge cannot go on (e.g. the broker refused its subscriptions)."""


@functools.lru_cache(maxsize=65536)
def _topic(topic: str, prefix: str) -> Topic:
    # A device publishes on the same few topics all its life; parse each once.
    return parse_topic(topic, prefix=prefix)


def parse(message: Received, prefix: str) -> Inbound:
    """A received message as the ingest takes it: parsed, or refused with the reason."""
    received_at = datetime.fromtimestamp(message.received_at, UTC)
    try:
        topic = _topic(message.topic, prefix)
    except BadMessage as exc:
        return Inbound(message.topic, message.payload, received_at, error=exc)
    try:
        body = parse_message(topic, message.payload, now=received_at)
    except BadMessage as exc:
        return Inbound(
            message.topic, message.payload, received_at, parsed=topic, error=exc,
            retained=message.retained,
        )  # fmt: skip
    return Inbound(
        message.topic, message.payload, received_at, parsed=topic, body=body,
        retained=message.retained,
    )  # fmt: skip


class Bridge:
    """MQTT in, PostgreSQL out, acks after commit. `run()` until `stop` is set."""

    def __init__(
        self,
        settings: Settings,
        *,
        pool: Pool | None = None,
        batch_max: int = DEFAULT_BATCH_MAX,
        depth: int = 2,
    ) -> None:
        if not settings.mqtt.url:
            raise BridgeError("MQTT_URL is not set (e.g. mqtt://127.0.0.1:1883)")
        self.settings = settings
        self.options = BrokerOptions.from_url(settings.mqtt.url)
        self.batch_max = batch_max
        self.depth = depth
        self._pool = pool
        self.stats: Counter[str] = Counter()
        self.link: BrokerLink | None = None

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        pool = self._pool or await create_pool(
            replace(
                self.settings, database=replace(self.settings.database, pool_max=self.depth + 1)
            ),
            min_size=0,  # start even while the database is down; connect on first use
        )

        def wake_up() -> None:  # from paho's thread
            loop.call_soon_threadsafe(wake.set)

        options = await self._decide_protocol(stop)
        if options is None:  # stopped before the broker could be reached
            if self._pool is None:
                await pool.close()
            return
        link = self.link = BrokerLink(
            options, self.settings.mqtt.client_id, self.settings.mqtt.shared_group, wake_up
        )

        async def stop_watch() -> None:
            await stop.wait()
            wake.set()

        watcher = asyncio.create_task(stop_watch())
        link.start()
        log.info(
            "bridge started: broker %s:%s, client id %s, %s",
            self.options.host,
            self.options.port,
            self.settings.mqtt.client_id,
            f"shared group {self.settings.mqtt.shared_group}"
            if self.settings.mqtt.shared_group
            else "no shared group",
        )
        last_report = time.monotonic()
        # Batches being stored, oldest first: the next one is parsed and sent while the
        # previous one is in the database, and they are acked in this order.
        in_flight: deque[tuple[list[Received], asyncio.Task[list[IngestResult] | None]]] = deque()
        try:
            while True:
                if link.fatal:
                    raise BridgeError(link.fatal)
                link.rearm()
                while not stop.is_set() and len(in_flight) < self.depth and link.pending():
                    batch = link.take(self.batch_max)
                    items = [parse(m, options.prefix) for m in batch]
                    in_flight.append((batch, asyncio.create_task(self._store(pool, items, stop))))
                if not in_flight:
                    if stop.is_set():
                        break
                    await wake.wait()
                    wake.clear()
                    continue
                batch, storing = in_flight[0]
                if not storing.done():
                    if len(in_flight) >= self.depth or stop.is_set():
                        await asyncio.wait({storing})
                    else:  # or until more messages arrive to start the next batch
                        waiter = asyncio.ensure_future(wake.wait())
                        await asyncio.wait({storing, waiter}, return_when=FIRST_COMPLETED)
                        if waiter.done():
                            wake.clear()
                        else:
                            waiter.cancel()
                        if not storing.done():
                            continue
                in_flight.popleft()
                results = storing.result()
                if results is None:  # stopping while the database is away: nothing acked
                    break
                link.ack(batch)
                self.stats["batches"] += 1
                self.stats.update(r.outcome for r in results)
                if time.monotonic() - last_report > STATS_EVERY_S:
                    last_report = time.monotonic()
                    self._report("ingest so far")
        finally:
            watcher.cancel()
            for _, storing in in_flight:  # not acked: the broker sends them again
                storing.cancel()
            await asyncio.gather(*(t for _, t in in_flight), return_exceptions=True)
            await asyncio.to_thread(link.stop)
            if self._pool is None:
                await pool.close()
            self._report("bridge stopped")

    async def _decide_protocol(self, stop: asyncio.Event) -> BrokerOptions | None:
        """`protocol=auto`: ask the broker whether it speaks MQTT 5 (waiting for it)."""
        if self.options.protocol != "auto":
            return self.options
        delay = 1.0
        while not stop.is_set():
            v5 = await asyncio.to_thread(probe_protocol, self.options, self.settings.mqtt.client_id)
            if v5 is not None:
                return replace(self.options, protocol="5" if v5 else "3.1.1")
            log.warning(
                "cannot reach the MQTT broker at %s:%s; retrying in %.0fs",
                self.options.host,
                self.options.port,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            delay = min(delay * 2, 30.0)
        return None

    def _report(self, what: str) -> None:
        log.info(
            "%s: %s", what, dict(sorted(self.stats.items())), extra={"ingest": dict(self.stats)}
        )

    async def _store(
        self, pool: Pool, items: Sequence[Inbound], stop: asyncio.Event
    ) -> list[IngestResult] | None:
        """Store the batch, retrying while the database is away; None if stopped first."""
        delay = 0.2
        while True:
            try:
                return await self._store_once(pool, items)
            except _TRANSIENT as exc:
                log.warning(
                    "cannot store %d message(s), retrying in %.1fs: %s: %s",
                    len(items),
                    delay,
                    type(exc).__name__,
                    exc,
                )
            except asyncpg.PostgresError as exc:
                # A bug or a schema out of date: retrying is all we can do without losing data.
                log.error("storing failed, retrying in %.1fs: %r", delay, exc)
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay * random.uniform(0.8, 1.2))  # noqa: S311
                return None
            except TimeoutError:
                delay = min(delay * 2, 30.0)

    async def _store_once(self, pool: Pool, items: Sequence[Inbound]) -> list[IngestResult]:
        async with pool.acquire() as conn:
            try:
                async with conn.transaction():
                    return await ingest_batch(conn, items)
            except _CONTENT as exc:
                if len(items) == 1:
                    return [await _refused_by_database(conn, items[0], exc)]
                log.warning("the database refused a message of the batch (%r); isolating it", exc)
                results: list[IngestResult] = []
                for item in items:
                    try:
                        async with conn.transaction():
                            results += await ingest_batch(conn, [item])
                    except _CONTENT as one:
                        results.append(await _refused_by_database(conn, item, one))
                return results


async def _refused_by_database(conn: Connection, item: Inbound, exc: Exception) -> IngestResult:
    detail = f"{type(exc).__name__}: {exc}"
    async with conn.transaction():
        (result,) = await ingest_batch(
            conn,
            [
                Inbound(
                    item.topic,
                    item.raw,
                    item.received_at,
                    parsed=item.parsed,
                    error=BadMessage("not_storable", detail[:200]),
                )
            ],
        )
    return result


async def run_bridge(settings: Settings, stop: asyncio.Event, *, pool: Pool | None = None) -> None:
    """Run a bridge in this event loop until `stop` is set (for `estateops up` in-process)."""
    await Bridge(settings, pool=pool).run(stop)

"""Device messages into the inbox, device state, alarms and dead letters.

The bridge parses what arrives over MQTT and hands it here, a batch at a time, inside
the transaction whose commit it waits for before acknowledging the messages. Everything
a batch does costs a handful of set-based statements, whatever its size:

1. lock the batch's devices (by site code and device id, in a fixed order);
2. insert its events into the inbox, ON CONFLICT DO NOTHING: what comes back is new,
   the rest are duplicates and change nothing else;
3. apply events, statuses and telemetry to the devices and alarms in arrival order
   (in Python, on the locked rows);
4. write devices, state history, alarms and dead letters back, and tell the incidents
   domain what happened to which alarm (server.incidents.hooks).

The device row lock serialises everything about one device across bridges, so the rules
below read and write without races; `(boot, seq)` orders what a device said even when it
arrives out of order (redelivery, several bridges on a shared subscription).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeAlias, cast
from uuid import UUID

import asyncpg
import msgspec

from mqtt_bridge.errors import BadMessage, ReasonCode
from mqtt_bridge.payloads import (
    DeviceEvent,
    DeviceStatus,
    EventState,
    Severity,
    Telemetry,
)
from mqtt_bridge.topics import Topic
from server.alarms import rules
from server.alarms import store as alarm_store
from server.alarms.models import AlarmChange, AlarmChangeKind
from server.alarms.rules import OFFLINE_ALARM, Condition, Effect, Key
from server.db import Connection
from server.devices import store as device_store
from server.devices.kinds import DeviceKind
from server.incidents.hooks import on_alarm_changes

__all__ = [
    "MAX_DEAD_LETTER_BYTES",
    "Inbound",
    "IngestResult",
    "Outcome",
    "ingest_batch",
    "ingest_event",
    "mark_silent_devices",
]

MAX_DEAD_LETTER_BYTES: Final = 64 * 1024
"""Dead letters keep at most this much of a payload (and the size that arrived)."""

Outcome: TypeAlias = Literal[
    "stored", "duplicate", "dead_letter", "status", "status_ignored", "telemetry"
]
Body: TypeAlias = DeviceEvent | DeviceStatus | Telemetry


class Inbound(msgspec.Struct, frozen=True):
    """One MQTT message as the bridge received it: parsed (`parsed` and `body`), or
    refused by the parsers (`error`, and `parsed` when at least the topic was good)."""

    topic: str
    raw: bytes
    received_at: datetime
    parsed: Topic | None = None
    body: Body | None = None
    error: Any = None  # a BadMessage (an exception: not a msgspec type)
    retained: bool = False


class IngestResult(msgspec.Struct, frozen=True, omit_defaults=True):
    """What became of one message. `effect` and `alarm_id` for a stored event."""

    outcome: Outcome
    effect: Effect | None = None
    reason: ReasonCode | None = None
    alarm_id: int | None = None


# --- in-memory state of a batch --------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Device:
    site_id: int
    id: str
    code: str
    kind: DeviceKind
    zone_id: int | None
    gateway_id: str | None
    state: str
    state_reason: str | None
    state_changed_at: datetime | None
    last_seen_at: datetime | None
    last_key: Key | None
    status_key: Key | None
    conditions: dict[str, Condition]
    dirty: bool = False

    def seen(self, at: datetime, key: Key | None = None) -> None:
        if self.last_seen_at is None or at > self.last_seen_at:
            self.last_seen_at = at
        if key is not None and (self.last_key is None or key > self.last_key):
            self.last_key = key
        self.dirty = True


@dataclass(slots=True, eq=False)
class _Alarm:
    """An alarm touched by the batch: `id` None until inserted; `count` is the increment
    for an alarm that existed before the batch and the total for a new one."""

    id: int | None
    device: _Device
    type: str
    severity: Severity
    count: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None
    cleared_at: datetime | None = None
    touched: bool = False


_conditions = msgspec.json.Decoder(dict[str, tuple[EventState, int, int]])


def _key(boot: int | None, seq: int | None) -> Key | None:
    return (boot, seq) if boot is not None and seq is not None else None


def _device(row: asyncpg.Record) -> _Device:
    raw = _conditions.decode(row["conditions"])
    return _Device(
        site_id=row["site_id"],
        id=row["id"],
        code=row["code"],
        kind=row["kind"],
        zone_id=row["zone_id"],
        gateway_id=row["gateway_id"],
        state=row["state"],
        state_reason=row["state_reason"],
        state_changed_at=row["state_changed_at"],
        last_seen_at=row["last_seen_at"],
        last_key=_key(row["last_boot"], row["last_seq"]),
        status_key=_key(row["status_boot"], row["status_seq"]),
        conditions={t: (state, (boot, seq)) for t, (state, boot, seq) in raw.items()},
    )


def _clean(text: str, limit: int = 2000) -> str:
    # PostgreSQL text cannot hold NUL; details and topics are for people anyway.
    return text.replace("\x00", "\\x00")[:limit]


class _Batch:
    """The locked devices of a batch, their open alarms, and what the batch changed."""

    def __init__(self, devices: Iterable[_Device]) -> None:
        self.devices: dict[tuple[int, str], _Device] = {(d.site_id, d.id): d for d in devices}
        self.by_code: dict[tuple[str, str], _Device] = {
            (d.code, d.id): d for d in self.devices.values()
        }
        self.open: dict[tuple[int, str, str], _Alarm] = {}
        self.touched: list[_Alarm] = []
        self.history: list[device_store.StateChangeRow] = []
        self.offline_gateways: list[tuple[int, str, datetime]] = []
        self.dead: list[device_store.DeadLetterRow] = []

    @classmethod
    async def load(cls, conn: Connection, rows: Sequence[asyncpg.Record]) -> _Batch:
        batch = cls(_device(r) for r in rows)
        if batch.devices:
            sites, ids = zip(*batch.devices, strict=True)
            for a in await alarm_store.open_alarms(conn, sites, ids):
                device = batch.devices[(a["site_id"], a["device_id"])]
                batch.open[(a["site_id"], a["device_id"], a["type"])] = _Alarm(
                    id=a["id"], device=device, type=a["type"], severity=a["severity"]
                )
        return batch

    # -- alarms

    def _touch(self, alarm: _Alarm) -> _Alarm:
        if not alarm.touched:
            alarm.touched = True
            self.touched.append(alarm)
        return alarm

    def raise_alarm(self, d: _Device, alarm_type: str, severity: Severity, at: datetime) -> _Alarm:
        """Open an alarm, or count a repeat of the open one."""
        alarm = self.open.get((d.site_id, d.id, alarm_type))
        if alarm is None:
            alarm = _Alarm(None, d, alarm_type, severity, count=1, first_at=at, last_at=at)
            self.open[(d.site_id, d.id, alarm_type)] = alarm
            return self._touch(alarm)
        alarm.count += 1
        alarm.last_at = at if alarm.last_at is None else max(alarm.last_at, at)
        alarm.severity = rules.more_severe(alarm.severity, severity)
        return self._touch(alarm)

    def clear_alarm(self, d: _Device, alarm_type: str, at: datetime) -> _Alarm | None:
        alarm = self.open.pop((d.site_id, d.id, alarm_type), None)
        if alarm is not None:
            alarm.cleared_at = at
            self._touch(alarm)
        return alarm

    # -- device state

    def set_state(
        self, d: _Device, state: str, reason: str, at: datetime, key: Key | None = None
    ) -> None:
        if d.state == state:
            return
        d.state, d.state_reason, d.state_changed_at, d.dirty = state, reason, at, True
        boot, seq = key if key is not None else (None, None)
        self.history.append((d.site_id, d.id, state, reason, boot, seq, at))
        if state == "offline":
            self.raise_alarm(d, OFFLINE_ALARM, rules.default_severity(OFFLINE_ALARM), at)
            if d.kind == "gateway":
                # Its children are unheard, not down: `unknown`, and no alarm each.
                self.offline_gateways.append((d.site_id, d.id, at))
                for child in self.devices.values():
                    if (
                        child.site_id == d.site_id
                        and child.gateway_id == d.id
                        and child.state == "online"
                    ):
                        self.set_state(child, "unknown", "gateway_offline", at)
        elif state == "online":
            self.clear_alarm(d, OFFLINE_ALARM, at)

    # -- messages

    def apply_event(
        self, d: _Device, event: DeviceEvent, received_at: datetime
    ) -> tuple[Effect, _Alarm | None]:
        key = (event.boot, event.seq)
        d.seen(received_at, key)
        if rules.event_revives(d.state, d.state_reason):
            self.set_state(d, "online", "event", received_at, key)
        condition = d.conditions.get(event.type)
        alarm = self.open.get((d.site_id, d.id, event.type))
        effect = rules.event_effect(event.state, key, condition, alarm is not None)
        if rules.advances(key, condition):
            d.conditions[event.type] = (event.state, key)
        severity = event.severity or rules.default_severity(event.type)
        if effect in ("open", "repeat"):
            return effect, self.raise_alarm(d, event.type, severity, event.ts)
        if effect == "clear":
            return effect, self.clear_alarm(d, event.type, event.ts)
        return effect, None

    def apply_status(
        self, d: _Device, status: DeviceStatus, received_at: datetime, retained: bool
    ) -> Outcome:
        key = _key(status.boot, status.seq)
        if status.state == "online" and not retained:
            d.seen(received_at, key)
        if not rules.status_applies(status.state, key, d.state, d.status_key):
            return "status_ignored"
        if key is not None:
            d.status_key = key
            d.dirty = True
        # A will is published by the broker and its ts (if any) is when it was set, so
        # the server's clock says when the device went away or came back.
        self.set_state(d, status.state, "status", received_at, key)
        return "status"

    def apply_telemetry(self, d: _Device, received_at: datetime) -> None:
        d.seen(received_at)
        if rules.event_revives(d.state, d.state_reason):
            self.set_state(d, "online", "telemetry", received_at)

    # -- writing back

    async def write(self, conn: Connection) -> list[AlarmChange]:
        await device_store.update_devices(
            conn,
            [
                (
                    d.site_id,
                    d.id,
                    d.last_seen_at,
                    d.last_key[0] if d.last_key else None,
                    d.last_key[1] if d.last_key else None,
                    d.state,
                    d.state_reason,
                    d.state_changed_at,
                    d.status_key[0] if d.status_key else None,
                    d.status_key[1] if d.status_key else None,
                    msgspec.json.encode(
                        {t: [s, k[0], k[1]] for t, (s, k) in d.conditions.items()}
                    ).decode(),
                )
                for d in self.devices.values()
                if d.dirty
            ],
        )
        if self.offline_gateways:
            children = await device_store.mark_children_unknown(
                conn, self.offline_gateways, list(self.devices)
            )
            self.history += [
                (site, dev, "unknown", "gateway_offline", None, None, at)
                for site, dev, at in children
            ]
        await device_store.record_state_changes(conn, self.history)
        changes = await self._write_alarms(conn)
        await device_store.insert_dead_letters(conn, self.dead)
        if changes:
            await on_alarm_changes(conn, changes)
        return changes

    async def _write_alarms(self, conn: Connection) -> list[AlarmChange]:
        existing = [a for a in self.touched if a.id is not None]
        new = [a for a in self.touched if a.id is None]
        await alarm_store.update_open_alarms(
            conn,
            [(cast("int", a.id), a.count, a.last_at, a.severity, a.cleared_at) for a in existing],
        )
        ids = await alarm_store.insert_alarms(
            conn,
            [
                (
                    a.device.site_id,
                    a.device.id,
                    a.device.zone_id,
                    a.type,
                    a.severity,
                    "active_unack" if a.cleared_at is None else "cleared_unack",
                    a.count,
                    cast("datetime", a.first_at),
                    cast("datetime", a.last_at),
                    a.cleared_at,
                )
                for a in new
            ],
        )
        created = {id(a) for a in new}
        for alarm, alarm_id in zip(new, ids, strict=True):
            alarm.id = alarm_id
        changes: list[AlarmChange] = []
        for a in self.touched:
            events: list[tuple[AlarmChangeKind, datetime | None]] = []
            if id(a) in created:
                events.append(("opened", a.first_at))
            elif a.count:
                events.append(("repeated", a.last_at))
            if a.cleared_at is not None:
                events.append(("cleared", a.cleared_at))
            changes += [
                AlarmChange(
                    alarm_id=cast("int", a.id),
                    site_id=a.device.site_id,
                    device_id=a.device.id,
                    device_kind=a.device.kind,
                    zone_id=a.device.zone_id,
                    type=a.type,
                    severity=a.severity,
                    change=kind,
                    at=cast("datetime", at),
                )
                for kind, at in events
            ]
        return changes


# --- the entry points ----------------------------------------------------------------


def _dead_letter(
    item: Inbound, site_id: int | None, reason: ReasonCode, detail: str
) -> device_store.DeadLetterRow:
    return (
        site_id,
        _clean(item.topic, 1000),
        item.raw[:MAX_DEAD_LETTER_BYTES],
        len(item.raw),
        reason,
        _clean(detail),
        item.received_at,
    )


async def ingest_batch(conn: Connection, items: Sequence[Inbound]) -> list[IngestResult]:
    """Store a batch of messages in the caller's transaction; one result per item, in order.

    Idempotent per event (`event_id`): ingesting the same message again, in this batch or
    a later one, stores nothing and changes nothing.
    """
    results: list[IngestResult | None] = [None] * len(items)
    wanted = sorted(
        {
            (i.parsed.site_code, i.parsed.device_id)
            for i in items
            if i.parsed is not None and i.body is not None and i.error is None
        }
    )
    rows = (
        await device_store.lock_devices_by_code(
            conn, [c for c, _ in wanted], [d for _, d in wanted]
        )
        if wanted
        else []
    )
    batch = await _Batch.load(conn, rows)
    known_sites = {d.code: d.site_id for d in batch.devices.values()}
    unknown_codes = {
        i.parsed.site_code
        for i in items
        if i.parsed is not None and i.parsed.site_code not in known_sites
    }
    if unknown_codes:
        known_sites.update(await device_store.site_ids_by_code(conn, sorted(unknown_codes)))

    def refuse(index: int, site_id: int | None, reason: ReasonCode, detail: str) -> None:
        batch.dead.append(_dead_letter(items[index], site_id, reason, detail))
        results[index] = IngestResult("dead_letter", reason=reason)

    plan: list[tuple[int, _Device, Body]] = []
    inbox: list[device_store.InboxRow] = []
    first_of: set[tuple[int, str, UUID]] = set()
    for index, item in enumerate(items):
        topic, body = item.parsed, item.body
        site_id = known_sites.get(topic.site_code) if topic is not None else None
        if item.error is not None or topic is None or body is None:
            error = item.error or BadMessage("bad_topic", "the topic could not be parsed")
            refuse(index, site_id, error.reason, error.detail)
            continue
        device = batch.by_code.get((topic.site_code, topic.device_id))
        if device is None:
            if site_id is None:
                refuse(index, None, "unknown_site", f"no site with code {topic.site_code!r}")
            else:
                refuse(index, site_id, "unknown_device", f"no device {topic.device_id!r}")
            continue
        expected_gateway = device.gateway_id or device.id
        if topic.gateway_id != expected_gateway:
            refuse(
                index,
                site_id,
                "gateway_mismatch",
                f"device {device.id!r} is registered behind {expected_gateway!r}, "
                f"not {topic.gateway_id!r}",
            )
            continue
        if isinstance(body, DeviceEvent):
            if b"\\u0000" in item.raw:
                refuse(index, site_id, "not_storable", "\\u0000 cannot be stored in PostgreSQL")
                continue
            key = (device.site_id, device.id, body.event_id)
            if key in first_of:
                results[index] = IngestResult("duplicate")
                continue
            first_of.add(key)
            inbox.append(
                device_store.InboxRow(
                    index,
                    device.site_id,
                    device.id,
                    body.event_id,
                    body.boot,
                    body.seq,
                    body.ts,
                    body.type,
                    body.state,
                    msgspec.Raw(item.raw),  # valid JSON: the parser just read all of it
                    item.received_at,
                )
            )
        plan.append((index, device, body))

    duplicates = await device_store.insert_events(conn, inbox)
    touched: list[tuple[int, Effect, _Alarm | None]] = []
    for index, device, body in plan:
        item = items[index]
        if isinstance(body, DeviceEvent):
            if index in duplicates:
                results[index] = IngestResult("duplicate")
                continue
            effect, alarm = batch.apply_event(device, body, item.received_at)
            touched.append((index, effect, alarm))
        elif isinstance(body, DeviceStatus):
            outcome = batch.apply_status(device, body, item.received_at, item.retained)
            results[index] = IngestResult(outcome)
        else:
            batch.apply_telemetry(device, item.received_at)
            results[index] = IngestResult("telemetry")

    await batch.write(conn)
    for index, effect, alarm in touched:
        results[index] = IngestResult(
            "stored", effect=effect, alarm_id=alarm.id if alarm is not None else None
        )
    return [cast("IngestResult", r) for r in results]


async def ingest_event(
    conn: Connection,
    topic: Topic,
    event: DeviceEvent,
    *,
    raw: bytes | None = None,
    received_at: datetime | None = None,
) -> IngestResult:
    """Store one parsed event in the caller's transaction (see ingest_batch)."""
    item = Inbound(
        topic=topic.path(),
        raw=raw if raw is not None else msgspec.json.encode(event),
        received_at=received_at or datetime.now(UTC),
        parsed=topic,
        body=event,
    )
    (result,) = await ingest_batch(conn, [item])
    return result


async def mark_silent_devices(
    conn: Connection, now: datetime, limit: int = 500
) -> list[AlarmChange]:
    """Devices silent past their inactivity timeout go offline (with an alarm), unless
    their gateway is itself not online; a silent gateway makes its children `unknown`.

    For a scheduler loop: claims with SKIP LOCKED, at most `limit` devices per call.
    """
    keys = await device_store.silent_devices(conn, now, limit)
    if not keys:
        return []
    rows = await device_store.lock_devices(conn, [s for s, _ in keys], [d for _, d in keys])
    batch = await _Batch.load(conn, rows)
    # Gateways first: a silent gateway's silent children become unknown, not offline.
    gateways = {(d.site_id, d.id) for d in batch.devices.values() if d.kind == "gateway"}
    for device in sorted(batch.devices.values(), key=lambda d: d.kind != "gateway"):
        if device.gateway_id is None or (device.site_id, device.gateway_id) not in gateways:
            batch.set_state(device, "offline", "inactivity", now)
    return await batch.write(conn)

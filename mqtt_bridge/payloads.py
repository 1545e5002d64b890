"""Device payloads on the `evt`, `status` and `tele` topics, and their parsers.

Pure functions: bytes and a Topic in, a typed value out, or BadMessage with a stable
reason code for the dead-letter table. The event payload is a contract with device
makers (see DESIGN.md and the README); unknown fields are ignored so devices can evolve.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Final, Literal, TypeAlias
from uuid import UUID

import msgspec

from mqtt_bridge.errors import BadMessage, ReasonCode
from mqtt_bridge.topics import Topic

__all__ = [
    "EVENT_VERSION",
    "MAX_EVENT_BYTES",
    "MAX_FUTURE",
    "MAX_STATUS_BYTES",
    "MAX_TELEMETRY_BYTES",
    "BadMessage",
    "DeviceEvent",
    "DeviceState",
    "DeviceStatus",
    "EventState",
    "ReasonCode",
    "Severity",
    "Telemetry",
    "parse_event",
    "parse_message",
    "parse_status",
    "parse_telemetry",
]

EVENT_VERSION: Final = 1
MAX_EVENT_BYTES: Final = 16384
MAX_STATUS_BYTES: Final = 1024
MAX_TELEMETRY_BYTES: Final = 16384
MAX_FUTURE: Final = timedelta(minutes=5)

Severity: TypeAlias = Literal["critical", "major", "minor", "warning", "info"]
EventState: TypeAlias = Literal["active", "clear"]
DeviceState: TypeAlias = Literal["online", "offline"]

# Counters are stored in PostgreSQL bigint columns.
_Counter = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
_AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
_EVENT_TYPE_PATTERN: Final = "^[a-z][a-z0-9_]{0,63}$"
# msgspec applies patterns with re.search, where `$` also matches before a final "\n".
_EVENT_TYPE: Final = re.compile(_EVENT_TYPE_PATTERN[1:-1])
_READING_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_DETAIL_LIMIT: Final = 200


class DeviceEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An `evt` payload. `event_id` is the idempotency key; `boot` and `seq` order events."""

    v: int
    event_id: UUID
    device_id: str
    boot: _Counter
    seq: _Counter
    ts: _AwareDatetime
    type: Annotated[str, msgspec.Meta(pattern=_EVENT_TYPE_PATTERN)]
    state: EventState
    severity: Severity | None = None
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    battery: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None
    rssi: Annotated[int, msgspec.Meta(ge=-255, le=255)] | None = None


class DeviceStatus(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A `status` payload: `online`/`offline`, as a plain string or a JSON object.

    `boot` and `seq` (when the device sends them) let a stale Last Will be ignored.
    """

    state: DeviceState
    boot: _Counter | None = None
    seq: _Counter | None = None
    ts: _AwareDatetime | None = None


class Telemetry(msgspec.Struct, frozen=True, kw_only=True):
    """A `tele` payload: numeric readings by name, with the device's time if it sent one."""

    readings: dict[str, float]
    ts: datetime | None = None


class _Versioned(msgspec.Struct):
    v: Any = None


def _short(text: str) -> str:
    return text if len(text) <= _DETAIL_LIMIT else text[:_DETAIL_LIMIT] + "..."


def _bad(reason: ReasonCode, detail: str) -> BadMessage:
    return BadMessage(reason, _short(detail))


def _check_call(topic: Topic, kind: str, now: datetime) -> None:
    # Caller mistakes, not bad device input: these are not dead letters.
    if topic.kind != kind:
        raise ValueError(f"a {topic.kind!r} topic passed to the {kind!r} parser")
    if now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")


def _check_size(raw: bytes, max_bytes: int) -> None:
    if not raw:
        raise BadMessage("empty_payload", "payload is empty")
    if len(raw) > max_bytes:
        raise BadMessage("too_large", f"payload is {len(raw)} bytes, the limit is {max_bytes}")


def _decode(raw: bytes, type_: Any) -> Any:
    """Decode JSON into `type_`, mapping every decoding failure to BadMessage."""
    try:
        return msgspec.json.decode(raw, type=type_)
    except msgspec.ValidationError as exc:
        raise _bad("bad_schema", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise _bad("bad_json", str(exc)) from None
    except UnicodeDecodeError:
        raise BadMessage("bad_json", "payload is not valid UTF-8") from None
    except RecursionError:
        raise BadMessage("bad_json", "payload is nested too deeply") from None


def _check_future(ts: datetime | None, now: datetime, max_future: timedelta) -> None:
    if ts is None:
        return
    try:
        limit = now + max_future
    except OverflowError:
        return
    if ts > limit:
        raise BadMessage(
            "future_timestamp",
            f"ts {ts.isoformat()} is more than {max_future} ahead of "
            f"the server clock ({now.isoformat()})",
        )


def _unsupported_version(raw: bytes) -> BadMessage | None:
    """After a schema error: was it a payload of another version rather than a bad one?"""
    try:
        v = msgspec.json.decode(raw, type=_Versioned).v
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    if type(v) is int and v != EVENT_VERSION:
        return _bad("unsupported_version", f"payload version v={v} is not supported")
    return None


def parse_event(
    topic: Topic,
    raw: bytes,
    *,
    now: datetime,
    max_bytes: int = MAX_EVENT_BYTES,
    max_future: timedelta = MAX_FUTURE,
) -> DeviceEvent:
    """Parse and check an `evt` payload; raise BadMessage on anything that breaks the contract."""
    _check_call(topic, "evt", now)
    _check_size(raw, max_bytes)
    try:
        event: DeviceEvent = _decode(raw, DeviceEvent)
    except BadMessage as exc:
        if exc.reason == "bad_schema":
            raise _unsupported_version(raw) or exc from None
        raise
    if event.v != EVENT_VERSION:
        raise BadMessage("unsupported_version", f"payload version v={event.v} is not supported")
    if event.device_id != topic.device_id:
        raise _bad(
            "topic_mismatch",
            f"payload device_id {event.device_id!r} differs from the topic's {topic.device_id!r}",
        )
    if not _EVENT_TYPE.fullmatch(event.type):
        raise _bad("bad_schema", f"type {event.type!r} is not a short lowercase word - at `$.type`")
    _check_future(event.ts, now, max_future)
    return event


_PLAIN_STATES: Final[dict[bytes, DeviceState]] = {b"online": "online", b"offline": "offline"}


def parse_status(
    topic: Topic,
    raw: bytes,
    *,
    now: datetime,
    max_bytes: int = MAX_STATUS_BYTES,
    max_future: timedelta = MAX_FUTURE,
) -> DeviceStatus:
    """Parse a `status` payload: `online`, `offline`, or `{"state": ..., "boot"?, "seq"?, "ts"?}`.

    An empty payload (a retained status being cleared) raises BadMessage `empty_payload`.
    """
    _check_call(topic, "status", now)
    _check_size(raw, max_bytes)
    plain = _PLAIN_STATES.get(raw.strip().lower())
    if plain is not None:
        return DeviceStatus(state=plain)
    decoded: DeviceStatus | DeviceState = _decode(raw, DeviceStatus | DeviceState)
    if not isinstance(decoded, DeviceStatus):
        return DeviceStatus(state=decoded)
    status = decoded
    _check_future(status.ts, now, max_future)
    return status


def parse_telemetry(
    topic: Topic,
    raw: bytes,
    *,
    now: datetime,
    max_bytes: int = MAX_TELEMETRY_BYTES,
    max_future: timedelta = MAX_FUTURE,
) -> Telemetry:
    """Parse a `tele` payload: a JSON object of numeric readings, optionally with `ts`."""
    _check_call(topic, "tele", now)
    _check_size(raw, max_bytes)
    fields: dict[str, Any] = _decode(raw, dict[str, Any])
    ts: datetime | None = None
    if "ts" in fields:
        try:
            ts = msgspec.convert(fields.pop("ts"), _AwareDatetime)
        except msgspec.ValidationError as exc:
            raise _bad("bad_schema", f"{exc} - at `$.ts`") from None
    readings: dict[str, float] = {}
    for name, value in fields.items():
        if not _READING_NAME.fullmatch(name):
            raise _bad("bad_schema", f"reading name {name!r} must be 1-64 of [A-Za-z0-9_.-]")
        if type(value) not in (int, float) or not math.isfinite(value):
            raise _bad(
                "bad_schema",
                f"Expected a number, got `{type(value).__name__}` - at `$.{name}`",
            )
        readings[name] = float(value)
    if not readings:
        raise BadMessage("bad_schema", "telemetry has no readings")
    _check_future(ts, now, max_future)
    return Telemetry(readings=readings, ts=ts)


def parse_message(
    topic: Topic, raw: bytes, *, now: datetime
) -> DeviceEvent | DeviceStatus | Telemetry:
    """Parse a payload with the parser for its topic's kind, with the default limits."""
    if topic.kind == "evt":
        return parse_event(topic, raw, now=now)
    if topic.kind == "status":
        return parse_status(topic, raw, now=now)
    return parse_telemetry(topic, raw, now=now)

"""Wire types for devices and dead letters."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, TypeAlias

import msgspec

from server.devices.kinds import MAX_TIMEOUT_S, MIN_TIMEOUT_S, DeviceKind

DeviceState: TypeAlias = Literal["online", "offline", "unknown"]
StateReason: TypeAlias = Literal["status", "event", "telemetry", "inactivity", "gateway_offline"]
# The same alphabet as a topic segment (mqtt_bridge.topics): the id is used in the topic.
DeviceId = Annotated[
    str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$", examples=["leak-b1-3", "gw-1"])
]


class DeviceIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A device to register; `inactivity_timeout_s` defaults by kind."""

    id: DeviceId
    kind: DeviceKind
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    zone_id: int | None = None
    gateway_id: DeviceId | None = None
    inactivity_timeout_s: (
        Annotated[int, msgspec.Meta(ge=MIN_TIMEOUT_S, le=MAX_TIMEOUT_S)] | None
    ) = None


class Device(msgspec.Struct, frozen=True):
    id: str
    site_id: int
    kind: DeviceKind
    name: str
    zone_id: int | None
    gateway_id: str | None
    inactivity_timeout_s: int
    state: DeviceState
    state_reason: StateReason | None
    state_changed_at: datetime | None
    last_seen_at: datetime | None
    last_boot: int | None
    last_seq: int | None
    created_at: datetime
    updated_at: datetime


class DevicePage(msgspec.Struct, frozen=True):
    """``next_after`` is the device id to pass as ``after`` for the next page."""

    items: list[Device]
    next_after: str | None


class DeadLetter(msgspec.Struct, frozen=True):
    """A message the bridge refused. `raw` is base64 (cut at 64 KiB; `size` is the full
    length); `text` is the same bytes as UTF-8 when they are valid UTF-8."""

    id: int
    site_id: int | None
    topic: str
    reason: str
    detail: str
    size: int
    raw: bytes
    text: str | None
    received_at: datetime

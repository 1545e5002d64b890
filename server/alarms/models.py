"""Wire types for alarms, and the change record handed to the incidents domain."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, TypeAlias

import msgspec

from mqtt_bridge.payloads import Severity
from server.devices.kinds import DeviceKind

AlarmStatus: TypeAlias = Literal["active_unack", "active_ack", "cleared_unack", "cleared_ack"]
ALARM_STATUSES: tuple[AlarmStatus, ...] = (
    "active_unack",
    "active_ack",
    "cleared_unack",
    "cleared_ack",
)
AlarmChangeKind: TypeAlias = Literal["opened", "repeated", "cleared", "acked"]


class Alarm(msgspec.Struct, frozen=True):
    """`first_at`, `last_at` and `cleared_at` are the device's times; `count` the activations."""

    id: int
    site_id: int
    device_id: str
    zone_id: int | None
    type: str
    severity: Severity
    status: AlarmStatus
    count: int
    first_at: datetime
    last_at: datetime
    cleared_at: datetime | None
    acked_at: datetime | None
    acked_by: int | None
    created_at: datetime
    updated_at: datetime


class AlarmChange(msgspec.Struct, frozen=True):
    """What happened to an alarm in one transaction, for incidents and the live feed."""

    alarm_id: int
    site_id: int
    device_id: str
    device_kind: DeviceKind
    zone_id: int | None
    type: str
    severity: Severity
    change: AlarmChangeKind
    at: datetime

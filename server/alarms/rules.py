"""Alarm and device-state rules: ordering by (boot, seq), effects of events, statuses.

Pure functions, no I/O. A device numbers what it sends with `boot` (incremented at
every start, kept across power loss) and `seq` (incremented for every message of a
boot), so `(boot, seq)` orders everything a device says even when the broker, a
restart or several bridges deliver it out of order.
"""

from __future__ import annotations

import functools
from typing import Final, Literal, TypeAlias

from mqtt_bridge.payloads import DeviceState, EventState, Severity
from server.alarms.models import AlarmStatus
from server.incidents.playbooks import alarm_incident_kind

Key: TypeAlias = tuple[int, int]
"""(boot, seq) of a device message."""

Condition: TypeAlias = tuple[EventState, Key]
"""The latest state of one event type of a device and the key of the event that set it."""

Effect: TypeAlias = Literal["open", "repeat", "clear", "stale", "none"]

OFFLINE_ALARM: Final = "device_offline"
"""The alarm type raised for a device gone offline (Last Will, offline status, silence)."""

_RANK: Final[dict[Severity, int]] = {
    "info": 0,
    "warning": 1,
    "minor": 2,
    "major": 3,
    "critical": 4,
}
_SEVERITY_BY_INCIDENT: Final[dict[str, Severity]] = {
    "fire": "critical",
    "water_leak": "critical",
    "pipe_burst": "critical",
    "theft": "critical",
    "power_outage": "major",
    "device_offline": "major",
}


@functools.lru_cache(maxsize=1024)
def default_severity(alarm_type: str) -> Severity:
    """The severity of an alarm whose event did not say: by the incident it leads to."""
    kind = alarm_incident_kind(alarm_type)
    return _SEVERITY_BY_INCIDENT.get(kind, "warning") if kind else "warning"


def more_severe(a: Severity, b: Severity) -> Severity:
    return a if _RANK[a] >= _RANK[b] else b


def severity_rank(severity: Severity) -> int:
    return _RANK[severity]


def event_effect(
    state: EventState, key: Key, condition: Condition | None, alarm_open: bool
) -> Effect:
    """What a new (not duplicate) event does to the alarm of its device and type.

    An event older than the latest one seen for its type is stale: it changes nothing,
    except that a late activation still counts as a repeat of the alarm it belongs to.
    """
    if condition is not None and key < condition[1]:
        return (
            "repeat" if state == "active" and alarm_open and condition[0] == "active" else "stale"
        )
    if state == "active":
        return "repeat" if alarm_open else "open"
    return "clear" if alarm_open else "none"


def advances(key: Key, condition: Condition | None) -> bool:
    """Does an event with this key become the latest state of its type?"""
    return condition is None or key >= condition[1]


def status_applies(
    state: DeviceState, key: Key | None, current: str, status_key: Key | None
) -> bool:
    """Does a `status` message change the device's state?

    A Last Will carries the (boot, seq) of the connection that set it; once the device has
    announced itself online with a later key, that will is stale and ignored. `online`
    needs a key above the last applied one, so a redelivered old `online` does not undo
    the will that followed it. Statuses without a key apply in arrival order.
    """
    if key is None or status_key is None:
        return state != current
    if state == "offline":
        return key >= status_key and current != "offline"
    return key > status_key


def event_revives(current: str, state_reason: str | None) -> bool:
    """Does an event (or telemetry) bring a device that is not online back online?

    Not from an offline set by a status message: a Last Will carries the key of the
    connection that set it, so events sent later on that same connection have higher
    keys yet happened before the will. Only the device's next `online` status proves it
    is back. From `unknown` (gateway offline, never heard) and from silence, yes.
    """
    return current == "unknown" or (current == "offline" and state_reason != "status")


def acked(status: AlarmStatus) -> AlarmStatus:
    """The status after an acknowledgement (acknowledging twice changes nothing)."""
    return "cleared_ack" if status.startswith("cleared") else "active_ack"


def cleared(status: AlarmStatus) -> AlarmStatus:
    """The status after a clear: acknowledged stays acknowledged."""
    return "cleared_ack" if status.endswith("_ack") else "cleared_unack"

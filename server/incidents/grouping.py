"""Which alarms lead to which incidents, and the outage grouping. Pure, no I/O.

* An alarm whose type leads to an incident kind (playbooks.alarm_incident_kind) opens an
  incident of its site, zone and kind, or joins the open one.
* Power outages are site-wide: every power-loss alarm of a site joins one incident.
* A device going offline is not an incident by itself. Several devices of one building
  (or, for devices without a building, of one site) going offline within a short window
  are a power outage; a gateway that stays offline past that window is a
  `device_offline` incident (the scheduler opens it, so a flapping gateway or the first
  device of an outage does not open one).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from server.alarms.models import AlarmChange
from server.alarms.rules import OFFLINE_ALARM
from server.incidents.playbooks import IncidentKind, alarm_incident_kind

__all__ = [
    "DEFAULT_OUTAGE_RULE",
    "OfflineAlarm",
    "OutageRule",
    "Plan",
    "incident_zone",
    "outage_groups",
    "plan",
]

SITE_WIDE_KINDS: Final[frozenset[IncidentKind]] = frozenset({"power_outage"})


@dataclass(frozen=True, slots=True)
class OutageRule:
    """`threshold` devices of one building offline within `window` make a power outage."""

    threshold: int = 3
    window: timedelta = timedelta(minutes=2)

    def __post_init__(self) -> None:
        if self.threshold < 2:
            raise ValueError("an outage takes at least two devices")
        if not timedelta(seconds=10) <= self.window <= timedelta(hours=1):
            raise ValueError("the outage window is between 10 seconds and an hour")

    @classmethod
    def of_site(cls, settings: Mapping[str, Any] | None) -> OutageRule:
        """The rule from a site's settings (`{"incidents": {"outage_threshold": 3,
        "outage_window_s": 120}}`); missing or unusable values take the defaults."""
        section = (settings or {}).get("incidents")
        if not isinstance(section, Mapping):
            return DEFAULT_OUTAGE_RULE
        threshold = section.get("outage_threshold", DEFAULT_OUTAGE_RULE.threshold)
        window_s = section.get("outage_window_s", DEFAULT_OUTAGE_RULE.window.total_seconds())
        try:
            return cls(int(threshold), timedelta(seconds=float(window_s)))
        except (TypeError, ValueError):
            return DEFAULT_OUTAGE_RULE


DEFAULT_OUTAGE_RULE: Final = OutageRule()


def incident_zone(kind: str, zone_id: int | None) -> int | None:
    """The zone an incident of this kind is keyed by: none for site-wide kinds."""
    return None if kind in SITE_WIDE_KINDS else zone_id


@dataclass(slots=True)
class Plan:
    """What a batch of alarm changes asks of the incidents domain."""

    # Opened alarms whose type leads to an incident (offline alarms excepted), with the kind.
    opens: list[tuple[AlarmChange, IncidentKind]] = field(default_factory=list)
    # Opened offline alarms: candidates for the outage grouping.
    offline: list[AlarmChange] = field(default_factory=list)
    # Cleared alarms of types that lead to incidents: theirs may now resolve by themselves.
    cleared: list[AlarmChange] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.opens or self.offline or self.cleared)

    @property
    def sites(self) -> list[int]:
        """The sites whose incidents this may touch, in a fixed order (that of their locks)."""
        touched = {c.site_id for c, _ in self.opens}
        touched.update(c.site_id for c in (*self.offline, *self.cleared))
        return sorted(touched)


def plan(changes: Iterable[AlarmChange]) -> Plan:
    """Sort a batch's alarm changes by what they may do to incidents (repeats and
    acknowledgements do nothing; alarm types without a playbook do nothing)."""
    result = Plan()
    for change in changes:
        if change.change == "opened":
            if change.type == OFFLINE_ALARM:
                result.offline.append(change)
                continue
            kind = alarm_incident_kind(change.type)
            if kind is not None and kind != "device_offline":
                result.opens.append((change, kind))
        elif change.change == "cleared" and alarm_incident_kind(change.type) is not None:
            result.cleared.append(change)
    return result


@dataclass(frozen=True, slots=True)
class OfflineAlarm:
    """An open offline alarm, with the building of its device's zone (None if unknown)."""

    alarm_id: int
    site_id: int
    device_id: str
    building: str | None
    at: datetime


def outage_groups(
    offline: Sequence[OfflineAlarm],
    fresh: Iterable[int],
    rules: Mapping[int, OutageRule],
) -> dict[tuple[int, str | None], list[OfflineAlarm]]:
    """The (site, building) groups that have a power outage, with the alarms that make it.

    A group has one when `threshold` or more of its devices went offline within `window`
    of each other, in a window holding at least one of the `fresh` alarms (older windows
    were judged when their alarms arrived). Devices without a building form their site's
    group. The alarms of every such window are returned, oldest first.
    """
    fresh_ids = set(fresh)
    by_group: dict[tuple[int, str | None], list[OfflineAlarm]] = defaultdict(list)
    for alarm in offline:
        by_group[(alarm.site_id, alarm.building)].append(alarm)
    found: dict[tuple[int, str | None], list[OfflineAlarm]] = {}
    for key, alarms in by_group.items():
        rule = rules.get(key[0], DEFAULT_OUTAGE_RULE)
        alarms.sort(key=lambda a: (a.at, a.alarm_id))
        members: set[int] = set()
        start = 0
        for end, last in enumerate(alarms):
            while last.at - alarms[start].at > rule.window:
                start += 1
            window = alarms[start : end + 1]
            if len({a.device_id for a in window}) >= rule.threshold and any(
                a.alarm_id in fresh_ids for a in window
            ):
                members.update(a.alarm_id for a in window)
        if members:
            found[key] = [a for a in alarms if a.alarm_id in members]
    return found

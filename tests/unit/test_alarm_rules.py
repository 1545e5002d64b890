"""Alarm and device-state rules: (boot, seq) ordering, effects, statuses, acknowledgement."""

from __future__ import annotations

import pytest

from server.alarms import rules
from server.devices.kinds import DEVICE_KINDS, MAINS_POWERED, default_inactivity_timeout


@pytest.mark.parametrize(
    ("state", "key", "condition", "alarm_open", "effect"),
    [
        ("active", (1, 5), None, False, "open"),
        ("active", (1, 6), ("active", (1, 5)), True, "repeat"),
        ("clear", (1, 7), ("active", (1, 6)), True, "clear"),
        ("clear", (1, 7), None, False, "none"),  # nothing to clear
        ("active", (1, 8), ("clear", (1, 7)), False, "open"),  # a new episode
        # Late: older than the latest state of the type.
        ("active", (1, 3), ("clear", (1, 7)), False, "stale"),  # before the clear: ignored
        ("active", (1, 3), ("active", (1, 7)), True, "repeat"),  # counts for the open alarm
        ("clear", (1, 3), ("active", (1, 7)), True, "stale"),  # an old clear cannot clear it
        # A reboot starts seq again, and still comes after.
        ("active", (2, 0), ("clear", (1, 900)), False, "open"),
        ("active", (1, 901), ("active", (2, 0)), True, "repeat"),
    ],
)
def test_event_effect(
    state: str,
    key: tuple[int, int],
    condition: rules.Condition | None,
    alarm_open: bool,
    effect: str,
) -> None:
    assert rules.event_effect(state, key, condition, alarm_open) == effect  # type: ignore[arg-type]


def test_only_events_not_older_than_the_condition_advance_it() -> None:
    assert rules.advances((1, 5), None)
    assert rules.advances((1, 5), ("active", (1, 5)))
    assert rules.advances((2, 0), ("active", (1, 99)))
    assert not rules.advances((1, 4), ("active", (1, 5)))


@pytest.mark.parametrize(
    ("state", "key", "current", "status_key", "applies"),
    [
        ("online", (17, 1), "unknown", None, True),
        ("offline", (17, 1), "online", (17, 1), True),  # the will of this connection
        ("offline", (16, 9), "online", (17, 1), False),  # a will of an older boot: stale
        ("offline", (17, 1), "online", (17, 40), False),  # older connection of this boot
        ("online", (17, 1), "offline", (17, 1), False),  # a redelivered old online
        ("online", (17, 41), "offline", (17, 1), True),  # back with a new connection
        ("online", (18, 0), "online", (17, 41), True),  # a newer online moves the key
        ("offline", (17, 41), "offline", (17, 41), False),  # already offline
        # Without (boot, seq): in arrival order, whenever the state differs.
        ("offline", None, "online", (17, 41), True),
        ("online", None, "online", None, False),
        ("online", None, "offline", (17, 41), True),
    ],
)
def test_status_applies(
    state: str,
    key: tuple[int, int] | None,
    current: str,
    status_key: tuple[int, int] | None,
    applies: bool,
) -> None:
    assert rules.status_applies(state, key, current, status_key) is applies  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("current", "reason", "revives"),
    [
        ("online", "event", False),
        ("unknown", None, True),  # never heard before
        ("unknown", "gateway_offline", True),
        ("offline", "inactivity", True),
        # After a Last Will only the device's next `online` status counts: events of the
        # connection that died carry higher keys than its will yet came before it.
        ("offline", "status", False),
    ],
)
def test_event_revives(current: str, reason: str | None, revives: bool) -> None:
    assert rules.event_revives(current, reason) is revives


def test_acknowledge_and_clear_commute() -> None:
    assert rules.acked("active_unack") == "active_ack"
    assert rules.acked("cleared_unack") == "cleared_ack"
    assert rules.acked(rules.acked("active_unack")) == "active_ack"
    assert rules.cleared("active_unack") == "cleared_unack"
    assert rules.cleared("active_ack") == "cleared_ack"
    assert rules.cleared(rules.acked("active_unack")) == rules.acked(rules.cleared("active_unack"))


def test_severity() -> None:
    assert rules.default_severity("water_leak") == "critical"
    assert rules.default_severity("smoke") == "critical"
    assert rules.default_severity("power_loss") == "major"
    assert rules.default_severity(rules.OFFLINE_ALARM) == "major"
    assert rules.default_severity("temperature_high") == "warning"
    assert rules.more_severe("minor", "critical") == "critical"
    assert rules.more_severe("critical", "info") == "critical"
    assert rules.more_severe("warning", "warning") == "warning"


def test_inactivity_defaults_minutes_for_mains_hours_for_batteries() -> None:
    for kind in DEVICE_KINDS:
        timeout = default_inactivity_timeout(kind)
        if kind in MAINS_POWERED:
            assert 60 <= timeout <= 30 * 60, kind
        else:
            assert timeout >= 3600, kind

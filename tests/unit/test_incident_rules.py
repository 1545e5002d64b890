"""Incident rules: which alarms lead where, the outage grouping, escalation, who may act."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.alarms.models import AlarmChange
from server.incidents import escalation, lifecycle
from server.incidents.grouping import (
    DEFAULT_OUTAGE_RULE,
    OfflineAlarm,
    OutageRule,
    incident_zone,
    outage_groups,
    plan,
)

T0 = datetime(2026, 3, 8, 1, 30, tzinfo=UTC)


def change(alarm_id: int, type_: str, what: str = "opened", site: int = 1) -> AlarmChange:
    return AlarmChange(
        alarm_id=alarm_id,
        site_id=site,
        device_id=f"d-{alarm_id}",
        device_kind="water_leak",
        zone_id=7,
        type=type_,
        severity="major",
        change=what,  # type: ignore[arg-type]
        at=T0,
    )


def offline(
    alarm_id: int, seconds: float, building: str | None = "1", site: int = 1
) -> OfflineAlarm:
    return OfflineAlarm(alarm_id, site, f"d-{alarm_id}", building, T0 + timedelta(seconds=seconds))


# --- plan ------------------------------------------------------------------------------------


def test_plan_sorts_changes_by_what_they_do_to_incidents() -> None:
    result = plan(
        [
            change(1, "water_leak"),
            change(2, "water_leak", "repeated"),
            change(3, "smoke", site=3),
            change(4, "temperature_high"),
            change(5, "device_offline", site=2),
            change(6, "water_leak", "cleared"),
            change(7, "battery_low", "cleared"),
            change(8, "water_leak", "acked"),
        ]
    )
    assert [(c.alarm_id, kind) for c, kind in result.opens] == [(1, "water_leak"), (3, "fire")]
    assert [c.alarm_id for c in result.offline] == [5]
    assert [c.alarm_id for c in result.cleared] == [6]
    assert result.sites == [1, 2, 3]
    assert not plan([change(2, "water_leak", "repeated"), change(4, "temperature_high")])


def test_power_outages_are_site_wide_other_kinds_by_zone() -> None:
    assert incident_zone("power_outage", 7) is None
    assert incident_zone("water_leak", 7) == 7
    assert incident_zone("fire", None) is None


# --- the outage grouping ---------------------------------------------------------------------


def test_three_devices_of_a_building_within_the_window_are_an_outage() -> None:
    alarms = [offline(1, 0), offline(2, 50), offline(3, 110)]
    groups = outage_groups(alarms, [3], {})
    assert list(groups) == [(1, "1")]
    assert [a.alarm_id for a in groups[(1, "1")]] == [1, 2, 3]


def test_too_few_too_far_apart_or_in_different_buildings_are_not() -> None:
    assert outage_groups([offline(1, 0), offline(2, 10)], [2], {}) == {}
    assert outage_groups([offline(1, 0), offline(2, 60), offline(3, 121)], [3], {}) == {}
    spread = [offline(1, 0, "1"), offline(2, 1, "2"), offline(3, 2, "3")]
    assert outage_groups(spread, [3], {}) == {}
    # Another site's devices do not add up either.
    assert outage_groups([offline(1, 0), offline(2, 1), offline(3, 2, site=2)], [3], {}) == {}


def test_devices_without_a_building_count_for_their_site() -> None:
    alarms = [offline(1, 0, None), offline(2, 5, None), offline(3, 9, None)]
    assert list(outage_groups(alarms, [1], {})) == [(1, None)]


def test_only_windows_with_a_fresh_alarm_count() -> None:
    old = [offline(1, 0), offline(2, 5), offline(3, 9)]
    assert outage_groups([*old, offline(4, 600)], [4], {}) == {}
    groups = outage_groups([*old, offline(4, 100)], [4], {})
    assert [a.alarm_id for a in groups[(1, "1")]] == [1, 2, 3, 4]


def test_a_site_may_tune_the_rule() -> None:
    rule = OutageRule.of_site({"incidents": {"outage_threshold": 5, "outage_window_s": 600}})
    assert rule == OutageRule(5, timedelta(minutes=10))
    alarms = [offline(i, i * 50) for i in range(1, 6)]
    assert outage_groups(alarms, [5], {}) != {}  # three within two minutes, by default
    assert outage_groups(alarms[:4], [4], {1: rule}) == {}
    assert outage_groups(alarms, [5], {1: rule}) != {}
    for bad in ({}, {"incidents": "x"}, {"incidents": {"outage_threshold": "many"}}, None):
        assert OutageRule.of_site(bad) == DEFAULT_OUTAGE_RULE  # type: ignore[arg-type]
    assert OutageRule.of_site({"incidents": {"outage_threshold": 1}}) == DEFAULT_OUTAGE_RULE


@given(st.lists(st.integers(0, 600), min_size=0, max_size=12))
def test_a_group_is_found_exactly_when_some_window_holds_three(offsets: list[int]) -> None:
    alarms = [offline(i, s) for i, s in enumerate(offsets, start=1)]
    found = outage_groups(alarms, [a.alarm_id for a in alarms], {})
    times = sorted(offsets)
    expected = any(times[i + 2] - times[i] <= 120 for i in range(len(times) - 2))
    assert bool(found) == expected


# --- escalation ------------------------------------------------------------------------------

CHAIN = ("technician", "supervisor", "manager")


def test_a_step_escalates_one_level_per_period_to_the_end_of_its_chain() -> None:
    due = T0 + timedelta(minutes=5)
    assert escalation.level_at(3, due, 5, T0) == 0
    assert escalation.level_at(3, due, 5, due - timedelta(seconds=1)) == 0
    assert escalation.level_at(3, due, 5, due) == 1
    assert escalation.level_at(3, due, 5, due + timedelta(minutes=5)) == 2
    assert escalation.level_at(3, due, 5, due + timedelta(days=2)) == 2
    assert escalation.level_at(1, due, 5, due + timedelta(days=2)) == 0
    assert escalation.next_escalation_at(3, due, 5, 0) == due
    assert escalation.next_escalation_at(3, due, 5, 1) == due + timedelta(minutes=5)
    assert escalation.next_escalation_at(3, due, 5, 2) is None
    assert escalation.next_escalation_at(1, due, 5, 0) is None


def test_escalate_says_from_whom_to_whom_and_when_next() -> None:
    due = T0 + timedelta(minutes=5)
    assert escalation.escalate(CHAIN, 0, due, 5, due - timedelta(seconds=1)) is None
    first = escalation.escalate(CHAIN, 0, due, 5, due + timedelta(seconds=1))
    assert first == escalation.Escalation(
        0, 1, "technician", "supervisor", due + timedelta(minutes=5)
    )
    # A scheduler that was away jumps straight to where the step is now.
    late = escalation.escalate(CHAIN, 0, due, 5, due + timedelta(hours=1))
    assert late == escalation.Escalation(0, 2, "technician", "manager", None)
    assert escalation.escalate(CHAIN, 2, due, 5, due + timedelta(hours=1)) is None
    with pytest.raises(ValueError):
        escalation.level_at(0, due, 5, due)


# --- who may act -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "step_role", "escalated_to", "assignee", "allowed"),
    [
        ("supervisor", "technician", None, None, True),
        ("manager", "guard", None, None, True),
        ("admin", "guard", None, None, True),
        ("technician", "technician", None, None, True),
        ("guard", "technician", None, None, False),
        ("guard", "technician", None, 42, True),  # assigned to them
        ("cleaner", "guard", None, None, False),
        ("front_desk", "front_desk", "supervisor", None, True),
        ("resident", "guard", None, 42, False),
    ],
)
def test_who_may_act_on_a_step(
    role: str, step_role: str, escalated_to: str | None, assignee: int | None, allowed: bool
) -> None:
    assert lifecycle.may_act_on_step(role, 42, step_role, escalated_to, assignee) is allowed


def test_steps_resolve_and_close_follow_the_lifecycle() -> None:
    lifecycle.check_step_action("mitigating", "guard", 1, "guard", None, None)
    with pytest.raises(lifecycle.StepRefused) as refused:
        lifecycle.check_step_action("resolved", "guard", 1, "guard", None, None)
    assert refused.value.code == "conflict"
    with pytest.raises(lifecycle.StepRefused) as refused:
        lifecycle.check_step_action("open", "cleaner", 1, "guard", None, None)
    assert refused.value.code == "forbidden"
    lifecycle.check_resolve("open")
    with pytest.raises(lifecycle.StepRefused):
        lifecycle.check_resolve("closed")
    lifecycle.check_close("resolved")
    with pytest.raises(lifecycle.StepRefused):
        lifecycle.check_close("mitigating")
    assert lifecycle.resolves_by_itself(0, 0)
    assert not lifecycle.resolves_by_itself(1, 0)
    assert not lifecycle.resolves_by_itself(0, 1)

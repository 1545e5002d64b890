"""SLA clocks: targets by priority, deadlines that pause on hold, breaches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.tickets.sla import (
    PRIORITIES,
    Hold,
    SlaTargets,
    default_targets,
    due_at,
    elapsed_business,
    is_breached,
)

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
PARIS = ZoneInfo("Europe/Paris")


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def hours(n: float) -> timedelta:
    return timedelta(hours=n)


@pytest.mark.parametrize(
    ("priority", "respond", "resolve"),
    [
        ("urgent", timedelta(minutes=15), hours(4)),
        ("high", hours(1), hours(24)),
        ("normal", hours(2), hours(72)),
        ("low", hours(8), timedelta(days=7)),
    ],
)
def test_default_targets_follow_the_standard(
    priority: str, respond: timedelta, resolve: timedelta
) -> None:
    assert default_targets(priority) == SlaTargets(respond=respond, resolve=resolve)


def test_every_priority_has_targets_and_unknown_ones_are_refused() -> None:
    assert [default_targets(p).respond for p in PRIORITIES] == sorted(
        default_targets(p).respond for p in PRIORITIES
    )
    with pytest.raises(ValueError, match="unknown priority 'asap'"):
        default_targets("asap")


def test_targets_are_frozen() -> None:
    targets = default_targets("normal")
    with pytest.raises(AttributeError):
        targets.respond = hours(1)  # type: ignore[misc]


def test_no_holds_due_is_start_plus_target() -> None:
    assert due_at(T0, hours(2), []) == at(120)
    assert elapsed_business(T0, at(90), []) == timedelta(minutes=90)


def test_a_closed_hold_pushes_the_deadline_back_by_its_length() -> None:
    holds: list[Hold] = [(at(30), at(75))]
    assert due_at(T0, hours(2), holds) == at(165)
    assert elapsed_business(T0, at(165), holds) == hours(2)
    assert elapsed_business(T0, at(60), holds) == timedelta(minutes=30)


def test_several_pauses_add_up() -> None:
    holds: list[Hold] = [(at(10), at(20)), (at(40), at(70)), (at(200), at(260))]
    assert due_at(T0, hours(2), holds) == at(160)  # the third hold comes after the deadline
    assert due_at(T0, hours(3), holds) == at(180 + 40 + 60)


def test_an_open_hold_pauses_the_clock_now() -> None:
    holds: list[Hold] = [(at(10), at(20)), (at(50), None)]
    assert due_at(T0, hours(2), holds) is None
    assert elapsed_business(T0, at(500), holds) == timedelta(minutes=40)
    assert not is_breached(T0, hours(2), holds, None, at(10_000))


def test_an_open_hold_after_the_deadline_leaves_it_breached() -> None:
    holds: list[Hold] = [(at(150), None)]
    assert due_at(T0, hours(2), holds) == at(120)
    assert is_breached(T0, hours(2), holds, None, at(160))


def test_a_hold_before_the_start_is_ignored() -> None:
    holds: list[Hold] = [(at(-60), at(-30))]
    assert due_at(T0, hours(1), holds) == at(60)
    assert elapsed_business(T0, at(60), holds) == hours(1)


def test_only_the_part_of_a_hold_after_the_start_counts() -> None:
    holds: list[Hold] = [(at(-60), at(15))]
    assert due_at(T0, hours(1), holds) == at(75)
    assert elapsed_business(T0, at(75), holds) == hours(1)
    assert due_at(T0, hours(1), [(at(-60), None)]) is None


def test_overlapping_and_nested_holds_count_once() -> None:
    holds: list[Hold] = [(at(10), at(40)), (at(30), at(60)), (at(35), at(45))]
    assert due_at(T0, hours(1), holds) == at(110)
    assert elapsed_business(T0, at(110), holds) == hours(1)


def test_out_of_order_and_adjacent_holds() -> None:
    holds: list[Hold] = [(at(50), at(70)), (at(10), at(30)), (at(30), at(50))]
    assert due_at(T0, hours(1), holds) == at(120)
    assert elapsed_business(T0, at(120), holds) == hours(1)


def test_an_open_hold_swallows_later_overlapping_ones() -> None:
    holds: list[Hold] = [(at(60), at(90)), (at(20), None), (at(30), at(40))]
    assert due_at(T0, hours(1), holds) is None
    assert elapsed_business(T0, at(300), holds) == timedelta(minutes=20)


def test_zero_length_hold_pauses_nothing() -> None:
    assert due_at(T0, hours(1), [(at(10), at(10))]) == at(60)


def test_end_before_start_elapses_nothing() -> None:
    assert elapsed_business(at(60), T0, []) == timedelta(0)
    assert not is_breached(at(60), timedelta(0), [], T0, at(500))


def test_done_exactly_at_the_deadline_is_on_time() -> None:
    holds: list[Hold] = [(at(5), at(20))]
    target = timedelta(minutes=15)
    assert due_at(T0, target, holds) == at(30)
    assert not is_breached(T0, target, holds, at(30), at(1000))
    assert is_breached(T0, target, holds, at(30) + timedelta(seconds=1), at(31))


def test_breach_is_measured_at_done_at_when_done() -> None:
    assert not is_breached(T0, hours(1), [], at(50), at(500))
    assert is_breached(T0, hours(1), [], None, at(61))
    assert not is_breached(T0, hours(1), [], None, at(59))


def test_clock_runs_in_real_time_across_spring_forward() -> None:
    # Paris, 31 March 2024: 02:00 CET jumps to 03:00 CEST.
    start = datetime(2024, 3, 31, 0, 30, tzinfo=PARIS)
    due = due_at(start, hours(4), [])
    assert due == datetime(2024, 3, 31, 3, 30, tzinfo=UTC)
    assert due is not None
    assert due.tzinfo is UTC
    assert due.astimezone(PARIS).hour == 5  # wall-clock arithmetic would say 04:30
    end = datetime(2024, 3, 31, 4, 30, tzinfo=PARIS)
    assert elapsed_business(start, end, []) == hours(3)


def test_clock_runs_in_real_time_across_fall_back() -> None:
    # Paris, 27 October 2024: 03:00 CEST falls back to 02:00 CET.
    start = datetime(2024, 10, 27, 0, 30, tzinfo=PARIS)
    end = datetime(2024, 10, 27, 4, 30, tzinfo=PARIS)
    assert elapsed_business(start, end, []) == hours(5)
    hold: list[Hold] = [(datetime(2024, 10, 27, 1, 30, tzinfo=PARIS), end)]
    assert elapsed_business(start, end, hold) == hours(1)
    assert due_at(start, hours(4), []) == datetime(2024, 10, 27, 2, 30, tzinfo=UTC)


def test_instants_in_different_zones_mix() -> None:
    start = datetime(2025, 3, 3, 10, 0, tzinfo=PARIS)  # 09:00 UTC
    holds: list[Hold] = [(at(30), datetime(2025, 3, 3, 10, 45, tzinfo=PARIS))]
    assert due_at(start, hours(1), holds) == at(75)


def test_naive_datetimes_and_inverted_holds_are_refused() -> None:
    naive = datetime(2025, 3, 3, 9, 0)  # naive on purpose
    with pytest.raises(ValueError, match="aware"):
        due_at(naive, hours(1), [])
    with pytest.raises(ValueError, match="aware"):
        elapsed_business(T0, at(10), [(naive, None)])
    with pytest.raises(ValueError, match="ends before it begins"):
        due_at(T0, hours(1), [(at(20), at(10))])


# A brute-force reference on whole minutes: the clock ticks in each minute not on hold.
_minute = st.integers(min_value=-30, max_value=300)
_holds = st.lists(
    st.tuples(_minute, st.one_of(st.none(), st.integers(min_value=0, max_value=120))).map(
        lambda h: (h[0], None if h[1] is None else h[0] + h[1])
    ),
    max_size=5,
)


def _on_hold(minute: int, holds: list[tuple[int, int | None]]) -> bool:
    return any(b <= minute and (e is None or minute < e) for b, e in holds)


@given(holds=_holds, target=st.integers(min_value=0, max_value=240))
def test_due_at_matches_minute_by_minute_reference(
    holds: list[tuple[int, int | None]], target: int
) -> None:
    as_times: list[Hold] = [(at(b), None if e is None else at(e)) for b, e in holds]
    expected: datetime | None = None
    ticked, minute = 0, 0
    while minute < 2000:
        if ticked == target:
            expected = at(minute)
            break
        if not _on_hold(minute, holds):
            ticked += 1
        minute += 1
    got = due_at(T0, timedelta(minutes=target), as_times)
    assert got == expected
    if got is not None:
        assert elapsed_business(T0, got, as_times) == timedelta(minutes=target)


@given(holds=_holds, end=st.integers(min_value=0, max_value=600))
def test_elapsed_matches_minute_by_minute_reference(
    holds: list[tuple[int, int | None]], end: int
) -> None:
    as_times: list[Hold] = [(at(b), None if e is None else at(e)) for b, e in holds]
    expected = sum(1 for m in range(end) if not _on_hold(m, holds))
    assert elapsed_business(T0, at(end), as_times) == timedelta(minutes=expected)

"""Patrol schedules: windows, weekdays, midnight and daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.patrol.schedule import RouteSchedule, default_interval, round_starts, round_window

EVERY_DAY = frozenset(range(1, 8))
NEW_YORK = "America/New_York"
SHANGHAI = "Asia/Shanghai"


def schedule(
    *,
    interval: int = 60,
    start: time = time(0),
    end: time = time(0),
    weekdays: frozenset[int] = EVERY_DAY,
    timezone: str = SHANGHAI,
    duration: int = 0,
) -> RouteSchedule:
    return RouteSchedule(
        interval_minutes=interval,
        window_start=start,
        window_end=end,
        weekdays=weekdays,
        timezone=timezone,
        duration_minutes=duration,
    )


def local(
    timezone: str, year: int, month: int, day: int, hour: int = 0, minute: int = 0, *, fold: int = 0
) -> datetime:
    """A wall-clock time in ``timezone`` as a UTC instant."""
    wall = datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(timezone), fold=fold)
    return wall.astimezone(UTC)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def walls(starts: list[datetime], timezone: str) -> list[str]:
    return [s.astimezone(ZoneInfo(timezone)).strftime("%a %H:%M %Z") for s in starts]


def gaps(starts: list[datetime]) -> set[timedelta]:
    return {b - a for a, b in pairwise(starts)}


# --- defaults -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "minutes"), [("residential", 120), ("commercial", 60), ("office", 60)]
)
def test_default_interval_follows_the_service_standard(kind: str, minutes: int) -> None:
    assert default_interval(kind) == minutes


def test_default_interval_refuses_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown site kind"):
        default_interval("industrial")


def test_duration_defaults_to_the_interval() -> None:
    assert schedule(interval=120).duration_minutes == 120
    assert schedule(interval=120, duration=45).duration_minutes == 45


@pytest.mark.parametrize(
    "kwargs",
    [
        {"interval": 0},
        {"interval": -60},
        {"duration": -1},
        {"weekdays": frozenset({0, 1})},
        {"weekdays": frozenset({8})},
        {"timezone": "Mars/Olympus_Mons"},
        {"timezone": "../etc/passwd"},
        {"start": time(8, tzinfo=UTC)},
    ],
)
def test_schedule_refuses_bad_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        schedule(**kwargs)  # type: ignore[arg-type]


# --- plain windows ----------------------------------------------------------------------


def test_day_window_starts_every_interval_and_excludes_the_window_end() -> None:
    plan = schedule(interval=120, start=time(8), end=time(18))
    starts = round_starts(plan, utc(2024, 6, 3), utc(2024, 6, 4))  # Mon 3 June, Shanghai
    # Shanghai is UTC+8: 08:00 local is 00:00 UTC; 18:00 is the end, so 16:00 is the last.
    assert starts == [utc(2024, 6, 3, h) for h in (0, 2, 4, 6, 8)]
    assert all(s.tzinfo is UTC for s in starts)


def test_interval_that_does_not_divide_the_window() -> None:
    plan = schedule(interval=45, start=time(9), end=time(11))
    starts = round_starts(plan, local(SHANGHAI, 2024, 6, 3), local(SHANGHAI, 2024, 6, 4))
    assert walls(starts, SHANGHAI) == ["Mon 09:00 CST", "Mon 09:45 CST", "Mon 10:30 CST"]


def test_window_crossing_midnight_belongs_to_the_day_it_starts() -> None:
    plan = schedule(interval=120, start=time(22), end=time(6), weekdays=frozenset({5}))
    week = round_starts(plan, local(SHANGHAI, 2024, 6, 3), local(SHANGHAI, 2024, 6, 10))
    # Friday's window runs into Saturday morning; nothing in the early hours of Friday
    # (that would be Thursday's window) and nothing on Saturday night.
    assert walls(week, SHANGHAI) == [
        "Fri 22:00 CST",
        "Sat 00:00 CST",
        "Sat 02:00 CST",
        "Sat 04:00 CST",
    ]


def test_window_crossing_midnight_reaches_into_the_range_from_the_day_before() -> None:
    plan = schedule(interval=120, start=time(22), end=time(6), weekdays=frozenset({5}))
    # The range starts on Saturday; Friday's window still has rounds in it.
    starts = round_starts(plan, local(SHANGHAI, 2024, 6, 8, 1), local(SHANGHAI, 2024, 6, 9))
    assert walls(starts, SHANGHAI) == ["Sat 02:00 CST", "Sat 04:00 CST"]


def test_full_day_window_when_start_equals_end() -> None:
    plan = schedule(interval=60, start=time(7), end=time(7))
    starts = round_starts(plan, local(SHANGHAI, 2024, 6, 3, 7), local(SHANGHAI, 2024, 6, 5, 7))
    assert len(starts) == 48
    assert len(set(starts)) == 48
    assert gaps(starts) == {timedelta(hours=1)}  # seamless across the day boundary


def test_weekdays_filter_keeps_only_the_chosen_days() -> None:
    plan = schedule(interval=240, start=time(8), end=time(12), weekdays=frozenset({1, 3}))
    starts = round_starts(plan, local(SHANGHAI, 2024, 6, 3), local(SHANGHAI, 2024, 6, 17))
    assert walls(starts, SHANGHAI) == ["Mon 08:00 CST", "Wed 08:00 CST"] * 2
    assert {s.astimezone(ZoneInfo(SHANGHAI)).isoweekday() for s in starts} == {1, 3}


def test_no_weekdays_means_no_rounds() -> None:
    plan = schedule(weekdays=frozenset())
    assert round_starts(plan, utc(2024, 6, 3), utc(2024, 6, 10)) == []


def test_shanghai_has_no_daylight_saving() -> None:
    plan = schedule(interval=24 * 60, start=time(9), end=time(9, 1))
    starts = round_starts(plan, utc(2024, 1, 1), utc(2025, 1, 1))
    assert len(starts) == 366  # 2024 is a leap year
    assert {(s.hour, s.minute) for s in starts} == {(1, 0)}  # 09:00 CST is always 01:00 UTC


# --- range boundaries -------------------------------------------------------------------


def test_range_includes_a_start_on_its_start_and_excludes_one_on_its_end() -> None:
    plan = schedule(interval=60, start=time(8), end=time(12))
    eight, nine, ten = (local(SHANGHAI, 2024, 6, 3, h) for h in (8, 9, 10))
    assert round_starts(plan, nine, ten) == [nine]
    assert round_starts(plan, eight, nine) == [eight]
    assert round_starts(plan, nine + timedelta(microseconds=1), ten) == []


def test_adjacent_ranges_neither_lose_nor_repeat_a_start() -> None:
    plan = schedule(interval=90, start=time(20), end=time(4))
    a, b, c = local(SHANGHAI, 2024, 6, 3), local(SHANGHAI, 2024, 6, 4, 0, 30), utc(2024, 6, 6)
    assert round_starts(plan, a, b) + round_starts(plan, b, c) == round_starts(plan, a, c)


def test_empty_or_reversed_range() -> None:
    plan = schedule()
    assert round_starts(plan, utc(2024, 6, 3), utc(2024, 6, 3)) == []
    assert round_starts(plan, utc(2024, 6, 4), utc(2024, 6, 3)) == []


def test_naive_datetimes_are_refused() -> None:
    plan = schedule()
    with pytest.raises(ValueError, match="aware"):
        round_starts(plan, datetime(2024, 6, 3), utc(2024, 6, 4))
    with pytest.raises(ValueError, match="aware"):
        round_window(datetime(2024, 6, 3), plan)


def test_non_utc_input_gives_utc_output() -> None:
    plan = schedule(interval=60, start=time(8), end=time(10))
    shanghai = ZoneInfo(SHANGHAI)
    starts = round_starts(
        plan, datetime(2024, 6, 3, tzinfo=shanghai), datetime(2024, 6, 4, tzinfo=shanghai)
    )
    assert starts == [utc(2024, 6, 3, 0), utc(2024, 6, 3, 1)]
    assert all(s.tzinfo is UTC for s in starts)


# --- daylight saving (America/New_York: 2024-03-10 spring forward, 2024-11-03 fall back) -


def test_spring_forward_day_has_one_round_fewer_and_keeps_the_interval() -> None:
    plan = schedule(interval=60, timezone=NEW_YORK)
    day = round_starts(plan, local(NEW_YORK, 2024, 3, 10), local(NEW_YORK, 2024, 3, 11))
    assert len(day) == 23
    assert len(set(day)) == 23
    assert gaps(day) == {timedelta(hours=1)}
    assert walls(day, NEW_YORK)[:3] == ["Sun 00:00 EST", "Sun 01:00 EST", "Sun 03:00 EDT"]


def test_fall_back_day_has_one_round_more_and_keeps_the_interval() -> None:
    plan = schedule(interval=60, timezone=NEW_YORK)
    day = round_starts(plan, local(NEW_YORK, 2024, 11, 3), local(NEW_YORK, 2024, 11, 4))
    assert len(day) == 25
    assert len(set(day)) == 25
    assert gaps(day) == {timedelta(hours=1)}
    assert walls(day, NEW_YORK)[:4] == [
        "Sun 00:00 EDT",
        "Sun 01:00 EDT",
        "Sun 01:00 EST",
        "Sun 02:00 EST",
    ]


def test_two_hour_night_window_across_spring_forward() -> None:
    plan = schedule(interval=120, start=time(22), end=time(6), timezone=NEW_YORK)
    night = round_starts(plan, local(NEW_YORK, 2024, 3, 9, 12), local(NEW_YORK, 2024, 3, 10, 12))
    # 22:00 EST to 06:00 EDT is 7 hours of real time: 4 rounds, 2 real hours apart.
    assert walls(night, NEW_YORK) == [
        "Sat 22:00 EST",
        "Sun 00:00 EST",
        "Sun 03:00 EDT",
        "Sun 05:00 EDT",
    ]
    assert gaps(night) == {timedelta(hours=2)}


def test_two_hour_night_window_across_fall_back() -> None:
    plan = schedule(interval=120, start=time(22), end=time(6), timezone=NEW_YORK)
    night = round_starts(plan, local(NEW_YORK, 2024, 11, 2, 12), local(NEW_YORK, 2024, 11, 3, 12))
    # 22:00 EDT to 06:00 EST is 9 hours of real time: 5 rounds, 2 real hours apart.
    assert walls(night, NEW_YORK) == [
        "Sat 22:00 EDT",
        "Sun 00:00 EDT",
        "Sun 01:00 EST",
        "Sun 03:00 EST",
        "Sun 05:00 EST",
    ]
    assert gaps(night) == {timedelta(hours=2)}


def test_window_start_in_the_spring_forward_gap_moves_to_the_end_of_the_gap() -> None:
    plan = schedule(interval=60, start=time(2, 30), end=time(5), timezone=NEW_YORK)
    before = round_starts(plan, local(NEW_YORK, 2024, 3, 9), local(NEW_YORK, 2024, 3, 10))
    assert walls(before, NEW_YORK) == ["Sat 02:30 EST", "Sat 03:30 EST", "Sat 04:30 EST"]
    day = round_starts(plan, local(NEW_YORK, 2024, 3, 10), local(NEW_YORK, 2024, 3, 11))
    assert day == [utc(2024, 3, 10, 7), utc(2024, 3, 10, 8)]  # 03:00 and 04:00 EDT


def test_window_wholly_inside_the_gap_still_gets_its_round() -> None:
    plan = schedule(interval=60, start=time(2, 10), end=time(2, 50), timezone=NEW_YORK)
    day = round_starts(plan, local(NEW_YORK, 2024, 3, 10), local(NEW_YORK, 2024, 3, 11))
    assert walls(day, NEW_YORK) == ["Sun 03:00 EDT"]


def test_window_start_in_the_fall_back_fold_uses_the_first_occurrence() -> None:
    plan = schedule(interval=30, start=time(1, 30), end=time(3), timezone=NEW_YORK)
    day = round_starts(plan, local(NEW_YORK, 2024, 11, 3), local(NEW_YORK, 2024, 11, 4))
    # 01:30 EDT (05:30 UTC) to 03:00 EST (08:00 UTC): 2.5 real hours, every 30 minutes.
    assert day[0] == local(NEW_YORK, 2024, 11, 3, 1, 30, fold=0) == utc(2024, 11, 3, 5, 30)
    assert len(day) == 5
    assert gaps(day) == {timedelta(minutes=30)}


def test_full_day_window_starting_in_the_gap_does_not_repeat_at_the_seam() -> None:
    plan = schedule(interval=60, start=time(2, 30), end=time(2, 30), timezone=NEW_YORK)
    starts = round_starts(plan, local(NEW_YORK, 2024, 3, 8), local(NEW_YORK, 2024, 3, 13))
    assert len(starts) == len(set(starts))
    steps = [b - a for a, b in pairwise(starts)]
    # Hourly except at two half-hour seams: Saturday's last round is 01:30 EST and Sunday's
    # window opens at 03:00 EDT (moved out of the gap); Sunday's last round is Monday 02:00
    # EDT and Monday's window opens at 02:30 EDT.
    assert sorted(set(steps)) == [timedelta(minutes=30), timedelta(hours=1)]
    assert steps.count(timedelta(minutes=30)) == 2


@given(
    interval=st.integers(min_value=7, max_value=300),
    start=st.times(),
    end=st.times(),
    weekdays=st.frozensets(st.integers(min_value=1, max_value=7), min_size=1),
    cut=st.integers(min_value=0, max_value=14 * 24 * 60),
)
def test_property_sorted_unique_utc_and_splittable(
    interval: int, start: time, end: time, weekdays: frozenset[int], cut: int
) -> None:
    plan = schedule(interval=interval, start=start, end=end, weekdays=weekdays, timezone=NEW_YORK)
    # Two weeks around the spring-forward change, split at an arbitrary minute.
    a = utc(2024, 3, 3)
    c = a + timedelta(days=14)
    b = a + timedelta(minutes=cut)
    whole = round_starts(plan, a, c)
    assert whole == sorted(set(whole))
    assert all(s.tzinfo is UTC and a <= s < c for s in whole)
    assert round_starts(plan, a, b) + round_starts(plan, b, c) == whole


# --- round window -----------------------------------------------------------------------


def test_round_window_lasts_the_duration() -> None:
    begins = utc(2024, 3, 10, 6, 30)
    assert round_window(begins, schedule(interval=120)) == (begins, utc(2024, 3, 10, 8, 30))
    assert round_window(begins, schedule(interval=120, duration=40)) == (
        begins,
        utc(2024, 3, 10, 7, 10),
    )


def test_round_window_is_elapsed_time_in_utc() -> None:
    plan = schedule(interval=120, timezone=NEW_YORK)
    begins = datetime(2024, 3, 10, 1, 30, tzinfo=ZoneInfo(NEW_YORK))  # 06:30 UTC
    start, end = round_window(begins, plan)
    assert start.tzinfo is UTC
    assert (start, end) == (utc(2024, 3, 10, 6, 30), utc(2024, 3, 10, 8, 30))

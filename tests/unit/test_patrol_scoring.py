"""Scan flags and round scoring."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from server.patrol.scoring import (
    EARTH_RADIUS_M,
    PreviousScan,
    ScanFacts,
    haversine_m,
    scan_flags,
    score_round,
)

# Checkpoint 2 of a route 1 -> 2 -> 3, in Shanghai.
CP_LAT, CP_LON = 31.2304, 121.4737
METRES_PER_DEGREE = EARTH_RADIUS_M * math.pi / 180
ROUND_START = datetime(2024, 6, 3, 8, 0, tzinfo=UTC)
ROUND_END = ROUND_START + timedelta(hours=2)
SCANNED_AT = ROUND_START + timedelta(minutes=20)


def north(metres: float) -> float:
    """Latitude ``metres`` north of the checkpoint."""
    return CP_LAT + metres / METRES_PER_DEGREE


def clean(**changes: Any) -> ScanFacts:
    """A live scan nothing is wrong with, then ``changes``."""
    facts = ScanFacts(
        checkpoint_id=2,
        scanned_at=SCANNED_AT,
        received_at=SCANNED_AT + timedelta(seconds=2),
        lat=north(5),
        lon=CP_LON,
        accuracy_m=8.0,
        checkpoint_lat=CP_LAT,
        checkpoint_lon=CP_LON,
        checkpoint_radius_m=30.0,
        round_start=ROUND_START,
        round_end=ROUND_END,
        grace_minutes=15,
        expected_checkpoint_ids=(1, 2, 3),
        ordered=True,
        scanned_checkpoint_ids=(1,),
        previous_scan=PreviousScan(
            scanned_at=SCANNED_AT - timedelta(minutes=2),
            checkpoint_id=1,
            lat=north(-120),
            lon=CP_LON,
        ),
    )
    return replace(facts, **changes)


def test_a_clean_scan_has_no_flags() -> None:
    assert scan_flags(clean()) == ()


# --- haversine ------------------------------------------------------------------------


def test_haversine_known_distances() -> None:
    assert haversine_m(CP_LAT, CP_LON, CP_LAT, CP_LON) == 0.0
    assert haversine_m(0, 0, 1, 0) == pytest.approx(111_195, abs=1)  # one degree of latitude
    assert haversine_m(0, 0, 0, 1) == pytest.approx(111_195, abs=1)  # one degree at the equator
    assert haversine_m(60, 0, 60, 1) == pytest.approx(55_597, abs=1)  # halved at 60° north
    assert haversine_m(0, 0, 0, 180) == pytest.approx(math.pi * EARTH_RADIUS_M)
    # Paris to London, about 344 km.
    assert haversine_m(48.8566, 2.3522, 51.5074, -0.1278) == pytest.approx(343_600, rel=0.005)


def test_haversine_is_symmetric() -> None:
    there = haversine_m(CP_LAT, CP_LON, 22.5431, 114.0579)
    back = haversine_m(22.5431, 114.0579, CP_LAT, CP_LON)
    assert there == pytest.approx(back)


# --- no_location ------------------------------------------------------------------------


@pytest.mark.parametrize(("lat", "lon"), [(None, None), (None, CP_LON), (CP_LAT, None)])
def test_no_location(lat: float | None, lon: float | None) -> None:
    # Without a fix neither the geofence nor the walking speed can be judged.
    assert scan_flags(clean(lat=lat, lon=lon)) == ("no_location",)


def test_location_present_is_not_no_location() -> None:
    assert "no_location" not in scan_flags(clean(lat=CP_LAT, lon=CP_LON))


# --- outside_geofence ---------------------------------------------------------------------


def test_outside_geofence_beyond_radius() -> None:
    assert "outside_geofence" in scan_flags(clean(lat=north(40), accuracy_m=None))


def test_accuracy_widens_the_geofence() -> None:
    # 40 m from a 30 m fence, with a 15 m fix: within 45 m.
    assert "outside_geofence" not in scan_flags(clean(lat=north(40), accuracy_m=15.0))


def test_accuracy_allowance_is_capped_at_50_m() -> None:
    # 90 m away, 30 m radius, a useless 500 m fix: 90 > 30 + 50.
    assert "outside_geofence" in scan_flags(clean(lat=north(90), accuracy_m=500.0))
    assert "outside_geofence" not in scan_flags(clean(lat=north(79), accuracy_m=500.0))


def test_negative_accuracy_grants_no_allowance() -> None:
    assert "outside_geofence" in scan_flags(clean(lat=north(35), accuracy_m=-20.0))


def test_no_geofence_without_a_checkpoint_location() -> None:
    far = clean(lat=north(5000), previous_scan=None)
    assert "outside_geofence" in scan_flags(far)
    assert scan_flags(replace(far, checkpoint_lat=None, checkpoint_lon=None)) == ()
    assert scan_flags(replace(far, checkpoint_radius_m=None)) == ()


# --- clock_skew ---------------------------------------------------------------------------


def test_live_scan_with_the_phone_clock_behind() -> None:
    received = SCANNED_AT + timedelta(minutes=6)
    assert "clock_skew" in scan_flags(clean(received_at=received))


def test_live_scan_with_the_phone_clock_ahead() -> None:
    received = SCANNED_AT - timedelta(minutes=6)
    assert "clock_skew" in scan_flags(clean(received_at=received))


def test_live_scan_within_max_skew() -> None:
    assert "clock_skew" not in scan_flags(clean(received_at=SCANNED_AT + timedelta(minutes=4)))
    assert "clock_skew" not in scan_flags(clean(received_at=SCANNED_AT - timedelta(minutes=4)))
    assert "clock_skew" in scan_flags(
        clean(received_at=SCANNED_AT + timedelta(minutes=4)), max_skew=timedelta(minutes=3)
    )


def test_old_batched_scan_with_a_good_clock_is_not_skewed() -> None:
    received = SCANNED_AT + timedelta(hours=3)
    batch = clean(received_at=received, reference_clock=received - timedelta(seconds=1))
    assert "clock_skew" not in scan_flags(batch)


def test_batch_sent_with_the_phone_clock_off() -> None:
    received = SCANNED_AT + timedelta(hours=3)
    batch = clean(received_at=received, reference_clock=received - timedelta(minutes=10))
    assert "clock_skew" in scan_flags(batch)


def test_batched_scan_after_the_batch_was_sent() -> None:
    received = SCANNED_AT + timedelta(seconds=30)
    batch = clean(received_at=received, reference_clock=SCANNED_AT - timedelta(seconds=1))
    assert "clock_skew" in scan_flags(batch)


# --- early / late -------------------------------------------------------------------------


def test_early_before_the_round_starts() -> None:
    at = ROUND_START - timedelta(minutes=1)
    assert "early" in scan_flags(clean(scanned_at=at, received_at=at))


def test_early_before_the_checkpoint_may_be_visited() -> None:
    assert "early" in scan_flags(clean(not_before_minutes=30))


def test_not_early_once_not_before_has_passed() -> None:
    assert "early" not in scan_flags(clean(not_before_minutes=20))  # scanned at +20 min
    assert "early" not in scan_flags(clean(scanned_at=ROUND_START, received_at=ROUND_START))


def test_late_after_end_plus_grace() -> None:
    at = ROUND_END + timedelta(minutes=15, seconds=1)
    assert "late" in scan_flags(clean(scanned_at=at, received_at=at))


def test_not_late_within_grace() -> None:
    at = ROUND_END + timedelta(minutes=15)
    assert "late" not in scan_flags(clean(scanned_at=at, received_at=at))
    at = ROUND_END + timedelta(minutes=10)
    assert "late" not in scan_flags(clean(scanned_at=at, received_at=at))


def test_no_timing_flags_without_a_round() -> None:
    at = ROUND_START - timedelta(days=1)
    no_round = clean(
        scanned_at=at,
        received_at=at,
        round_start=None,
        round_end=None,
        expected_checkpoint_ids=(),
        previous_scan=None,
    )
    assert scan_flags(no_round) == ()


# --- out_of_order -------------------------------------------------------------------------


def test_out_of_order_skipping_a_checkpoint() -> None:
    assert "out_of_order" in scan_flags(clean(checkpoint_id=3, checkpoint_lat=None))


def test_out_of_order_starting_in_the_middle() -> None:
    assert "out_of_order" in scan_flags(clean(scanned_checkpoint_ids=()))


def test_out_of_order_checkpoint_not_on_the_route() -> None:
    assert "out_of_order" in scan_flags(clean(checkpoint_id=9, checkpoint_lat=None))


def test_in_order_and_any_order_routes() -> None:
    assert "out_of_order" not in scan_flags(clean())
    assert "out_of_order" not in scan_flags(clean(checkpoint_id=3, ordered=False))


def test_a_double_read_of_the_last_checkpoint_is_not_out_of_order() -> None:
    again = clean(checkpoint_id=1, checkpoint_lat=None, previous_scan=None)
    assert "out_of_order" not in scan_flags(again)


def test_route_visiting_a_checkpoint_twice() -> None:
    loop = clean(checkpoint_id=1, expected_checkpoint_ids=(1, 2, 1), checkpoint_lat=None)
    assert "out_of_order" not in scan_flags(replace(loop, scanned_checkpoint_ids=(1, 2)))
    # After 1 and 3 nothing else fits: the route asks for 2 before 1 again.
    assert "out_of_order" in scan_flags(replace(loop, scanned_checkpoint_ids=(1, 3)))


def test_scanning_after_the_route_is_done_is_out_of_order() -> None:
    done = clean(checkpoint_id=2, scanned_checkpoint_ids=(1, 2, 3))
    assert "out_of_order" in scan_flags(done)


# --- too_fast -----------------------------------------------------------------------------


def previous(seconds_ago: float, metres_south: float, checkpoint_id: int = 1) -> PreviousScan:
    return PreviousScan(
        scanned_at=SCANNED_AT - timedelta(seconds=seconds_ago),
        checkpoint_id=checkpoint_id,
        lat=north(5 - metres_south),
        lon=CP_LON,
    )


def test_too_fast_between_checkpoints() -> None:
    # 500 m in 60 s is 8.3 m/s.
    assert "too_fast" in scan_flags(clean(previous_scan=previous(60, 500)))


def test_walking_pace_is_not_too_fast() -> None:
    # 150 m in 60 s is 2.5 m/s.
    assert "too_fast" not in scan_flags(clean(previous_scan=previous(60, 150)))
    assert "too_fast" in scan_flags(clean(previous_scan=previous(60, 150)), max_walk_speed_mps=2.0)


def test_two_places_at_the_same_instant() -> None:
    assert "too_fast" in scan_flags(clean(previous_scan=previous(0, 200)))


def test_same_checkpoint_at_the_same_instant_is_a_double_read() -> None:
    assert "too_fast" not in scan_flags(clean(previous_scan=previous(0, 200, checkpoint_id=2)))


def test_gps_jitter_between_neighbouring_checkpoints_is_not_too_fast() -> None:
    # 20 m in 2 s would be 10 m/s, but 20 m is within GPS noise.
    assert "too_fast" not in scan_flags(clean(previous_scan=previous(2, 20)))
    assert "too_fast" not in scan_flags(clean(previous_scan=previous(0, 20)))


def test_previous_scan_after_this_one_is_judged_the_same_way() -> None:
    assert "too_fast" in scan_flags(clean(previous_scan=previous(-60, 500)))


def test_too_fast_needs_both_locations() -> None:
    no_previous_fix = replace(previous(60, 500), lat=None, lon=None)
    assert "too_fast" not in scan_flags(clean(previous_scan=no_previous_fix))
    assert "too_fast" not in scan_flags(clean(previous_scan=None))
    assert scan_flags(clean(lat=None, previous_scan=previous(0, 500))) == ("no_location",)


# --- burst --------------------------------------------------------------------------------


def others(*seconds_ago: float) -> tuple[datetime, ...]:
    return tuple(SCANNED_AT - timedelta(seconds=s) for s in seconds_ago)


def test_burst_of_three_checkpoints_within_ten_seconds() -> None:
    assert "burst" in scan_flags(clean(recent_other_scans_at=others(3, 7)))
    assert "burst" in scan_flags(clean(recent_other_scans_at=others(0, 10)))  # edges count


def test_no_burst_below_the_threshold() -> None:
    assert "burst" not in scan_flags(clean(recent_other_scans_at=others(4)))
    assert "burst" not in scan_flags(clean(recent_other_scans_at=others(4, 11)))
    assert "burst" not in scan_flags(clean(recent_other_scans_at=others(4, -2)))  # after this


def test_burst_settings() -> None:
    facts = clean(recent_other_scans_at=others(4, 15))
    assert "burst" in scan_flags(facts, burst_seconds=20)
    assert "burst" in scan_flags(clean(recent_other_scans_at=others(4)), burst_min=2)
    assert "burst" not in scan_flags(clean(recent_other_scans_at=others(3, 7)), burst_min=4)


# --- together -----------------------------------------------------------------------------


def test_flags_are_sorted_and_stable() -> None:
    at = ROUND_END + timedelta(hours=1)
    facts = clean(
        checkpoint_id=3,
        scanned_at=at,
        received_at=at + timedelta(minutes=30),
        lat=north(400),
        previous_scan=PreviousScan(
            scanned_at=at - timedelta(seconds=60), checkpoint_id=1, lat=north(-100), lon=CP_LON
        ),  # 500 m in a minute
        recent_other_scans_at=(at - timedelta(seconds=1), at - timedelta(seconds=2)),
    )
    flags = scan_flags(facts)
    assert flags == (
        "burst",
        "clock_skew",
        "late",
        "out_of_order",
        "outside_geofence",
        "too_fast",
    )
    assert scan_flags(facts) == flags


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="scanned_at must be an aware"):
        clean(scanned_at=datetime(2024, 6, 3, 8, 20))
    with pytest.raises(ValueError, match="aware"):
        clean(recent_other_scans_at=(datetime(2024, 6, 3, 8, 20),))
    with pytest.raises(ValueError, match="aware"):
        PreviousScan(scanned_at=datetime(2024, 6, 3, 8, 20), checkpoint_id=1)


# --- score_round --------------------------------------------------------------------------

END = datetime(2024, 6, 3, 10, 0, tzinfo=UTC)
GRACE = 15
DEADLINE = END + timedelta(minutes=GRACE)


def score(scanned: list[int], now: datetime, expected: tuple[int, ...] = (1, 2, 3)) -> Any:
    return score_round(expected, scanned, now=now, end=END, grace_minutes=GRACE)


def test_scheduled_before_any_scan() -> None:
    result = score([], END - timedelta(hours=1))
    assert (result.status, result.scanned_count, result.expected_count) == ("scheduled", 0, 3)
    assert result.missing == (1, 2, 3)


def test_in_progress_with_some_scans_before_the_deadline() -> None:
    result = score([1, 3], END + timedelta(minutes=5))
    assert (result.status, result.scanned_count, result.missing) == ("in_progress", 2, (2,))


def test_still_open_exactly_at_the_deadline() -> None:
    assert score([], DEADLINE).status == "scheduled"
    assert score([2], DEADLINE).status == "in_progress"


def test_completed_whenever_every_checkpoint_is_scanned() -> None:
    for now in (END - timedelta(hours=1), DEADLINE + timedelta(days=1)):
        result = score([3, 1, 2], now)
        assert (result.status, result.scanned_count, result.missing) == ("completed", 3, ())


def test_incomplete_after_the_deadline_with_some_scans() -> None:
    result = score([2], DEADLINE + timedelta(seconds=1))
    assert (result.status, result.scanned_count, result.missing) == ("incomplete", 1, (1, 3))


def test_missed_after_the_deadline_with_no_scans() -> None:
    result = score([], DEADLINE + timedelta(seconds=1))
    assert (result.status, result.scanned_count, result.missing) == ("missed", 0, (1, 2, 3))


def test_scans_off_the_route_do_not_count() -> None:
    result = score([7, 8], DEADLINE + timedelta(seconds=1))
    assert (result.status, result.scanned_count) == ("missed", 0)


def test_checkpoint_listed_twice_counts_once() -> None:
    result = score([1, 2], END, expected=(1, 2, 1))
    assert (result.status, result.expected_count, result.scanned_count) == ("completed", 2, 2)
    result = score([2], END, expected=(1, 2, 1))
    assert (result.status, result.missing) == ("in_progress", (1,))


def test_score_round_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="aware"):
        score_round([1], [], now=datetime(2024, 6, 3), end=END, grace_minutes=0)

"""How far a scan and a round can be trusted: pure rules, no I/O.

The scan endpoint, the offline batch and the scheduler's re-scoring all call these, so
a scan gets the same flags however it arrives. Flags mark doubt for a supervisor; they
never reject a scan.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

__all__ = [
    "BURST",
    "CLOCK_SKEW",
    "EARLY",
    "EARTH_RADIUS_M",
    "LATE",
    "MAX_ACCURACY_ALLOWANCE_M",
    "NO_LOCATION",
    "OUTSIDE_GEOFENCE",
    "OUT_OF_ORDER",
    "TOO_FAST",
    "PreviousScan",
    "RoundScore",
    "RoundStatus",
    "ScanFacts",
    "haversine_m",
    "scan_flags",
    "score_round",
]

NO_LOCATION: Final = "no_location"
OUTSIDE_GEOFENCE: Final = "outside_geofence"
CLOCK_SKEW: Final = "clock_skew"
EARLY: Final = "early"
LATE: Final = "late"
OUT_OF_ORDER: Final = "out_of_order"
TOO_FAST: Final = "too_fast"
BURST: Final = "burst"

# Mean Earth radius (IUGG), metres.
EARTH_RADIUS_M: Final = 6_371_008.8
# A phone's reported accuracy widens the geofence, but never by more than this: a fix
# worse than 50 m says little about where the guard stood.
MAX_ACCURACY_ALLOWANCE_M: Final = 50.0

RoundStatus = Literal["scheduled", "in_progress", "completed", "incomplete", "missed"]


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres between two WGS 84 points given in degrees."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    d_phi = phi2 - phi1
    d_lambda = math.radians(lon2 - lon1)
    a = math.sin(d_phi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(d_lambda / 2) ** 2
    # Rounding can push ``a`` a hair past 1 for antipodal points.
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, max(0.0, a))))


@dataclass(frozen=True, kw_only=True)
class PreviousScan:
    """The same guard's scan just before this one (by ``scanned_at``)."""

    scanned_at: datetime
    checkpoint_id: int
    lat: float | None = None
    lon: float | None = None

    def __post_init__(self) -> None:
        _require_aware(self.scanned_at, "previous_scan.scanned_at")


@dataclass(frozen=True, kw_only=True)
class ScanFacts:
    """Everything the flag rules look at for one scan; the caller gathers it.

    ``reference_clock`` is the phone's ``sent_at`` for a scan that arrived in an offline
    batch and None for a live scan. The round fields stay at their defaults for a scan
    that matched no round. ``scanned_checkpoint_ids`` are this round's earlier scans in
    scan order, not including this one. ``recent_other_scans_at`` are the ``scanned_at``
    of this guard's scans of other checkpoints shortly before this one (any generous
    look-back: ``scan_flags`` keeps only those within ``burst_seconds``).
    """

    checkpoint_id: int
    scanned_at: datetime
    received_at: datetime
    reference_clock: datetime | None = None
    lat: float | None = None
    lon: float | None = None
    accuracy_m: float | None = None
    checkpoint_lat: float | None = None
    checkpoint_lon: float | None = None
    checkpoint_radius_m: float | None = None
    round_start: datetime | None = None
    round_end: datetime | None = None
    grace_minutes: int = 0
    expected_checkpoint_ids: tuple[int, ...] = ()
    ordered: bool = False
    scanned_checkpoint_ids: tuple[int, ...] = ()
    not_before_minutes: int | None = None
    previous_scan: PreviousScan | None = None
    recent_other_scans_at: tuple[datetime, ...] = ()

    def __post_init__(self) -> None:
        for name in _FACT_TIMES:
            value = getattr(self, name)
            if value is not None:
                _require_aware(value, name)
        for at in self.recent_other_scans_at:
            _require_aware(at, "recent_other_scans_at")


_FACT_TIMES = ("scanned_at", "received_at", "reference_clock", "round_start", "round_end")


def scan_flags(
    facts: ScanFacts,
    *,
    max_skew: timedelta = timedelta(minutes=5),
    max_walk_speed_mps: float = 3.0,
    burst_seconds: int = 10,
    burst_min: int = 3,
    gps_noise_m: float = 25.0,
) -> tuple[str, ...]:
    """The doubt flags for one scan, sorted. One line per rule:

    - no_location: the phone sent no lat/lon.
    - outside_geofence: farther from the checkpoint than radius_m + min(accuracy_m, 50 m).
    - clock_skew: live, |scanned_at - received_at| > max_skew; batch, |sent_at - received_at|
      > max_skew or scanned_at after sent_at.
    - early: before round_start, or before round_start + this checkpoint's not_before_minutes.
    - late: after round_end + grace_minutes.
    - out_of_order: ordered route and not the next expected checkpoint still unscanned
      (scanning the checkpoint just scanned again is a double read, not a deviation).
    - too_fast: moved from the previous scan's fix faster than max_walk_speed_mps, or to
      another checkpoint at the same instant; fixes within gps_noise_m are the same place.
    - burst: burst_min - 1 or more other checkpoints scanned within burst_seconds before this.
    """
    flags: set[str] = set()

    if facts.lat is None or facts.lon is None:
        flags.add(NO_LOCATION)

    if _outside_geofence(facts):
        flags.add(OUTSIDE_GEOFENCE)

    if _clock_skewed(facts, max_skew):
        flags.add(CLOCK_SKEW)

    if facts.round_start is not None:
        not_before = timedelta(minutes=max(0, facts.not_before_minutes or 0))
        if facts.scanned_at < facts.round_start + not_before:
            flags.add(EARLY)

    grace = timedelta(minutes=facts.grace_minutes)
    if facts.round_end is not None and facts.scanned_at > facts.round_end + grace:
        flags.add(LATE)

    if _out_of_order(facts):
        flags.add(OUT_OF_ORDER)

    if _too_fast(facts, max_walk_speed_mps, gps_noise_m):
        flags.add(TOO_FAST)

    window_opens = facts.scanned_at - timedelta(seconds=burst_seconds)
    others = sum(1 for at in facts.recent_other_scans_at if window_opens <= at <= facts.scanned_at)
    if others >= burst_min - 1:
        flags.add(BURST)

    return tuple(sorted(flags))


@dataclass(frozen=True, kw_only=True)
class RoundScore:
    """Where a round stands: its status and which expected checkpoints are still unscanned."""

    status: RoundStatus
    scanned_count: int
    expected_count: int
    missing: tuple[int, ...]


def score_round(
    expected: Sequence[int],
    scanned: Collection[int],
    *,
    now: datetime,
    end: datetime,
    grace_minutes: int,
) -> RoundScore:
    """Score a round from its expected checkpoints and the checkpoints scanned so far.

    Completed once every expected checkpoint is scanned, whenever that happened. Until
    ``end + grace`` it is in_progress with any scan and scheduled without; after that,
    incomplete with some scans and missed with none. A checkpoint listed twice on the
    route counts once; scans of checkpoints not on the route do not count.
    """
    _require_aware(now, "now")
    _require_aware(end, "end")
    route = tuple(dict.fromkeys(expected))
    seen = set(scanned)
    missing = tuple(checkpoint for checkpoint in route if checkpoint not in seen)
    scanned_count = len(route) - len(missing)

    status: RoundStatus
    if not missing:
        status = "completed"
    elif now <= end + timedelta(minutes=grace_minutes):
        status = "in_progress" if scanned_count else "scheduled"
    else:
        status = "incomplete" if scanned_count else "missed"
    return RoundScore(
        status=status,
        scanned_count=scanned_count,
        expected_count=len(route),
        missing=missing,
    )


def _outside_geofence(facts: ScanFacts) -> bool:
    if (
        facts.lat is None
        or facts.lon is None
        or facts.checkpoint_lat is None
        or facts.checkpoint_lon is None
        or facts.checkpoint_radius_m is None
    ):
        return False
    allowance = min(max(facts.accuracy_m or 0.0, 0.0), MAX_ACCURACY_ALLOWANCE_M)
    distance = haversine_m(facts.lat, facts.lon, facts.checkpoint_lat, facts.checkpoint_lon)
    return distance > facts.checkpoint_radius_m + allowance


def _clock_skewed(facts: ScanFacts, max_skew: timedelta) -> bool:
    if facts.reference_clock is None:
        # Live: the scan reached the server moments after it was made.
        return abs(facts.scanned_at - facts.received_at) > max_skew
    # Batch: sent_at and received_at are the same moment on two clocks; the scan itself
    # may be hours old, but it cannot postdate the batch on the phone's own clock.
    return (
        abs(facts.reference_clock - facts.received_at) > max_skew
        or facts.scanned_at > facts.reference_clock
    )


def _out_of_order(facts: ScanFacts) -> bool:
    if not facts.ordered or not facts.expected_checkpoint_ids:
        return False
    # Multiset walk, so a route that visits a checkpoint twice expects it twice.
    remaining = Counter(facts.scanned_checkpoint_ids)
    next_expected: int | None = None
    for checkpoint in facts.expected_checkpoint_ids:
        if remaining[checkpoint] > 0:
            remaining[checkpoint] -= 1
        else:
            next_expected = checkpoint
            break
    if facts.checkpoint_id == next_expected:
        return False
    # Scanning the checkpoint just scanned again (a double read) is no deviation.
    return not (
        facts.scanned_checkpoint_ids and facts.scanned_checkpoint_ids[-1] == facts.checkpoint_id
    )


def _too_fast(facts: ScanFacts, max_walk_speed_mps: float, gps_noise_m: float) -> bool:
    previous = facts.previous_scan
    if (
        previous is None
        or facts.lat is None
        or facts.lon is None
        or previous.lat is None
        or previous.lon is None
    ):
        return False
    distance = haversine_m(previous.lat, previous.lon, facts.lat, facts.lon)
    if distance <= gps_noise_m:
        return False
    # Either order: in a batch the "previous" scan may have been stored after this one.
    elapsed = abs((facts.scanned_at - previous.scanned_at).total_seconds())
    if elapsed == 0:
        # Two places at the same instant; a repeat of one checkpoint is just a double read.
        return previous.checkpoint_id != facts.checkpoint_id
    return distance / elapsed > max_walk_speed_mps


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime")

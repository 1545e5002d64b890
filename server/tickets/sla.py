"""SLA clocks for tickets: targets by priority, deadlines that pause on hold. Pure rules, no I/O.

A ticket's response and resolution clocks start when it is filed and run in real elapsed
time, except while the ticket is on hold. Holds are ``(start, end)`` intervals, ``end`` None
for the hold in force now; they may overlap or come in any order (merged first), and any
part of a hold before the clock's start is ignored.

The clock measures elapsed time, not calendar time: every instant is converted to UTC
before any arithmetic, so a daylight-saving change never makes a 4-hour target 3 or 5
hours. Naive datetimes are refused. Deadlines come back as UTC datetimes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Final

__all__ = [
    "PRIORITIES",
    "Hold",
    "SlaTargets",
    "default_targets",
    "due_at",
    "elapsed_business",
    "is_breached",
]

Hold = tuple[datetime, datetime | None]
"""A hold interval: when it began and when it ended (None: still on hold)."""

PRIORITIES: Final[tuple[str, ...]] = ("urgent", "high", "normal", "low")


@dataclass(frozen=True)
class SlaTargets:
    """How long until the first response, and until the ticket is resolved."""

    respond: timedelta
    resolve: timedelta


# The standard: ordinary feedback answered within 2 hours, urgent matters at once.
_DEFAULT_TARGETS: Final[Mapping[str, SlaTargets]] = MappingProxyType(
    {
        "urgent": SlaTargets(respond=timedelta(minutes=15), resolve=timedelta(hours=4)),
        "high": SlaTargets(respond=timedelta(hours=1), resolve=timedelta(hours=24)),
        "normal": SlaTargets(respond=timedelta(hours=2), resolve=timedelta(hours=72)),
        "low": SlaTargets(respond=timedelta(hours=8), resolve=timedelta(days=7)),
    }
)

_ZERO: Final = timedelta(0)

# A merged hold: start, and end or None for "still on hold".
_Interval = tuple[datetime, datetime | None]


def default_targets(priority: str) -> SlaTargets:
    """The standard's response and resolution targets for ``priority``."""
    try:
        return _DEFAULT_TARGETS[priority]
    except KeyError:
        expected = ", ".join(PRIORITIES)
        raise ValueError(f"unknown priority {priority!r}; expected one of {expected}") from None


def _utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got {moment.isoformat()}")
    return moment.astimezone(UTC)


def _merged(holds: Sequence[Hold]) -> list[_Interval]:
    """Holds as sorted, disjoint UTC intervals; an open hold swallows all that follow it."""
    intervals: list[_Interval] = []
    for began, ended in holds:
        b = _utc(began, "hold start")
        e = None if ended is None else _utc(ended, "hold end")
        if e is not None and e < b:
            raise ValueError(f"hold ends before it begins: {b.isoformat()} > {e.isoformat()}")
        if e != b:  # an empty hold pauses nothing
            intervals.append((b, e))
    intervals.sort(key=lambda interval: interval[0])

    merged: list[_Interval] = []
    for b, e in intervals:
        if merged:
            last_b, last_e = merged[-1]
            if last_e is None or b <= last_e:
                merged[-1] = (last_b, None if e is None or last_e is None else max(last_e, e))
                continue
        merged.append((b, e))
    return merged


def _paused_within(start: datetime, end: datetime, holds: list[_Interval]) -> timedelta:
    """Time on hold between ``start`` and ``end`` (UTC, ``start <= end``)."""
    paused = _ZERO
    for b, e in holds:
        lo = max(b, start)
        hi = end if e is None else min(e, end)
        if hi > lo:
            paused += hi - lo
    return paused


def elapsed_business(start: datetime, end: datetime, holds: Sequence[Hold]) -> timedelta:
    """Time on the clock from ``start`` to ``end``, leaving out holds (zero if end <= start)."""
    start_utc, end_utc = _utc(start, "start"), _utc(end, "end")
    merged = _merged(holds)
    if end_utc <= start_utc:
        return _ZERO
    return end_utc - start_utc - _paused_within(start_utc, end_utc, merged)


def due_at(start: datetime, target: timedelta, holds: Sequence[Hold]) -> datetime | None:
    """When ``target`` of clock time runs out, pushed back by holds; None while paused.

    None means the clock is stopped now (an open hold began before the target ran out), so
    there is no deadline yet. A hold that begins after the deadline does not move it: the
    deadline already passed and stays in the past.
    """
    cursor = _utc(start, "start")
    remaining = target
    for b, e in _merged(holds):
        if remaining <= _ZERO:
            break  # run out already: a hold from now on does not matter
        if e is not None and e <= cursor:
            continue  # over before the clock started
        if b > cursor:
            if b - cursor >= remaining:
                break
            remaining -= b - cursor
        if e is None:
            return None
        cursor = max(cursor, e)
    return cursor + remaining


def is_breached(
    start: datetime,
    target: timedelta,
    holds: Sequence[Hold],
    done_at: datetime | None,
    now: datetime,
) -> bool:
    """Whether the clock passed ``target`` before ``done_at``, or before ``now`` if not done.

    Done exactly at the deadline is on time.
    """
    return elapsed_business(start, now if done_at is None else done_at, holds) > target

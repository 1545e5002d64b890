"""When a patrol route's rounds start: pure schedule rules, no I/O.

A route is walked every ``interval_minutes`` inside a daily window given in the site's
own wall-clock time (``window_start`` to ``window_end``), on chosen ISO weekdays.
Instants go in and come out as aware UTC datetimes; the site's time zone is used only
to place each window on people's calendar.

Daylight-saving rules:

* each window's start and end are wall-clock times resolved to instants; rounds are then
  stepped in real elapsed time from the start instant, so a clock change never makes an
  interval 0 or 2 hours, and a window that spans the change is one hour shorter or longer;
* a wall time inside a spring-forward gap moves to the first valid instant after the gap
  (02:30 on the New York spring-forward day becomes 03:00 EDT);
* a wall time inside a fall-back fold means its first occurrence (``fold=0``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "DEFAULT_INTERVAL_MINUTES",
    "RouteSchedule",
    "default_interval",
    "round_starts",
    "round_window",
]

# The service standard: residential areas every 2 hours, commercial (and office) every hour.
DEFAULT_INTERVAL_MINUTES: dict[str, int] = {
    "residential": 120,
    "commercial": 60,
    "office": 60,
}

_ISO_WEEKDAYS = frozenset(range(1, 8))
_ONE_DAY = timedelta(days=1)


@dataclass(frozen=True, kw_only=True)
class RouteSchedule:
    """A route's timetable: every ``interval_minutes`` inside a daily local window.

    ``weekdays`` are ISO (1=Mon..7=Sun) and name the local date on which a window
    starts, so a 22:00-06:00 window on Friday runs into Saturday morning.
    ``window_end <= window_start`` crosses midnight; ``window_end == window_start`` is
    the full 24 hours. ``duration_minutes`` is how long each round lasts; left at 0 it
    becomes ``interval_minutes``.
    """

    interval_minutes: int
    window_start: time
    window_end: time
    weekdays: frozenset[int]
    timezone: str
    duration_minutes: int = 0

    def __post_init__(self) -> None:
        if self.interval_minutes <= 0:
            raise ValueError(f"interval_minutes must be positive, got {self.interval_minutes}")
        if self.duration_minutes < 0:
            raise ValueError(f"duration_minutes must not be negative, got {self.duration_minutes}")
        if self.duration_minutes == 0:
            # Frozen: the documented default has to be filled in through object.__setattr__.
            object.__setattr__(self, "duration_minutes", self.interval_minutes)
        if self.window_start.tzinfo is not None or self.window_end.tzinfo is not None:
            raise ValueError("window_start and window_end are local wall-clock times, no tzinfo")
        if not self.weekdays <= _ISO_WEEKDAYS:
            bad = sorted(self.weekdays - _ISO_WEEKDAYS)
            raise ValueError(f"weekdays must be ISO 1..7, got {bad}")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {self.timezone!r}") from exc

    @property
    def zone(self) -> ZoneInfo:
        """The site's time zone (ZoneInfo caches instances, so this is cheap)."""
        return ZoneInfo(self.timezone)


def default_interval(site_kind: str) -> int:
    """Patrol interval in minutes that the service standard sets for a kind of site."""
    try:
        return DEFAULT_INTERVAL_MINUTES[site_kind]
    except KeyError:
        kinds = ", ".join(sorted(DEFAULT_INTERVAL_MINUTES))
        raise ValueError(f"unknown site kind {site_kind!r}; expected one of {kinds}") from None


def round_starts(schedule: RouteSchedule, start: datetime, end: datetime) -> list[datetime]:
    """Every round start instant in ``[start, end)``, in UTC, sorted and without duplicates."""
    _require_aware(start, "start")
    _require_aware(end, "end")
    start = start.astimezone(UTC)
    end = end.astimezone(UTC)
    if end <= start or not schedule.weekdays:
        return []

    zone = schedule.zone
    interval = timedelta(minutes=schedule.interval_minutes)
    # A window opens on its local date and closes within the next one, so windows opened
    # up to two local days before ``start`` may still reach into the range.
    day = start.astimezone(zone).date() - 2 * _ONE_DAY
    last_day = end.astimezone(zone).date()

    starts: set[datetime] = set()
    while day <= last_day:
        if day.isoweekday() in schedule.weekdays:
            opens, closes = _window(schedule, day, zone)
            # Jump straight to the first step at or after ``start`` instead of walking to it.
            skipped = max(0, -((opens - start) // interval))
            at = opens + skipped * interval
            while at < closes and at < end:
                starts.add(at)
                at += interval
        day += _ONE_DAY
    return sorted(starts)


def round_window(start_utc: datetime, schedule: RouteSchedule) -> tuple[datetime, datetime]:
    """The (start, end) instants in UTC of the round starting at ``start_utc``."""
    _require_aware(start_utc, "start_utc")
    begins = start_utc.astimezone(UTC)
    return begins, begins + timedelta(minutes=schedule.duration_minutes)


def _window(schedule: RouteSchedule, day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The UTC instants at which the window starting on local ``day`` opens and closes."""
    opens = _local_instant(day, schedule.window_start, zone)
    close_day = day if schedule.window_end > schedule.window_start else day + _ONE_DAY
    closes = _local_instant(close_day, schedule.window_end, zone)
    if closes <= opens:
        # Only a window lying wholly inside a spring-forward gap collapses like this;
        # its guards still owe the one round that the window would have held.
        closes = opens + timedelta(minutes=schedule.interval_minutes)
    return opens, closes


def _local_instant(day: date, wall: time, zone: ZoneInfo) -> datetime:
    """Resolve a local wall-clock time to a UTC instant (gap: shift forward; fold: first)."""
    naive = datetime.combine(day, wall)
    first = naive.replace(tzinfo=zone, fold=0)
    instant = first.astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == naive:
        return instant
    # ``naive`` does not exist (spring-forward gap). Read with the offsets from either side
    # of the transition it lies between two instants that bracket the transition; the
    # first valid instant after the gap is the transition itself, found by bisection on
    # whole seconds (tz transitions are whole seconds).
    other = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    low, high = min(instant, other), max(instant, other)
    before = low.astimezone(zone).utcoffset()
    lo_s, hi_s = 0, int((high - low).total_seconds())
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if (low + timedelta(seconds=mid)).astimezone(zone).utcoffset() == before:
            lo_s = mid
        else:
            hi_s = mid
    return low + timedelta(seconds=hi_s)


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime")

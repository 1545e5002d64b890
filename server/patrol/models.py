"""Wire types for patrol routes, rounds, scans, the patrol log and the patrol report."""

from __future__ import annotations

import uuid
from datetime import datetime, time
from typing import Annotated, Any, Literal

import msgspec

from server.checkpoints.verify import SunProof

RoundStatus = Literal["scheduled", "in_progress", "completed", "incomplete", "missed"]
Minutes = Annotated[int, msgspec.Meta(ge=5, le=1440)]
Weekday = Annotated[int, msgspec.Meta(ge=1, le=7)]  # ISO: 1 = Monday
Text = Annotated[str, msgspec.Meta(max_length=4000)]
# A phone's time must say its offset (or Z): a bare local time could be any hour on Earth.
AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]
# The site's own clock: an offset would be silently dropped by the time column, so refuse it.
LocalTime = Annotated[time, msgspec.Meta(tz=False)]


class RouteIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    checkpoint_ids: Annotated[list[int], msgspec.Meta(min_length=1, max_length=200)]
    ordered: bool = False
    # Omitted: 120 minutes on residential sites, 60 on commercial and office (the standard).
    interval_minutes: Minutes | None = None
    duration_minutes: Minutes | None = None
    window_start: LocalTime = time(0, 0)
    window_end: LocalTime = time(0, 0)
    weekdays: Annotated[list[Weekday], msgspec.Meta(min_length=1, max_length=7)] = msgspec.field(
        default_factory=lambda: [1, 2, 3, 4, 5, 6, 7]
    )
    grace_minutes: Annotated[int, msgspec.Meta(ge=0, le=720)] = 10
    guard_ids: Annotated[list[int], msgspec.Meta(max_length=200)] = []
    # Checkpoint id -> minutes after the round's start before which a scan is "early".
    not_before_minutes: dict[int, Annotated[int, msgspec.Meta(ge=0, le=1440)]] = {}


class RouteCheckpoint(msgspec.Struct, frozen=True):
    checkpoint_id: int
    position: int
    not_before_minutes: int | None


class Route(msgspec.Struct, frozen=True):
    id: int
    site_id: int
    name: str
    ordered: bool
    interval_minutes: int
    duration_minutes: int
    window_start: time
    window_end: time
    weekdays: list[int]
    grace_minutes: int
    active: bool
    checkpoints: list[RouteCheckpoint]
    guard_ids: list[int]
    created_at: datetime


class Round(msgspec.Struct, frozen=True):
    id: int
    site_id: int
    route_id: int
    starts_at: datetime
    ends_at: datetime
    grace_minutes: int
    status: RoundStatus
    expected_count: int
    scanned_count: int
    provisional: bool  # closed, but late offline scans may still change it


class RoundCheckpoint(msgspec.Struct, frozen=True):
    checkpoint_id: int
    name: str
    position: int
    scan_id: uuid.UUID | None  # null: a gap
    scanned_at: datetime | None
    guard_id: int | None
    flags: list[str]


class LogEntry(msgspec.Struct, frozen=True):
    id: int
    round_id: int
    scan_id: uuid.UUID | None
    author_id: int
    found: str
    action_taken: str
    created_at: datetime


class RoundChange(msgspec.Struct, frozen=True):
    from_status: str
    to_status: str
    reason: str
    scan_id: uuid.UUID | None
    at: datetime


class RoundDetail(msgspec.Struct, frozen=True):
    round: Round
    checkpoints: list[RoundCheckpoint]
    log: list[LogEntry]
    changes: list[RoundChange]


class LogIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    found: Annotated[str, msgspec.Meta(min_length=1, max_length=4000)]
    action_taken: Text = ""
    scan_id: uuid.UUID | None = None


class ScanIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One scan; exactly one of qr, nfc_uid, nfc_sun."""

    id: uuid.UUID
    scanned_at: AwareTime
    qr: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    nfc_uid: Annotated[str, msgspec.Meta(min_length=1, max_length=40)] | None = None
    nfc_sun: SunProof | None = None
    lat: Annotated[float, msgspec.Meta(ge=-90, le=90)] | None = None
    lon: Annotated[float, msgspec.Meta(ge=-180, le=180)] | None = None
    accuracy_m: Annotated[float, msgspec.Meta(ge=0, le=100000)] | None = None
    # PostgreSQL text cannot hold a NUL: refused here, before the scan joins a group.
    note: Annotated[str, msgspec.Meta(max_length=2000, pattern=r"^[^\x00]*$")] | None = None


class ScanOut(msgspec.Struct, frozen=True):
    id: uuid.UUID
    checkpoint_id: int
    round_id: int | None
    flags: list[str]
    scanned_at: datetime


class BatchIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    sent_at: AwareTime
    # Items are checked one by one (as ScanIn), so a malformed item spoils only itself.
    scans: Annotated[list[dict[str, Any]], msgspec.Meta(min_length=1, max_length=500)]


class BatchItem(msgspec.Struct, frozen=True, omit_defaults=True):
    index: int
    status: int  # 201 stored, 200 already stored, 4xx refused
    id: uuid.UUID | None = None
    result: ScanOut | None = None
    problem: dict[str, object] | None = None


class BatchOut(msgspec.Struct, frozen=True):
    stored: int
    duplicates: int
    refused: int
    results: list[BatchItem]


class Refusal(msgspec.Struct, frozen=True):
    id: int
    client_id: uuid.UUID | None
    site_id: int | None
    checkpoint_id: int | None
    guard_id: int
    method: str
    reason: str
    detail: str
    scanned_at: datetime | None
    received_at: datetime

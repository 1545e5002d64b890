"""Wire types for sites, zones and units."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

SiteKind = Literal["residential", "commercial", "office"]
Locale = Literal["zh-CN", "en"]
ZoneKind = Literal[
    "lobby",
    "corridor",
    "stairwell",
    "elevator_hall",
    "elevator",
    "restroom",
    "garbage_room",
    "parking",
    "entrance",
    "plant_room",
    "roof",
    "exterior",
    "shop",
    "office",
    "other",
]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
SiteCode = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]{1,31}$")]


class SiteIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    code: SiteCode
    name: Name
    kind: SiteKind
    timezone: Annotated[str, msgspec.Meta(min_length=1, max_length=64, examples=["Asia/Shanghai"])]
    locale: Locale = "zh-CN"


class Site(msgspec.Struct, frozen=True):
    id: int
    code: str
    name: str
    kind: SiteKind
    timezone: str
    locale: Locale
    created_at: datetime


class ZoneIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    name: Name
    kind: ZoneKind
    building: Annotated[str, msgspec.Meta(max_length=50)] | None = None


class Zone(msgspec.Struct, frozen=True):
    id: int
    site_id: int
    name: str
    kind: ZoneKind
    building: str | None
    created_at: datetime


class UnitIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    building: Annotated[str, msgspec.Meta(min_length=1, max_length=50)]
    floor: Annotated[int, msgspec.Meta(ge=-20, le=300)]
    number: Annotated[str, msgspec.Meta(min_length=1, max_length=50)]


class Unit(msgspec.Struct, frozen=True):
    id: int
    site_id: int
    building: str
    floor: int
    number: str
    created_at: datetime

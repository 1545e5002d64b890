"""Wire types for users and logins."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

import msgspec

Role = Literal[
    "admin", "manager", "supervisor", "guard", "technician", "cleaner", "front_desk", "resident"
]
Username = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9._-]{1,63}$")]
Password = Annotated[str, msgspec.Meta(min_length=10, max_length=200)]
Skill = Annotated[str, msgspec.Meta(pattern=r"^[a-z_]{2,32}$")]
# A row id as the database stores it (bigint identity), so a wild number never reaches SQL.
Id = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]


class Qualification(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A licence for regulated work (elevator, electrical), valid until ``expires_on``."""

    kind: Skill
    expires_on: date
    number: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class LoginIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    username: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class TokenOut(msgspec.Struct, frozen=True):
    access_token: str
    expires_in: int
    token_type: str = "bearer"  # noqa: S105 - the OAuth token type, not a secret


class UserIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    username: Username
    password: Password
    role: Role
    full_name: Annotated[str, msgspec.Meta(max_length=100)] = ""
    phone: Annotated[str, msgspec.Meta(pattern=r"^\+?[0-9 -]{5,20}$")] | None = None
    site_ids: Annotated[list[Id], msgspec.Meta(max_length=100)] = []
    unit_id: Id | None = None
    skills: Annotated[list[Skill], msgspec.Meta(max_length=30)] = []
    qualifications: Annotated[list[Qualification], msgspec.Meta(max_length=30)] = []


class UserPatch(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    full_name: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    phone: Annotated[str, msgspec.Meta(pattern=r"^\+?[0-9 -]{5,20}$")] | None = None
    password: Password | None = None
    site_ids: Annotated[list[Id], msgspec.Meta(max_length=100)] | None = None
    skills: Annotated[list[Skill], msgspec.Meta(max_length=30)] | None = None
    qualifications: Annotated[list[Qualification], msgspec.Meta(max_length=30)] | None = None
    active: bool | None = None


class User(msgspec.Struct, frozen=True):
    id: int
    username: str
    role: Role
    full_name: str
    phone: str | None
    site_ids: list[int]
    unit_id: int | None
    skills: list[str]
    qualifications: list[Qualification]
    active: bool
    created_at: datetime

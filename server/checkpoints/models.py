"""Wire types for checkpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from msgspec import UNSET, UnsetType

from server.users.models import Id

# At least one visible character: a blank name cannot be printed under a code.
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"\S")]
Instructions = Annotated[str, msgspec.Meta(max_length=2000)]
Lat = Annotated[float, msgspec.Meta(ge=-90, le=90)]
Lon = Annotated[float, msgspec.Meta(ge=-180, le=180)]
RadiusM = Annotated[float, msgspec.Meta(gt=0, le=10_000)]
# Normalised by server.checkpoints.nfc.normalize_uid; the length only stops garbage early.
NfcUid = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, examples=["04:DE:5F:1E:AC:C0:40"])
]
AesKeyHex = Annotated[
    str, msgspec.Meta(pattern=r"^[0-9A-Fa-f]{32}$", description="AES-128 key, 32 hex digits")
]
DEFAULT_RADIUS_M = 50.0


class NfcSunIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """An NTAG 424 DNA tag: its UID and the two SDM keys (stored sealed, never returned)."""

    uid: NfcUid
    meta_read_key: AesKeyHex
    file_read_key: AesKeyHex

    def __repr__(self) -> str:
        # Keep the keys out of logs and tracebacks.
        return f"NfcSunIn(uid={self.uid!r}, meta_read_key=<hidden>, file_read_key=<hidden>)"


class CheckpointIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A new checkpoint; ``lat`` and ``lon`` go together, ``nfc_uid`` and ``nfc_sun`` exclude."""

    name: Name
    zone_id: Id | None = None
    unit_id: Id | None = None
    lat: Lat | None = None
    lon: Lon | None = None
    radius_m: RadiusM = DEFAULT_RADIUS_M
    nfc_uid: NfcUid | None = None
    nfc_sun: NfcSunIn | None = None
    instructions: Instructions = ""


class CheckpointPatch(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Fields to change; an absent field stays, ``null`` clears where that makes sense.

    ``lat`` and ``lon`` change together. ``nfc_uid`` binds a plain tag, ``nfc_sun`` an
    NTAG 424 DNA tag (new keys), and ``null`` in either removes the binding.
    """

    name: Name | UnsetType = UNSET
    instructions: Instructions | UnsetType = UNSET
    zone_id: Id | UnsetType | None = UNSET
    unit_id: Id | UnsetType | None = UNSET
    lat: Lat | UnsetType | None = UNSET
    lon: Lon | UnsetType | None = UNSET
    radius_m: RadiusM | UnsetType = UNSET
    active: bool | UnsetType = UNSET
    nfc_uid: NfcUid | UnsetType | None = UNSET
    nfc_sun: NfcSunIn | UnsetType | None = UNSET


class NfcBinding(msgspec.Struct, frozen=True):
    """The tag bound to a checkpoint; ``sun`` when it is an NTAG 424 DNA with keys on file."""

    uid: str
    sun: bool


class Checkpoint(msgspec.Struct, frozen=True):
    """A checkpoint. ``qr_token`` is shown to supervisors and above only: with it anyone
    could print the code and scan it without walking there."""

    id: int
    site_id: int
    name: str
    zone_id: int | None
    unit_id: int | None
    lat: float | None
    lon: float | None
    radius_m: float
    nfc: NfcBinding | None
    instructions: str
    active: bool
    token_version: int
    qr_token: str | None
    created_at: datetime


class ImportResult(msgspec.Struct, frozen=True):
    """What a CSV import created, in the file's order."""

    created: int
    ids: list[int]

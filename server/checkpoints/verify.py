"""Which checkpoint a scan proves, from a QR token, a plain NFC UID or an NTAG 424 SUN message.

Used by patrol scans and by proof-of-presence on tickets. Every refusal names a
stable reason; the caller records it for supervisors and answers a problem.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import msgspec

from server.auth import Principal
from server.checkpoints import nfc, qr_token
from server.checkpoints.keys import qr_ring, unseal_sun_keys
from server.config import Settings
from server.db import Connection
from server.sealed import SealError

REFUSAL_DETAIL = {
    "invalid_qr": "The QR code is not one of ours (forged or damaged)",
    "revoked_qr": "The QR code was replaced; scan the new label",
    "other_site": "This checkpoint belongs to another site",
    "unknown_checkpoint": "No such checkpoint",
    "inactive_checkpoint": "This checkpoint is no longer in use",
    "unknown_tag": "This NFC tag is bound to no checkpoint",
    "bad_uid": "The NFC UID is not 4, 7 or 10 bytes of hex",
    "sun_required": "This tag must be read as a secure (SUN) message, not by its UID",
    "bad_sun": "The NFC tag's secure message does not verify (wrong or forged tag)",
    "nfc_replay": "This NFC reading was already used (replayed or cloned tag)",
    "not_on_site": "You are not a member of this checkpoint's site",
}


class ScanRefused(Exception):
    """A proof we do not accept; ``reason`` is a key of REFUSAL_DETAIL."""

    def __init__(
        self, reason: str, *, site_id: int | None = None, checkpoint_id: int | None = None
    ) -> None:
        super().__init__(REFUSAL_DETAIL.get(reason, reason))
        self.reason = reason
        self.site_id = site_id
        self.checkpoint_id = checkpoint_id


class SunProof(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    picc_data: str
    cmac: str


@dataclass(frozen=True, slots=True)
class Proof:
    """Exactly one of the three ways to prove presence."""

    method: str  # qr | nfc_uid | nfc_sun
    qr: str | None = None
    nfc_uid: str | None = None
    nfc_sun: SunProof | None = None


@dataclass(frozen=True, slots=True)
class CheckpointHit:
    id: int
    site_id: int
    zone_id: int | None
    unit_id: int | None
    lat: float | None
    lon: float | None
    radius_m: float
    nfc_counter: int | None = None  # the SUN counter just accepted


_COLS = "id, site_id, zone_id, unit_id, lat, lon, radius_m, active, token_version"


def _hit(row: asyncpg.Record, counter: int | None = None) -> CheckpointHit:
    return CheckpointHit(
        id=row["id"],
        site_id=row["site_id"],
        zone_id=row["zone_id"],
        unit_id=row["unit_id"],
        lat=row["lat"],
        lon=row["lon"],
        radius_m=row["radius_m"],
        nfc_counter=counter,
    )


async def identify(
    conn: Connection, settings: Settings, principal: Principal, proof: Proof
) -> CheckpointHit:
    """The checkpoint this proof names, if the proof is genuine and the caller is on its site.

    A SUN counter is consumed here (in the caller's transaction): the same reading
    cannot be accepted twice.
    """
    if proof.method == "qr" and proof.qr is not None:
        return await _by_qr(conn, settings, principal, proof.qr)
    elif proof.method == "nfc_uid" and proof.nfc_uid is not None:
        hit = await _by_uid(conn, proof.nfc_uid)
    elif proof.method == "nfc_sun" and proof.nfc_sun is not None:
        hit = await _by_sun(conn, settings, principal, proof.nfc_sun)
    else:  # the wire types make this unreachable; keep the refusal explicit anyway
        raise ScanRefused("invalid_qr")
    if not principal.sees_site(hit.site_id):
        raise ScanRefused("not_on_site", site_id=hit.site_id, checkpoint_id=hit.id)
    return hit


def verify_qr(settings: Settings, token: str) -> qr_token.QrClaims:
    """The claims of a genuinely signed token; version and site are checked against the row."""
    try:
        return qr_token.verify(qr_ring(settings), token)
    except qr_token.InvalidQrToken as exc:
        raise ScanRefused("invalid_qr") from exc


async def checkpoint_of_qr(
    conn: Connection, principal: Principal, claims: qr_token.QrClaims
) -> CheckpointHit:
    """The checkpoint a genuinely signed token names, or the precise refusal: unknown,
    another site's, revoked, inactive, or a site the caller is not on."""
    row = await conn.fetchrow(
        f"SELECT {_COLS} FROM checkpoints WHERE id = $1", claims.checkpoint_id
    )
    if row is None:
        raise ScanRefused("unknown_checkpoint")
    where = {"site_id": row["site_id"], "checkpoint_id": claims.checkpoint_id}
    if row["site_id"] != claims.site_id:
        # A validly signed token whose site disagrees with the checkpoint: never issued by us.
        raise ScanRefused("invalid_qr", **where)
    if claims.token_version != row["token_version"]:
        raise ScanRefused("revoked_qr", **where)
    if not row["active"]:
        raise ScanRefused("inactive_checkpoint", **where)
    if not principal.sees_site(row["site_id"]):
        raise ScanRefused("not_on_site", **where)
    return _hit(row)


async def _by_qr(
    conn: Connection, settings: Settings, principal: Principal, token: str
) -> CheckpointHit:
    return await checkpoint_of_qr(conn, principal, verify_qr(settings, token))


async def _by_uid(conn: Connection, raw_uid: str) -> CheckpointHit:
    try:
        uid = nfc.normalize_uid(raw_uid)
    except ValueError as exc:
        raise ScanRefused("bad_uid") from exc
    row = await conn.fetchrow(
        f"SELECT {_COLS}, nfc_sun_keys IS NOT NULL AS sun FROM checkpoints WHERE nfc_uid = $1",
        uid,
    )
    if row is None:
        raise ScanRefused("unknown_tag")
    if row["sun"]:
        # A SUN tag's UID alone can be cloned; only its signed message counts.
        raise ScanRefused("sun_required", site_id=row["site_id"], checkpoint_id=row["id"])
    if not row["active"]:
        raise ScanRefused("inactive_checkpoint", site_id=row["site_id"], checkpoint_id=row["id"])
    return _hit(row)


async def _by_sun(
    conn: Connection, settings: Settings, principal: Principal, sun: SunProof
) -> CheckpointHit:
    # The UID is inside the encrypted PICCData, so try the SUN tags of the caller's sites.
    rows = await conn.fetch(
        f"SELECT {_COLS}, nfc_uid, nfc_sun_keys FROM checkpoints"
        " WHERE nfc_sun_keys IS NOT NULL AND ($1::bigint[] IS NULL OR site_id = ANY($1))",
        principal.visible_sites(),
    )
    for row in rows:
        try:
            meta_key, file_key = unseal_sun_keys(
                settings.keys.kek, row["nfc_uid"], row["nfc_sun_keys"]
            )
            result = nfc.verify_sun(sun.picc_data, sun.cmac, meta_key, file_key)
        except nfc.InvalidSun as exc:
            if exc.reason in ("malformed_picc_data", "malformed_cmac"):
                raise ScanRefused("bad_sun") from exc
            continue
        except (SealError, ValueError):
            continue
        if result.uid != row["nfc_uid"]:
            continue
        if not row["active"]:
            raise ScanRefused(
                "inactive_checkpoint", site_id=row["site_id"], checkpoint_id=row["id"]
            )
        # Atomic compare-and-set: of two concurrent uses of one reading, one wins.
        accepted = await conn.fetchval(
            "UPDATE checkpoints SET nfc_counter = $2"
            " WHERE id = $1 AND (nfc_counter IS NULL OR nfc_counter < $2) RETURNING id",
            row["id"],
            result.counter,
        )
        if accepted is None:
            raise ScanRefused("nfc_replay", site_id=row["site_id"], checkpoint_id=row["id"])
        return _hit(row, result.counter)
    raise ScanRefused("bad_sun")

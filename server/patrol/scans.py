"""Taking in a scan: identify the checkpoint, match the round, flag doubts, store, re-score.

The same path serves a live scan and each item of an offline batch, so a scan
gets the same checks and flags however it arrives. A retry of a stored scan id
answers the first result and stores nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from server.auth import Principal
from server.checkpoints.verify import (
    Proof,
    ScanRefused,
    checkpoint_from_qr,
    identify,
    verify_qr,
)
from server.config import Settings
from server.db import Connection
from server.errors import Conflict, Invalid
from server.patrol import store
from server.patrol.models import ScanIn, ScanOut
from server.patrol.scoring import PreviousScan, ScanFacts, scan_flags

# A phone's clock can be wrong by hours, never by centuries; and the database would store the
# extreme values (0001-01-01T00:00Z, 9999-12-31T23:59:59.999999Z) as -infinity/infinity.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def check_clock(field: str, value: datetime | None) -> None:
    """Refuse a client time outside the years a scan can be made in."""
    if value is not None and not EARLIEST <= value < LATEST:
        raise Invalid(field, f"must be between {EARLIEST:%Y} and {LATEST:%Y}")


@dataclass(frozen=True, slots=True)
class Accepted:
    scan: ScanOut
    created: bool  # False: the same id was stored before; nothing new was stored


def proof_of(scan: ScanIn) -> Proof:
    """The one proof a scan carries; a 422 names the fields when there are none or several."""
    given = [
        name
        for name, value in (("qr", scan.qr), ("nfc_uid", scan.nfc_uid), ("nfc_sun", scan.nfc_sun))
        if value is not None
    ]
    if len(given) != 1:
        raise Invalid("qr", "give exactly one of qr, nfc_uid, nfc_sun")
    return Proof(method=given[0], qr=scan.qr, nfc_uid=scan.nfc_uid, nfc_sun=scan.nfc_sun)


async def ingest(
    conn: Connection,
    settings: Settings,
    principal: Principal,
    scan: ScanIn,
    *,
    sent_at: datetime | None = None,
    now: datetime | None = None,
) -> Accepted:
    """Store one scan, or raise ScanRefused before anything is written (record it then).

    A QR scan is one statement (store.ingest_scan), plus a second only when the flag rules
    raise a doubt. An NFC SUN scan consumes the tag's counter, so it runs in a transaction.
    """
    now = now or datetime.now(UTC)
    check_clock("scanned_at", scan.scanned_at)
    check_clock("sent_at", sent_at)
    proof = proof_of(scan)
    if proof.method == "qr":
        claims = verify_qr(settings, proof.qr or "")
        facts = await _ingest(
            conn,
            principal,
            scan,
            proof.method,
            claims.checkpoint_id,
            sent_at,
            now,
            claimed_site_id=claims.site_id,
            token_version=claims.token_version,
        )
        if facts["inserted"]:
            return await _assess(conn, scan, claims.checkpoint_id, facts, sent_at, now)
        if (retry := await _retry(conn, scan.id, principal)) is not None:
            return retry
        # Not stored: find out why, from the checkpoint's row.
        row = await conn.fetchrow(
            "SELECT site_id AS cp_site_id, zone_id AS cp_zone_id, unit_id AS cp_unit_id,"
            " lat AS cp_lat, lon AS cp_lon, radius_m AS cp_radius_m, active AS cp_active,"
            " token_version AS cp_token_version FROM checkpoints WHERE id = $1",
            claims.checkpoint_id,
        )
        if row is None:
            raise ScanRefused("unknown_checkpoint")
        checkpoint_from_qr(row, claims, principal)  # raises the precise refusal
        raise ScanRefused("unknown_checkpoint")  # the checkpoint changed meanwhile
    if (retry := await _retry(conn, scan.id, principal)) is not None:
        return retry
    async with conn.transaction():
        hit = await identify(conn, settings, principal, proof)
        facts = await _ingest(
            conn, principal, scan, proof.method, hit.id, sent_at, now, nfc_counter=hit.nfc_counter
        )
        if not facts["inserted"]:  # a concurrent retry of the same id won the race
            retry = await _retry(conn, scan.id, principal)
            assert retry is not None
            return retry
        return await _assess(conn, scan, hit.id, facts, sent_at, now)


async def _ingest(
    conn: Connection,
    principal: Principal,
    scan: ScanIn,
    method: str,
    checkpoint_id: int,
    sent_at: datetime | None,
    now: datetime,
    *,
    claimed_site_id: int | None = None,
    token_version: int | None = None,
    nfc_counter: int | None = None,
) -> asyncpg.Record:
    return await store.ingest_scan(
        conn,
        scan_id=scan.id,
        checkpoint_id=checkpoint_id,
        claimed_site_id=claimed_site_id,
        token_version=token_version,
        visible_sites=principal.visible_sites(),
        guard_id=principal.id,
        method=method,
        scanned_at=scan.scanned_at,
        received_at=now,
        sent_at=sent_at,
        lat=scan.lat,
        lon=scan.lon,
        accuracy_m=scan.accuracy_m,
        note=scan.note,
        nfc_counter=nfc_counter,
    )


async def _retry(conn: Connection, scan_id: uuid.UUID, principal: Principal) -> Accepted | None:
    """The first answer, when this scan id is already stored (a phone's retry)."""
    known = await store.existing_scan(conn, scan_id)
    if known is None:
        return None
    if known[0] != principal.id:
        raise Conflict("This scan id was used by someone else", field="id")
    return Accepted(known[1], created=False)


async def _assess(
    conn: Connection,
    scan: ScanIn,
    checkpoint_id: int,
    facts: asyncpg.Record,
    sent_at: datetime | None,
    now: datetime,
) -> Accepted:
    """The doubt flags of a stored scan, from the facts read before it was stored."""
    round_id = facts["round_id"]
    not_before = None
    if round_id is not None:
        nb = facts["not_before"][list(facts["expected"]).index(checkpoint_id)]
        not_before = nb if nb >= 0 else None
    prev = (
        PreviousScan(
            scanned_at=facts["prev_at"],
            checkpoint_id=facts["prev_checkpoint"],
            lat=facts["prev_lat"],
            lon=facts["prev_lon"],
        )
        if facts["prev_at"] is not None
        else None
    )
    flags = scan_flags(
        ScanFacts(
            checkpoint_id=checkpoint_id,
            scanned_at=scan.scanned_at,
            received_at=now,
            reference_clock=sent_at,
            lat=scan.lat,
            lon=scan.lon,
            accuracy_m=scan.accuracy_m,
            checkpoint_lat=facts["cp_lat"],
            checkpoint_lon=facts["cp_lon"],
            checkpoint_radius_m=facts["cp_radius_m"],
            round_start=facts["starts_at"],
            round_end=facts["ends_at"],
            grace_minutes=facts["grace_minutes"] or 0,
            expected_checkpoint_ids=tuple(facts["expected"] or ()),
            ordered=bool(facts["ordered"]),
            scanned_checkpoint_ids=tuple(facts["round_scanned"] or ()),
            not_before_minutes=not_before,
            previous_scan=prev,
            recent_other_scans_at=tuple(facts["recent_others"]),
        )
    )
    if flags:
        await store.set_flags(conn, scan.id, flags)
    out = ScanOut(
        id=scan.id,
        checkpoint_id=checkpoint_id,
        round_id=round_id,
        flags=list(flags),
        scanned_at=scan.scanned_at,
    )
    return Accepted(out, created=True)


async def record(
    conn: Connection, principal: Principal, scan: ScanIn | None, refused: ScanRefused, method: str
) -> None:
    """Keep a refused attempt for supervisors (in a transaction that will commit)."""
    await store.record_refusal(
        conn,
        client_id=scan.id if scan else None,
        site_id=refused.site_id,
        checkpoint_id=refused.checkpoint_id,
        guard_id=principal.id,
        method=method,
        reason=refused.reason,
        detail=str(refused),
        scanned_at=scan.scanned_at if scan else None,
    )

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
    CheckpointHit,
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

    A QR scan costs two statements and needs no transaction: one read gathers the
    checkpoint, any earlier copy of this scan and the round; one write stores the scan and
    advances the round. An NFC SUN scan consumes the tag's counter, so it runs in a
    transaction with the write.
    """
    now = now or datetime.now(UTC)
    proof = proof_of(scan)
    if proof.method == "qr":
        claims = verify_qr(settings, proof.qr or "")
        ctx = await store.scan_context(
            conn, claims.checkpoint_id, scan.id, principal.id, scan.scanned_at
        )
        if (retry := _retry(ctx, scan.id, principal)) is not None:
            return retry
        hit = checkpoint_from_qr(ctx, claims, principal)
        return await _store(conn, principal, scan, proof.method, hit, ctx, sent_at, now)
    known = await store.existing_scan(conn, scan.id)
    if known is not None:
        if known[0] != principal.id:
            raise Conflict("This scan id was used by someone else", field="id")
        return Accepted(known[1], created=False)
    async with conn.transaction():
        hit = await identify(conn, settings, principal, proof)
        ctx = await store.scan_context(conn, hit.id, scan.id, principal.id, scan.scanned_at)
        return await _store(conn, principal, scan, proof.method, hit, ctx, sent_at, now)


def _retry(ctx: asyncpg.Record, scan_id: uuid.UUID, principal: Principal) -> Accepted | None:
    """The first answer, when this scan id is already stored (a phone's retry)."""
    if ctx["ex_guard_id"] is None:
        return None
    if ctx["ex_guard_id"] != principal.id:
        raise Conflict("This scan id was used by someone else", field="id")
    return Accepted(
        ScanOut(
            id=scan_id,
            checkpoint_id=ctx["ex_checkpoint_id"],
            round_id=ctx["ex_round_id"],
            flags=list(ctx["ex_flags"]),
            scanned_at=ctx["ex_scanned_at"],
        ),
        created=False,
    )


async def _store(
    conn: Connection,
    principal: Principal,
    scan: ScanIn,
    method: str,
    hit: CheckpointHit,
    ctx: asyncpg.Record,
    sent_at: datetime | None,
    now: datetime,
) -> Accepted:
    round_id = ctx["round_id"]
    not_before = None
    if round_id is not None:
        nb = ctx["not_before"][list(ctx["expected"]).index(hit.id)]
        not_before = nb if nb >= 0 else None
    prev = (
        PreviousScan(
            scanned_at=ctx["prev_at"],
            checkpoint_id=ctx["prev_checkpoint"],
            lat=ctx["prev_lat"],
            lon=ctx["prev_lon"],
        )
        if ctx["prev_at"] is not None
        else None
    )
    flags = scan_flags(
        ScanFacts(
            checkpoint_id=hit.id,
            scanned_at=scan.scanned_at,
            received_at=now,
            reference_clock=sent_at,
            lat=scan.lat,
            lon=scan.lon,
            accuracy_m=scan.accuracy_m,
            checkpoint_lat=hit.lat,
            checkpoint_lon=hit.lon,
            checkpoint_radius_m=hit.radius_m,
            round_start=ctx["starts_at"],
            round_end=ctx["ends_at"],
            grace_minutes=ctx["grace_minutes"] or 0,
            expected_checkpoint_ids=tuple(ctx["expected"] or ()),
            ordered=bool(ctx["ordered"]),
            scanned_checkpoint_ids=tuple(ctx["round_scanned"] or ()),
            not_before_minutes=not_before,
            previous_scan=prev,
            recent_other_scans_at=tuple(ctx["recent_others"]),
        )
    )
    stored = await store.store_scan(
        conn,
        scan_id=scan.id,
        site_id=hit.site_id,
        checkpoint_id=hit.id,
        round_id=round_id,
        guard_id=principal.id,
        method=method,
        scanned_at=scan.scanned_at,
        received_at=now,
        sent_at=sent_at,
        lat=scan.lat,
        lon=scan.lon,
        accuracy_m=scan.accuracy_m,
        note=scan.note,
        nfc_counter=hit.nfc_counter,
        flags=flags,
    )
    if not stored:  # a concurrent retry of the same id won the race
        again = await store.existing_scan(conn, scan.id)
        assert again is not None
        return Accepted(again[1], created=False)
    out = ScanOut(
        id=scan.id,
        checkpoint_id=hit.id,
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

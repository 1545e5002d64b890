"""Taking in a scan: identify the checkpoint, match the round, flag doubts, store, re-score.

The same path serves a live scan and each item of an offline batch, so a scan
gets the same checks and flags however it arrives. A retry of a stored scan id
answers the first result and stores nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from server.auth import Principal
from server.checkpoints.verify import Proof, ScanRefused, identify
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
    """Store one scan in the caller's transaction, or raise ScanRefused (record it first!)."""
    now = now or datetime.now(UTC)
    known = await store.existing_scan(conn, scan.id)
    if known is not None:
        guard_id, first = known
        if guard_id != principal.id:
            raise Conflict("This scan id was used by someone else", field="id")
        return Accepted(first, created=False)
    proof = proof_of(scan)
    hit = await identify(conn, settings, principal, proof)
    ctx = await store.scan_context(conn, hit.site_id, hit.id, principal.id, scan.scanned_at)
    round_id = ctx["round_id"]
    not_before = None
    if round_id is not None:
        expected = list(ctx["expected"])
        nb = ctx["not_before"][expected.index(hit.id)]
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
    facts = ScanFacts(
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
        scanned_checkpoint_ids=tuple(ctx["round_scanned"]),
        not_before_minutes=not_before,
        previous_scan=prev,
        recent_other_scans_at=tuple(ctx["recent_others"]),
    )
    flags = scan_flags(facts)
    stored = await store.insert_scan(
        conn,
        scan_id=scan.id,
        site_id=hit.site_id,
        checkpoint_id=hit.id,
        round_id=round_id,
        guard_id=principal.id,
        method=proof.method,
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
    if round_id is not None:
        await store.rescore_round(conn, ctx, hit.id, scan.id, now)
    return Accepted(
        ScanOut(
            id=scan.id,
            checkpoint_id=hit.id,
            round_id=round_id,
            flags=list(flags),
            scanned_at=scan.scanned_at,
        ),
        created=True,
    )


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

"""Taking in scans: identify the checkpoint, match the round, flag doubts, store, re-score.

The same path serves live scans (grouped by patrol.batcher) and offline batches, so a
scan gets the same checks and flags however it arrives and whatever arrives with it.
A retry of a stored scan id answers the first result and stores nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

from server.auth import Principal
from server.checkpoints import qr_token
from server.checkpoints.verify import (
    Proof,
    ScanRefused,
    checkpoint_of_qr,
    identify,
    verify_qr,
)
from server.config import Settings
from server.db import Connection
from server.errors import Conflict, Invalid, Problem
from server.patrol import store
from server.patrol.models import ScanIn, ScanOut
from server.patrol.scoring import PreviousScan, ScanFacts, scan_flags

# A phone's clock can be wrong by hours, never by centuries; and the database would store the
# extreme values (0001-01-01T00:00Z, 9999-12-31T23:59:59.999999Z) as -infinity/infinity.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
# How far back the facts look for the guard's scans of other checkpoints (store._FACTS).
RECENT = timedelta(seconds=60)


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


Outcome = Accepted | Exception  # ScanRefused or a Problem for one scan; never raised here


async def ingest(
    conn: Connection,
    settings: Settings,
    principal: Principal,
    scan: ScanIn,
    *,
    sent_at: datetime | None = None,
    now: datetime | None = None,
) -> Accepted:
    """Store one scan (or answer a retry); raises ScanRefused before anything is written."""
    (outcome,) = await ingest_many(conn, settings, [(principal, scan)], sent_at=sent_at, now=now)
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


async def ingest_many(
    conn: Connection,
    settings: Settings,
    scans: Sequence[tuple[Principal, ScanIn]],
    *,
    sent_at: datetime | None = None,
    now: datetime | None = None,
) -> list[Outcome]:
    """Store scans in order, each with the outcome and flags it would get alone.

    QR scans go together in two statements (store.scan_facts, store.insert_scans); the
    flags of each count the scans before it in the group, which the facts read from the
    database cannot yet show. An NFC scan consumes its tag's counter, so it goes alone,
    in a transaction. A scan that is not stored (a retry, a refused proof) is then
    answered on its own. One scan's refusal never spoils the others.
    """
    now = now or datetime.now(UTC)
    outcomes: list[Outcome | None] = [None] * len(scans)
    group: list[Item] = []
    for index, (principal, scan) in enumerate(scans):
        try:
            taken = take(settings, principal, scan, index=index, sent_at=sent_at)
            if isinstance(taken, Item):
                group.append(taken)
                continue
            await _store_qr(conn, group, sent_at, now, outcomes)
            group = []
            outcomes[index] = await ingest_nfc(conn, settings, principal, scan, taken, sent_at, now)
        except (ScanRefused, Problem) as exc:
            outcomes[index] = exc
    await _store_qr(conn, group, sent_at, now, outcomes)
    assert all(o is not None for o in outcomes)
    return cast("list[Outcome]", outcomes)


@dataclass(frozen=True, slots=True)
class Item:
    """A scan past the checks that need no database, ready to be stored with others."""

    index: int
    principal: Principal
    scan: ScanIn
    method: str
    checkpoint_id: int
    claims: qr_token.QrClaims | None = None  # a QR scan's token
    nfc_counter: int | None = None  # an NFC SUN scan's counter, just consumed


def take(
    settings: Settings,
    principal: Principal,
    scan: ScanIn,
    *,
    index: int = 0,
    sent_at: datetime | None = None,
) -> Item | Proof:
    """The checks that need no database (clocks, one proof, a QR token's signature): an
    Item for a QR scan, or the Proof of an NFC scan, which is stored alone. Raises the
    refusal or the 422."""
    check_clock("scanned_at", scan.scanned_at)
    check_clock("sent_at", sent_at)
    proof = proof_of(scan)
    if proof.method != "qr":
        return proof
    claims = verify_qr(settings, proof.qr or "")
    return Item(index, principal, scan, "qr", claims.checkpoint_id, claims)


async def _store_qr(
    conn: Connection,
    items: list[Item],
    sent_at: datetime | None,
    now: datetime,
    outcomes: list[Outcome | None],
) -> None:
    if not items:
        return
    group, stored = await _store(conn, items, sent_at, now)
    for item, outcome in zip(items, await answers(conn, items, group, stored), strict=True):
        outcomes[item.index] = outcome


async def _store(
    conn: Connection, items: Sequence[Item], sent_at: datetime | None, now: datetime
) -> tuple[Decided, set[uuid.UUID]]:
    """Read the facts, decide, store: what was decided, and the ids stored."""
    group = decide(items, await store.scan_facts(conn, fact_keys(items)), (), sent_at, now)
    return group, await store.insert_scans(conn, group.rows, now)


async def answers(
    conn: Connection, items: Sequence[Item], group: Decided, stored: set[uuid.UUID]
) -> list[Outcome]:
    """Each item's outcome once its group's rows are committed: the answer decided for a
    stored scan; for one not stored, a retry's first answer or the precise refusal."""
    outcomes: list[Outcome] = []
    for item, accepted in zip(items, group.answers, strict=True):
        if accepted is not None and accepted.scan.id in stored:
            outcomes.append(accepted)
            continue
        try:
            outcomes.append(await _unstored_qr(conn, item))
        except (ScanRefused, Problem) as exc:
            outcomes.append(exc)
    return outcomes


async def _unstored_qr(conn: Connection, item: Item) -> Accepted:
    """A QR scan that was not stored: a retry's first answer, or the precise refusal."""
    if (retry := await _retry(conn, item.scan.id, item.principal)) is not None:
        return retry
    assert item.claims is not None
    await checkpoint_of_qr(conn, item.principal, item.claims)  # raises the precise refusal
    raise ScanRefused("unknown_checkpoint")  # the checkpoint changed meanwhile


async def ingest_nfc(
    conn: Connection,
    settings: Settings,
    principal: Principal,
    scan: ScanIn,
    proof: Proof,
    sent_at: datetime | None,
    now: datetime,
) -> Accepted:
    """Store an NFC scan alone, its tag's counter consumed in the same transaction (or
    answer a retry); raises ScanRefused before anything is written."""
    if (retry := await _retry(conn, scan.id, principal)) is not None:
        return retry
    async with conn.transaction():
        hit = await identify(conn, settings, principal, proof)
        item = Item(0, principal, scan, proof.method, hit.id, nfc_counter=hit.nfc_counter)
        group, stored = await _store(conn, [item], sent_at, now)
        (accepted,) = group.answers
        if accepted is not None and accepted.scan.id in stored:
            return accepted
        # A concurrent retry of the same id won the race (or the checkpoint just went).
        retry = await _retry(conn, scan.id, principal)
        if retry is None:
            raise ScanRefused("unknown_checkpoint", site_id=hit.site_id, checkpoint_id=hit.id)
        return retry


def fact_keys(items: Sequence[Item]) -> list[store.ScanKey]:
    """What the facts of these scans are looked up by (store.scan_facts)."""
    return [
        store.ScanKey(
            id=item.scan.id,
            checkpoint_id=item.checkpoint_id,
            claimed_site_id=item.claims.site_id if item.claims else None,
            token_version=item.claims.token_version if item.claims else None,
            guard_id=item.principal.id,
            scanned_at=item.scan.scanned_at,
        )
        for item in items
    ]


@dataclass(frozen=True, slots=True)
class Decided:
    """What a group will store, and the answer each scan gets once it is stored."""

    rows: list[store.NewScan]
    answers: list[Accepted | None]  # None: not to be stored (a refusal or a retry)
    new_scans: list[tuple[Item, int | None]]  # the scans to be stored, with their rounds


def decide(
    items: Sequence[Item],
    facts: Sequence[store.ScanFact | None],
    unseen: Sequence[tuple[Item, int | None]],
    sent_at: datetime | None,
    now: datetime,
) -> Decided:
    """The rows and answers of a group, from its facts. `unseen` are scans stored after
    those facts were read (the group before, when the facts rode along with its insert):
    each scan's flags count them, and the scans before it in the group, as if read."""
    earlier = _Earlier()
    for item, round_id in unseen:
        earlier.add(item, round_id)
    rows: list[store.NewScan] = []
    answers: list[Accepted | None] = []
    new_scans: list[tuple[Item, int | None]] = []
    for item, fact in zip(items, facts, strict=True):
        scan = item.scan
        if (
            fact is None
            or fact.stored
            or scan.id in earlier.ids
            or not item.principal.sees_site(fact.cp_site_id)
        ):
            answers.append(None)  # answered on its own: a refusal or a retry
            continue
        flags = _flags(item, fact, earlier, sent_at, now)
        earlier.add(item, fact.round_id)
        new_scans.append((item, fact.round_id))
        rows.append(
            store.NewScan(
                id=scan.id,
                site_id=fact.cp_site_id,
                checkpoint_id=item.checkpoint_id,
                round_id=fact.round_id,
                guard_id=item.principal.id,
                method=item.method,
                scanned_at=scan.scanned_at,
                sent_at=sent_at,
                lat=scan.lat,
                lon=scan.lon,
                accuracy_m=scan.accuracy_m,
                note=scan.note,
                nfc_counter=item.nfc_counter,
                flags=flags,
            )
        )
        out = ScanOut(
            id=scan.id,
            checkpoint_id=item.checkpoint_id,
            round_id=fact.round_id,
            flags=list(flags),
            scanned_at=scan.scanned_at,
        )
        answers.append(Accepted(out, created=True))
    return Decided(rows, answers, new_scans)


class _Earlier:
    """The scans of a group taken before the current one: the facts read from the database
    cannot show them yet, so each later scan's flags add them here."""

    def __init__(self) -> None:
        self.ids: set[uuid.UUID] = set()
        self.by_guard: dict[int, list[PreviousScan]] = {}
        self.by_round: dict[int | None, list[int]] = {}  # None: no round

    def add(self, item: Item, round_id: int | None) -> None:
        scan = item.scan
        self.ids.add(scan.id)
        self.by_guard.setdefault(item.principal.id, []).append(
            PreviousScan(
                scanned_at=scan.scanned_at,
                checkpoint_id=item.checkpoint_id,
                lat=scan.lat,
                lon=scan.lon,
            )
        )
        self.by_round.setdefault(round_id, []).append(item.checkpoint_id)


def _flags(
    item: Item,
    fact: store.ScanFact,
    earlier: _Earlier,
    sent_at: datetime | None,
    now: datetime,
) -> tuple[str, ...]:
    """The doubt flags of a scan, from the facts read and the group's earlier scans."""
    scan, checkpoint_id = item.scan, item.checkpoint_id
    round_id = fact.round_id
    not_before = fact.not_before if fact.not_before is not None and fact.not_before >= 0 else None
    mates = earlier.by_guard.get(item.principal.id, [])
    candidates = [m for m in mates if m.scanned_at <= scan.scanned_at]
    if fact.prev_at is not None and fact.prev_checkpoint is not None:
        candidates.append(
            PreviousScan(
                scanned_at=fact.prev_at,
                checkpoint_id=fact.prev_checkpoint,
                lat=fact.prev_lat,
                lon=fact.prev_lon,
            )
        )
    window_opens = scan.scanned_at - RECENT
    recent = list(fact.recent_others) + [
        m.scanned_at
        for m in mates
        if m.checkpoint_id != checkpoint_id and window_opens <= m.scanned_at <= scan.scanned_at
    ]
    round_scanned = list(fact.round_scanned or ())
    for cp in earlier.by_round.get(round_id, []):
        if cp not in round_scanned:
            round_scanned.append(cp)
    return scan_flags(
        ScanFacts(
            checkpoint_id=checkpoint_id,
            scanned_at=scan.scanned_at,
            received_at=now,
            reference_clock=sent_at,
            lat=scan.lat,
            lon=scan.lon,
            accuracy_m=scan.accuracy_m,
            checkpoint_lat=fact.cp_lat,
            checkpoint_lon=fact.cp_lon,
            checkpoint_radius_m=fact.cp_radius_m,
            round_start=fact.starts_at,
            round_end=fact.ends_at,
            grace_minutes=fact.grace_minutes or 0,
            expected_checkpoint_ids=tuple(fact.expected or ()),
            ordered=bool(fact.ordered),
            scanned_checkpoint_ids=tuple(round_scanned),
            not_before_minutes=not_before,
            # The latest at or before this scan; on a tie the group's own scan.
            previous_scan=max(candidates, key=lambda p: p.scanned_at, default=None),
            recent_other_scans_at=tuple(recent),
        )
    )


async def _retry(conn: Connection, scan_id: uuid.UUID, principal: Principal) -> Accepted | None:
    """The first answer, when this scan id is already stored (a phone's retry)."""
    known = await store.existing_scan(conn, scan_id)
    if known is None:
        return None
    if known[0] != principal.id:
        raise Conflict("This scan id was used by someone else", field="id")
    return Accepted(known[1], created=False)


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

"""Ticket operations: filing, moves (each an appended event), and the scheduler's work.

The routes, the scheduler and the incidents domain call these inside their transaction.
Who may make which move is ``lifecycle.decide``; the SLA clocks are ``sla``; this module
stores what they decide.

Decisions the issue left open:

* The response clock stops at the first accept, start, hold or resolve (someone of ours
  took the ticket in hand); the resolution clock at resolve.
* A returned ticket's resolution clock runs on from where it stopped: the time it waited
  for the reporter's word (resolved until returned) is paused like a hold.
* Deadlines are null while a ticket is on hold (the clock is stopped).
* A breach flag, once set, stays: a late answer is late even if the work is later done.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

from server.auth import Principal
from server.checkpoints.verify import Proof, ScanRefused, identify
from server.config import Settings
from server.db import Connection
from server.errors import Conflict, Invalid, NotFound, Problem
from server.tickets import attachments, dispatch, store
from server.tickets.lifecycle import (
    TERMINAL_STATUSES,
    Actor,
    MoveRefused,
    TicketView,
    allowed_actions,
    decide,
)
from server.tickets.models import (
    AssignIn,
    CommentIn,
    EventIn,
    FollowUpIn,
    HoldIn,
    RateIn,
    ResolveIn,
    ScanProof,
    StartIn,
    Ticket,
    TicketDetail,
    TicketIn,
)
from server.tickets.sla import Hold, default_targets, due_at, is_breached

RESPONSE_ACTIONS: Final = frozenset({"accept", "start", "hold", "resolve"})
REPEAT_WINDOW: Final = timedelta(days=30)
DEFAULT_AUTO_CLOSE_DAYS: Final = 7
SYSTEM: Final = "system"


class MoveRefusedProblem(Problem):
    status, slug, title = 409, "ticket-move-refused", "Move refused"


def move_refused(exc: MoveRefused) -> MoveRefusedProblem:
    """The lifecycle's refusal as a problem naming the current status and what is allowed."""
    return MoveRefusedProblem(
        str(exc),
        action=exc.action,
        current_status=exc.current_status,
        allowed_actions=list(exc.allowed_actions),
        reason=exc.reason,
    )


def action_of(body: EventIn) -> str:
    tag = type(body).__struct_config__.tag
    assert isinstance(tag, str)
    return tag


def view_of(row: store.TicketRow) -> TicketView:
    t = row.ticket
    return TicketView(
        status=t.status,
        kind=t.kind,
        category=t.category,
        reporter_id=t.reporter_id,
        assignee_id=t.assignee_id,
        hold_resume_status=row.hold_resume_status,
    )


def actor_of(principal: Principal) -> Actor:
    return Actor(principal.id, principal.role)


def may_see(principal: Principal, row: store.TicketRow) -> bool:
    """Residents see the tickets they reported; staff those of their sites."""
    if principal.role == "resident":
        return row.ticket.reporter_id == principal.id
    return principal.sees_site(row.ticket.site_id)


async def visible_ticket(
    conn: Connection, principal: Principal, ticket_id: int, *, lock: bool = False
) -> store.TicketRow:
    """The ticket if the caller may see it; 404 otherwise (whether or not it exists)."""
    row = await store.get_ticket(conn, ticket_id, lock=lock)
    if row is None or not may_see(principal, row):
        raise NotFound("ticket")
    return row


async def detail(conn: Connection, principal: Principal, row: store.TicketRow) -> TicketDetail:
    t = row.ticket
    fields = {f: getattr(t, f) for f in t.__struct_fields__}
    return TicketDetail(
        **fields,
        allowed_actions=list(allowed_actions(view_of(row), actor_of(principal))),
        attachments=await store.attachments(conn, t.id),
    )


# --- filing ---------------------------------------------------------------------------


async def targets(conn: Connection, site_id: int, priority: str, category: str) -> tuple[int, int]:
    """(respond, resolve) minutes: the site's policy for the category or priority, else the
    standard's defaults."""
    found = await store.policy_minutes(conn, site_id, priority, category)
    if found is not None:
        return found
    default = default_targets(priority)
    return int(default.respond.total_seconds() // 60), int(default.resolve.total_seconds() // 60)


async def file_ticket(conn: Connection, principal: Principal, data: TicketIn, now: datetime) -> int:
    """File a ticket for the caller (checks who may file what, where, for whom)."""
    unit_id, zone_id = data.unit_id, data.zone_id
    if unit_id is not None and zone_id is not None:
        raise Invalid("zone_id", "give a unit or a zone, not both")
    reporter_name, reporter_phone = data.reporter_name, data.reporter_phone
    if principal.role == "resident":
        home = await store.unit_site(conn, principal.unit_id) if principal.unit_id else None
        if home != data.site_id:
            raise NotFound("site")
        if data.reporter_id not in (None, principal.id) or reporter_name or reporter_phone:
            raise Invalid("reporter_id", "residents file tickets for themselves")
        if data.channel not in (None, "app"):
            raise Invalid("channel", "residents file tickets through the app")
        if unit_id is None and zone_id is None:
            unit_id = principal.unit_id
        if unit_id is not None and unit_id != principal.unit_id:
            raise Invalid("unit_id", "residents report for their own unit or a public zone")
        reporter_id: int | None = principal.id
        channel = "app"
    else:
        principal.require_site(data.site_id)
        if await store.site_timezone(conn, data.site_id) is None:
            raise NotFound("site")
        channel = data.channel or "app"
        reporter_id = data.reporter_id
        if reporter_id is not None:
            if reporter_name or reporter_phone:
                raise Invalid("reporter_name", "give a reporter_id, or a name and phone, not both")
            if not await store.user_of_site(conn, reporter_id, data.site_id):
                raise Invalid("reporter_id", "no active user of this site has that id")
        elif reporter_name is None:
            if reporter_phone is not None:
                raise Invalid("reporter_name", "a phone number goes with the caller's name")
            if channel in ("hotline", "walk_in"):
                raise Invalid("reporter_name", f"a {channel} ticket names its caller")
            reporter_id = principal.id  # staff who found the problem report it themselves
    if not await store.place_on_site(conn, data.site_id, unit_id, zone_id):
        field = "unit_id" if unit_id is not None else "zone_id"
        raise Invalid(field, "not a place on this site")
    return await _open(
        conn,
        site_id=data.site_id,
        kind=data.kind,
        category=data.category,
        priority=data.priority,
        title=data.title,
        description=data.description,
        unit_id=unit_id,
        zone_id=zone_id,
        channel=channel,
        reporter_id=reporter_id,
        reporter_name=reporter_name,
        reporter_phone=reporter_phone,
        created_by=principal.id,
        actor_role=principal.role,
        incident_id=None,
        now=now,
    )


async def open_incident_ticket(
    conn: Connection,
    *,
    site_id: int,
    incident_id: int,
    category: str,
    title: str,
    description: str = "",
    zone_id: int | None = None,
    priority: str = "urgent",
    kind: str = "repair",
    now: datetime,
) -> int:
    """A ticket for an incident's repair step, filed by the system (channel ``sensor``);
    ``GET /api/tickets?incident_id=`` finds it from the incident's side."""
    return await _open(
        conn,
        site_id=site_id,
        kind=kind,
        category=category,
        priority=priority,
        title=title[:200],
        description=description[:4000],
        unit_id=None,
        zone_id=zone_id,
        channel="sensor",
        reporter_id=None,
        reporter_name=None,
        reporter_phone=None,
        created_by=None,
        actor_role=SYSTEM,
        incident_id=incident_id,
        now=now,
    )


async def _open(
    conn: Connection,
    *,
    site_id: int,
    kind: str,
    category: str,
    priority: str,
    title: str,
    description: str,
    unit_id: int | None,
    zone_id: int | None,
    channel: str,
    reporter_id: int | None,
    reporter_name: str | None,
    reporter_phone: str | None,
    created_by: int | None,
    actor_role: str,
    incident_id: int | None,
    now: datetime,
) -> int:
    respond, resolve = await targets(conn, site_id, priority, category)
    repeat_of = await store.earlier_at_place(
        conn, site_id, category, unit_id, zone_id, now - REPEAT_WINDOW
    )
    ticket_id = await store.insert_ticket(
        conn,
        {
            "site_id": site_id,
            "kind": kind,
            "category": category,
            "priority": priority,
            "title": title,
            "description": description,
            "unit_id": unit_id,
            "zone_id": zone_id,
            "channel": channel,
            "reporter_id": reporter_id,
            "reporter_name": reporter_name,
            "reporter_phone": reporter_phone,
            "created_by": created_by,
            "respond_minutes": respond,
            "resolve_minutes": resolve,
            "response_due": now + timedelta(minutes=respond),
            "resolve_due": now + timedelta(minutes=resolve),
            "is_repeat": repeat_of is not None,
            "repeat_of": repeat_of,
            "incident_id": incident_id,
            "created_at": now,
            "updated_at": now,
        },
    )
    facts: dict[str, Any] = {"kind": kind, "category": category, "priority": priority}
    if repeat_of is not None:
        facts["repeat_of"] = repeat_of
    if incident_id is not None:
        facts["incident_id"] = incident_id
    await store.append_event(
        conn,
        ticket_id,
        actor_id=created_by,
        actor_role=actor_role,
        action="create",
        from_status=None,
        to_status="new",
        note="",
        data=facts,
        at=now,
    )
    if (await store.ticket_settings(conn, site_id)).auto_assign:
        assignee = await dispatch.auto_assignee(conn, site_id, kind, category, now)
        if assignee is not None:
            await store.update_ticket(
                conn, ticket_id, {"status": "assigned", "assignee_id": assignee}
            )
            await store.append_event(
                conn,
                ticket_id,
                actor_id=None,
                actor_role=SYSTEM,
                action="assign",
                from_status="new",
                to_status="assigned",
                note="",
                data={"assignee_id": assignee, "auto": True},
                at=now,
            )
    return ticket_id


# --- moves ----------------------------------------------------------------------------


def _proof(scan: ScanProof) -> Proof:
    given = [
        name
        for name, value in (("qr", scan.qr), ("nfc_uid", scan.nfc_uid), ("nfc_sun", scan.nfc_sun))
        if value is not None
    ]
    if len(given) != 1:
        raise Invalid("scan", "give exactly one of qr, nfc_uid, nfc_sun")
    return Proof(method=given[0], qr=scan.qr, nfc_uid=scan.nfc_uid, nfc_sun=scan.nfc_sun)


async def _presence(
    conn: Connection, settings: Settings, principal: Principal, t: Ticket, scan: ScanProof
) -> dict[str, Any]:
    """Verify a proof-of-presence scan; whether it names the ticket's unit or zone."""
    proof = _proof(scan)
    try:
        hit = await identify(conn, settings, principal, proof)
    except ScanRefused as refused:
        raise Problem(
            str(refused),
            status=422,
            slug=f"scan-refused/{refused.reason}",
            title="Scan refused",
            reason=refused.reason,
            field="scan",
        ) from refused
    on_site = (t.unit_id is not None and hit.unit_id == t.unit_id) or (
        t.zone_id is not None and hit.zone_id == t.zone_id
    )
    return {"checkpoint_id": hit.id, "method": proof.method, "on_site": on_site}


def _minutes(n: int) -> timedelta:
    return timedelta(minutes=n)


async def apply_event(
    conn: Connection,
    settings: Settings,
    principal: Principal,
    ticket_id: int,
    body: EventIn,
    uploads: Sequence[attachments.Upload],
    now: datetime,
) -> int:
    """Make the move ``body`` asks for and append its event; returns the event id.

    The ticket row is locked for the move, so concurrent moves happen one after the other.
    """
    row = await visible_ticket(conn, principal, ticket_id, lock=True)
    t = row.ticket
    action = action_of(body)
    try:
        move = decide(view_of(row), action, actor_of(principal))
    except MoveRefused as exc:
        raise move_refused(exc) from exc
    if uploads and not isinstance(body, CommentIn | ResolveIn):
        raise Invalid("files", "files go with a comment or a resolve")
    if isinstance(body, CommentIn) and not body.note.strip() and not uploads:
        raise Invalid("note", "a comment needs a note or a file")

    changes: dict[str, Any] = {"status": move.to_status}
    changes["hold_resume_status"] = move.hold_resume_status
    data: dict[str, Any] = {}
    note = body.note
    if isinstance(body, AssignIn):
        await dispatch.check_assignee(conn, t.site_id, t.kind, t.category, body.assignee_id, now)
        changes["assignee_id"] = body.assignee_id
        data["assignee_id"] = body.assignee_id
        if t.assignee_id is not None:
            data["previous_assignee_id"] = t.assignee_id
    elif isinstance(body, HoldIn):
        if body.until is not None and body.until <= now:
            raise Invalid("until", "must be in the future")
        note = note or body.reason
        data["reason"] = body.reason
        if body.until is not None:
            data["until"] = body.until.isoformat()
    elif isinstance(body, RateIn):
        if t.rating is not None:
            raise Conflict("This ticket was rated already; a rating is given once", rating=t.rating)
        changes.update(rating=body.rating, rating_comment=body.comment or None, rated_at=now)
        data.update(rating=body.rating, comment=body.comment)
    elif isinstance(body, FollowUpIn):
        changes.update(satisfaction=body.satisfaction, followed_up_at=now)
        data["satisfaction"] = body.satisfaction
    elif isinstance(body, StartIn | ResolveIn) and body.scan is not None:
        presence = await _presence(conn, settings, principal, t, body.scan)
        data["scan"] = presence
        if presence["on_site"]:
            changes["attested_on_site"] = True

    # Hold intervals first: the clocks below are computed with them.
    if move.opens_hold:
        assert isinstance(body, HoldIn)
        await store.open_hold(conn, t.id, now, reason=body.reason, until=body.until)
        changes.update(hold_reason=body.reason, hold_until=body.until)
    if move.closes_hold:
        await store.end_hold(conn, t.id, now)
        changes.update(hold_reason=None, hold_until=None)
    if move.reopens:
        # The wait for the reporter's word is not our time: it pauses the clock.
        await store.open_hold(
            conn, t.id, t.resolved_at or now, kind="awaiting_reporter", ended_at=now
        )
        changes.update(reopen_count=t.reopen_count + 1, resolved_at=None)
    holds = await store.holds(conn, t.id)

    responded_at = t.responded_at
    if action in RESPONSE_ACTIONS and responded_at is None:
        responded_at = now
        changes["responded_at"] = now
        if is_breached(t.created_at, _minutes(t.respond_minutes), holds, now, now):
            changes["response_breached"] = True
    if action == "resolve":
        changes["resolved_at"] = now
        if is_breached(t.created_at, _minutes(t.resolve_minutes), holds, now, now):
            changes["resolve_breached"] = True
    elif action in ("confirm", "auto_close"):
        changes["closed_at"] = now
    elif action == "cancel":
        changes["cancelled_at"] = now

    if move.to_status not in TERMINAL_STATUSES:
        if responded_at is None:
            changes["response_due"] = due_at(t.created_at, _minutes(t.respond_minutes), holds)
        if action != "resolve" and (move.reopens or t.resolved_at is None):
            changes["resolve_due"] = due_at(t.created_at, _minutes(t.resolve_minutes), holds)

    await store.update_ticket(conn, t.id, changes)
    event_id = await store.append_event(
        conn,
        t.id,
        actor_id=principal.id,
        actor_role=principal.role,
        action=action,
        from_status=move.from_status,
        to_status=move.to_status,
        note=note,
        data=data,
        at=now,
    )
    root = Path(settings.attachments_dir)
    for upload in uploads:
        await attachments.save(root, upload)
        await store.add_attachment(
            conn,
            ticket_id=t.id,
            event_id=event_id,
            sha256=upload.sha256,
            content_type=upload.content_type,
            size=len(upload.data),
            original_name=upload.name,
            uploaded_by=principal.id,
        )
    return event_id


# --- the scheduler's work -------------------------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _breached_now(
    start: datetime, minutes: int, holds: Sequence[Hold], due: datetime | None, now: datetime
) -> bool:
    return due is not None and due < now and is_breached(start, _minutes(minutes), holds, None, now)


async def detect_breaches(conn: Connection, now: datetime, *, batch: int = 500) -> list[int]:
    """Flag open tickets whose response or resolution deadline passed; alert supervisors.

    Claimed with FOR UPDATE SKIP LOCKED, so concurrent schedulers never flag one twice;
    each clock raises one alert per ticket. Returns the ids of tickets flagged.
    """
    flagged: list[int] = []
    for claimed in await store.claim_overdue(conn, now, batch):
        row = await store.get_ticket(conn, claimed["id"])
        assert row is not None
        t = row.ticket
        holds = await store.holds(conn, t.id)
        clocks: list[str] = []
        if (
            not t.response_breached
            and t.responded_at is None
            and _breached_now(t.created_at, t.respond_minutes, holds, t.response_due, now)
        ):
            clocks.append("response")
        if (
            not t.resolve_breached
            and t.resolved_at is None
            and _breached_now(t.created_at, t.resolve_minutes, holds, t.resolve_due, now)
        ):
            clocks.append("resolution")
        if not clocks:
            continue
        await store.update_ticket(
            conn,
            t.id,
            {
                **({"response_breached": True} if "response" in clocks else {}),
                **({"resolve_breached": True} if "resolution" in clocks else {}),
            },
        )
        due = {
            "response": _iso(t.response_due),
            "resolution": _iso(t.resolve_due),
        }
        await store.append_event(
            conn,
            t.id,
            actor_id=None,
            actor_role=SYSTEM,
            action="sla_breach",
            from_status=t.status,
            to_status=t.status,
            note=" and ".join(f"{c} target missed" for c in clocks),
            data={"clocks": clocks, **{f"{c}_due": due[c] for c in clocks}},
            at=now,
        )
        for clock in clocks:
            target = t.respond_minutes if clock == "response" else t.resolve_minutes
            await store.raise_alert(
                conn,
                t.site_id,
                f"ticket_{clock}_breach",
                t.id,
                f"Ticket {t.id} ({t.priority} {t.category}: {t.title}) missed its {clock}"
                f" target of {target} minutes",
                {
                    "ticket_id": t.id,
                    "clock": clock,
                    "priority": t.priority,
                    "status": t.status,
                    "assignee_id": t.assignee_id,
                    "due": due[clock],
                },
            )
        flagged.append(t.id)
    return flagged


async def auto_close(conn: Connection, now: datetime, *, batch: int = 500) -> list[int]:
    """Close resolved tickets the reporter left alone for the site's idle days (7 by
    default), each recorded as an ``auto_close`` event by the system."""
    closed: list[int] = []
    for claimed in await store.claim_idle_resolved(conn, now, DEFAULT_AUTO_CLOSE_DAYS, batch):
        row = await store.get_ticket(conn, claimed["id"])
        assert row is not None
        move = decide(view_of(row), "auto_close", Actor(None, SYSTEM))
        days = int(claimed["days"])
        await store.update_ticket(conn, row.ticket.id, {"status": move.to_status, "closed_at": now})
        await store.append_event(
            conn,
            row.ticket.id,
            actor_id=None,
            actor_role=SYSTEM,
            action="auto_close",
            from_status=move.from_status,
            to_status=move.to_status,
            note=f"Closed automatically: resolved {days} days ago without the reporter's answer",
            data={"idle_days": days},
            at=now,
        )
        closed.append(row.ticket.id)
    return closed

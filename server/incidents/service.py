"""Incident operations: open or join, link alarms, steps, escalation, resolution.

The alarm hook (server.incidents.hooks), the routes and the scheduler call these inside
their transaction; each change of an incident is appended to its timeline, published on
the live feed and, for opened, escalated and resolved, queued in the notification outbox,
all in that same transaction.

Decisions the issue left open:

* An incident opens with the server's clock; its steps' deadlines run from then (a device's
  clock may be off, and a late delivery should still give staff their minutes).
* A report by staff of a kind already open for the site and zone joins that incident (a
  second guard calling in the same fire) and is recorded as `reported`.
* Steps of the reporter's own role are assigned to the reporter (the guard who found the
  fire is the one on the scene); a repair step's ticket, once auto-assigned, gives the step
  its assignee.
* A supervisor may resolve an incident by hand with steps pending or alarms active (a
  stuck sensor must not keep an incident open forever); the timeline records what was left.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

import asyncpg

from server.alarms.models import AlarmChange
from server.auth import Principal
from server.db import Connection
from server.errors import Conflict, Forbidden, Invalid, NotFound
from server.incidents import escalation, grouping, lifecycle, store
from server.incidents.models import (
    Incident,
    IncidentDetail,
    IncidentIn,
    IncidentStep,
    Source,
)
from server.incidents.playbooks import (
    LOCALES,
    IncidentKind,
    Locale,
    escalation_chain,
    incident_title,
    negotiate_locale,
    playbook,
    render_notice,
)
from server.live import hub as live
from server.notifications.models import EventKind
from server.notifications.outbox import Outbound, enqueue
from server.tickets.service import open_incident_ticket

SYSTEM: Final = "system"
ESCALATION_BATCH: Final = 200
GATEWAY_BATCH: Final = 100


# --- opening and joining -------------------------------------------------------------------


@dataclass(slots=True)
class Wanted:
    """An incident to open, or to join when one is open for its site, zone and kind."""

    site_id: int
    zone_id: int | None
    kind: IncidentKind
    source: Source
    alarm_ids: list[int] = field(default_factory=list)
    opened_by: Principal | None = None
    title: str | None = None
    description: str = ""
    place: str | None = None  # a building, for the generated title
    place_zone_id: int | None = None  # or the zone whose name is the place

    @property
    def key(self) -> tuple[int, int | None, str]:
        return (self.site_id, self.zone_id, self.kind)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The incident a Wanted ended up in, and whether it was opened just now."""

    incident: Incident
    opened: bool


def _merge(wanted: Iterable[Wanted]) -> dict[tuple[int, int | None, str], Wanted]:
    merged: dict[tuple[int, int | None, str], Wanted] = {}
    for w in wanted:
        first = merged.get(w.key)
        if first is None:
            merged[w.key] = replace(w, alarm_ids=list(w.alarm_ids))
        else:
            first.alarm_ids += [a for a in w.alarm_ids if a not in first.alarm_ids]
    return merged


async def open_or_join(
    conn: Connection, wanted: Sequence[Wanted], now: datetime
) -> dict[tuple[int, int | None, str], Outcome]:
    """Open the incidents wanted, or join the open ones, and link their alarms.

    The caller holds the sites' locks (store.lock_sites). An incident resolved by another
    transaction between our insert and our lock is not joined: the loop opens a new one.
    """
    merged = _merge(wanted)
    if not merged:
        return {}
    outcomes: dict[tuple[int, int | None, str], Outcome] = {}
    for _ in range(3):
        missing = [w for k, w in sorted(merged.items(), key=_sort_key) if k not in outcomes]
        if not missing:
            break
        inserted = await store.insert_incidents(conn, [_new_row(w) for w in missing], now)
        new_ids = {r["id"] for r in inserted}
        for row in await store.lock_open(conn, [w.key for w in missing]):
            incident = store.incident_of(row)
            key = (incident.site_id, incident.zone_id, incident.kind)
            outcomes[key] = Outcome(incident, incident.id in new_ids)
    if any(k not in outcomes for k in merged):
        raise RuntimeError("could not open or lock the incidents wanted")  # a retry will

    opened = [o.incident for o in outcomes.values() if o.opened]
    joined = [(merged[k], o.incident) for k, o in outcomes.items() if not o.opened]
    timeline: list[store.TimelineRow] = []
    steps = await _add_steps(conn, opened, merged)
    for incident in opened:
        w = merged[(incident.site_id, incident.zone_id, incident.kind)]
        actor = w.opened_by
        timeline.append(
            (
                incident.id,
                now,
                actor.id if actor else None,
                actor.role if actor else SYSTEM,
                "opened",
                None,
                w.description,
                {"source": w.source, "kind": incident.kind},
            )
        )
    for w, incident in joined:
        if w.opened_by is not None:
            timeline.append(
                (
                    incident.id,
                    now,
                    w.opened_by.id,
                    w.opened_by.role,
                    "reported",
                    None,
                    w.description,
                    {"title": w.title} if w.title else {},
                )
            )
    links = await store.link_alarms(
        conn,
        [(o.incident.id, a) for k, o in outcomes.items() for a in merged[k].alarm_ids],
        now,
    )
    timeline += [
        (incident_id, now, None, SYSTEM, "alarm_linked", None, "", {"alarm_id": alarm_id})
        for incident_id, alarm_id in links
    ]
    await store.append_timeline(conn, timeline)
    await _open_tickets(conn, opened, steps, now)
    changed = {i for i, _ in links} | {i.id for w, i in joined if w.opened_by is not None}
    updated = [i for _, i in joined if i.id in changed]
    await store.touch(conn, [i.id for i in updated], now)
    await live.publish_many(
        conn,
        [_event("incident_opened", i) for i in opened]
        + [_event("incident_updated", i, change="alarm_linked") for i in updated],
    )
    if opened:
        await enqueue(conn, await _outbound(conn, "incident.opened", [i.id for i in opened]), now)
    return outcomes


def _sort_key(item: tuple[tuple[int, int | None, str], Wanted]) -> tuple[int, int, str]:
    (site, zone, kind), _ = item
    return (site, zone if zone is not None else 0, kind)


def _new_row(w: Wanted) -> store.NewIncidentRow:
    book = playbook(w.kind)
    return (
        w.site_id,
        w.zone_id,
        w.kind,
        w.title,
        w.description,
        w.source,
        w.opened_by.id if w.opened_by else None,
        book.title.zh,
        book.title.en,
        w.place,
        w.place_zone_id if w.place_zone_id is not None else w.zone_id,
    )


async def _add_steps(
    conn: Connection,
    opened: Sequence[Incident],
    wanted: dict[tuple[int, int | None, str], Wanted],
) -> list[asyncpg.Record]:
    """Freeze each new incident's playbook into its steps; returns the steps made."""
    rows: list[store.StepRow] = []
    for incident in opened:
        reporter = wanted[(incident.site_id, incident.zone_id, incident.kind)].opened_by
        for position, step in enumerate(playbook(incident.kind).steps):
            chain = escalation_chain(step.role)
            ack_due = incident.opened_at + step.ack_deadline
            rows.append(
                (
                    incident.id,
                    position,
                    step.key,
                    step.role,
                    store.to_json({"zh-CN": step.text.zh, "en": step.text.en}),
                    step.ack_minutes,
                    ack_due,
                    ",".join(chain),
                    escalation.next_escalation_at(len(chain), ack_due, step.ack_minutes, 0),
                    reporter.id if reporter is not None and reporter.role == step.role else None,
                    step.opens_ticket,
                    step.ticket_category,
                )
            )
    return await store.insert_steps(conn, rows)


async def _open_tickets(
    conn: Connection, opened: Sequence[Incident], steps: Sequence[asyncpg.Record], now: datetime
) -> None:
    """Repair steps open a ticket each, linked both ways (tickets.incident_id, step.ticket_id)."""
    repairs = [s for s in steps if s["opens_ticket"]]
    if not repairs:
        return
    facts = {r["id"]: r for r in await store.facts(conn, [i.id for i in opened])}
    by_id = {i.id: i for i in opened}
    updates: list[tuple[int, int, int | None]] = []
    timeline: list[store.TimelineRow] = []
    for step in sorted(repairs, key=lambda s: (s["incident_id"], s["position"])):
        incident = by_id[step["incident_id"]]
        locale = _locale(facts[incident.id]["site_locale"])
        text = step["text"][locale]
        ticket_id = await open_incident_ticket(
            conn,
            site_id=incident.site_id,
            incident_id=incident.id,
            category=step["ticket_category"],
            title=f"{incident.title}: {text}",
            description=text,
            zone_id=incident.zone_id,
            now=now,
        )
        assignee = await store.ticket_assignee(conn, ticket_id)
        updates.append((step["id"], ticket_id, assignee))
        timeline.append(
            (
                incident.id,
                now,
                None,
                SYSTEM,
                "ticket_opened",
                step["key"],
                "",
                {"ticket_id": ticket_id, "category": step["ticket_category"]},
            )
        )
    await store.set_step_tickets(conn, updates)
    await store.append_timeline(conn, timeline)


# --- from alarms ---------------------------------------------------------------------------


async def outage_wanted(
    conn: Connection, offline: Sequence[AlarmChange], now: datetime
) -> list[Wanted]:
    """Offline alarms that belong to a power outage: joining the site's open one, or
    making one when enough devices of a building went offline together (the caller holds
    the sites' locks, so concurrent batches see each other's alarms)."""
    sites = sorted({c.site_id for c in offline})
    wanted: list[Wanted] = []
    outages = await store.open_outages(conn, sites)
    for change in offline:
        if change.site_id in outages:
            wanted.append(Wanted(change.site_id, None, "power_outage", "outage", [change.alarm_id]))
    rest = [s for s in sites if s not in outages]
    if not rest:
        return wanted
    settings = await store.site_settings(conn, rest)
    rules = {s: grouping.OutageRule.of_site(settings.get(s)) for s in rest}
    since = min(c.at for c in offline if c.site_id in rules) - max(r.window for r in rules.values())
    rows = await store.recent_offline(conn, rest, since)
    groups = grouping.outage_groups(
        [
            grouping.OfflineAlarm(
                r["alarm_id"], r["site_id"], r["device_id"], r["building"], r["at"]
            )
            for r in rows
        ],
        [c.alarm_id for c in offline],
        rules,
    )
    for (site_id, building), alarms in sorted(
        groups.items(), key=lambda g: (g[0][0], g[0][1] or "")
    ):
        # The outage is site-wide: it takes in the site's other devices that went offline
        # in its window, whatever their building.
        start = alarms[0].at - rules[site_id].window
        others = [r["alarm_id"] for r in rows if r["site_id"] == site_id and r["at"] >= start]
        wanted.append(
            Wanted(
                site_id,
                None,
                "power_outage",
                "outage",
                [a.alarm_id for a in alarms] + others,
                place=building,
            )
        )
    return wanted


async def on_alarms_cleared(conn: Connection, alarm_ids: Sequence[int], now: datetime) -> None:
    """Record the clears in their open incidents; resolve those that are now done."""
    links = await store.active_links(conn, alarm_ids)
    if not links:
        return
    incident_ids = await store.lock_incidents(conn, [r["incident_id"] for r in links])
    await store.append_timeline(
        conn,
        [
            (
                r["incident_id"],
                now,
                None,
                SYSTEM,
                "alarm_cleared",
                None,
                "",
                {"alarm_id": r["alarm_id"]},
            )
            for r in links
            if r["incident_id"] in incident_ids
        ],
    )
    resolved = await resolve_if_done(conn, incident_ids, now)
    still_open = [i for i in incident_ids if i not in {r.id for r in resolved}]
    await store.touch(conn, still_open, now)
    rows = {r["id"]: r for r in await store.facts(conn, still_open)}
    await live.publish_many(
        conn,
        [
            _event("incident_updated", store.incident_of(rows[i]), change="alarm_cleared")
            for i in still_open
        ],
    )


async def resolve_if_done(
    conn: Connection, incident_ids: Sequence[int], now: datetime
) -> list[Incident]:
    """Resolve those of these locked incidents whose alarms cleared and steps are done."""
    resolved = [store.incident_of(r) for r in await store.resolve_if_done(conn, incident_ids, now)]
    await _after_resolve(conn, resolved, now, None, "")
    return resolved


async def _after_resolve(
    conn: Connection,
    resolved: Sequence[Incident],
    now: datetime,
    by: Principal | None,
    note: str,
    data: dict[str, Any] | None = None,
) -> None:
    if not resolved:
        return
    ids = [i.id for i in resolved]
    await store.stop_escalations(conn, ids)
    await store.append_timeline(
        conn,
        [
            (
                i.id,
                now,
                by.id if by else None,
                by.role if by else SYSTEM,
                "resolved",
                None,
                note,
                data or ({} if by else {"automatic": True}),
            )
            for i in resolved
        ],
    )
    await live.publish_many(conn, [_event("incident_resolved", i) for i in resolved])
    await enqueue(conn, await _outbound(conn, "incident.resolved", ids), now)


# --- the scheduler's work ------------------------------------------------------------------


async def escalate_due(conn: Connection, now: datetime, limit: int = ESCALATION_BATCH) -> list[int]:
    """Escalate steps not acknowledged by their deadline; returns the step ids escalated.

    Each escalation is recorded in the timeline, raises an alert for the site's
    supervisors, is published on the live feed and queued as `incident.escalated`.
    """
    claimed = await store.claim_escalations(conn, now, limit)
    if not claimed:
        return []
    updates: list[store.EscalationRow] = []
    stopped: list[int] = []
    done: list[tuple[asyncpg.Record, escalation.Escalation]] = []
    for row in claimed:
        if row["status"] not in lifecycle.ACTIVE_STATUSES:
            stopped.append(row["incident_id"])
            continue
        step_up = escalation.escalate(
            list(row["chain"]), row["escalation_level"], row["ack_due"], row["ack_minutes"], now
        )
        if step_up is None:  # not due after all (a deadline moved): leave it for later
            continue
        updates.append((row["id"], step_up.to_level, step_up.to_role, step_up.next_at))
        done.append((row, step_up))
    await store.stop_escalations(conn, stopped)
    await store.record_escalations(conn, updates, now)
    if not done:
        return []
    facts = {r["id"]: r for r in await store.facts(conn, [r["incident_id"] for r, _ in done])}
    await store.append_timeline(
        conn,
        [
            (
                row["incident_id"],
                now,
                None,
                SYSTEM,
                "step_escalated",
                row["key"],
                "",
                {
                    "from_role": e.from_role,
                    "to_role": e.to_role,
                    "level": e.to_level,
                    "ack_due": row["ack_due"].isoformat(),
                },
            )
            for row, e in done
        ],
    )
    await store.insert_alerts(
        conn,
        [
            (
                row["site_id"],
                f"incident_escalated_to_{e.to_role}",
                row["id"],
                _escalation_message(facts[row["incident_id"]], row, e),
                {
                    "incident_id": row["incident_id"],
                    "step_key": row["key"],
                    "from_role": e.from_role,
                    "to_role": e.to_role,
                    "level": e.to_level,
                },
            )
            for row, e in done
        ],
    )
    await store.touch(conn, list({r["incident_id"] for r, _ in done}), now)
    await live.publish_many(
        conn,
        [
            _event(
                "incident_escalated",
                store.incident_of(facts[row["incident_id"]]),
                step_key=row["key"],
                from_role=e.from_role,
                to_role=e.to_role,
                level=e.to_level,
            )
            for row, e in done
        ],
    )
    people = await store.contacts(
        conn, list({r["site_id"] for r, _ in done}), list({e.to_role for _, e in done})
    )
    outbound = []
    for row, e in done:
        fact = facts[row["incident_id"]]
        data = _payload(fact)
        data["step"] = {
            "key": row["key"],
            "role": row["role"],
            "text": row["text"],
            "ack_due": row["ack_due"].isoformat(),
        }
        data["escalation"] = {"from_role": e.from_role, "to_role": e.to_role, "level": e.to_level}
        data["contacts"] = [
            {"user_id": p["id"], "name": p["full_name"], "phone": p["phone"]}
            for p in people
            if p["site_id"] == row["site_id"] and p["role"] == e.to_role
        ]
        outbound.append(Outbound(row["site_id"], "incident.escalated", data))
    await enqueue(conn, outbound, now)
    return [row["id"] for row, _ in done]


def _escalation_message(fact: asyncpg.Record, row: asyncpg.Record, e: escalation.Escalation) -> str:
    locale = _locale(fact["site_locale"])
    text = row["text"][locale]
    if locale == "zh-CN":
        return f"事件「{fact['title']}」步骤未按时确认，已升级至{_ROLE_ZH[e.to_role]}：{text}"
    return (
        f"Incident '{fact['title']}': a step was not acknowledged in time and went to the "
        f"{e.to_role}: {text}"
    )


_ROLE_ZH: Final = {
    "technician": "维修技术员",
    "guard": "保安",
    "front_desk": "前台",
    "supervisor": "主管",
    "manager": "经理",
}


async def open_offline_incidents(
    conn: Connection, now: datetime, limit: int = GATEWAY_BATCH
) -> list[int]:
    """Gateways offline longer than the outage window, and in no outage: a
    `device_offline` incident each (of their zone). Returns the incident ids."""
    rows = await store.silent_gateways(
        conn, now, grouping.DEFAULT_OUTAGE_RULE.window.total_seconds(), limit
    )
    if not rows:
        return []
    await store.lock_sites(conn, [r["site_id"] for r in rows])
    outcomes = await open_or_join(
        conn,
        [
            Wanted(
                r["site_id"],
                r["zone_id"],
                "device_offline",
                "alarm",
                [r["alarm_id"]],
                place=None if r["zone_id"] is not None else r["device_id"],
            )
            for r in rows
        ],
        now,
    )
    return sorted({o.incident.id for o in outcomes.values()})


# --- staff ---------------------------------------------------------------------------------


async def report(
    conn: Connection, principal: Principal, data: IncidentIn, now: datetime
) -> Outcome:
    """Staff report an incident: it opens, or joins the open one of its site, zone and kind."""
    principal.require_site(data.site_id)
    if await store.site_locale(conn, data.site_id) is None:
        raise NotFound("site")
    if data.zone_id is not None and not await store.zone_on_site(conn, data.site_id, data.zone_id):
        raise Invalid("zone_id", "not a zone of this site")
    zone_id = grouping.incident_zone(data.kind, data.zone_id)
    await store.lock_sites(conn, [data.site_id])
    wanted = Wanted(
        data.site_id,
        zone_id,
        data.kind,
        "manual",
        opened_by=principal,
        title=data.title,
        description=data.description,
        place_zone_id=data.zone_id,
    )
    outcomes = await open_or_join(conn, [wanted], now)
    return outcomes[wanted.key]


async def visible_incident(conn: Connection, principal: Principal, incident_id: int) -> Incident:
    """The incident if the caller may see it (staff of its site); 404 otherwise."""
    incident = await store.get_incident(conn, incident_id)
    if incident is None or not principal.is_staff or not principal.sees_site(incident.site_id):
        raise NotFound("incident")
    return incident


async def _locked(conn: Connection, principal: Principal, incident_id: int) -> Incident:
    await visible_incident(conn, principal, incident_id)
    row = await store.lock_incident(conn, incident_id)
    assert row is not None  # incidents are never deleted
    return store.incident_of(row)


def _refused(exc: lifecycle.StepRefused) -> Exception:
    if exc.code == "forbidden":
        return Forbidden(str(exc))
    return Conflict(str(exc))


async def act_on_step(
    conn: Connection,
    principal: Principal,
    incident_id: int,
    key: str,
    action: str,
    note: str,
    now: datetime,
) -> None:
    """Acknowledge (`ack`) or complete (`done`) a step; doing it twice changes nothing."""
    incident = await _locked(conn, principal, incident_id)
    step = await store.get_step(conn, incident_id, key)
    if step is None:
        raise NotFound("step")
    try:
        lifecycle.check_step_action(
            incident.status,
            principal.role,
            principal.id,
            step["role"],
            step["escalated_to"],
            step["assignee_id"],
        )
    except lifecycle.StepRefused as exc:
        already = step["acked_at"] if action == "ack" else step["done_at"]
        if exc.code == "conflict" and already is not None:
            return  # a retry of what was done before the incident ended
        raise _refused(exc) from exc
    changed = (
        await store.ack_step(conn, step["id"], principal.id, note, now)
        if action == "ack"
        else await store.complete_step(conn, step["id"], principal.id, note, now)
    )
    if not changed:
        return
    timeline: list[store.TimelineRow] = [
        (
            incident_id,
            now,
            principal.id,
            principal.role,
            "step_acked" if action == "ack" else "step_done",
            key,
            note,
            {},
        )
    ]
    mitigating = await store.mark_mitigating(conn, incident_id, now)
    if mitigating:
        timeline.append(
            (incident_id, now, principal.id, principal.role, "mitigating", None, "", {})
        )
    await store.append_timeline(conn, timeline)
    resolved = await resolve_if_done(conn, [incident_id], now) if action == "done" else []
    if not resolved:
        await store.touch(conn, [incident_id], now)
        fresh = await store.get_incident(conn, incident_id)
        assert fresh is not None
        await live.publish_many(
            conn,
            [
                _event(
                    "incident_updated",
                    fresh,
                    change="step_acked" if action == "ack" else "step_done",
                    step_key=key,
                )
            ],
        )


async def resolve(
    conn: Connection, principal: Principal, incident_id: int, note: str, now: datetime
) -> None:
    """Resolve by hand; resolving a resolved (or closed) incident changes nothing."""
    incident = await _locked(conn, principal, incident_id)
    if incident.status in ("resolved", "closed"):
        return
    try:
        lifecycle.check_resolve(incident.status)
    except lifecycle.StepRefused as exc:
        raise _refused(exc) from exc
    pending = [r["key"] for r in await store.steps(conn, incident_id) if r["done_at"] is None]
    active = [a.alarm_id for a in await store.alarms(conn, incident_id) if a.cleared_at is None]
    row = await store.resolve(conn, incident_id, principal.id, now)
    assert row is not None  # locked and active
    left: dict[str, Any] = {}
    if pending:
        left["pending_steps"] = pending
    if active:
        left["active_alarm_ids"] = active
    await _after_resolve(conn, [store.incident_of(row)], now, principal, note, left)


async def close(
    conn: Connection, principal: Principal, incident_id: int, note: str, now: datetime
) -> None:
    """Close a resolved incident; closing a closed one changes nothing."""
    incident = await _locked(conn, principal, incident_id)
    if incident.status == "closed":
        return
    try:
        lifecycle.check_close(incident.status)
    except lifecycle.StepRefused as exc:
        raise _refused(exc) from exc
    row = await store.close(conn, incident_id, principal.id, now)
    assert row is not None
    await store.append_timeline(
        conn, [(incident_id, now, principal.id, principal.role, "closed", None, note, {})]
    )
    await live.publish_many(conn, [_event("incident_closed", store.incident_of(row))])


async def add_note(
    conn: Connection, principal: Principal, incident_id: int, note: str, now: datetime
) -> None:
    incident = await _locked(conn, principal, incident_id)
    await store.append_timeline(
        conn, [(incident_id, now, principal.id, principal.role, "note", None, note, {})]
    )
    await store.touch(conn, [incident_id], now)
    await live.publish_many(conn, [_event("incident_updated", incident, change="note")])


async def detail(
    conn: Connection, incident: Incident, accept_language: str | None
) -> IncidentDetail:
    """The incident with its steps, alarms and timeline, texts in the caller's language
    (Accept-Language) or the site's."""
    site_locale = await store.site_locale(conn, incident.site_id) or "zh-CN"
    locale = negotiate_locale(accept_language, site_locale)
    steps = [
        IncidentStep(
            key=r["key"],
            position=r["position"],
            role=r["role"],
            text=r["text"].get(locale) or r["text"].get("zh-CN", ""),
            ack_minutes=r["ack_minutes"],
            ack_due=r["ack_due"],
            chain=list(r["chain"]),
            escalation_level=r["escalation_level"],
            escalated_to=r["escalated_to"],
            escalated_at=r["escalated_at"],
            escalate_at=r["escalate_at"],
            assignee_id=r["assignee_id"],
            acked_at=r["acked_at"],
            acked_by=r["acked_by"],
            done_at=r["done_at"],
            done_by=r["done_by"],
            note=r["note"],
            opens_ticket=r["opens_ticket"],
            ticket_category=r["ticket_category"],
            ticket_id=r["ticket_id"],
        )
        for r in await store.steps(conn, incident.id)
    ]
    fields = {f: getattr(incident, f) for f in incident.__struct_fields__}
    return IncidentDetail(
        **fields,
        locale=locale,
        kind_title=incident_title(incident.kind, locale),
        steps=steps,
        alarms=await store.alarms(conn, incident.id),
        timeline=await store.timeline(conn, incident.id),
    )


# --- what leaves ---------------------------------------------------------------------------


def _locale(value: str | None) -> Locale:
    return "en" if value == "en" else "zh-CN"


def _event(kind: str, incident: Incident, **extra: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "site_id": incident.site_id,
        "incident_id": incident.id,
        "kind": incident.kind,
        "status": incident.status,
        "zone_id": incident.zone_id,
        "title": incident.title,
        **extra,
    }


def _payload(fact: asyncpg.Record) -> dict[str, Any]:
    """What every webhook of an incident carries: the incident and its site."""
    return {
        "incident": {
            "id": fact["id"],
            "kind": fact["kind"],
            "status": fact["status"],
            "title": fact["title"],
            "source": fact["source"],
            "zone_id": fact["zone_id"],
            "zone": fact["zone_name"],
            "opened_at": fact["opened_at"].isoformat(),
            "resolved_at": fact["resolved_at"].isoformat() if fact["resolved_at"] else None,
            "resolved_by": fact["resolved_by"],
        },
        "site": {
            "id": fact["site_id"],
            "code": fact["site_code"],
            "name": fact["site_name"],
            "locale": fact["site_locale"],
            "timezone": fact["site_timezone"],
        },
    }


async def _outbound(
    conn: Connection, event: EventKind, incident_ids: Sequence[int]
) -> list[Outbound]:
    rows = await store.facts(conn, incident_ids)
    result = []
    for fact in rows:
        data = _payload(fact)
        if event == "incident.opened":
            # The residents' notice (an SMS gateway sends it as is), in the site's time.
            since = fact["opened_at"].astimezone(ZoneInfo(fact["site_timezone"]))
            data["notice"] = {
                loc: render_notice(
                    fact["kind"],
                    loc,
                    site=fact["site_name"],
                    location=fact["zone_name"],
                    since=since,
                )
                for loc in LOCALES
            }
        result.append(Outbound(fact["site_id"], event, data))
    return result

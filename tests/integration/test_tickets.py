"""Tickets through the HTTP API against a real PostgreSQL: filing, the lifecycle and the role
matrix, resident isolation, SLA clocks with holds, breach detection, dispatch by skill,
qualification and load, auto-close, returns, ratings, follow-ups, repeats, proof of presence,
SLA policies, listing."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from server import scheduler
from server.auth import Principal
from server.checkpoints import qr_token
from server.checkpoints.keys import qr_ring
from server.config import Settings
from server.db import create_pool, init_connection
from server.tickets import lifecycle, service
from tests.conftest import World

PROBLEM = "application/problem+json"


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class Desk:
    """Two sites with their people, and helpers to file and move tickets."""

    def __init__(self, world: World, client: Any) -> None:
        self.world = world
        self.client = client
        self.conn = world.conn

    async def setup(self) -> Desk:
        w = self.world
        self.site = await w.site("garden")
        self.other_site = await w.site("plaza", kind="commercial")
        self.unit = await w.unit(self.site, "101")
        self.unit2 = await w.unit(self.site, "102")
        self.other_unit = await w.unit(self.other_site, "201")
        self.zone = await w.zone(self.site, "Elevator hall", "elevator_hall")
        self.zone2 = await w.zone(self.site, "Garage", "parking")
        self.admin = await w.user("root", "admin")
        self.manager = await w.user("max", "manager", self.site)
        self.supervisor = await w.user("sam", "supervisor", self.site)
        self.front_desk = await w.user("fay", "front_desk", self.site)
        self.tech = await w.user("tom", "technician", self.site, skills=["plumbing"])
        self.tech2 = await w.user("tim", "technician", self.site, skills=["plumbing"])
        self.guard = await w.user("gina", "guard", self.site, skills=["plumbing"])
        self.cleaner = await w.user("cleo", "cleaner", self.site)
        self.resident = await w.user("rita", "resident", unit_id=self.unit)
        self.neighbour = await w.user("nina", "resident", unit_id=self.unit2)
        self.other_sup = await w.user("otto", "supervisor", self.other_site)
        self.other_resident = await w.user("olga", "resident", unit_id=self.other_unit)
        return self

    def h(self, who: Principal) -> dict[str, str]:
        return self.world.headers(who)

    async def file(self, who: Principal | None = None, **body: Any) -> dict[str, Any]:
        body.setdefault("site_id", self.site)
        body.setdefault("kind", "repair")
        body.setdefault("category", "plumbing")
        body.setdefault("title", "Tap leaking")
        r = await self.client.post("/api/tickets", json=body, headers=self.h(who or self.resident))
        assert r.status_code == 201, r.text
        ticket: dict[str, Any] = r.json()
        return ticket

    async def act(self, who: Principal, ticket_id: int, action: str, **body: Any) -> Any:
        return await self.client.post(
            f"/api/tickets/{ticket_id}/events",
            json={"action": action, **body},
            headers=self.h(who),
        )

    async def move(
        self, who: Principal, ticket_id: int, action: str, **body: Any
    ) -> dict[str, Any]:
        r = await self.act(who, ticket_id, action, **body)
        assert r.status_code == 201, r.text
        ticket: dict[str, Any] = r.json()["ticket"]
        return ticket

    async def get(self, who: Principal, ticket_id: int) -> Any:
        return await self.client.get(f"/api/tickets/{ticket_id}", headers=self.h(who))

    async def events(self, who: Principal, ticket_id: int) -> list[dict[str, Any]]:
        r = await self.client.get(f"/api/tickets/{ticket_id}/events", headers=self.h(who))
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items

    async def in_status(self, status: str, kind: str = "repair") -> dict[str, Any]:
        """A ticket of the resident's, assigned to ``tech``, brought to ``status``."""
        t = await self.file(kind=kind, category="plumbing" if kind == "repair" else "noise")
        tid = t["id"]
        if status == "new":
            return t
        if status == "cancelled":
            return await self.move(self.resident, tid, "cancel")
        t = await self.move(self.front_desk, tid, "assign", assignee_id=self.tech.id)
        if status == "assigned":
            return t
        if status == "on_hold":
            return await self.move(self.tech, tid, "hold", reason="waiting for parts")
        t = await self.move(self.tech, tid, "start")
        if status == "in_progress":
            return t
        t = await self.move(self.tech, tid, "resolve", note="fixed")
        if status == "resolved":
            return t
        if status == "reopened":
            return await self.move(self.resident, tid, "return", note="still leaking")
        assert status == "closed"
        return await self.move(self.resident, tid, "confirm")

    async def settings(self, **body: Any) -> None:
        r = await self.client.put(
            f"/api/sites/{self.site}/ticket-settings", json=body, headers=self.h(self.manager)
        )
        assert r.status_code == 200, r.text

    def qr(self, checkpoint_id: int, site: int | None = None) -> str:
        settings = self.world.app.state.settings
        return qr_token.sign(qr_ring(settings), site or self.site, checkpoint_id, 1)


@pytest.fixture
async def desk(world: World, client: Any) -> Desk:
    return await Desk(world, client).setup()


async def _in_tx(db_url: str, task: Any, now: datetime) -> Any:
    conn = await asyncpg.connect(db_url)
    await init_connection(conn)
    try:
        async with conn.transaction():
            return await task(conn, now)
    finally:
        await conn.close()


# --- filing ---------------------------------------------------------------------------


async def test_resident_files_for_own_unit_with_default_sla(desk: Desk) -> None:
    t = await desk.file(description="Under the kitchen sink")
    assert t["status"] == "new"
    assert t["unit_id"] == desk.unit  # their unit by default
    assert t["reporter_id"] == desk.resident.id
    assert t["channel"] == "app"
    assert (t["respond_minutes"], t["resolve_minutes"]) == (120, 72 * 60)  # normal
    created = at(t["created_at"])
    assert at(t["response_due"]) == created + timedelta(hours=2)
    assert at(t["resolve_due"]) == created + timedelta(hours=72)
    assert t["breached"] is False
    assert t["repeat"] is False
    assert t["assignee_id"] is None
    assert t["allowed_actions"] == ["comment", "cancel"]
    urgent = await desk.file(priority="urgent", title="Water pouring from the ceiling")
    assert urgent["respond_minutes"] == 15
    (event,) = await desk.events(desk.resident, t["id"])
    assert event["action"] == "create"
    assert event["from_status"] is None
    assert event["to_status"] == "new"
    assert event["actor_id"] == desk.resident.id


async def test_staff_file_for_callers_and_places_are_checked(desk: Desk) -> None:
    hotline = await desk.file(
        desk.front_desk,
        channel="hotline",
        reporter_name="Mr Li",
        reporter_phone="+86 138 0000 0000",
        zone_id=desk.zone,
        kind="complaint",
        category="noise",
    )
    assert hotline["reporter_id"] is None
    assert hotline["reporter_name"] == "Mr Li"
    assert hotline["channel"] == "hotline"
    assert hotline["zone_id"] == desk.zone
    on_behalf = await desk.file(desk.front_desk, reporter_id=desk.resident.id, unit_id=desk.unit)
    assert on_behalf["reporter_id"] == desk.resident.id
    # The resident sees the ticket filed on their behalf.
    assert (await desk.get(desk.resident, on_behalf["id"])).status_code == 200
    found = await desk.file(desk.guard, channel="patrol", zone_id=desk.zone2)
    assert found["reporter_id"] == desk.guard.id  # staff who found it report it

    async def refused(who: Principal, field: str, **body: Any) -> None:
        body = {"site_id": desk.site, "kind": "repair", "category": "plumbing", "title": "x"} | body
        r = await desk.client.post("/api/tickets", json=body, headers=desk.h(who))
        assert problem(r, 422)["errors"][0]["field"] == field

    await refused(desk.front_desk, "reporter_name", channel="hotline")
    await refused(desk.front_desk, "reporter_id", reporter_id=desk.other_resident.id)
    await refused(desk.front_desk, "reporter_name", reporter_id=desk.resident.id, reporter_name="A")
    await refused(desk.front_desk, "zone_id", unit_id=desk.unit, zone_id=desk.zone)
    await refused(desk.front_desk, "unit_id", unit_id=desk.other_unit)
    await refused(desk.resident, "unit_id", unit_id=desk.unit2)
    await refused(desk.resident, "channel", channel="hotline")
    await refused(desk.resident, "reporter_id", reporter_id=desk.neighbour.id)
    await refused(desk.front_desk, "category", category="plumbign")
    # Another site answers 404, for staff and residents alike.
    for who in (desk.supervisor, desk.resident):
        r = await desk.client.post(
            "/api/tickets",
            json={"site_id": desk.other_site, "kind": "repair", "category": "other", "title": "x"},
            headers=desk.h(who),
        )
        problem(r, 404)


async def test_residents_see_only_their_own_and_staff_only_their_sites(desk: Desk) -> None:
    mine = await desk.file()
    theirs = await desk.file(desk.neighbour)
    staff_made = await desk.file(desk.supervisor, zone_id=desk.zone)
    r = await desk.client.get("/api/tickets", headers=desk.h(desk.resident))
    assert [t["id"] for t in r.json()["items"]] == [mine["id"]]
    # Even naming the site does not widen a resident's view.
    r = await desk.client.get(f"/api/tickets?site_id={desk.site}", headers=desk.h(desk.resident))
    assert [t["id"] for t in r.json()["items"]] == [mine["id"]]
    for tid in (theirs["id"], staff_made["id"]):
        problem(await desk.get(desk.resident, tid), 404)
        r = await desk.client.get(f"/api/tickets/{tid}/events", headers=desk.h(desk.resident))
        problem(r, 404)
        problem(await desk.act(desk.resident, tid, "comment", note="hello"), 404)
    # Staff of another site: 404 on the ticket, on filtering by its site, on moves.
    problem(await desk.get(desk.other_sup, mine["id"]), 404)
    r = await desk.client.get(f"/api/tickets?site_id={desk.site}", headers=desk.h(desk.other_sup))
    problem(r, 404)
    r = await desk.client.get("/api/tickets", headers=desk.h(desk.other_sup))
    assert r.json()["items"] == []
    problem(await desk.act(desk.other_sup, mine["id"], "cancel"), 404)
    r = await desk.client.get("/api/tickets", headers=desk.h(desk.cleaner))
    assert {t["id"] for t in r.json()["items"]} == {mine["id"], theirs["id"], staff_made["id"]}


# --- the lifecycle ----------------------------------------------------------------------


async def test_repair_lifecycle_end_to_end_with_audit_trail(desk: Desk) -> None:
    t = await desk.file()
    tid = t["id"]
    t = await desk.move(desk.front_desk, tid, "assign", assignee_id=desk.tech.id, note="Tom goes")
    assert t["status"] == "assigned"
    assert t["assignee_id"] == desk.tech.id
    t = await desk.move(desk.tech, tid, "accept")
    assert t["status"] == "assigned"
    assert t["responded_at"] is not None
    t = await desk.move(desk.tech, tid, "start")
    assert t["status"] == "in_progress"
    t = await desk.move(desk.tech, tid, "hold", reason="waiting for a valve")
    assert t["status"] == "on_hold"
    assert t["hold_reason"] == "waiting for a valve"
    assert t["resolve_due"] is None  # the clock is stopped
    t = await desk.move(desk.resident, tid, "comment", note="any news?")
    assert t["status"] == "on_hold"
    t = await desk.move(desk.tech, tid, "resume")
    assert t["status"] == "in_progress"
    assert t["hold_reason"] is None
    assert t["resolve_due"] is not None
    t = await desk.move(desk.tech, tid, "resolve", note="valve replaced")
    assert t["status"] == "resolved"
    assert t["resolved_at"] is not None
    assert "confirm" in (await desk.get(desk.resident, tid)).json()["allowed_actions"]
    t = await desk.move(desk.resident, tid, "confirm", note="thanks")
    assert t["status"] == "closed"
    assert t["closed_at"] is not None
    t = await desk.move(desk.supervisor, tid, "comment", note="audited")
    assert t["status"] == "closed"
    r = await desk.act(desk.resident, tid, "comment", note="it broke again")
    assert problem(r, 409)["current_status"] == "closed"

    trail = await desk.events(desk.resident, tid)
    assert [(e["action"], e["from_status"], e["to_status"], e["actor_id"]) for e in trail] == [
        ("create", None, "new", desk.resident.id),
        ("assign", "new", "assigned", desk.front_desk.id),
        ("accept", "assigned", "assigned", desk.tech.id),
        ("start", "assigned", "in_progress", desk.tech.id),
        ("hold", "in_progress", "on_hold", desk.tech.id),
        ("comment", "on_hold", "on_hold", desk.resident.id),
        ("resume", "on_hold", "in_progress", desk.tech.id),
        ("resolve", "in_progress", "resolved", desk.tech.id),
        ("confirm", "resolved", "closed", desk.resident.id),
        ("comment", "closed", "closed", desk.supervisor.id),
    ]
    assert trail[1]["note"] == "Tom goes"
    assert trail[1]["data"]["assignee_id"] == desk.tech.id
    assert trail[4]["data"]["reason"] == "waiting for a valve"
    # Paging through the trail.
    r = await desk.client.get(f"/api/tickets/{tid}/events?limit=4", headers=desk.h(desk.tech))
    page = r.json()
    assert len(page["items"]) == 4
    assert page["next_after"] == page["items"][-1]["id"]


async def test_refused_moves_name_status_and_allowed_actions(desk: Desk) -> None:
    """The issue's examples, one by one: each a 409 naming the status and what is allowed."""
    new = await desk.file()
    body = problem(
        await desk.act(desk.resident, new["id"], "assign", assignee_id=desk.tech.id), 409
    )
    assert body["type"].endswith("/ticket-move-refused")
    assert body["current_status"] == "new"
    assert body["action"] == "assign"
    assert body["allowed_actions"] == ["comment", "cancel"]
    assert "dispatch" in body["detail"]
    problem(await desk.act(desk.tech, new["id"], "start"), 409)

    assigned = await desk.in_status("assigned")
    body = problem(await desk.act(desk.guard, assigned["id"], "resolve"), 409)
    assert "technician" in body["detail"]
    assert body["current_status"] == "assigned"
    body = problem(await desk.act(desk.tech2, assigned["id"], "start"), 409)
    assert "assignee" in body["detail"]

    resolved = await desk.in_status("resolved")
    for who in (desk.tech, desk.supervisor, desk.guard):  # not the reporter, not front desk
        body = problem(await desk.act(who, resolved["id"], "confirm"), 409)
        assert "confirm" not in body["allowed_actions"]
    problem(await desk.act(desk.tech, resolved["id"], "return", note="no"), 409)
    problem(await desk.act(desk.resident, resolved["id"], "follow_up", satisfaction="neutral"), 409)
    body = problem(await desk.act(desk.manager, resolved["id"], "auto_close"), 409)
    assert "system" in body["detail"]
    # Front desk speaks for the reporter (a hotline call-back).
    assert (await desk.move(desk.front_desk, resolved["id"], "confirm"))["status"] == "closed"

    cancelled = await desk.in_status("cancelled")
    body = problem(await desk.act(desk.supervisor, cancelled["id"], "comment", note="x"), 409)
    assert body["allowed_actions"] == []
    in_progress = await desk.in_status("in_progress")
    body = problem(await desk.act(desk.resident, in_progress["id"], "cancel"), 409)
    assert "supervisor" in body["detail"]
    # A refused move changed nothing.
    after = (await desk.get(desk.tech, in_progress["id"])).json()
    assert after["status"] == "in_progress"
    assert [e["action"] for e in await desk.events(desk.tech, in_progress["id"])][-1] == "start"


_BODIES: dict[str, dict[str, Any]] = {
    "assign": {"assignee_id": 0},  # filled in with tech2
    "hold": {"reason": "parts"},
    "return": {"note": "not fixed"},
    "rate": {"rating": 4},
    "follow_up": {"satisfaction": "satisfied"},
    "comment": {"note": "note"},
}


async def test_role_matrix_every_forbidden_move_is_refused(desk: Desk) -> None:
    """Every status x every role x every action the rules forbid: the server refuses it with
    a 409 naming the status and the caller's allowed actions, and stores nothing; the
    ticket's ``allowed_actions`` for each caller are the rules' own."""
    tickets = [await desk.in_status(s) for s in lifecycle.STATUSES]
    tickets.append(await desk.in_status("resolved", kind="complaint"))
    actors = [
        desk.admin,
        desk.manager,
        desk.supervisor,
        desk.front_desk,
        desk.guard,
        desk.cleaner,
        desk.tech,
        desk.tech2,
        desk.resident,
    ]
    bodies = _BODIES | {"assign": {"assignee_id": desk.tech2.id}}
    refused = 0
    for t in tickets:
        view = lifecycle.TicketView(
            status=t["status"],
            kind=t["kind"],
            category=t["category"],
            reporter_id=t["reporter_id"],
            assignee_id=t["assignee_id"],
            hold_resume_status="assigned" if t["status"] == "on_hold" else None,
        )
        events_before = len(await desk.events(desk.supervisor, t["id"]))
        for who in actors:
            expected = list(lifecycle.allowed_actions(view, lifecycle.Actor(who.id, who.role)))
            shown = (await desk.get(who, t["id"])).json()
            assert shown["allowed_actions"] == expected, (t["status"], who.role)
            for action in lifecycle.ACTIONS:
                if action in expected:
                    continue
                r = await desk.act(who, t["id"], action, **bodies.get(action, {}))
                body = problem(r, 409)
                assert body["current_status"] == t["status"], (action, who.role, body)
                assert body["allowed_actions"] == expected
                assert body["action"] == action
                refused += 1
        assert len(await desk.events(desk.supervisor, t["id"])) == events_before
        assert (await desk.get(desk.supervisor, t["id"])).json()["status"] == t["status"]
    assert refused > 500  # the matrix really was walked


async def test_event_bodies_are_checked_per_action(desk: Desk) -> None:
    t = await desk.in_status("in_progress")
    tid = t["id"]
    assert problem(await desk.act(desk.tech, tid, "hold"), 422)["errors"][0]["field"] == "reason"
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    r = await desk.act(desk.tech, tid, "hold", reason="parts", until=past)
    assert problem(r, 422)["errors"][0]["field"] == "until"
    r = await desk.act(desk.tech, tid, "teleport")
    assert problem(r, 422)["errors"][0]["field"] == "action"
    r = await desk.act(desk.tech, tid, "comment", note="x", colour="red")
    assert problem(r, 422)["errors"][0]["field"] == "colour"
    assert problem(await desk.act(desk.tech, tid, "comment"), 422)["errors"][0]["field"] == "note"
    r = await desk.client.post(
        f"/api/tickets/{tid}/events", content=b"{nope", headers=desk.h(desk.tech)
    )
    problem(r, 400)
    r = await desk.client.post(
        f"/api/tickets/{tid}/events",
        content=b"action=comment",
        headers={**desk.h(desk.tech), "content-type": "text/plain"},
    )
    problem(r, 415)
    r = await desk.act(desk.tech, tid, "comment", note="x" * 3000, padding=" " * (3 * 2**20))
    assert problem(r, 413)["type"].endswith("/payload-too-large")
    # A reassignment goes to staff who may hold the ticket.
    for assignee in (desk.guard.id, desk.other_sup.id, desk.resident.id, 10**12):
        r = await desk.act(desk.supervisor, tid, "assign", assignee_id=assignee)
        assert problem(r, 422)["errors"][0]["field"] == "assignee_id"
    until = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    t = await desk.move(desk.tech, tid, "hold", reason="parts", until=until.isoformat())
    assert at(t["hold_until"]) == until
    # Reassigning ends the hold and restarts at assigned.
    t = await desk.move(desk.supervisor, tid, "assign", assignee_id=desk.tech2.id)
    assert t["status"] == "assigned"
    assert t["assignee_id"] == desk.tech2.id
    assert t["hold_until"] is None
    assert (
        await desk.conn.fetchval(
            "SELECT count(*) FROM ticket_holds WHERE ticket_id = $1 AND ended_at IS NULL", tid
        )
        == 0
    )


async def test_events_are_append_only(desk: Desk) -> None:
    t = await desk.file()
    with pytest.raises(asyncpg.PostgresError, match="append-only"):
        await desk.conn.execute("UPDATE ticket_events SET note = 'x' WHERE ticket_id = $1", t["id"])
    with pytest.raises(asyncpg.PostgresError, match="append-only"):
        await desk.conn.execute("DELETE FROM ticket_events WHERE ticket_id = $1", t["id"])
    with pytest.raises(asyncpg.PostgresError, match="append-only"):
        await desk.conn.execute("TRUNCATE ticket_events CASCADE")
    assert len(await desk.events(desk.resident, t["id"])) == 1


# --- returns, auto-close, ratings, follow-ups ----------------------------------------------


async def test_return_reopens_and_counts_and_pauses_the_clock(desk: Desk) -> None:
    t = await desk.in_status("resolved")
    tid = t["id"]
    r = await desk.act(desk.resident, tid, "return")
    assert problem(r, 422)["errors"][0]["field"] == "note"
    # Filed three hours ago, resolved an hour later: it waited two hours for the reporter.
    await desk.conn.execute(
        "UPDATE tickets SET created_at = created_at - interval '3 hours',"
        " resolved_at = resolved_at - interval '2 hours' WHERE id = $1",
        tid,
    )
    row = await desk.conn.fetchrow("SELECT created_at, resolved_at FROM tickets WHERE id = $1", tid)
    t = await desk.move(desk.resident, tid, "return", note="still dripping")
    assert t["status"] == "reopened"
    assert t["reopen_count"] == 1
    assert t["resolved_at"] is None
    returned = at((await desk.events(desk.resident, tid))[-1]["at"])
    waited = returned - row["resolved_at"]
    assert waited >= timedelta(hours=2)
    assert at(t["resolve_due"]) == row["created_at"] + timedelta(hours=72) + waited
    t = await desk.move(desk.tech, tid, "start")
    t = await desk.move(desk.tech, tid, "resolve")
    t = await desk.move(desk.front_desk, tid, "return", note="caller says no")
    assert t["reopen_count"] == 2
    t = await desk.move(desk.tech, tid, "resolve")  # straight from reopened
    t = await desk.move(desk.resident, tid, "confirm")
    assert t["status"] == "closed"
    assert t["reopen_count"] == 2
    actions = [e["action"] for e in await desk.events(desk.resident, tid)]
    assert actions.count("return") == 2


async def test_resolved_tickets_close_by_themselves_after_the_sites_days(
    desk: Desk, db_url: str, settings: Settings
) -> None:
    t = await desk.in_status("resolved")
    resolved_at = at(t["resolved_at"])
    assert await _in_tx(db_url, service.auto_close, resolved_at + timedelta(days=6, hours=23)) == []
    closed = await _in_tx(db_url, service.auto_close, resolved_at + timedelta(days=7, seconds=1))
    assert closed == [t["id"]]
    t = (await desk.get(desk.resident, t["id"])).json()
    assert t["status"] == "closed"
    last = (await desk.events(desk.resident, t["id"]))[-1]
    assert last["action"] == "auto_close"
    assert last["actor_id"] is None
    assert last["actor_role"] == "system"
    assert last["from_status"] == "resolved"
    assert last["data"] == {"idle_days": 7}
    assert "automatically" in last["note"]
    # A site may choose fewer days; confirmed or returned tickets are not touched.
    await desk.settings(auto_close_days=2)
    quick = await desk.in_status("resolved")
    returned = await desk.in_status("reopened")
    later = at(quick["resolved_at"]) + timedelta(days=2, seconds=1)
    # Through the scheduler's own pass, as `estateops scheduler` runs it.
    pool = await create_pool(settings, min_size=1)
    try:
        done = await scheduler.run_once(pool, later)
        assert done["auto_close_tickets"] == [quick["id"]]
        assert (await scheduler.run_once(pool, later))["auto_close_tickets"] == []
    finally:
        await pool.close()
    assert (await desk.get(desk.resident, returned["id"])).json()["status"] == "reopened"


async def test_ratings_once_one_to_five_by_the_reporter(desk: Desk) -> None:
    early = await desk.in_status("in_progress")
    problem(await desk.act(desk.resident, early["id"], "rate", rating=5), 409)
    t = await desk.in_status("resolved")
    tid = t["id"]
    r = await desk.act(desk.resident, tid, "rate", rating=6)
    assert problem(r, 422)["errors"][0]["field"] == "rating"
    problem(await desk.act(desk.tech, tid, "rate", rating=5), 409)  # not one's own work
    problem(await desk.act(desk.supervisor, tid, "rate", rating=5), 409)
    t = await desk.move(desk.resident, tid, "rate", rating=4, comment="quick and tidy")
    assert t["rating"] == 4
    assert t["rating_comment"] == "quick and tidy"
    assert t["status"] == "resolved"
    body = problem(await desk.act(desk.resident, tid, "rate", rating=1), 409)
    assert body["rating"] == 4
    t = await desk.move(desk.resident, tid, "confirm")
    problem(await desk.act(desk.front_desk, tid, "rate", rating=2), 409)  # still once
    closed = await desk.in_status("closed")
    t = await desk.move(desk.front_desk, closed["id"], "rate", rating=5)  # on their behalf
    assert t["rating"] == 5


async def test_complaints_are_followed_up_for_satisfaction(desk: Desk) -> None:
    t = await desk.in_status("resolved", kind="complaint")
    tid = t["id"]
    r = await desk.act(desk.front_desk, tid, "follow_up", satisfaction="delighted")
    assert problem(r, 422)["errors"][0]["field"] == "satisfaction"
    t = await desk.move(
        desk.front_desk, tid, "follow_up", satisfaction="dissatisfied", note="called back"
    )
    assert t["satisfaction"] == "dissatisfied"
    assert t["followed_up_at"] is not None
    t = await desk.move(desk.resident, tid, "confirm")
    t = await desk.move(desk.supervisor, tid, "follow_up", satisfaction="satisfied")
    assert t["satisfaction"] == "satisfied"
    assert t["status"] == "closed"
    trail = await desk.events(desk.supervisor, tid)
    assert [e["data"].get("satisfaction") for e in trail if e["action"] == "follow_up"] == [
        "dissatisfied",
        "satisfied",
    ]
    repair = await desk.in_status("resolved")
    body = problem(
        await desk.act(desk.front_desk, repair["id"], "follow_up", satisfaction="neutral"), 409
    )
    assert "complaints" in body["detail"]


# --- SLA clocks and breaches ---------------------------------------------------------------


async def test_sla_clock_pauses_on_hold(desk: Desk) -> None:
    t = await desk.file(priority="urgent")  # respond 15 min, resolve 4 h
    tid = t["id"]
    await desk.move(desk.front_desk, tid, "assign", assignee_id=desk.tech.id)
    t = await desk.move(desk.tech, tid, "hold", reason="no access to the flat")
    assert t["responded_at"] is not None
    assert t["response_breached"] is False
    assert t["resolve_due"] is None
    assert t["status"] == "on_hold"
    # Filed 90 minutes ago; the hold began 30 minutes after filing.
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=90)
    await desk.conn.execute("UPDATE tickets SET created_at = $2 WHERE id = $1", tid, t0)
    await desk.conn.execute(
        "UPDATE ticket_holds SET started_at = $2 WHERE ticket_id = $1",
        tid,
        t0 + timedelta(minutes=30),
    )
    t = await desk.move(desk.tech, tid, "resume")
    resumed = at((await desk.events(desk.tech, tid))[-1]["at"])
    held = resumed - (t0 + timedelta(minutes=30))
    assert at(t["resolve_due"]) == t0 + timedelta(hours=4) + held
    assert t["status"] == "assigned"  # back to where it was held from
    # A second hold adds to the first: everything 30 minutes earlier, the new hold 20 long.
    await desk.move(desk.tech, tid, "hold", reason="again")
    await desk.conn.execute(
        "UPDATE tickets SET created_at = created_at - interval '30 minutes' WHERE id = $1", tid
    )
    await desk.conn.execute(
        "UPDATE ticket_holds SET started_at = started_at - interval '30 minutes',"
        " ended_at = ended_at - interval '30 minutes'"
        " WHERE ticket_id = $1 AND ended_at IS NOT NULL",
        tid,
    )
    await desk.conn.execute(
        "UPDATE ticket_holds SET started_at = started_at - interval '20 minutes'"
        " WHERE ticket_id = $1 AND ended_at IS NULL",
        tid,
    )
    t = await desk.move(desk.supervisor, tid, "resume")
    holds = await desk.conn.fetch(
        "SELECT started_at, ended_at FROM ticket_holds WHERE ticket_id = $1 ORDER BY id", tid
    )
    assert holds[0]["ended_at"] < holds[1]["started_at"]  # two separate pauses
    paused = sum((h["ended_at"] - h["started_at"] for h in holds), timedelta())
    assert paused > timedelta(minutes=80)
    assert at(t["resolve_due"]) == t0 - timedelta(minutes=30) + timedelta(hours=4) + paused
    # Resolved after 90 minutes of clock time: on time, and the report knows it.
    t = await desk.move(desk.tech, tid, "resolve")
    assert t["resolve_breached"] is False
    assert t["breached"] is False


async def test_late_response_and_resolution_are_flagged_when_they_happen(desk: Desk) -> None:
    t = await desk.file(priority="urgent")
    tid = t["id"]
    await desk.move(desk.front_desk, tid, "assign", assignee_id=desk.tech.id)
    await desk.conn.execute(
        "UPDATE tickets SET created_at = created_at - interval '5 hours' WHERE id = $1", tid
    )
    t = await desk.move(desk.tech, tid, "accept")
    assert t["response_breached"] is True
    assert t["breached"] is True
    t = await desk.move(desk.tech, tid, "resolve")
    assert t["resolve_breached"] is True


async def test_scheduler_detects_breaches_and_alerts_supervisors(desk: Desk, db_url: str) -> None:
    late = await desk.file(priority="urgent", title="Burst pipe")
    answered = await desk.file(priority="urgent", title="Dripping")
    await desk.move(desk.front_desk, answered["id"], "assign", assignee_id=desk.tech.id)
    await desk.move(desk.tech, answered["id"], "accept")
    held = await desk.file(priority="urgent", title="Needs parts")
    await desk.move(desk.front_desk, held["id"], "assign", assignee_id=desk.tech.id)
    await desk.move(desk.supervisor, held["id"], "hold", reason="parts ordered")
    normal = await desk.file(title="Slow drain")
    created = at(late["created_at"])

    assert await _in_tx(db_url, service.detect_breaches, created + timedelta(minutes=14)) == []
    flagged = await _in_tx(db_url, service.detect_breaches, created + timedelta(minutes=16))
    assert flagged == [late["id"]]  # answered in time, on hold, or with time left: not flagged
    again = await _in_tx(db_url, service.detect_breaches, created + timedelta(minutes=20))
    assert again == []  # once per clock
    t = (await desk.get(desk.supervisor, late["id"])).json()
    assert t["breached"] is True
    assert t["response_breached"] is True
    assert t["resolve_breached"] is False
    last = (await desk.events(desk.supervisor, late["id"]))[-1]
    assert last["action"] == "sla_breach"
    assert last["actor_role"] == "system"
    assert last["data"]["clocks"] == ["response"]
    alerts = await desk.conn.fetch(
        "SELECT site_id, kind, subject_type, subject_id, data FROM alerts ORDER BY id"
    )
    assert [(a["site_id"], a["kind"], a["subject_type"], a["subject_id"]) for a in alerts] == [
        (desk.site, "ticket_response_breach", "ticket", late["id"])
    ]
    assert alerts[0]["data"]["clock"] == "response"

    later = created + timedelta(hours=4, minutes=1)
    flagged = await _in_tx(db_url, service.detect_breaches, later)
    # Urgent: 4 h to resolve; normal: 2 h to answer.
    assert set(flagged) == {late["id"], answered["id"], normal["id"]}
    flagged = await _in_tx(db_url, service.detect_breaches, created + timedelta(hours=3, days=3))
    assert flagged == [normal["id"]]  # its 72 h resolution ran out too
    kinds = await desk.conn.fetch(
        "SELECT kind, subject_id FROM alerts WHERE subject_id = $1 ORDER BY id", normal["id"]
    )
    assert [k["kind"] for k in kinds] == ["ticket_response_breach", "ticket_resolution_breach"]
    # The list filters on it; the ticket on hold is still not breached.
    r = await desk.client.get(
        f"/api/tickets?site_id={desk.site}&breached=true", headers=desk.h(desk.supervisor)
    )
    assert {x["id"] for x in r.json()["items"]} == {late["id"], answered["id"], normal["id"]}
    assert (await desk.get(desk.supervisor, held["id"])).json()["breached"] is False


async def test_two_schedulers_flag_each_breach_once(desk: Desk, db_url: str) -> None:
    tickets = [await desk.file(priority="urgent", title=f"Leak {i}") for i in range(6)]
    when = at(tickets[-1]["created_at"]) + timedelta(minutes=30)
    first, second = await asyncio.gather(
        _in_tx(db_url, service.detect_breaches, when), _in_tx(db_url, service.detect_breaches, when)
    )
    assert sorted(first + second) == sorted(t["id"] for t in tickets)
    assert await desk.conn.fetchval("SELECT count(*) FROM alerts") == 6
    assert (
        await desk.conn.fetchval("SELECT count(*) FROM ticket_events WHERE action = 'sla_breach'")
        == 6
    )


# --- SLA policies -------------------------------------------------------------------------


async def test_sla_policies_per_site_priority_and_category(desk: Desk) -> None:
    url = f"/api/sites/{desk.site}/sla-policies"
    r = await desk.client.get(url, headers=desk.h(desk.tech))
    defaults = r.json()["policies"]
    assert [
        (p["priority"], p["respond_minutes"], p["resolve_minutes"], p["source"]) for p in defaults
    ] == [
        ("urgent", 15, 240, "default"),
        ("high", 60, 1440, "default"),
        ("normal", 120, 4320, "default"),
        ("low", 480, 10080, "default"),
    ]
    policies = {
        "policies": [
            {"priority": "normal", "respond_minutes": 30, "resolve_minutes": 600},
            {
                "priority": "urgent",
                "category": "plumbing",
                "respond_minutes": 5,
                "resolve_minutes": 60,
            },
        ]
    }
    problem(await desk.client.put(url, json=policies, headers=desk.h(desk.supervisor)), 403)
    r = await desk.client.put(url, json=policies, headers=desk.h(desk.manager))
    assert r.status_code == 200, r.text
    got = {
        (p["priority"], p["category"]): (p["respond_minutes"], p["source"])
        for p in r.json()["policies"]
    }
    assert got[("normal", None)] == (30, "site")
    assert got[("urgent", "plumbing")] == (5, "site")
    assert got[("urgent", None)] == (15, "default")

    assert (await desk.file())["respond_minutes"] == 30
    urgent = await desk.file(priority="urgent")
    assert (urgent["respond_minutes"], urgent["resolve_minutes"]) == (5, 60)
    other = await desk.file(priority="urgent", category="electrical")
    assert (other["respond_minutes"], other["resolve_minutes"]) == (15, 240)

    bad = {"policies": [{"priority": "low", "respond_minutes": 600, "resolve_minutes": 60}]}
    r = await desk.client.put(url, json=bad, headers=desk.h(desk.manager))
    assert problem(r, 422)["errors"][0]["field"] == "policies[0].respond_minutes"
    twice = {"policies": [policies["policies"][0], policies["policies"][0]]}
    assert problem(await desk.client.put(url, json=twice, headers=desk.h(desk.manager)), 422)
    # Another site's manager sees nothing of this one.
    boss = await desk.world.user("bo", "manager", desk.other_site)
    problem(await desk.client.put(url, json=policies, headers=desk.h(boss)), 404)
    problem(await desk.client.get(url, headers=desk.h(boss)), 404)
    problem(await desk.client.get(url, headers=desk.h(desk.resident)), 403)


# --- dispatch -----------------------------------------------------------------------------


async def test_auto_assignment_by_skill_qualification_and_load(desk: Desk) -> None:
    # Off by default: tickets wait in the dispatch queue.
    assert (await desk.file())["status"] == "new"
    await desk.settings(auto_assign=True)
    w = desk.world
    today = date.today()
    lapsed = [{"kind": "elevator", "expires_on": (today - timedelta(days=2)).isoformat()}]
    valid = [{"kind": "elevator", "expires_on": (today + timedelta(days=365)).isoformat()}]
    lift_lapsed = await w.user(
        "lee", "technician", desk.site, skills=["elevator"], qualifications=lapsed
    )
    lift_ok = await w.user(
        "liu", "technician", desk.site, skills=["elevator"], qualifications=valid
    )
    await w.user("eli", "technician", desk.site, skills=["electrical"])  # no licence
    await w.user("far", "technician", desk.other_site, skills=["elevator"], qualifications=valid)

    # Plumbing: tom and tim have the skill (the guard has it too, but repairs go to
    # technicians); the one with fewer open tickets wins, the lower id on a tie.
    picks = [(await desk.file(title=f"Leak {i}"))["assignee_id"] for i in range(3)]
    assert picks == [desk.tech.id, desk.tech2.id, desk.tech.id]
    t = await desk.file(title="Leak 3")
    assert t["status"] == "assigned"
    assert t["assignee_id"] == desk.tech2.id
    auto = (await desk.events(desk.supervisor, t["id"]))[-1]
    assert auto["action"] == "assign"
    assert auto["actor_role"] == "system"
    assert auto["data"] == {"assignee_id": desk.tech2.id, "auto": True}
    # Finished work does not count as load.
    await desk.move(desk.tech2, t["id"], "resolve")
    assert (await desk.file(title="Leak 4"))["assignee_id"] == desk.tech2.id

    lift = await desk.file(category="elevator", zone_id=desk.zone, title="Lift stuck")
    assert lift["assignee_id"] == lift_ok.id  # lee's licence has lapsed
    sparks = await desk.file(category="electrical", title="Sparks")
    assert sparks["status"] == "new"
    assert sparks["assignee_id"] is None
    noise = await desk.file(kind="complaint", category="noise", title="Party")
    assert noise["status"] == "new"  # nobody has the skill

    # By hand: always possible, but regulated work only to the licensed.
    r = await desk.act(desk.front_desk, sparks["id"], "assign", assignee_id=desk.tech.id)
    assert "electrical qualification" in problem(r, 422)["detail"]
    r = await desk.act(desk.front_desk, lift["id"], "assign", assignee_id=lift_lapsed.id)
    assert problem(r, 422)["errors"][0]["field"] == "assignee_id"
    t = await desk.move(desk.front_desk, noise["id"], "assign", assignee_id=desk.guard.id)
    assert t["assignee_id"] == desk.guard.id  # a complaint may go to a guard
    licensed = await w.user(
        "ed",
        "technician",
        desk.site,
        skills=["electrical"],
        qualifications=[{"kind": "electrical", "expires_on": today.isoformat()}],
    )
    t = await desk.move(desk.supervisor, sparks["id"], "assign", assignee_id=licensed.id)
    assert t["assignee_id"] == licensed.id  # valid through its expiry day


async def test_dispatch_queue_and_list_filters_with_keyset_pages(desk: Desk) -> None:
    ids = [(await desk.file(title=f"T{i}"))["id"] for i in range(5)]
    await desk.move(desk.front_desk, ids[1], "assign", assignee_id=desk.tech.id)
    complaint = await desk.file(kind="complaint", category="noise", title="Noise")
    h = desk.h(desk.supervisor)
    queue = (await desk.client.get("/api/tickets?status=new&kind=repair", headers=h)).json()
    assert [t["id"] for t in queue["items"]] == [ids[0], ids[2], ids[3], ids[4]]
    mine = (await desk.client.get(f"/api/tickets?assignee_id={desk.tech.id}", headers=h)).json()
    assert [t["id"] for t in mine["items"]] == [ids[1]]
    kinds = (await desk.client.get("/api/tickets?kind=complaint", headers=h)).json()
    assert [t["id"] for t in kinds["items"]] == [complaint["id"]]
    seen: list[int] = []
    after = 0
    while True:
        r = await desk.client.get(f"/api/tickets?limit=2&after={after}", headers=h)
        page = r.json()
        seen += [t["id"] for t in page["items"]]
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert seen == [*ids, complaint["id"]]
    problem(await desk.client.get("/api/tickets?status=lost", headers=h), 422)


# --- repeats ------------------------------------------------------------------------------


async def test_repeat_flag_same_place_and_category_within_30_days(desk: Desk) -> None:
    first = await desk.file()
    again = await desk.file(title="Tap leaking again")
    assert again["repeat"] is True
    assert again["repeat_of"] == first["id"]
    assert (await desk.file(category="electrical"))["repeat"] is False
    assert (await desk.file(desk.neighbour))["repeat"] is False  # another unit
    lobby = await desk.file(desk.guard, zone_id=desk.zone, category="cleaning", kind="request")
    lobby2 = await desk.file(desk.cleaner, zone_id=desk.zone, category="cleaning", kind="request")
    assert lobby["repeat"] is False
    assert lobby2["repeat_of"] == lobby["id"]
    # Older than 30 days does not count.
    await desk.conn.execute(
        "UPDATE tickets SET created_at = created_at - interval '31 days'"
        " WHERE unit_id = $1 AND category = 'plumbing'",
        desk.unit,
    )
    assert (await desk.file(title="Tap once more"))["repeat"] is False
    r = await desk.client.get("/api/tickets?repeat=true", headers=desk.h(desk.supervisor))
    assert {t["id"] for t in r.json()["items"]} == {again["id"], lobby2["id"]}


# --- proof of presence --------------------------------------------------------------------


async def test_start_and_resolve_attested_by_a_scan_of_the_place(desk: Desk) -> None:
    c = desk.conn
    at_lift = await c.fetchval(
        "INSERT INTO checkpoints (site_id, zone_id, name) VALUES ($1, $2, 'Lift') RETURNING id",
        desk.site,
        desk.zone,
    )
    at_garage = await c.fetchval(
        "INSERT INTO checkpoints (site_id, zone_id, name, nfc_uid) VALUES ($1, $2, 'Garage',"
        " '04AABBCCDDEEFF') RETURNING id",
        desk.site,
        desk.zone2,
    )
    t = await desk.file(desk.supervisor, zone_id=desk.zone, category="plumbing")
    tid = t["id"]
    await desk.move(desk.front_desk, tid, "assign", assignee_id=desk.tech.id)
    # A scan elsewhere is recorded, but does not attest.
    t = await desk.move(desk.tech, tid, "start", scan={"nfc_uid": "04:aa:bb:cc:dd:ee:ff"})
    assert t["attested_on_site"] is False
    start = (await desk.events(desk.tech, tid))[-1]
    assert start["data"]["scan"] == {
        "checkpoint_id": at_garage,
        "method": "nfc_uid",
        "on_site": False,
    }
    # A forged code is refused and changes nothing; so is a code of another site.
    r = await desk.act(desk.tech, tid, "resolve", scan={"qr": desk.qr(at_lift)[:-2] + "xx"})
    body = problem(r, 422)
    assert body["type"].endswith("/scan-refused/invalid_qr")
    assert body["reason"] == "invalid_qr"
    foreign = await c.fetchval(
        "INSERT INTO checkpoints (site_id, name) VALUES ($1, 'Far') RETURNING id", desk.other_site
    )
    r = await desk.act(desk.tech, tid, "resolve", scan={"qr": desk.qr(foreign, desk.other_site)})
    assert problem(r, 422)["reason"] == "not_on_site"
    r = await desk.act(desk.tech, tid, "resolve", scan={"qr": desk.qr(at_lift), "nfc_uid": "04AA"})
    assert problem(r, 422)["errors"][0]["field"] == "scan"
    assert (await desk.get(desk.tech, tid)).json()["status"] == "in_progress"
    t = await desk.move(desk.tech, tid, "resolve", scan={"qr": desk.qr(at_lift)})
    assert t["attested_on_site"] is True
    assert t["status"] == "resolved"
    resolve = (await desk.events(desk.tech, tid))[-1]
    assert resolve["data"]["scan"] == {"checkpoint_id": at_lift, "method": "qr", "on_site": True}
    # Without a scan the work is simply not attested.
    plain = await desk.in_status("resolved")
    assert plain["attested_on_site"] is False


# --- incidents' side ----------------------------------------------------------------------


async def test_incident_steps_open_linked_tickets(desk: Desk) -> None:
    now = datetime.now(UTC)
    # tickets.incident_id references an incident of the ticket's own site (0005).
    incident = await desk.conn.fetchval(
        "INSERT INTO incidents (id, site_id, kind, title, source, opened_at, updated_at)"
        " OVERRIDING SYSTEM VALUE VALUES (41, $1, 'water_leak', 'Leak', 'alarm', $2, $2)"
        " RETURNING id",
        desk.site,
        now,
    )
    async with desk.conn.transaction():
        tid = await service.open_incident_ticket(
            desk.conn,
            site_id=desk.site,
            incident_id=incident,
            category="plumbing",
            title="Repair and restore the water supply",
            zone_id=desk.zone,
            now=now,
        )
    r = await desk.client.get("/api/tickets?incident_id=41", headers=desk.h(desk.supervisor))
    (t,) = r.json()["items"]
    assert t["id"] == tid
    assert t["incident_id"] == 41
    assert t["channel"] == "sensor"
    assert t["priority"] == "urgent"
    assert t["reporter_id"] is None
    (created,) = await desk.events(desk.supervisor, tid)
    assert created["actor_role"] == "system"
    assert created["data"]["incident_id"] == 41

"""The ticket report on known data sets: counts, times, SLA compliance, reopen rate, backlog,
ratings, satisfaction, repairs per day on the site's calendar (across a DST change), and the
places where problems repeat."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tests.integration.test_tickets import Desk, desk, problem

__all__ = ["desk"]  # the fixture, shared with test_tickets

FROM = "2025-03-01T00:00:00+08:00"
TO = "2025-03-08T00:00:00+08:00"


def local(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def shape(desk: Desk, ticket_id: int, **columns: Any) -> None:
    """Put a ticket into a known state (the report reads the ticket rows)."""
    sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(columns, start=2))
    await desk.conn.execute(
        f"UPDATE tickets SET {sets} WHERE id = $1", ticket_id, *columns.values()
    )


async def test_report_figures_on_a_known_data_set(desk: Desk) -> None:
    tech = desk.tech.id
    t1 = (await desk.file(title="Tap"))["id"]
    t2 = (await desk.file(title="Tap again"))["id"]  # same unit and category: a repeat
    t3 = (
        await desk.file(
            desk.front_desk,
            kind="complaint",
            category="noise",
            zone_id=desk.zone,
            channel="hotline",
            reporter_name="Mr Li",
        )
    )["id"]
    t4 = (await desk.file(desk.neighbour, category="electrical", title="Sparks"))["id"]
    t5 = (await desk.file(desk.supervisor, kind="request", category="cleaning", zone_id=desk.zone))[
        "id"
    ]
    t6 = (await desk.file(desk.neighbour, title="Old leak"))["id"]
    t7 = (
        await desk.file(
            desk.other_sup, site_id=desk.other_site, unit_id=desk.other_unit, title="Elsewhere"
        )
    )["id"]

    c1 = local("2025-03-01T09:00:00+08:00")
    await shape(
        desk,
        t1,
        created_at=c1,
        assignee_id=tech,
        status="closed",
        responded_at=c1 + timedelta(minutes=30),
        resolved_at=c1 + timedelta(minutes=180),
        closed_at=c1 + timedelta(days=1),
        rating=5,
        rated_at=c1 + timedelta(days=1),
    )
    c2 = local("2025-03-03T10:00:00+08:00")
    await shape(
        desk,
        t2,
        created_at=c2,
        assignee_id=tech,
        status="resolved",
        reopen_count=1,
        responded_at=c2 + timedelta(minutes=90),
        resolved_at=c2 + timedelta(hours=26),
        rating=3,
        rated_at=c2 + timedelta(days=2),
    )
    c3 = local("2025-03-02T20:00:00+08:00")
    await shape(
        desk,
        t3,
        created_at=c3,
        assignee_id=tech,
        status="closed",
        responded_at=c3 + timedelta(hours=3),
        response_breached=True,
        resolved_at=c3 + timedelta(hours=5),
        closed_at=c3 + timedelta(days=1),
        satisfaction="dissatisfied",
        followed_up_at=c3 + timedelta(days=1),
        rating=2,
        rated_at=c3 + timedelta(days=1),
    )
    await shape(desk, t4, created_at=local("2025-03-05T07:00:00+08:00"))  # 03-04 in UTC
    await shape(
        desk,
        t5,
        created_at=local("2025-03-06T12:00:00+08:00"),
        status="cancelled",
        cancelled_at=local("2025-03-06T13:00:00+08:00"),
    )
    await shape(
        desk, t6, created_at=local("2025-02-20T10:00:00+08:00"), status="assigned", assignee_id=tech
    )
    await shape(desk, t7, created_at=local("2025-03-04T10:00:00+08:00"))

    r = await desk.client.get(
        "/api/reports/tickets",
        params={"site_id": desk.site, "from": FROM, "to": TO},
        headers=desk.h(desk.supervisor),
    )
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["site_id"] == desk.site
    assert local(report["from"]) == local(FROM)
    assert report["total"] == 5
    assert report["by_status"] == {
        "new": 1,
        "assigned": 0,
        "in_progress": 0,
        "on_hold": 0,
        "resolved": 1,
        "reopened": 0,
        "closed": 2,
        "cancelled": 1,
    }
    assert report["by_kind"] == {"repair": 3, "complaint": 1, "request": 1, "maintenance": 0}
    assert report["by_category"] == {"cleaning": 1, "electrical": 1, "noise": 1, "plumbing": 2}
    assert report["mean_minutes_to_acknowledge"] == 100.0  # (30 + 90 + 180) / 3
    assert report["mean_minutes_to_resolve"] == 680.0  # (180 + 1560 + 300) / 3
    assert report["response_compliance_pct"] == 66.7  # the complaint was answered late
    assert report["resolution_compliance_pct"] == 100.0
    assert report["sla_compliance_pct"] == 66.7
    assert report["breached"] == 1
    assert report["reopen_rate_pct"] == 33.3  # one of three resolved came back
    # Open now and filed before the period's end: t4 (2 days 17 hours old at the end) and
    # t6 (filed before the period, 15 days old).
    assert report["backlog"] == {
        "total": 2,
        "under_1_day": 0,
        "days_1_to_3": 1,
        "days_3_to_7": 0,
        "over_7_days": 1,
    }
    assert report["average_rating"] == 3.33
    assert report["ratings"] == 3
    assert report["satisfaction"] == {"dissatisfied": 1}
    assert report["repair_requests"] == 3
    assert report["repair_requests_per_day"] == 0.43
    assert report["repair_requests_by_day"] == [
        {"day": "2025-03-01", "count": 1},
        {"day": "2025-03-03", "count": 1},
        {"day": "2025-03-05", "count": 1},  # the site's calendar, not UTC's
    ]
    assert report["repeat_tickets"] == 1
    assert report["repeat_places"] == [
        {
            "unit_id": desk.unit,
            "zone_id": None,
            "place": "1-101",
            "category": "plumbing",
            "tickets": 2,
        }
    ]

    # Who may ask: supervisors and up, of the site.
    params = {"site_id": desk.site, "from": FROM, "to": TO}
    for who, status in ((desk.tech, 403), (desk.resident, 403), (desk.other_sup, 404)):
        r = await desk.client.get("/api/reports/tickets", params=params, headers=desk.h(who))
        problem(r, status)
    r = await desk.client.get(
        "/api/reports/tickets",
        params={"site_id": desk.site, "from": TO, "to": FROM},
        headers=desk.h(desk.manager),
    )
    assert problem(r, 422)["errors"][0]["field"] == "to"


async def test_an_empty_period_has_no_rates(desk: Desk) -> None:
    r = await desk.client.get(
        "/api/reports/tickets",
        params={"site_id": desk.site, "from": FROM, "to": TO},
        headers=desk.h(desk.manager),
    )
    report = r.json()
    assert report["total"] == 0
    assert report["sla_compliance_pct"] is None
    assert report["mean_minutes_to_resolve"] is None
    assert report["average_rating"] is None
    assert report["repeat_places"] == []


async def test_repairs_per_day_follow_the_site_calendar_across_dst(desk: Desk) -> None:
    # New York springs forward on 2025-03-09 at 02:00 local.
    tower = await desk.world.site("tower", kind="office", tz="America/New_York", locale="en")
    boss = await desk.world.user("nick", "supervisor", tower)
    moments = [
        "2025-03-09T04:59:00+00:00",  # 23:59 EST on the 8th
        "2025-03-09T06:30:00+00:00",  # 01:30 EST on the 9th
        "2025-03-09T07:30:00+00:00",  # 03:30 EDT on the 9th
        "2025-03-10T03:30:00+00:00",  # 23:30 EDT on the 9th
    ]
    for moment in moments:
        t = await desk.file(boss, site_id=tower, title="Door")
        await shape(desk, t["id"], created_at=local(moment))
    r = await desk.client.get(
        "/api/reports/tickets",
        params={
            "site_id": tower,
            "from": "2025-03-08T00:00:00-05:00",
            "to": "2025-03-11T00:00:00-04:00",
        },
        headers=desk.h(boss),
    )
    report = r.json()
    assert report["repair_requests_by_day"] == [
        {"day": "2025-03-08", "count": 1},
        {"day": "2025-03-09", "count": 3},
    ]
    assert report["repair_requests_per_day"] == round(4 / (71 / 24), 2)  # 71 hours: DST

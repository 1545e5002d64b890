"""Every route x every role of site A, a staff user of site B, and no token at all.

The routes come from the app itself, so a route added without a row here fails the test.
Each row says what each caller gets: ok (2xx), 401 (no token), 403 (the role may not),
404 (not the caller's site: never 403, so ids of other sites do not leak), or a named status
where the refusal is the domain's own (a scan of another site's code is a refused scan).
"""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient
from PIL import Image

from server.auth import Principal
from server.checkpoints import qr_token
from server.checkpoints.keys import qr_ring
from tests.conftest import PASSWORD, World

# --- who calls ------------------------------------------------------------------------

# The column order of the table below: site A's admin, manager, supervisor, guard,
# technician, cleaner, front desk and resident; a manager of site B; no token at all.
CALLERS = ("adm", "mgr", "sup", "grd", "tec", "cln", "dsk", "res", "B", "anon")
ROLE_OF = {
    "adm": "admin",
    "mgr": "manager",
    "sup": "supervisor",
    "grd": "guard",
    "tec": "technician",
    "cln": "cleaner",
    "dsk": "front_desk",
    "res": "resident",
    "B": "manager",  # a manager of site B: refused for site A by scope, not by role
}

# --- the matrix ------------------------------------------------------------------------
# ok: any 2xx. 401/403/404/409/422: that status. Paths name the estate's own objects (all of
# site A; path parameters without their `_id`); list routes are asked with ?site_id=A.
MATRIX = """
method path                                          adm mgr sup grd tec cln dsk res B   anon
GET    /health                                       ok  ok  ok  ok  ok  ok  ok  ok  ok  ok
GET    /ready                                        ok  ok  ok  ok  ok  ok  ok  ok  ok  ok
GET    /metrics                                      ok  ok  ok  ok  ok  ok  ok  ok  ok  ok
GET    /schema                                       ok  ok  ok  ok  ok  ok  ok  ok  ok  ok
GET    /schema/openapi.json                          ok  ok  ok  ok  ok  ok  ok  ok  ok  ok
GET    /schema/scalar                                ok  ok  ok  ok  ok  ok  ok  ok  ok  ok
GET    /schema/{path}                                ok  ok  ok  ok  ok  ok  ok  ok  ok  ok
POST   /api/auth/login                               ok  ok  ok  ok  ok  ok  ok  ok  ok  ok
GET    /api/me                                       ok  ok  ok  ok  ok  ok  ok  ok  ok  401
GET    /api/users                                    ok  ok  403 403 403 403 403 403 ok  401
POST   /api/users                                    ok  ok  403 403 403 403 403 403 404 401
GET    /api/users/{user}                             ok  ok  403 403 403 403 403 403 404 401
PATCH  /api/users/{user}                             ok  ok  403 403 403 403 403 403 404 401
GET    /api/sites                                    ok  ok  ok  ok  ok  ok  ok  ok  ok  401
POST   /api/sites                                    ok  403 403 403 403 403 403 403 403 401
GET    /api/sites/{site}                             ok  ok  ok  ok  ok  ok  ok  ok  404 401
GET    /api/sites/{site}/zones                       ok  ok  ok  ok  ok  ok  ok  ok  404 401
POST   /api/sites/{site}/zones                       ok  ok  403 403 403 403 403 403 404 401
GET    /api/sites/{site}/units                       ok  ok  ok  ok  ok  ok  ok  403 404 401
POST   /api/sites/{site}/units                       ok  ok  403 403 403 403 403 403 404 401
GET    /api/sites/{site}/checkpoints                 ok  ok  ok  ok  ok  ok  ok  403 404 401
POST   /api/sites/{site}/checkpoints                 ok  ok  ok  403 403 403 403 403 404 401
POST   /api/sites/{site}/checkpoints/import          ok  ok  ok  403 403 403 403 403 404 401
GET    /api/sites/{site}/checkpoints/qr-sheet.pdf    ok  ok  ok  403 403 403 403 403 404 401
GET    /api/checkpoints/{checkpoint}                 ok  ok  ok  ok  ok  ok  ok  403 404 401
PATCH  /api/checkpoints/{checkpoint}                 ok  ok  ok  403 403 403 403 403 404 401
POST   /api/checkpoints/{checkpoint}/rotate-token    ok  ok  ok  403 403 403 403 403 404 401
GET    /api/checkpoints/{checkpoint}/qr.png          ok  ok  ok  403 403 403 403 403 404 401
GET    /api/checkpoints/{checkpoint}/qr.svg          ok  ok  ok  403 403 403 403 403 404 401
GET    /api/sites/{site}/routes                      ok  ok  ok  ok  ok  ok  ok  403 404 401
POST   /api/sites/{site}/routes                      ok  ok  ok  403 403 403 403 403 404 401
GET    /api/routes/{route}                           ok  ok  ok  ok  ok  ok  ok  403 404 401
GET    /api/rounds                                   ok  ok  ok  ok  ok  ok  ok  403 404 401
GET    /api/rounds/{round}                           ok  ok  ok  ok  ok  ok  ok  403 404 401
POST   /api/rounds/{round}/log                       ok  ok  ok  ok  ok  ok  ok  403 404 401
POST   /api/scans                                    ok  ok  ok  ok  ok  ok  ok  403 422 401
POST   /api/scans/batch                              ok  ok  ok  ok  ok  ok  ok  403 ok  401
GET    /api/sites/{site}/scan-refusals               ok  ok  ok  403 403 403 403 403 404 401
GET    /api/reports/patrol                           ok  ok  ok  403 403 403 403 403 404 401
GET    /api/sites/{site}/devices                     ok  ok  ok  ok  ok  ok  ok  403 404 401
POST   /api/sites/{site}/devices                     ok  ok  403 403 403 403 403 403 404 401
GET    /api/sites/{site}/devices/{device}            ok  ok  ok  ok  ok  ok  ok  403 404 401
GET    /api/dead-letters                             ok  ok  ok  403 403 403 403 403 404 401
GET    /api/alarms                                   ok  ok  ok  ok  ok  ok  ok  403 404 401
GET    /api/alarms/{alarm}                           ok  ok  ok  ok  ok  ok  ok  403 404 401
POST   /api/alarms/{alarm}/ack                       ok  ok  ok  ok  ok  403 403 403 404 401
GET    /api/tickets                                  ok  ok  ok  ok  ok  ok  ok  ok  404 401
POST   /api/tickets                                  ok  ok  ok  ok  ok  ok  ok  ok  404 401
GET    /api/tickets/{ticket}                         ok  ok  ok  ok  ok  ok  ok  ok  404 401
GET    /api/tickets/{ticket}/events                  ok  ok  ok  ok  ok  ok  ok  ok  404 401
POST   /api/tickets/{ticket}/events                  ok  ok  ok  ok  ok  ok  ok  ok  404 401
GET    /api/tickets/{ticket}/attachments/{attachment} ok ok  ok  ok  ok  ok  ok  ok  404 401
GET    /api/sites/{site}/sla-policies                ok  ok  ok  ok  ok  ok  ok  403 404 401
PUT    /api/sites/{site}/sla-policies                ok  ok  403 403 403 403 403 403 404 401
GET    /api/sites/{site}/ticket-settings             ok  ok  ok  ok  ok  ok  ok  403 404 401
PUT    /api/sites/{site}/ticket-settings             ok  ok  403 403 403 403 403 403 404 401
GET    /api/reports/tickets                          ok  ok  ok  403 403 403 403 403 404 401
GET    /api/alerts                                   ok  ok  ok  403 403 403 403 403 404 401
POST   /api/alerts/{alert}/ack                       ok  ok  ok  403 403 403 403 403 404 401
GET    /api/live                                     ok  ok  ok  403 403 403 403 403 404 401
GET    /api/incidents                                ok  ok  ok  ok  ok  ok  ok  403 404 401
POST   /api/incidents                                ok  ok  ok  ok  ok  ok  ok  403 404 401
GET    /api/incidents/{incident}                     ok  ok  ok  ok  ok  ok  ok  403 404 401
POST   /api/incidents/{incident}/notes               ok  ok  ok  ok  ok  ok  ok  403 404 401
POST   /api/incidents/{incident}/steps/{step_key}/ack ok ok  ok  ok  403 403 403 403 404 401
POST   /api/incidents/{incident}/steps/{step_key}/done ok ok ok  ok  403 403 403 403 404 401
POST   /api/incidents/{incident}/resolve             ok  ok  ok  403 403 403 403 403 404 401
POST   /api/incidents/{incident}/close               ok  ok  ok  403 403 403 403 403 404 401
GET    /api/sites/{site}/webhooks                    ok  ok  403 403 403 403 403 403 404 401
POST   /api/sites/{site}/webhooks                    ok  ok  403 403 403 403 403 403 404 401
PATCH  /api/sites/{site}/webhooks/{endpoint}         ok  ok  403 403 403 403 403 403 404 401
GET    /api/sites/{site}/webhooks/{endpoint}/deliveries ok ok 403 403 403 403 403 403 404 401
"""

# Why some cells are what they are:
# - POST /api/users as B: the new user is for site A, which B cannot see (404).
# - GET /api/users as B: B's own users (the list is scoped, not refused).
# - POST /api/scans as B: a genuine code of another site is a refused scan, kept in the
#   refusal log (422 scan-refused/not_on_site); in a batch it is a 422 item of a 2xx answer.
# - res on tickets: the resident reported the estate's ticket; GET /api/tickets?site_id=
#   lists only what a resident reported.
# - incident steps: the step is the guard's (temporary measures of a water leak); staff of
#   another role may not act on it (403), supervisors and above act on any step.
# - close: asked of an incident that was resolved (only a resolved one closes).


def _parse(table: str) -> dict[tuple[str, str], dict[str, str]]:
    rows: dict[tuple[str, str], dict[str, str]] = {}
    lines = [line.split() for line in table.strip().splitlines()]
    header, body = lines[0], lines[1:]
    assert tuple(header[2:]) == CALLERS, header
    for cells in body:
        assert len(cells) == 2 + len(CALLERS), cells
        key = (cells[0], cells[1])
        assert key not in rows, f"{key} twice in the table"
        rows[key] = dict(zip(CALLERS, cells[2:], strict=True))
    return rows


EXPECTED = _parse(MATRIX)


def app_routes(app: Litestar) -> set[tuple[str, str]]:
    """(method, path) of every HTTP route the app serves, path parameters without types."""
    found = set()
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        path = re.sub(r"\{(\w+?)(?:_id)?:[^}]+\}", r"{\1}", route.path)
        for method in route.methods - {"OPTIONS", "HEAD"}:
            found.add((method, path))
    return found


# --- the estate --------------------------------------------------------------------------


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), (10, 120, 200)).save(out, format="PNG")
    return out.getvalue()


@dataclass
class Estate:
    """Site A with one of everything, site B with its manager; tokens for every caller."""

    world: World
    client: AsyncTestClient[Litestar]
    site_a: int
    site_b: int
    zone_a: int
    unit_a: int
    people: dict[str, Principal]
    zone_b: int = 0
    unit_b: int = 0
    checkpoint_a: int = 0
    route_a: int = 0
    round_a: int = 0
    ticket_a: int = 0
    attachment_a: int = 0
    device_a: str = "leak-1"
    alarm_a: int = 0
    alert_a: int = 0
    incident_a: int = 0  # open: a water leak in zone A, reported by the guard
    resolved_incident_a: int = 0  # a theft, resolved by the supervisor
    endpoint_a: int = 0  # a webhook endpoint of site A

    def headers(self, caller: str) -> dict[str, str]:
        if caller == "anon":
            return {}
        return self.world.headers(self.people[caller])

    def qr(self, checkpoint_id: int | None = None) -> str:
        settings = self.world.app.state.settings
        return qr_token.sign(qr_ring(settings), self.site_a, checkpoint_id or self.checkpoint_a, 1)

    def ids(self) -> dict[str, object]:
        """The value of each path parameter (named without its `_id`)."""
        return {
            "site": self.site_a,
            "user": self.people["grd"].id,
            "checkpoint": self.checkpoint_a,
            "route": self.route_a,
            "round": self.round_a,
            "ticket": self.ticket_a,
            "attachment": self.attachment_a,
            "device": self.device_a,
            "alarm": self.alarm_a,
            "alert": self.alert_a,
            "incident": self.incident_a,
            "step_key": "temporary_measures",  # the guard's step of a water leak
            "endpoint": self.endpoint_a,
            "path": "openapi.json",
        }


async def build_estate(world: World, client: AsyncTestClient[Litestar]) -> Estate:
    """Site A with a zone, a unit, a checkpoint, a route and its rounds, a resident's ticket
    with a photo, a device with an alarm, an alert, a dead letter, an open and a resolved
    incident, a webhook endpoint; site B with a zone, a unit and a manager."""
    conn = world.conn
    a = await world.site("alpha")
    b = await world.site("bravo", kind="commercial")
    zone_a, unit_a = await world.zone(a), await world.unit(a)
    zone_b, unit_b = await world.zone(b), await world.unit(b)
    people = {"adm": await world.user("root", "admin")}
    for caller, role in ROLE_OF.items():
        if caller in ("adm", "res", "B"):
            continue
        people[caller] = await world.user(f"{caller}-a", role, a)
    people["res"] = await world.user("res-a", "resident", a, unit_id=unit_a)
    people["B"] = await world.user("mgr-b", "manager", b)
    estate = Estate(world, client, a, b, zone_a, unit_a, people, zone_b, unit_b)

    estate.checkpoint_a = await conn.fetchval(
        "INSERT INTO checkpoints (site_id, zone_id, name) VALUES ($1, $2, 'Gate') RETURNING id",
        a,
        zone_a,
    )
    r = await client.post(
        f"/api/sites/{a}/routes",
        json={"name": "Night round", "checkpoint_ids": [estate.checkpoint_a]},
        headers=estate.headers("sup"),
    )
    assert r.status_code == 201, r.text
    estate.route_a = r.json()["id"]
    estate.round_a = await conn.fetchval(
        "SELECT id FROM rounds WHERE route_id = $1 ORDER BY starts_at LIMIT 1", estate.route_a
    )
    r = await client.post(
        "/api/tickets",
        json={"site_id": a, "kind": "repair", "category": "plumbing", "title": "Tap leaking"},
        headers=estate.headers("res"),
    )
    assert r.status_code == 201, r.text
    estate.ticket_a = r.json()["id"]
    r = await client.post(
        f"/api/tickets/{estate.ticket_a}/events",
        data={"action": "comment", "note": "photo"},
        files=[("files", ("leak.png", png(), "image/png"))],
        headers=estate.headers("res"),
    )
    assert r.status_code == 201, r.text
    estate.attachment_a = r.json()["event"]["attachment_ids"][0]
    r = await client.post(
        f"/api/sites/{a}/devices",
        json={
            "id": estate.device_a,
            "kind": "water_leak",
            "name": "Leak sensor",
            "zone_id": zone_a,
        },
        headers=estate.headers("mgr"),
    )
    assert r.status_code == 201, r.text
    now = datetime.now(UTC)
    estate.alarm_a = await conn.fetchval(
        "INSERT INTO alarms (site_id, device_id, zone_id, type, severity, status, first_at,"
        " last_at) VALUES ($1, $2, $3, 'leak', 'major', 'active_unack', $4, $4) RETURNING id",
        a,
        estate.device_a,
        zone_a,
        now,
    )
    estate.alert_a = await conn.fetchval(
        "INSERT INTO alerts (site_id, kind, subject_type, subject_id, message)"
        " VALUES ($1, 'round_missed', 'round', $2, 'Round missed') RETURNING id",
        a,
        estate.round_a,
    )
    await conn.execute(
        "INSERT INTO dead_letters (site_id, topic, raw, size, reason, received_at)"
        " VALUES ($1, 'estateops/v1/alpha/gw/x/event', '\\x00', 1, 'bad_json', now())",
        a,
    )
    for kind in ("water_leak", "theft"):
        r = await client.post(
            "/api/incidents",
            json={"site_id": a, "kind": kind, "zone_id": zone_a},
            headers=estate.headers("grd"),
        )
        assert r.status_code == 201, r.text
        estate.incident_a = estate.incident_a or r.json()["id"]
    estate.resolved_incident_a = r.json()["id"]
    r = await client.post(
        f"/api/incidents/{estate.resolved_incident_a}/resolve", headers=estate.headers("sup")
    )
    assert r.status_code == 200, r.text
    r = await client.post(
        f"/api/sites/{a}/webhooks",
        json={"url": "https://hooks.example.com/estateops"},
        headers=estate.headers("mgr"),
    )
    assert r.status_code == 201, r.text
    estate.endpoint_a = r.json()["id"]
    return estate


# --- one request per (route, caller) -----------------------------------------------------


@dataclass(frozen=True)
class Call:
    """What to send: a JSON body, raw content with its type, a form, a query."""

    json: Any = None
    content: bytes | None = None
    content_type: str | None = None
    data: dict[str, str] | None = None
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    query: str = ""
    ids: dict[str, object] | None = None  # path parameters other than the estate's usual


def _period(e: Estate) -> str:
    now = datetime.now(UTC)
    start, end = (now - timedelta(days=1)).isoformat(), (now + timedelta(days=1)).isoformat()
    return f"site_id={e.site_a}&from={start.replace('+', '%2B')}&to={end.replace('+', '%2B')}"


def _scan(e: Estate) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "scanned_at": datetime.now(UTC).isoformat(), "qr": e.qr()}


# A request for each route that needs more than its path; `who` makes names unique, since
# every caller's request runs against the same estate.
CALLS: dict[tuple[str, str], Callable[[Estate, str], Call]] = {
    ("POST", "/api/auth/login"): lambda e, who: Call(
        json={"username": "grd-a", "password": PASSWORD}
    ),
    ("POST", "/api/users"): lambda e, who: Call(
        json={
            "username": f"new-{who}".lower(),
            "password": PASSWORD,
            "role": "cleaner",
            "site_ids": [e.site_a],
        }
    ),
    ("PATCH", "/api/users/{user}"): lambda e, who: Call(json={"full_name": f"By {who}"}),
    ("POST", "/api/sites"): lambda e, who: Call(
        json={
            "code": f"site-{who}".lower(),
            "name": "New",
            "kind": "office",
            "timezone": "Europe/Paris",
        }
    ),
    ("POST", "/api/sites/{site}/zones"): lambda e, who: Call(
        json={"name": f"Roof {who}", "kind": "roof"}
    ),
    ("POST", "/api/sites/{site}/units"): lambda e, who: Call(
        json={"building": "2", "floor": 3, "number": f"30-{who}"}
    ),
    ("POST", "/api/sites/{site}/checkpoints"): lambda e, who: Call(json={"name": f"Door {who}"}),
    ("POST", "/api/sites/{site}/checkpoints/import"): lambda e, who: Call(
        content=f"name\nCSV {who}\n".encode(), content_type="text/csv"
    ),
    ("PATCH", "/api/checkpoints/{checkpoint}"): lambda e, who: Call(
        json={"instructions": f"Checked by {who}"}
    ),
    ("POST", "/api/sites/{site}/routes"): lambda e, who: Call(
        json={"name": f"Route {who}", "checkpoint_ids": [e.checkpoint_a]}
    ),
    ("GET", "/api/rounds"): lambda e, who: Call(query=f"site_id={e.site_a}"),
    ("POST", "/api/rounds/{round}/log"): lambda e, who: Call(json={"found": f"All quiet, {who}"}),
    ("POST", "/api/scans"): lambda e, who: Call(json=_scan(e)),
    ("POST", "/api/scans/batch"): lambda e, who: Call(
        json={"sent_at": datetime.now(UTC).isoformat(), "scans": [_scan(e)]}
    ),
    ("GET", "/api/reports/patrol"): lambda e, who: Call(query=_period(e)),
    ("GET", "/api/reports/tickets"): lambda e, who: Call(query=_period(e)),
    ("POST", "/api/sites/{site}/devices"): lambda e, who: Call(
        json={"id": f"smoke-{who}", "kind": "smoke", "name": f"Smoke {who}"}
    ),
    ("GET", "/api/dead-letters"): lambda e, who: Call(query=f"site_id={e.site_a}"),
    ("GET", "/api/alarms"): lambda e, who: Call(query=f"site_id={e.site_a}"),
    ("GET", "/api/tickets"): lambda e, who: Call(query=f"site_id={e.site_a}"),
    ("POST", "/api/tickets"): lambda e, who: Call(
        json={
            "site_id": e.site_a,
            "kind": "complaint",
            "category": "noise",
            "title": f"Noise, says {who}",
        }
    ),
    ("POST", "/api/tickets/{ticket}/events"): lambda e, who: Call(
        json={"action": "comment", "note": f"Seen by {who}"}
    ),
    ("PUT", "/api/sites/{site}/sla-policies"): lambda e, who: Call(
        json={"policies": [{"priority": "urgent", "respond_minutes": 10, "resolve_minutes": 60}]}
    ),
    ("PUT", "/api/sites/{site}/ticket-settings"): lambda e, who: Call(
        json={"auto_assign": False, "auto_close_days": 5}
    ),
    ("GET", "/api/alerts"): lambda e, who: Call(query=f"site_id={e.site_a}"),
    ("GET", "/api/live"): lambda e, who: Call(query=f"site_id={e.site_a}"),
    ("GET", "/api/incidents"): lambda e, who: Call(query=f"site_id={e.site_a}"),
    ("POST", "/api/incidents"): lambda e, who: Call(
        json={"site_id": e.site_a, "kind": "fire", "zone_id": e.zone_a}
    ),
    ("POST", "/api/incidents/{incident}/notes"): lambda e, who: Call(
        json={"note": f"Seen by {who}"}
    ),
    ("POST", "/api/incidents/{incident}/close"): lambda e, who: Call(
        ids={"incident": e.resolved_incident_a}
    ),
    ("POST", "/api/sites/{site}/webhooks"): lambda e, who: Call(
        json={"url": f"https://hooks.example.com/{who}"}
    ),
    ("PATCH", "/api/sites/{site}/webhooks/{endpoint}"): lambda e, who: Call(
        json={"description": f"Changed by {who}"}
    ),
}

STREAMS = {("GET", "/api/live")}  # endless: read the status line, then hang up


def first_status(
    client: AsyncTestClient[Litestar], method: str, url: str, headers: dict[str, str]
) -> int:
    """The status of an endless response: the client hangs up once the head arrives.

    (Litestar's test transport waits for the whole body, which an event stream never ends.)
    """
    path, _, query = url.partition("?")

    async def call() -> int:
        head: dict[str, int] = {}
        started = anyio.Event()
        asked = False

        async def receive() -> dict[str, Any]:
            nonlocal asked
            if not asked:
                asked = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await started.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                head["status"] = message["status"]
                started.set()

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": query.encode(),
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": ("testclient", 50000),
            "server": ("testserver", 80),
        }
        with anyio.fail_after(10):
            await client.app(scope, receive, send)  # type: ignore[arg-type]
        return head["status"]

    with client.portal() as portal:
        return portal.call(call)


async def send(estate: Estate, method: str, path: str, caller: str) -> tuple[int, str]:
    call = CALLS.get((method, path), lambda e, who: Call())(estate, caller)
    url = path.format(**{**estate.ids(), **(call.ids or {})})
    if call.query:
        url += "?" + call.query
    headers = estate.headers(caller)
    if call.content_type:
        headers["Content-Type"] = call.content_type
    client = estate.client
    if (method, path) in STREAMS:
        return first_status(client, method, url, headers), ""
    r = await client.request(
        method,
        url,
        headers=headers,
        json=call.json,
        content=call.content,
        data=call.data,
        files=call.files,
    )
    assert "Traceback" not in r.text
    return r.status_code, r.text[:300]


def _meets(expected: str, status: int) -> bool:
    if expected == "ok":
        return 200 <= status < 300
    return status == int(expected)


# Run the refusals first, then the successes, so that no success (a rotated code, an
# acknowledged alarm) changes what a later caller is answered.
def _order(row: dict[str, str]) -> list[str]:
    return sorted(CALLERS, key=lambda c: row[c] == "ok")


# --- the tests ------------------------------------------------------------------------


def test_every_route_has_a_row_and_every_row_a_route(app: Litestar) -> None:
    served = app_routes(app)
    missing = sorted(served - set(EXPECTED))
    stale = sorted(set(EXPECTED) - served)
    assert not missing, f"routes without a row in the security matrix: {missing}"
    assert not stale, f"rows for routes the app does not serve: {stale}"
    assert set(CALLS) <= set(EXPECTED), sorted(set(CALLS) - set(EXPECTED))


@pytest.fixture
async def estate(world: World, client: AsyncTestClient[Litestar]) -> Estate:
    return await build_estate(world, client)


@pytest.mark.parametrize(("method", "path"), sorted(EXPECTED), ids=lambda v: v)
async def test_route_answers_each_caller_as_the_matrix_says(
    estate: Estate, method: str, path: str
) -> None:
    row = EXPECTED[(method, path)]
    wrong = []
    for caller in _order(row):
        status, text = await send(estate, method, path, caller)
        if not _meets(row[caller], status):
            wrong.append(f"{caller}: expected {row[caller]}, got {status} {text}")
    assert not wrong, f"{method} {path}\n" + "\n".join(wrong)


async def test_site_b_gets_the_same_404_as_for_a_missing_id(estate: Estate) -> None:
    """Another site's object and no object at all are indistinguishable."""
    h = estate.headers("B")
    missing = 10**9
    for template in (
        "/api/sites/{}",
        "/api/checkpoints/{}",
        "/api/routes/{}",
        "/api/rounds/{}",
        "/api/tickets/{}",
        "/api/alarms/{}",
    ):
        ids = {
            "/api/sites/{}": estate.site_a,
            "/api/checkpoints/{}": estate.checkpoint_a,
            "/api/routes/{}": estate.route_a,
            "/api/rounds/{}": estate.round_a,
            "/api/tickets/{}": estate.ticket_a,
            "/api/alarms/{}": estate.alarm_a,
        }
        theirs = await estate.client.get(template.format(ids[template]), headers=h)
        nowhere = await estate.client.get(template.format(missing), headers=h)
        assert theirs.status_code == nowhere.status_code == 404, template
        a, b = theirs.json(), nowhere.json()
        assert {k: a[k] for k in ("type", "title", "detail")} == {
            k: b[k] for k in ("type", "title", "detail")
        }, template


async def test_lists_show_site_b_nothing_of_site_a(estate: Estate) -> None:
    """Unfiltered lists are answered, with none of site A's rows."""
    h = estate.headers("B")
    for path, key in (
        ("/api/sites", "id"),
        ("/api/users", "id"),
        ("/api/tickets", "site_id"),
        ("/api/rounds", "site_id"),
        ("/api/alarms", "site_id"),
        ("/api/alerts", "site_id"),
        ("/api/dead-letters", "site_id"),
    ):
        r = await estate.client.get(path, headers=h)
        assert r.status_code == 200, f"{path}: {r.text}"
        values = {item[key] for item in r.json()["items"]}
        if key == "site_id":
            assert estate.site_a not in values, path
        elif path == "/api/sites":
            assert values == {estate.site_b}
        else:
            assert not values & {p.id for c, p in estate.people.items() if c != "B"}, path


async def test_ids_of_site_b_inside_bodies_are_refused(estate: Estate) -> None:
    """A site A caller naming site B's zone, unit, checkpoint or people in a body: refused
    (404 or 422 naming the field), and nothing stored."""
    conn = estate.world.conn
    b_guard = await estate.world.user("grd-b", "guard", estate.site_b)
    b_checkpoint = await conn.fetchval(
        "INSERT INTO checkpoints (site_id, name) VALUES ($1, 'B gate') RETURNING id",
        estate.site_b,
    )
    a, zb, ub = estate.site_a, estate.zone_b, estate.unit_b
    ticket = {"site_id": a, "kind": "repair", "category": "plumbing", "title": "Leak"}
    cases: list[tuple[str, str, str, dict[str, Any], str]] = [
        ("dsk", "POST", "/api/tickets", {**ticket, "zone_id": zb}, "zone_id"),
        ("dsk", "POST", "/api/tickets", {**ticket, "unit_id": ub}, "unit_id"),
        ("dsk", "POST", "/api/tickets", {**ticket, "reporter_id": b_guard.id}, "reporter_id"),
        ("res", "POST", "/api/tickets", {**ticket, "zone_id": zb}, "zone_id"),
        (
            "dsk",
            "POST",
            f"/api/tickets/{estate.ticket_a}/events",
            {"action": "assign", "assignee_id": b_guard.id},
            "assignee_id",
        ),
        ("sup", "POST", f"/api/sites/{a}/checkpoints", {"name": "X", "zone_id": zb}, "zone_id"),
        ("sup", "POST", f"/api/sites/{a}/checkpoints", {"name": "Y", "unit_id": ub}, "unit_id"),
        (
            "sup",
            "PATCH",
            f"/api/checkpoints/{estate.checkpoint_a}",
            {"zone_id": zb},
            "zone_id",
        ),
        (
            "sup",
            "POST",
            f"/api/sites/{a}/routes",
            {"name": "R", "checkpoint_ids": [b_checkpoint]},
            "checkpoint_ids[0]",
        ),
        (
            "sup",
            "POST",
            f"/api/sites/{a}/routes",
            {"name": "R", "checkpoint_ids": [estate.checkpoint_a], "guard_ids": [b_guard.id]},
            "guard_ids[0]",
        ),
        (
            "mgr",
            "POST",
            f"/api/sites/{a}/devices",
            {"id": "x-1", "kind": "smoke", "name": "X", "zone_id": zb},
            "zone_id",
        ),
        (
            "mgr",
            "POST",
            "/api/users",
            {"username": "newres", "password": PASSWORD, "role": "resident", "unit_id": ub},
            "",
        ),
        (
            "mgr",
            "PATCH",
            f"/api/users/{estate.people['grd'].id}",
            {"site_ids": [a, estate.site_b]},
            "",
        ),
        ("grd", "POST", "/api/incidents", {"site_id": a, "kind": "theft", "zone_id": zb}, ""),
    ]
    before = {
        t: await conn.fetchval(f"SELECT count(*) FROM {t}")
        for t in ("tickets", "ticket_events", "checkpoints", "patrol_routes", "devices", "users")
    }
    wrong = []
    for caller, method, url, body, field in cases:
        r = await estate.client.request(method, url, json=body, headers=estate.headers(caller))
        if r.status_code not in (404, 422):
            wrong.append(f"{caller} {method} {url} {body}: {r.status_code} {r.text[:200]}")
        elif r.status_code == 422 and field:
            fields = [e["field"] for e in r.json().get("errors", [])]
            if fields != [field]:
                wrong.append(f"{method} {url}: 422 names {fields}, not {field}")
    assert not wrong, "\n".join(wrong)
    after = {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in before}
    assert after == before
    zone = await conn.fetchval("SELECT zone_id FROM checkpoints WHERE id = $1", estate.checkpoint_a)
    assert zone == estate.zone_a
    sites = await conn.fetch(
        "SELECT site_id FROM site_members WHERE user_id = $1", estate.people["grd"].id
    )
    assert [r["site_id"] for r in sites] == [estate.site_a]

"""Hostile text and uploads: stored and returned verbatim, or refused cleanly, never executed.

Every free-text field of the API gets SQL-like, script-like and odd Unicode text (stored and
read back byte for byte), text exactly at its limit (stored), one character over (a 422
naming the field), and a NUL, which PostgreSQL cannot store (a 422, nothing stored).
Uploads: what test_tickets_attachments.py does not already send.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from server.config import Settings
from server.tickets import attachments
from tests.conftest import World
from tests.integration.test_security_matrix import Estate, build_estate, png

PROBLEM = "application/problem+json"

HOSTILE = [
    "'; DROP TABLE sites; --",
    "Robert'); DELETE FROM users WHERE ('1'='1",
    '" OR 1=1 --',
    "1; SELECT pg_sleep(10); --",
    "$1 $2 %s %(name)s {0} ${x}",
    "$$; TRUNCATE scans; $$",
    "E'\\\\x41' \\ \\\\ \\n \\'",
    "<script>alert('x')</script>",
    "门禁坏了 — 请尽快处理 🚪🔧",
    "\u202eevil\u202c right-to-left",
    "tab\there\r\nnew line",
    "  leading and trailing  ",
]


@pytest.fixture
async def estate(world: World, client: AsyncTestClient[Litestar]) -> Estate:
    return await build_estate(world, client)


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert "Traceback" not in response.text
    return body


@dataclass(frozen=True)
class TextField:
    """A free-text field: how to send it, where the server returns it, its limit."""

    name: str
    limit: int
    # (estate, value, n) -> the response of creating something with the value; n is unique.
    send: Callable[[Estate, str, int], Awaitable[Any]]
    # (estate, created response) -> the value as the server returns it on a later read.
    read: Callable[[Estate, Any], Awaitable[str]]


async def _get(e: Estate, url: str, caller: str = "adm") -> Any:
    r = await e.client.get(url, headers=e.headers(caller))
    assert r.status_code == 200, r.text
    return r.json()


async def _post(e: Estate, url: str, body: dict[str, Any], caller: str = "adm") -> Any:
    return await e.client.post(url, json=body, headers=e.headers(caller))


def _site(e: Estate, value: str, n: int) -> Awaitable[Any]:
    body = {"code": f"s-{n}", "name": value, "kind": "office", "timezone": "Asia/Shanghai"}
    return _post(e, "/api/sites", body)


def _zone(e: Estate, value: str, n: int) -> Awaitable[Any]:
    return _post(e, f"/api/sites/{e.site_a}/zones", {"name": value, "kind": "roof"})


def _zone_building(e: Estate, value: str, n: int) -> Awaitable[Any]:
    body = {"name": f"Zone {n}", "kind": "roof", "building": value}
    return _post(e, f"/api/sites/{e.site_a}/zones", body)


def _unit(e: Estate, value: str, n: int) -> Awaitable[Any]:
    return _post(e, f"/api/sites/{e.site_a}/units", {"building": "7", "floor": 1, "number": value})


def _user(e: Estate, value: str, n: int) -> Awaitable[Any]:
    body = {
        "username": f"u{n}",
        "password": "correct-horse-battery",
        "role": "guard",
        "site_ids": [e.site_a],
        "full_name": value,
    }
    return _post(e, "/api/users", body)


def _checkpoint(e: Estate, value: str, n: int) -> Awaitable[Any]:
    return _post(e, f"/api/sites/{e.site_a}/checkpoints", {"name": value})


def _instructions(e: Estate, value: str, n: int) -> Awaitable[Any]:
    body = {"name": f"CP {n}", "instructions": value}
    return _post(e, f"/api/sites/{e.site_a}/checkpoints", body)


def _route(e: Estate, value: str, n: int) -> Awaitable[Any]:
    body = {"name": value, "checkpoint_ids": [e.checkpoint_a]}
    return _post(e, f"/api/sites/{e.site_a}/routes", body)


def _log(e: Estate, value: str, n: int) -> Awaitable[Any]:
    return _post(e, f"/api/rounds/{e.round_a}/log", {"found": value}, "grd")


def _log_action(e: Estate, value: str, n: int) -> Awaitable[Any]:
    return _post(e, f"/api/rounds/{e.round_a}/log", {"found": "x", "action_taken": value}, "grd")


def _ticket(e: Estate, value: str, n: int, field: str = "title") -> Awaitable[Any]:
    body = {"site_id": e.site_a, "kind": "repair", "category": "plumbing", "title": "Leak"}
    body[field] = value
    return _post(e, "/api/tickets", body, "dsk")


def _ticket_description(e: Estate, value: str, n: int) -> Awaitable[Any]:
    return _ticket(e, value, n, "description")


def _ticket_caller(e: Estate, value: str, n: int) -> Awaitable[Any]:
    return _ticket(e, value, n, "reporter_name")


def _comment(e: Estate, value: str, n: int) -> Awaitable[Any]:
    body = {"action": "comment", "note": value}
    return _post(e, f"/api/tickets/{e.ticket_a}/events", body, "res")


def _device(e: Estate, value: str, n: int) -> Awaitable[Any]:
    body = {"id": f"dev-{n}", "kind": "smoke", "name": value}
    return _post(e, f"/api/sites/{e.site_a}/devices", body)


async def _read_site(e: Estate, r: Any) -> str:
    return str((await _get(e, f"/api/sites/{r.json()['id']}"))["name"])


async def _read_zone(e: Estate, r: Any, key: str = "name") -> str:
    zones = (await _get(e, f"/api/sites/{e.site_a}/zones?limit=500"))["items"]
    return str(next(z for z in zones if z["id"] == r.json()["id"])[key])


async def _read_zone_building(e: Estate, r: Any) -> str:
    return await _read_zone(e, r, "building")


async def _read_unit(e: Estate, r: Any) -> str:
    units = (await _get(e, f"/api/sites/{e.site_a}/units?limit=500"))["items"]
    return str(next(u for u in units if u["id"] == r.json()["id"])["number"])


async def _read_user(e: Estate, r: Any) -> str:
    return str((await _get(e, f"/api/users/{r.json()['id']}"))["full_name"])


async def _read_checkpoint(e: Estate, r: Any, key: str = "name") -> str:
    return str((await _get(e, f"/api/checkpoints/{r.json()['id']}"))[key])


async def _read_instructions(e: Estate, r: Any) -> str:
    return await _read_checkpoint(e, r, "instructions")


async def _read_route(e: Estate, r: Any) -> str:
    return str((await _get(e, f"/api/routes/{r.json()['id']}"))["name"])


async def _read_log(e: Estate, r: Any, key: str = "found") -> str:
    value: str = await e.world.conn.fetchval(
        f"SELECT {key} FROM patrol_log WHERE id = $1", r.json()["id"]
    )
    assert r.json()[key] == value  # the answer is what was stored
    return value


async def _read_log_action(e: Estate, r: Any) -> str:
    return await _read_log(e, r, "action_taken")


async def _read_ticket(e: Estate, r: Any, key: str = "title") -> str:
    return str((await _get(e, f"/api/tickets/{r.json()['id']}", "dsk"))[key])


async def _read_ticket_description(e: Estate, r: Any) -> str:
    return await _read_ticket(e, r, "description")


async def _read_ticket_caller(e: Estate, r: Any) -> str:
    return await _read_ticket(e, r, "reporter_name")


async def _read_comment(e: Estate, r: Any) -> str:
    events = (await _get(e, f"/api/tickets/{e.ticket_a}/events?limit=500", "res"))["items"]
    return str(next(ev for ev in events if ev["id"] == r.json()["event"]["id"])["note"])


async def _read_device(e: Estate, r: Any) -> str:
    device = await _get(e, f"/api/sites/{e.site_a}/devices/{r.json()['id']}")
    return str(device["name"])


TEXT_FIELDS = [
    TextField("name", 200, _site, _read_site),
    TextField("name", 200, _zone, _read_zone),
    TextField("building", 50, _zone_building, _read_zone_building),
    TextField("number", 50, _unit, _read_unit),
    TextField("full_name", 100, _user, _read_user),
    TextField("name", 200, _checkpoint, _read_checkpoint),
    TextField("instructions", 2000, _instructions, _read_instructions),
    TextField("name", 200, _route, _read_route),
    TextField("found", 4000, _log, _read_log),
    TextField("action_taken", 4000, _log_action, _read_log_action),
    TextField("title", 200, _ticket, _read_ticket),
    TextField("description", 4000, _ticket_description, _read_ticket_description),
    TextField("reporter_name", 100, _ticket_caller, _read_ticket_caller),
    TextField("note", 4000, _comment, _read_comment),
    TextField("name", 200, _device, _read_device),
]
_IDS = [f"{f.send.__name__.strip('_')}.{f.name}" for f in TEXT_FIELDS]


async def _table_counts(conn: asyncpg.Connection[asyncpg.Record]) -> dict[str, int]:
    counts = {}
    for table in ("sites", "users", "scans", "checkpoints", "tickets"):
        counts[table] = await conn.fetchval(f"SELECT count(*) FROM {table}")
    return counts


@pytest.mark.parametrize("field", TEXT_FIELDS, ids=_IDS)
async def test_text_is_stored_verbatim_or_refused_by_length(
    estate: Estate, field: TextField
) -> None:
    conn = estate.world.conn
    before = await _table_counts(conn)
    values = [*HOSTILE, "x" * field.limit, "长" * field.limit]
    for n, value in enumerate(values):
        started = time.monotonic()
        r = await field.send(estate, value, n)
        assert time.monotonic() - started < 5, f"{value!r} took its time: executed?"
        assert r.status_code in (200, 201), f"{value[:40]!r}: {r.text[:300]}"
        assert await field.read(estate, r) == value, f"{value[:40]!r} came back changed"

    created = await _table_counts(conn)
    assert all(created[t] >= before[t] for t in before), "a table lost rows"

    for n, value in enumerate(["y" * (field.limit + 1), "y" * 100_000], start=len(values)):
        body = problem(await field.send(estate, value, n), 422)
        assert [e["field"] for e in body["errors"]] == [field.name], body
        assert value not in str(body)  # the refused text is not echoed back
    # A NUL cannot be stored in PostgreSQL text: refused, and nothing half-stored.
    problem(await field.send(estate, "before\x00after", len(values) + 2), 422)
    assert await _table_counts(conn) == created


async def test_hostile_text_in_queries_and_paths_is_a_value_not_sql(estate: Estate) -> None:
    h = estate.headers("adm")
    before = await _table_counts(estate.world.conn)
    for value in HOSTILE[:6]:
        for url, params in (
            ("/api/tickets", {"status": value}),
            ("/api/alarms", {"status": value}),
            ("/api/dead-letters", {"reason": value}),
            ("/api/sites", {"after": value}),
        ):
            r = await estate.client.get(url, params=params, headers=h)
            assert r.status_code in (200, 400, 422), f"{url} {value!r}: {r.text}"
            assert r.headers["content-type"].startswith(("application/json", PROBLEM))
        # A device id is a path segment of text: a hostile one is just not found.
        r = await estate.client.get(f"/api/sites/{estate.site_a}/devices/{value}", headers=h)
        assert r.status_code in (404, 422), r.text
    r = await estate.client.get("/api/dead-letters", params={"reason": "' OR 1=1 --"}, headers=h)
    assert r.json()["items"] == []  # the estate's one dead letter has another reason
    assert await _table_counts(estate.world.conn) == before


async def test_login_with_hostile_or_huge_usernames_is_a_plain_refusal(
    client: AsyncTestClient[Litestar], world: World
) -> None:
    await world.user("root", "admin")
    for username in ("' OR '1'='1", "root'--", "root\\", "ROOT' /*"):
        r = await client.post(
            "/api/auth/login", json={"username": username, "password": "' OR '1'='1"}
        )
        assert problem(r, 401)["type"].endswith("/invalid-credentials")
    r = await client.post("/api/auth/login", json={"username": "r" * 65, "password": "x"})
    assert [e["field"] for e in problem(r, 422)["errors"]] == ["username"]
    r = await client.post("/api/auth/login", json={"username": "root", "password": "p" * 201})
    assert [e["field"] for e in problem(r, 422)["errors"]] == ["password"]


async def test_a_batch_item_the_database_cannot_store_spoils_only_itself(estate: Estate) -> None:
    """A NUL in one scan's note: that item is refused, the others are stored."""
    now = datetime.now(UTC).isoformat()

    def scan(**extra: Any) -> dict[str, Any]:
        return {"id": str(uuid.uuid4()), "scanned_at": now, "qr": estate.qr(), **extra}

    items = [scan(), scan(note="a\x00b"), scan(note=HOSTILE[0])]
    r = await _post(estate, "/api/scans/batch", {"sent_at": now, "scans": items}, "grd")
    assert r.status_code == 201, r.text
    out = r.json()
    assert (out["stored"], out["refused"]) == (2, 1)
    assert [i["status"] for i in out["results"]] == [201, 422, 201]
    assert out["results"][1]["problem"]["status"] == 422
    notes = await estate.world.conn.fetch("SELECT id, note FROM scans ORDER BY note NULLS FIRST")
    assert [str(n["id"]) for n in notes] == [items[0]["id"], items[2]["id"]]
    assert notes[1]["note"] == HOSTILE[0]


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"])
async def test_times_out_of_this_world_are_refused_not_stored_as_infinity(
    estate: Estate, when: str
) -> None:
    """PostgreSQL keeps the extreme timestamps as -infinity/infinity; a scan's clock and a
    report's period must be real times."""
    body = {"id": str(uuid.uuid4()), "scanned_at": when, "qr": estate.qr()}
    r = await _post(estate, "/api/scans", body, "grd")
    assert [e["field"] for e in problem(r, 422)["errors"]] == ["scanned_at"]
    now = datetime.now(UTC).isoformat()
    r = await _post(estate, "/api/scans/batch", {"sent_at": when, "scans": [body]}, "grd")
    assert [e["field"] for e in problem(r, 422)["errors"]] == ["sent_at"]
    r = await _post(estate, "/api/scans/batch", {"sent_at": now, "scans": [body]}, "grd")
    assert r.json()["results"][0]["status"] == 422
    assert await estate.world.conn.fetchval("SELECT count(*) FROM scans") == 0

    period = {"site_id": estate.site_a, "from": when, "to": "2099-01-01T00:00:00Z"}
    if when.startswith("9999"):
        period = {"site_id": estate.site_a, "from": "2001-01-01T00:00:00Z", "to": when}
    r = await estate.client.get("/api/reports/patrol", params=period, headers=estate.headers("sup"))
    assert problem(r, 422)["errors"][0]["field"] in ("from", "to")


async def test_a_scan_time_without_an_offset_is_refused(estate: Estate) -> None:
    """A bare local time could be any hour on Earth: the phone must say its offset."""
    body = {"id": str(uuid.uuid4()), "scanned_at": "2026-11-27T10:00:00", "qr": estate.qr()}
    r = await _post(estate, "/api/scans", body, "grd")
    assert [e["field"] for e in problem(r, 422)["errors"]] == ["scanned_at"]
    batch = {"sent_at": "2026-11-27T10:00:00", "scans": [body]}
    r = await _post(estate, "/api/scans/batch", batch, "grd")
    assert [e["field"] for e in problem(r, 422)["errors"]] == ["sent_at"]
    assert await estate.world.conn.fetchval("SELECT count(*) FROM scans") == 0


async def test_a_route_window_with_an_offset_is_refused(estate: Estate) -> None:
    """Windows are on the site's own clock; an offset used to be dropped without a word."""
    body = {
        "name": "Night",
        "checkpoint_ids": [estate.checkpoint_a],
        "window_start": "22:00:00+08:00",
        "window_end": "06:00:00",
    }
    r = await _post(estate, f"/api/sites/{estate.site_a}/routes", body, "sup")
    assert [e["field"] for e in problem(r, 422)["errors"]] == ["window_start"]
    r = await _post(
        estate, f"/api/sites/{estate.site_a}/routes", {**body, "window_start": "22:00:00"}, "sup"
    )
    assert r.status_code == 201, r.text
    assert (r.json()["window_start"], r.json()["window_end"]) == ("22:00:00", "06:00:00")


# --- uploads -----------------------------------------------------------------------------


async def _event(
    estate: Estate, *, caller: str = "res", headers: dict[str, str] | None = None, **kw: Any
) -> Any:
    return await estate.client.post(
        f"/api/tickets/{estate.ticket_a}/events",
        headers={**estate.headers(caller), **(headers or {})},
        **kw,
    )


async def _attachments(estate: Estate) -> int:
    n: int = await estate.world.conn.fetchval("SELECT count(*) FROM ticket_attachments")
    return n


async def test_a_request_over_the_upload_limit_is_413_and_stores_nothing(estate: Estate) -> None:
    before = await _attachments(estate)
    events = await estate.world.conn.fetchval("SELECT count(*) FROM ticket_events")
    big = b"\x89PNG" + b"\0" * (attachments.MAX_REQUEST_BYTES + 1024)
    r = await _event(estate, data={"action": "comment"}, files=[("files", ("a.png", big))])
    assert problem(r, 413)["type"].endswith("/payload-too-large")
    assert await _attachments(estate) == before
    assert await estate.world.conn.fetchval("SELECT count(*) FROM ticket_events") == events


async def test_a_json_event_over_the_json_limit_is_413(estate: Estate, settings: Settings) -> None:
    note = "n" * (settings.max_body_bytes + 10)  # under the route's file limit, over JSON's
    r = await _event(estate, json={"action": "comment", "note": note})
    assert problem(r, 413)["type"].endswith("/payload-too-large")


async def test_odd_multipart_is_refused_cleanly(estate: Estate) -> None:
    before = await _attachments(estate)
    cases: list[tuple[str, bytes, dict[str, str]]] = [
        ("no boundary", b"--x\r\n\r\n", {"content-type": "multipart/form-data"}),
        (
            "garbage",
            b"\x00\xff" * 512,
            {"content-type": "multipart/form-data; boundary=zzz"},
        ),
        (
            "boundary never closed",
            b'--b\r\nContent-Disposition: form-data; name="action"\r\n\r\ncomm',
            {"content-type": "multipart/form-data; boundary=b"},
        ),
        (
            "part without a name",
            b"--b\r\nContent-Disposition: form-data\r\n\r\ncomment\r\n--b--\r\n",
            {"content-type": "multipart/form-data; boundary=b"},
        ),
        ("plain text", b"action=comment", {"content-type": "text/plain"}),
        ("xml", b"<event action='comment'/>", {"content-type": "application/xml"}),
    ]
    for case, content, headers in cases:
        r = await _event(estate, content=content, headers=headers)
        assert 400 <= r.status_code < 500, f"{case}: {r.status_code} {r.text}"
        assert r.headers["content-type"].startswith(PROBLEM), f"{case}: {r.text}"
    assert await _attachments(estate) == before


async def test_form_fields_are_checked_like_json(estate: Estate) -> None:
    r = await _event(estate, data={"action": "comment", "note": "n" * 4001})
    assert [e["field"] for e in problem(r, 422)["errors"]] == ["note"]
    boundary = "b"
    twice = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="action"\r\n\r\ncomment\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="action"\r\n\r\ncancel\r\n'
        f"--{boundary}--\r\n"
    ).encode()
    r = await _event(
        estate,
        content=twice,
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert [e["field"] for e in problem(r, 422)["errors"]] == ["action"]
    status = await estate.world.conn.fetchval(
        "SELECT status FROM tickets WHERE id = $1", estate.ticket_a
    )
    assert status == "new"  # not cancelled by the second `action`


async def test_scripts_in_images_or_svg_are_not_photos(estate: Estate) -> None:
    before = await _attachments(estate)
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    html = b"<!DOCTYPE html><html><script>alert(document.cookie)</script></html>"
    for name, data, declared in (
        ("logo.svg", svg, "image/svg+xml"),
        ("photo.png", html, "image/png"),
        ("page.html", html, "text/html"),
    ):
        r = await _event(
            estate, data={"action": "comment"}, files=[("files", (name, data, declared))]
        )
        assert problem(r, 415)["field"] == "files[0]"
    assert await _attachments(estate) == before

    # A whole PNG with a page after its end is still a PNG: it is only ever served as one,
    # and a browser told not to sniff and to sandbox it never runs the page.
    r = await _event(
        estate,
        data={"action": "comment"},
        files=[("files", ("photo.jpg", png() + html, "text/html"))],
    )
    if r.status_code != 415:
        assert r.status_code == 201, r.text
        attachment = r.json()["event"]["attachment_ids"][0]
        got = await estate.client.get(
            f"/api/tickets/{estate.ticket_a}/attachments/{attachment}",
            headers=estate.headers("res"),
        )
        assert got.headers["content-type"] == "image/png"
        assert got.headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in got.headers["content-security-policy"]


async def test_a_hostile_file_name_is_kept_as_text_within_its_limit(estate: Estate) -> None:
    name = "'; DROP TABLE ticket_attachments; -- <b>" + "名" * 300 + ".png"
    r = await _event(
        estate, data={"action": "comment"}, files=[("files", (name, png(), "image/png"))]
    )
    assert r.status_code == 201, r.text
    stored = r.json()["ticket"]["attachments"][-1]["original_name"]
    assert stored == name[:255]
    got = await estate.client.get(
        f"/api/tickets/{estate.ticket_a}/attachments/{r.json()['event']['attachment_ids'][0]}",
        headers=estate.headers("res"),
    )
    assert got.status_code == 200
    assert got.content == png()
    assert "\n" not in got.headers["content-disposition"]

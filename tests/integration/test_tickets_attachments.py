"""Ticket attachments: multipart on comment and resolve, type by content, size limit, storage
by hash, served only to those who may see the ticket; the event body in the API schema."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

from PIL import Image

from server.auth import Principal
from server.config import Settings
from server.tickets import attachments
from tests.integration.test_tickets import Desk, desk, problem

__all__ = ["desk"]  # the fixture, shared with test_tickets

PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


def image(fmt: str, colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(out, format=fmt)
    return out.getvalue()


async def send(
    desk: Desk,
    who: Principal,
    ticket_id: int,
    files: list[tuple[str, bytes, str]],
    **fields: str,
) -> Any:
    fields.setdefault("action", "comment")
    return await desk.client.post(
        f"/api/tickets/{ticket_id}/events",
        data=fields,
        files=[("files", f) for f in files],
        headers=desk.h(who),
    )


def blobs(settings: Settings) -> list[Path]:
    root = Path(settings.attachments_dir)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def test_photos_and_pdfs_are_stored_by_hash_and_served_to_who_may_see(
    desk: Desk, settings: Settings
) -> None:
    t = await desk.file()
    tid = t["id"]
    png, jpeg, webp = image("PNG"), image("JPEG"), image("WEBP")
    files = [
        ("leak.jpg", png, "image/jpeg"),  # the name and the client's type are ignored
        ("IMG_0001.JPG", jpeg, "image/jpeg"),
        ("../../etc/sink.webp", webp, "application/octet-stream"),
        ("quote.pdf", PDF, "application/pdf"),
    ]
    r = await send(desk, desk.resident, tid, files, note="see the photos")
    assert r.status_code == 201, r.text
    event = r.json()["event"]
    assert event["action"] == "comment"
    assert event["note"] == "see the photos"
    listed = r.json()["ticket"]["attachments"]
    assert [a["id"] for a in listed] == event["attachment_ids"]
    assert [a["content_type"] for a in listed] == [
        "image/png",
        "image/jpeg",
        "image/webp",
        "application/pdf",
    ]
    assert [a["original_name"] for a in listed] == [
        "leak.jpg",
        "IMG_0001.JPG",
        "sink.webp",
        "quote.pdf",
    ]
    for a, (_, data, _) in zip(listed, files, strict=True):
        assert a["sha256"] == hashlib.sha256(data).hexdigest()
        assert a["size"] == len(data)
        path = attachments.blob_path(Path(settings.attachments_dir), a["sha256"])
        assert path.read_bytes() == data

    first = listed[0]
    url = f"/api/tickets/{tid}/attachments/{first['id']}"
    for who in (desk.resident, desk.tech, desk.supervisor, desk.admin):
        got = await desk.client.get(url, headers=desk.h(who))
        assert got.status_code == 200, got.text
        assert got.content == png
        assert got.headers["content-type"] == "image/png"
        assert got.headers["x-content-type-options"] == "nosniff"
        assert got.headers["content-disposition"].startswith("inline")
    pdf = await desk.client.get(
        f"/api/tickets/{tid}/attachments/{listed[3]['id']}", headers=desk.h(desk.resident)
    )
    assert pdf.headers["content-disposition"].startswith("attachment")
    # Those who may not see the ticket get 404, as if it did not exist.
    for who in (desk.neighbour, desk.other_sup, desk.other_resident):
        problem(await desk.client.get(url, headers=desk.h(who)), 404)
    # An attachment is reached only through its own ticket.
    own = await desk.file(desk.neighbour)
    r = await desk.client.get(
        f"/api/tickets/{own['id']}/attachments/{first['id']}", headers=desk.h(desk.neighbour)
    )
    problem(r, 404)
    problem(
        await desk.client.get(f"/api/tickets/{tid}/attachments/999", headers=desk.h(desk.tech)), 404
    )

    # The same bytes again are stored once; a name in Chinese survives the round trip.
    before = blobs(settings)
    r = await send(desk, desk.tech, tid, [("维修后.png", png, "image/png")])
    assert r.status_code == 201, r.text
    assert blobs(settings) == before
    again = (await desk.get(desk.tech, tid)).json()["attachments"]
    assert len(again) == 5
    assert again[-1]["original_name"] == "维修后.png"
    got = await desk.client.get(
        f"/api/tickets/{tid}/attachments/{again[-1]['id']}", headers=desk.h(desk.tech)
    )
    assert got.headers["content-disposition"] == (
        "inline; filename*=utf-8''%E7%BB%B4%E4%BF%AE%E5%90%8E.png"
    )


async def test_resolve_with_photo_and_scan_in_multipart(desk: Desk) -> None:
    cp = await desk.conn.fetchval(
        "INSERT INTO checkpoints (site_id, unit_id, name, nfc_uid) VALUES ($1, $2, 'Flat 101',"
        " '04112233445566') RETURNING id",
        desk.site,
        desk.unit,
    )
    t = await desk.in_status("in_progress")
    r = await send(
        desk,
        desk.tech,
        t["id"],
        [("after.jpg", image("JPEG", (10, 200, 10)), "image/jpeg")],
        action="resolve",
        note="new cartridge fitted",
        scan='{"nfc_uid": "04112233445566"}',
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["ticket"]["status"] == "resolved"
    assert body["ticket"]["attested_on_site"] is True
    assert body["event"]["data"]["scan"]["checkpoint_id"] == cp
    assert len(body["event"]["attachment_ids"]) == 1
    r = await send(desk, desk.tech, t["id"], [], action="resolve", scan="{not json")
    assert problem(r, 422)["errors"][0]["field"] == "scan"


async def test_wrong_types_oversize_and_misplaced_files_are_refused(
    desk: Desk, settings: Settings
) -> None:
    t = await desk.file()
    tid = t["id"]

    async def refused(status: int, files: list[tuple[str, bytes, str]], **fields: str) -> Any:
        r = await send(desk, desk.resident, tid, files, **fields)
        return problem(r, status)

    body = await refused(415, [("photo.jpg", b"just some text, honest", "image/jpeg")])
    assert body["type"].endswith("/unsupported-attachment")
    assert body["field"] == "files[0]"
    assert body["allowed"] == list(attachments.ALLOWED)
    # A JPEG header glued to anything else is not a JPEG; nor is an empty file, or a PDF cut
    # short, or an executable named like a PDF.
    await refused(
        415,
        [
            ("a.png", image("PNG"), "image/png"),
            ("b.jpg", b"\xff\xd8\xff" + b"x" * 500, "image/jpeg"),
        ],
    )
    await refused(415, [("empty.png", b"", "image/png")])
    await refused(415, [("cut.pdf", PDF[:20], "application/pdf")])
    await refused(415, [("tool.pdf", b"MZ\x90\x00" + b"\x00" * 200, "application/pdf")])
    big = b"%PDF-1.4\n" + b"0" * attachments.MAX_BYTES + b"\n%%EOF\n"
    body = await refused(413, [("scan.pdf", big, "application/pdf")])
    assert body["type"].endswith("/attachment-too-large")
    assert body["max_bytes"] == attachments.MAX_BYTES
    many = [
        (f"{i}.png", image("PNG", (i, i, i)), "image/png") for i in range(attachments.MAX_FILES + 1)
    ]
    assert (await refused(422, many))["errors"][0]["field"] == "files"
    # Files go with a comment or a resolve only.
    r = await send(
        desk, desk.resident, tid, [("a.png", image("PNG"), "image/png")], action="cancel"
    )
    assert problem(r, 422)["errors"][0]["field"] == "files"
    # Nothing of the refused requests was kept.
    assert await desk.conn.fetchval("SELECT count(*) FROM ticket_attachments") == 0
    assert blobs(settings) == []
    assert len(await desk.events(desk.resident, tid)) == 1
    # Not visible: 404 before any file is read.
    theirs = await desk.file(desk.neighbour)
    r = await send(desk, desk.resident, theirs["id"], [("a.png", image("PNG"), "image/png")])
    problem(r, 404)
    # Form fields are checked like a JSON body.
    r = await send(desk, desk.resident, tid, [], action="rate", rating="many")
    assert problem(r, 422)["errors"][0]["field"] == "rating"
    r = await send(desk, desk.resident, tid, [], action="comment", colour="red")
    assert problem(r, 422)["errors"][0]["field"] == "colour"


async def test_event_body_is_documented_for_json_and_multipart(desk: Desk) -> None:
    r = await desk.client.get("/schema/openapi.json")
    assert r.status_code == 200
    op = r.json()["paths"]["/api/tickets/{ticket_id}/events"]["post"]
    content = op["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data"}
    variants = content["application/json"]["schema"]["anyOf"]
    actions = {v["properties"]["action"]["enum"][0] for v in variants}
    assert actions == {
        "assign",
        "accept",
        "start",
        "hold",
        "resume",
        "comment",
        "resolve",
        "confirm",
        "return",
        "cancel",
        "rate",
        "follow_up",
        "auto_close",
    }
    assert "$ref" not in str(content)
    files = content["multipart/form-data"]["schema"]["properties"]["files"]
    assert files["items"]["format"] == "binary"


async def test_truncated_or_bodiless_multipart_is_refused_cleanly(desk: Desk) -> None:
    t = await desk.file()
    boundary = "XyZ"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="action"\r\n\r\ncomment\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    cut = head + image("PNG")[:40]  # no closing boundary
    r = await desk.client.post(
        f"/api/tickets/{t['id']}/events",
        content=cut,
        headers={
            **desk.h(desk.resident),
            "content-type": f"multipart/form-data; boundary={boundary}",
        },
    )
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    r = await desk.client.post(
        f"/api/tickets/{t['id']}/events",
        content=b"",
        headers={**desk.h(desk.resident), "content-type": "multipart/form-data; boundary=x"},
    )
    assert problem(r, 422)["errors"][0]["field"] == "action"
    assert await desk.conn.fetchval("SELECT count(*) FROM ticket_attachments") == 0
    assert len(await desk.events(desk.resident, t["id"])) == 1

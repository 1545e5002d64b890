"""HTTP routes for tickets: filing, reading, events (with files), SLA policies, settings, report."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final, cast

import msgspec
from litestar import Controller, Request, Response, get, post, put
from litestar.datastructures import State, UploadFile
from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
)
from litestar.params import QueryParameter
from litestar.response import File

from server.auth import MANAGING_ROLES, SUPERVISING_ROLES, Principal, require_roles, staff_only
from server.config import Settings
from server.db import Connection
from server.errors import Invalid, NotFound, Problem
from server.pagination import DEFAULT_LIMIT, Limit, Page, page_of
from server.sites.routes import visible_site
from server.tickets import attachments, report, service, store
from server.tickets.models import (
    Category,
    EventIn,
    EventResult,
    Kind,
    Priority,
    SlaPolicies,
    SlaPoliciesIn,
    SlaPolicy,
    Status,
    Ticket,
    TicketDetail,
    TicketEvent,
    TicketIn,
    TicketSettings,
)
from server.tickets.report import TicketReport
from server.tickets.sla import PRIORITIES, default_targets

log = logging.getLogger("estateops.tickets")

_MANAGERS = require_roles(*MANAGING_ROLES)
_SUPERVISORS = require_roles(*SUPERVISING_ROLES)


# --- the event body: JSON, or multipart/form-data with files ----------------------------


def _invalid(exc: msgspec.ValidationError) -> Invalid:
    message = str(exc)
    field = "body"
    for marker in ("unknown field `", "missing required field `"):
        if marker in message:
            field = message.split(marker, 1)[1].split("`", 1)[0]
    if "- at `$." in message:
        field = message.rsplit("- at `$.", 1)[1].rstrip("`")
    return Invalid(field, message)


def _malformed(detail: str) -> Problem:
    return Problem(detail, status=400, slug="malformed-body", title="Malformed request body")


@dataclass(frozen=True, slots=True)
class _EventRequest:
    body: EventIn
    files: list[tuple[str, UploadFile]]


async def _read_event_request(
    request: Request[Any, Any, Any], max_json_bytes: int
) -> _EventRequest:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.form()
        fields: dict[str, Any] = {}
        files: list[tuple[str, UploadFile]] = []
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                files.append((f"files[{len(files)}]", value))
            elif key in fields:
                raise Invalid(key, "given twice")
            else:
                fields[key] = value
        if isinstance(fields.get("scan"), str):
            try:
                fields["scan"] = msgspec.json.decode(fields["scan"])
            except msgspec.DecodeError as exc:
                raise Invalid("scan", "must be a JSON object") from exc
        try:
            body = msgspec.convert(fields, EventIn, strict=False)
        except msgspec.ValidationError as exc:
            raise _invalid(exc) from exc
        if len(files) > attachments.MAX_FILES:
            raise Invalid("files", f"at most {attachments.MAX_FILES} files per event")
        return _EventRequest(body, files)
    if media not in ("", "application/json") and not media.endswith("+json"):
        raise Problem(
            "Send the event as application/json, or as a form (multipart/form-data with files)",
            status=415,
            slug="unsupported-media-type",
            title="Unsupported Media Type",
        )
    raw = await request.body()
    if not raw:
        raise _malformed("A JSON body is required")
    if len(raw) > max_json_bytes:  # the route's larger limit is for files
        raise Problem(
            f"A JSON event may be at most {max_json_bytes} bytes",
            status=413,
            slug="payload-too-large",
            title="Request Entity Too Large",
        )
    try:
        return _EventRequest(msgspec.json.decode(raw, type=EventIn), [])
    except msgspec.ValidationError as exc:
        raise _invalid(exc) from exc
    except msgspec.DecodeError as exc:
        raise _malformed(f"The body is not valid JSON: {exc}") from exc


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """A JSON schema with its $refs replaced by their definitions (the body stands alone)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            return _inline(defs[ref.rsplit("/", 1)[-1]], defs)
        return {
            k: (
                {"propertyName": v["propertyName"]}  # its mapping pointed at the $defs
                if k == "discriminator" and isinstance(v, dict)
                else _inline(v, defs)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def _event_schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    (root,), defs = msgspec.json.schema_components([EventIn], ref_template="#/$defs/{name}")
    as_json = cast("dict[str, Any]", _inline(root, defs))
    multipart = {
        "type": "object",
        "required": ["action"],
        "properties": {
            "action": {"type": "string", "enum": ["comment", "resolve"]},
            "note": {"type": "string", "maxLength": 4000},
            "scan": {"type": "string", "description": "resolve: the scan object, as JSON"},
            "files": {
                "type": "array",
                "maxItems": attachments.MAX_FILES,
                "items": {"type": "string", "format": "binary"},
                "description": "JPEG, PNG, WebP or PDF; at most "
                f"{attachments.MAX_BYTES // (1024 * 1024)} MiB each",
            },
        },
    }
    return as_json, multipart


_EVENT_JSON, _EVENT_MULTIPART = _event_schemas()


@dataclass
class _EventOperation(Operation):
    """The event body is parsed by hand (JSON or multipart); document both."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            content={
                "application/json": OpenAPIMediaType(schema=cast("Any", _EVENT_JSON)),
                "multipart/form-data": OpenAPIMediaType(schema=cast("Any", _EVENT_MULTIPART)),
            },
        )


@dataclass
class _AttachmentOperation(Operation):
    """An attachment is served with its own type (the types accepted on upload); its
    Last-Modified is an HTTP date, not the RFC 3339 date-time Litestar documents."""

    def __post_init__(self) -> None:
        if self.responses and "200" in self.responses:
            ok = cast("OpenAPIResponse", self.responses["200"])
            binary = Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
            ok.content = {media: OpenAPIMediaType(schema=binary) for media in attachments.ALLOWED}
            if ok.headers and "last-modified" in ok.headers:
                ok.headers["last-modified"] = OpenAPIHeader(
                    schema=Schema(type=OpenAPIType.STRING),
                    description="HTTP date (RFC 9110), e.g. Tue, 15 Nov 1994 08:12:31 GMT",
                )


# --- tickets ----------------------------------------------------------------------------


class TicketController(Controller):
    path = "/api/tickets"
    tags = ["tickets"]

    @post("/", summary="File a ticket (residents for themselves, staff for their sites)")
    async def create_ticket(
        self, db: Connection, principal: Principal, data: TicketIn
    ) -> TicketDetail:
        ticket_id = await service.file_ticket(db, principal, data, datetime.now(UTC))
        return await service.detail(
            db, principal, await service.visible_ticket(db, principal, ticket_id)
        )

    @get("/", summary="Tickets the caller may see, by site, status, kind, assignee, breach")
    async def list_tickets(
        self,
        db: Connection,
        principal: Principal,
        site_id: int | None = None,
        status: Status | None = None,
        kind: Kind | None = None,
        category: Category | None = None,
        priority: Priority | None = None,
        assignee_id: int | None = None,
        breached: bool | None = None,
        repeat: bool | None = None,
        incident_id: int | None = None,
        after: int = 0,
        limit: Limit = DEFAULT_LIMIT,
    ) -> Page[Ticket]:
        resident = principal.role == "resident"
        if site_id is not None and not resident:
            principal.require_site(site_id)
        found = await store.list_tickets(
            db,
            store.TicketFilter(
                visible=None if resident else principal.visible_sites(),
                reporter_id=principal.id if resident else None,
                site_id=site_id,
                status=status,
                kind=kind,
                category=category,
                priority=priority,
                assignee_id=assignee_id,
                breached=breached,
                repeat=repeat,
                incident_id=incident_id,
            ),
            after,
            limit,
        )
        return page_of(found, limit)

    @get("/{ticket_id:int}", summary="One ticket, with what the caller may do next")
    async def get_ticket(
        self, db: Connection, principal: Principal, ticket_id: int
    ) -> TicketDetail:
        return await service.detail(
            db, principal, await service.visible_ticket(db, principal, ticket_id)
        )

    @post(
        "/{ticket_id:int}/events",
        summary="Move the ticket: one event per action (JSON, or multipart with files)",
        description=(
            "Actions: assign, accept, start, hold, resume, comment, resolve, confirm, return,"
            " cancel, rate, follow_up. A move the status or the caller's role does not allow"
            " answers 409 with `current_status` and `allowed_actions`. A comment or a resolve"
            " may carry photos and PDFs as multipart/form-data (fields `action`, `note`,"
            " `scan` as JSON, and files)."
        ),
        operation_class=_EventOperation,
        request_max_body_size=attachments.MAX_REQUEST_BYTES,
    )
    async def add_event(
        self,
        db: Connection,
        principal: Principal,
        state: State,
        request: Request[Any, Any, Any],
        ticket_id: int,
    ) -> Response[EventResult]:
        settings: Settings = state.settings
        # 404 before reading any file of a ticket the caller may not see.
        await service.visible_ticket(db, principal, ticket_id)
        parsed = await _read_event_request(request, settings.max_body_bytes)
        uploads = [await attachments.read_upload(f, field) for field, f in parsed.files]
        event_id = await service.apply_event(
            db, settings, principal, ticket_id, parsed.body, uploads, datetime.now(UTC)
        )
        row = await service.visible_ticket(db, principal, ticket_id)
        result = EventResult(
            event=await store.get_event(db, event_id),
            ticket=await service.detail(db, principal, row),
        )
        return Response(result, status_code=201)

    @get("/{ticket_id:int}/events", summary="The ticket's audit trail, oldest first")
    async def list_events(
        self,
        db: Connection,
        principal: Principal,
        ticket_id: int,
        after: int = 0,
        limit: Limit = DEFAULT_LIMIT,
    ) -> Page[TicketEvent]:
        await service.visible_ticket(db, principal, ticket_id)
        return page_of(await store.list_events(db, ticket_id, after, limit), limit)

    @get(
        "/{ticket_id:int}/attachments/{attachment_id:int}",
        summary="A photo or file of the ticket (to those who may see the ticket)",
        media_type="application/octet-stream",
        operation_class=_AttachmentOperation,
    )
    async def get_attachment(
        self,
        db: Connection,
        principal: Principal,
        state: State,
        ticket_id: int,
        attachment_id: int,
    ) -> File:
        await service.visible_ticket(db, principal, ticket_id)
        found = await store.get_attachment(db, ticket_id, attachment_id)
        if found is None:
            raise NotFound("attachment")
        path = attachments.blob_path(Path(state.settings.attachments_dir), found.sha256)
        if not path.is_file():
            log.error("attachment %s of ticket %s is missing at %s", found.id, ticket_id, path)
            raise NotFound("attachment")
        image = found.content_type.startswith("image/")
        return File(
            path=path,
            media_type=found.content_type,
            filename=found.original_name or f"attachment-{found.id}",
            content_disposition_type="inline" if image else "attachment",
            headers={
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'none'; sandbox",
                "Cache-Control": "private, max-age=3600",
            },
        )


# --- per-site SLA policies and settings -------------------------------------------------

_DEFAULT_POLICIES: Final = tuple(
    SlaPolicy(
        priority=p,  # type: ignore[arg-type]
        category=None,
        respond_minutes=int(default_targets(p).respond.total_seconds() // 60),
        resolve_minutes=int(default_targets(p).resolve.total_seconds() // 60),
        source="default",
    )
    for p in PRIORITIES
)


async def _policies(db: Connection, site_id: int) -> SlaPolicies:
    stored = await store.site_policies(db, site_id)
    covered = {p.priority for p in stored if p.category is None}
    every = stored + [d for d in _DEFAULT_POLICIES if d.priority not in covered]
    every.sort(key=lambda p: (PRIORITIES.index(p.priority), p.category or ""))
    return SlaPolicies(site_id=site_id, policies=every)


class TicketSiteController(Controller):
    path = "/api/sites/{site_id:int}"
    tags = ["tickets"]

    @get(
        "/sla-policies",
        guards=[staff_only()],
        summary="SLA targets of a site; priorities it does not set use the standard's",
    )
    async def get_policies(self, db: Connection, principal: Principal, site_id: int) -> SlaPolicies:
        await visible_site(db, principal, site_id)
        return await _policies(db, site_id)

    @put(
        "/sla-policies",
        guards=[_MANAGERS],
        summary="Replace a site's SLA targets (by priority, optionally by category)",
    )
    async def put_policies(
        self, db: Connection, principal: Principal, site_id: int, data: SlaPoliciesIn
    ) -> SlaPolicies:
        await visible_site(db, principal, site_id)
        seen: set[tuple[str, str | None]] = set()
        for i, p in enumerate(data.policies):
            if (p.priority, p.category) in seen:
                raise Invalid(f"policies[{i}]", "this priority and category are given twice")
            seen.add((p.priority, p.category))
            if p.respond_minutes > p.resolve_minutes:
                raise Invalid(
                    f"policies[{i}].respond_minutes", "the response target exceeds the resolution"
                )
        await store.replace_policies(db, site_id, data.policies, principal.id)
        return await _policies(db, site_id)

    @get("/ticket-settings", guards=[staff_only()], summary="A site's dispatch and auto-close")
    async def get_settings(
        self, db: Connection, principal: Principal, site_id: int
    ) -> TicketSettings:
        await visible_site(db, principal, site_id)
        return await store.ticket_settings(db, site_id)

    @put("/ticket-settings", guards=[_MANAGERS], summary="Set a site's dispatch and auto-close")
    async def put_settings(
        self, db: Connection, principal: Principal, site_id: int, data: TicketSettings
    ) -> TicketSettings:
        await visible_site(db, principal, site_id)
        await store.put_ticket_settings(db, site_id, data)
        return await store.ticket_settings(db, site_id)


class TicketReportController(Controller):
    tags = ["tickets"]
    guards = [_SUPERVISORS]

    @get("/api/reports/tickets", summary="Ticket figures of a site over a period")
    async def ticket_report(
        self,
        db: Connection,
        principal: Principal,
        site_id: int,
        start: Annotated[datetime, QueryParameter(name="from")],
        end: Annotated[datetime, QueryParameter(name="to")],
    ) -> TicketReport:
        await visible_site(db, principal, site_id)
        if end <= start:
            raise Invalid("to", "must be after from")
        return await report.ticket_report(db, site_id, start, end)

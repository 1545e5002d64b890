"""HTTP routes for incidents: report, list, read, steps, resolve, close, notes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from litestar import Controller, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import HeaderParameter, Parameter

from server.auth import SUPERVISING_ROLES, Principal, require_roles, staff_only
from server.db import Connection
from server.incidents import service, store
from server.incidents.lifecycle import Status
from server.incidents.models import Incident, IncidentDetail, IncidentIn, NoteIn, StepNoteIn
from server.pagination import DEFAULT_LIMIT, Limit, Page, page_of

AcceptLanguage = Annotated[str | None, HeaderParameter(name="Accept-Language", required=False)]
StepKey = Annotated[str, Parameter(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


def _answer(detail: IncidentDetail, status_code: int = 200) -> Response[IncidentDetail]:
    return Response(detail, status_code=status_code, headers={"Content-Language": detail.locale})


class IncidentController(Controller):
    path = "/api/incidents"
    tags = ["incidents"]
    guards = [staff_only()]

    @post(
        "/",
        summary="Report an incident (a guard who finds a fire or a theft)",
        responses={
            200: ResponseSpec(
                IncidentDetail,
                description="The report joined the open incident of its site, zone and kind",
                generate_examples=False,
            )
        },
    )
    async def report_incident(
        self,
        db: Connection,
        principal: Principal,
        data: IncidentIn,
        accept_language: AcceptLanguage = None,
    ) -> Response[IncidentDetail]:
        """201 with the new incident and its playbook steps; 200 with the open incident of
        the same site, zone and kind when there is one (the report joins it)."""
        outcome = await service.report(db, principal, data, datetime.now(UTC))
        incident = await store.get_incident(db, outcome.incident.id)
        assert incident is not None
        detail = await service.detail(db, incident, accept_language)
        return _answer(detail, 201 if outcome.opened else 200)

    @get("/", summary="Incidents, by site and status")
    async def list_incidents(
        self,
        db: Connection,
        principal: Principal,
        site_id: int | None = None,
        status: list[Status] | None = None,
        after: int = 0,
        limit: Limit = DEFAULT_LIMIT,
    ) -> Page[Incident]:
        """`status` may repeat (`?status=open&status=mitigating`); without `site_id`, the
        incidents of every site the caller belongs to. Oldest first; page with `after`."""
        if site_id is not None:
            principal.require_site(site_id)
        found = await store.list_incidents(
            db, principal.visible_sites(), site_id, status, after, limit
        )
        return page_of(found, limit)

    @get("/{incident_id:int}", summary="One incident with its steps, alarms and timeline")
    async def get_incident(
        self,
        db: Connection,
        principal: Principal,
        incident_id: int,
        accept_language: AcceptLanguage = None,
    ) -> Response[IncidentDetail]:
        """Step texts in the language of `Accept-Language` (zh-CN or en), else the site's."""
        incident = await service.visible_incident(db, principal, incident_id)
        return _answer(await service.detail(db, incident, accept_language))

    async def _after(
        self, db: Connection, incident_id: int, accept_language: str | None
    ) -> Response[IncidentDetail]:
        incident = await store.get_incident(db, incident_id)
        assert incident is not None
        return _answer(await service.detail(db, incident, accept_language))

    @post(
        "/{incident_id:int}/steps/{step_key:str}/ack",
        status_code=200,
        summary="Acknowledge a step (stops its escalation)",
    )
    async def ack_step(
        self,
        db: Connection,
        principal: Principal,
        incident_id: int,
        step_key: StepKey,
        data: StepNoteIn | None = None,
        accept_language: AcceptLanguage = None,
    ) -> Response[IncidentDetail]:
        """By the step's role, the role it escalated to, its assignee, or a supervisor.
        The first acknowledgement moves the incident to `mitigating`. Safe to retry."""
        note = data.note if data else ""
        await service.act_on_step(
            db, principal, incident_id, step_key, "ack", note, datetime.now(UTC)
        )
        return await self._after(db, incident_id, accept_language)

    @post(
        "/{incident_id:int}/steps/{step_key:str}/done",
        status_code=200,
        summary="Complete a step",
    )
    async def complete_step(
        self,
        db: Connection,
        principal: Principal,
        incident_id: int,
        step_key: StepKey,
        data: StepNoteIn | None = None,
        accept_language: AcceptLanguage = None,
    ) -> Response[IncidentDetail]:
        """Completing acknowledges too. When every step is done and every alarm has
        cleared, the incident resolves by itself. Safe to retry."""
        note = data.note if data else ""
        await service.act_on_step(
            db, principal, incident_id, step_key, "done", note, datetime.now(UTC)
        )
        return await self._after(db, incident_id, accept_language)

    @post(
        "/{incident_id:int}/resolve",
        status_code=200,
        guards=[require_roles(*SUPERVISING_ROLES)],
        summary="Resolve an incident by hand",
    )
    async def resolve_incident(
        self,
        db: Connection,
        principal: Principal,
        incident_id: int,
        data: StepNoteIn | None = None,
        accept_language: AcceptLanguage = None,
    ) -> Response[IncidentDetail]:
        """Even with steps pending or alarms active (the timeline records which). Safe to
        retry: a resolved incident is answered as it is."""
        note = data.note if data else ""
        await service.resolve(db, principal, incident_id, note, datetime.now(UTC))
        return await self._after(db, incident_id, accept_language)

    @post(
        "/{incident_id:int}/close",
        status_code=200,
        guards=[require_roles(*SUPERVISING_ROLES)],
        summary="Close a resolved incident after review",
    )
    async def close_incident(
        self,
        db: Connection,
        principal: Principal,
        incident_id: int,
        data: StepNoteIn | None = None,
        accept_language: AcceptLanguage = None,
    ) -> Response[IncidentDetail]:
        """Only a resolved incident closes (409 otherwise); safe to retry."""
        note = data.note if data else ""
        await service.close(db, principal, incident_id, note, datetime.now(UTC))
        return await self._after(db, incident_id, accept_language)

    @post("/{incident_id:int}/notes", summary="Add a note to the timeline")
    async def add_note(
        self,
        db: Connection,
        principal: Principal,
        incident_id: int,
        data: NoteIn,
        accept_language: AcceptLanguage = None,
    ) -> Response[IncidentDetail]:
        """What staff saw or did (the police arrived, the water is back on)."""
        await service.add_note(db, principal, incident_id, data.note, datetime.now(UTC))
        response = await self._after(db, incident_id, accept_language)
        response.status_code = 201
        return response

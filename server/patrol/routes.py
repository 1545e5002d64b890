"""HTTP routes for patrol: routes and their schedules, rounds, scans, the patrol log."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import QueryParameter

from server.auth import STAFF_ROLES, SUPERVISING_ROLES, Principal, require_roles
from server.checkpoints.verify import ScanRefused
from server.db import Connection, Pool
from server.errors import PROBLEM_BASE, Invalid, NotFound, Problem
from server.pagination import DEFAULT_LIMIT, Limit, Page, page_of
from server.patrol import report, scans, store
from server.patrol.batcher import ScanBatcher
from server.patrol.models import (
    BatchIn,
    BatchItem,
    BatchOut,
    LogEntry,
    LogIn,
    Refusal,
    Round,
    RoundDetail,
    RoundStatus,
    Route,
    RouteIn,
    ScanIn,
    ScanOut,
)
from server.patrol.report import PatrolReport
from server.sites.routes import visible_site

_ROUTE_EDITORS = require_roles(*SUPERVISING_ROLES)
_STAFF = require_roles(*STAFF_ROLES)


def refusal_problem(refused: ScanRefused) -> dict[str, Any]:
    return {
        "type": f"{PROBLEM_BASE}scan-refused/{refused.reason}",
        "title": "Scan refused",
        "status": 422,
        "detail": str(refused),
        "reason": refused.reason,
    }


async def _visible_round(db: Connection, principal: Principal, round_id: int) -> Round:
    rnd = await store.get_round(db, round_id)
    if rnd is None or not principal.sees_site(rnd.site_id):
        raise NotFound("round")
    return rnd


class RouteController(Controller):
    tags = ["patrol"]

    @post(
        "/api/sites/{site_id:int}/routes", guards=[_ROUTE_EDITORS], summary="Create a patrol route"
    )
    async def create_route(
        self, db: Connection, principal: Principal, site_id: int, data: RouteIn
    ) -> Route:
        site = await visible_site(db, principal, site_id)
        route_id = await store.create_route(db, site_id, site.kind, data)
        await store.generate_rounds(db, datetime.now(UTC), route_id=route_id)
        route = await store.get_route(db, route_id)
        assert route is not None
        return route

    @get("/api/sites/{site_id:int}/routes", guards=[_STAFF], summary="Patrol routes of a site")
    async def list_routes(
        self,
        db: Connection,
        principal: Principal,
        site_id: int,
        after: int = 0,
        limit: Limit = DEFAULT_LIMIT,
    ) -> Page[Route]:
        await visible_site(db, principal, site_id)
        return page_of(await store.list_routes(db, site_id, after, limit), limit)

    @get("/api/routes/{route_id:int}", guards=[_STAFF], summary="One patrol route")
    async def get_route(self, db: Connection, principal: Principal, route_id: int) -> Route:
        route = await store.get_route(db, route_id)
        if route is None or not principal.sees_site(route.site_id):
            raise NotFound("route")
        return route


class RoundController(Controller):
    path = "/api/rounds"
    tags = ["patrol"]
    guards = [_STAFF]

    @get("/", summary="Rounds by site, status and start time")
    async def list_rounds(
        self,
        db: Connection,
        principal: Principal,
        site_id: int | None = None,
        status: RoundStatus | None = None,
        start: Annotated[datetime | None, QueryParameter(name="from")] = None,
        end: Annotated[datetime | None, QueryParameter(name="to")] = None,
        after: int = 0,
        limit: Limit = DEFAULT_LIMIT,
    ) -> Page[Round]:
        if site_id is not None:
            principal.require_site(site_id)
        rounds = await store.list_rounds(
            db, principal.visible_sites(), site_id, status, start, end, after, limit
        )
        return page_of(rounds, limit)

    @get("/{round_id:int}", summary="A round with each checkpoint's scan or gap")
    async def get_round(self, db: Connection, principal: Principal, round_id: int) -> RoundDetail:
        return await store.round_detail(db, await _visible_round(db, principal, round_id))

    @post("/{round_id:int}/log", summary="Patrol log: what was found and what was done")
    async def add_log(
        self, db: Connection, principal: Principal, round_id: int, data: LogIn
    ) -> LogEntry:
        await _visible_round(db, principal, round_id)
        return await store.add_log(db, round_id, principal.id, data)


class ScanController(Controller):
    path = "/api/scans"
    tags = ["patrol"]
    guards = [_STAFF]

    @post(
        "/",
        summary="Record a checkpoint scan (201 new, 200 already stored)",
        responses={
            201: ResponseSpec(ScanOut, description="Stored", generate_examples=False),
            200: ResponseSpec(
                ScanOut,
                description="Stored before (a retry): the first answer",
                generate_examples=False,
            ),
        },
    )
    async def create_scan(self, principal: Principal, state: State, data: ScanIn) -> Response[Any]:
        # Stored in a group with the scans arriving at the same moment (patrol.batcher):
        # committed before this answer, with the flags it would have alone.
        batcher: ScanBatcher = state.scan_batcher
        outcome = await batcher.ingest(state.pool, state.settings, principal, data)
        if isinstance(outcome, ScanRefused):
            await _record_refusals(state.pool, principal, [(data, outcome)])
            return Response(
                refusal_problem(outcome), status_code=422, media_type="application/problem+json"
            )
        if isinstance(outcome, Exception):
            raise outcome
        return Response(outcome.scan, status_code=201 if outcome.created else 200)

    @post("/batch", summary="Offline sync: up to 500 scans, one result each, idempotent")
    async def create_batch(self, principal: Principal, state: State, data: BatchIn) -> BatchOut:
        scans.check_clock("sent_at", data.sent_at)
        results: list[BatchItem | None] = [None] * len(data.scans)
        valid: list[tuple[int, ScanIn]] = []
        for index, raw in enumerate(data.scans):
            try:
                valid.append((index, msgspec.convert(raw, ScanIn)))
            except msgspec.ValidationError as exc:
                results[index] = BatchItem(
                    index=index,
                    status=422,
                    id=_maybe_uuid(raw.get("id")),
                    problem={
                        "type": f"{PROBLEM_BASE}validation",
                        "title": "Invalid input",
                        "status": 422,
                        "detail": str(exc),
                    },
                )
        pool: Pool = state.pool
        async with pool.acquire() as conn:
            outcomes = await scans.ingest_many(
                conn, state.settings, [(principal, s) for _, s in valid], sent_at=data.sent_at
            )
        refused = [
            (s, o) for (_, s), o in zip(valid, outcomes, strict=True) if isinstance(o, ScanRefused)
        ]
        await _record_refusals(pool, principal, refused)
        for (index, item), outcome in zip(valid, outcomes, strict=True):
            results[index] = _batch_item(index, item, outcome)
        items = [r for r in results if r is not None]
        return BatchOut(
            stored=sum(1 for r in items if r.status == 201),
            duplicates=sum(1 for r in items if r.status == 200),
            refused=sum(1 for r in items if r.status >= 400),
            results=items,
        )


async def _record_refusals(
    pool: Pool, principal: Principal, refused: list[tuple[ScanIn, ScanRefused]]
) -> None:
    """Keep refused attempts for supervisors."""
    if not refused:
        return
    async with pool.acquire() as conn, conn.transaction():
        for scan, refusal in refused:
            await scans.record(conn, principal, scan, refusal, scans.proof_of(scan).method)


def _batch_item(index: int, item: ScanIn, outcome: scans.Outcome) -> BatchItem:
    if isinstance(outcome, ScanRefused):
        return BatchItem(index=index, status=422, id=item.id, problem=refusal_problem(outcome))
    if isinstance(outcome, Problem):
        return BatchItem(
            index=index,
            status=outcome.status,
            id=item.id,
            problem={
                "type": PROBLEM_BASE + outcome.slug,
                "title": outcome.title,
                "status": outcome.status,
                "detail": outcome.detail,
                **outcome.extra,
            },
        )
    if isinstance(outcome, Exception):
        raise outcome
    return BatchItem(
        index=index, status=201 if outcome.created else 200, id=item.id, result=outcome.scan
    )


def _maybe_uuid(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


class PatrolSupervisionController(Controller):
    tags = ["patrol"]
    guards = [require_roles(*SUPERVISING_ROLES)]

    @get("/api/sites/{site_id:int}/scan-refusals", summary="Refused scan attempts of a site")
    async def list_refusals(
        self,
        db: Connection,
        principal: Principal,
        site_id: int,
        after: int = 0,
        limit: Limit = DEFAULT_LIMIT,
    ) -> Page[Refusal]:
        await visible_site(db, principal, site_id)
        return page_of(await store.list_refusals(db, site_id, after, limit), limit)

    @get("/api/reports/patrol", summary="Patrol figures of a site over a period")
    async def patrol_report(
        self,
        db: Connection,
        principal: Principal,
        site_id: int,
        start: Annotated[datetime, QueryParameter(name="from")],
        end: Annotated[datetime, QueryParameter(name="to")],
    ) -> PatrolReport:
        await visible_site(db, principal, site_id)
        if end <= start:
            raise Invalid("to", "must be after from")
        scans.check_clock("from", start)
        scans.check_clock("to", end)
        return await report.patrol_report(db, site_id, start, end)

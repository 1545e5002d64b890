"""HTTP routes for patrol: routes and their schedules, rounds, scans, the patrol log."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
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
        # No request-wide transaction: a QR scan is one read and one atomic write, and the
        # round's row lock is held only for that statement (scans of one round come together).
        pool: Pool = state.pool
        async with pool.acquire() as conn:
            try:
                accepted = await scans.ingest(conn, state.settings, principal, data)
            except ScanRefused as refused:
                await scans.record(conn, principal, data, refused, scans.proof_of(data).method)
                return Response(
                    refusal_problem(refused), status_code=422, media_type="application/problem+json"
                )
        return Response(accepted.scan, status_code=201 if accepted.created else 200)

    @post("/batch", summary="Offline sync: up to 500 scans, one result each, idempotent")
    async def create_batch(self, principal: Principal, state: State, data: BatchIn) -> BatchOut:
        scans.check_clock("sent_at", data.sent_at)
        pool: Pool = state.pool
        async with pool.acquire() as conn:
            return await _ingest_batch(conn, principal, state, data)


async def _ingest_batch(
    db: Connection, principal: Principal, state: State, data: BatchIn
) -> BatchOut:
    """Each item on its own: a refused or malformed item never spoils the others."""
    results: list[BatchItem] = []
    stored = duplicates = refused_count = 0
    now = datetime.now(UTC)
    for index, raw in enumerate(data.scans):
        try:
            item = msgspec.convert(raw, ScanIn)
        except msgspec.ValidationError as exc:
            refused_count += 1
            results.append(
                BatchItem(
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
            )
            continue
        try:
            accepted = await scans.ingest(
                db, state.settings, principal, item, sent_at=data.sent_at, now=now
            )
        except ScanRefused as refused:
            refused_count += 1
            await scans.record(db, principal, item, refused, scans.proof_of(item).method)
            results.append(
                BatchItem(index=index, status=422, id=item.id, problem=refusal_problem(refused))
            )
            continue
        except asyncpg.exceptions.DataError:
            # A value PostgreSQL cannot store (a NUL in a note): this item only, nothing kept.
            refused_count += 1
            results.append(
                BatchItem(
                    index=index,
                    status=422,
                    id=item.id,
                    problem={
                        "type": f"{PROBLEM_BASE}validation",
                        "title": "Invalid input",
                        "status": 422,
                        "detail": "A value in the scan cannot be stored",
                    },
                )
            )
            continue
        except Problem as problem:
            refused_count += 1
            results.append(
                BatchItem(
                    index=index,
                    status=problem.status,
                    id=item.id,
                    problem={
                        "type": PROBLEM_BASE + problem.slug,
                        "title": problem.title,
                        "status": problem.status,
                        "detail": problem.detail,
                        **problem.extra,
                    },
                )
            )
            continue
        if accepted.created:
            stored += 1
        else:
            duplicates += 1
        results.append(
            BatchItem(
                index=index,
                status=201 if accepted.created else 200,
                id=item.id,
                result=accepted.scan,
            )
        )
    return BatchOut(stored=stored, duplicates=duplicates, refused=refused_count, results=results)


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

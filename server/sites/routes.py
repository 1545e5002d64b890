"""HTTP routes for sites, zones and units."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from litestar import Controller, get, post

from server.auth import MANAGING_ROLES, Principal, require_roles, staff_only
from server.db import Connection
from server.errors import Invalid, NotFound
from server.pagination import DEFAULT_LIMIT, Limit, Page, page_of
from server.sites import store
from server.sites.models import Site, SiteIn, Unit, UnitIn, Zone, ZoneIn


def check_timezone(name: str) -> None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise Invalid(
            "timezone", f"{name!r} is not an IANA time zone such as Asia/Shanghai"
        ) from exc


async def visible_site(conn: Connection, principal: Principal, site_id: int) -> Site:
    """The site, if the caller may see it; 404 otherwise (whether or not it exists)."""
    principal.require_site(site_id)
    site = await store.get_site(conn, site_id)
    if site is None:
        raise NotFound("site")
    return site


class SiteController(Controller):
    path = "/api/sites"
    tags = ["sites"]

    @post("/", guards=[require_roles("admin")], summary="Create a site")
    async def create_site(self, db: Connection, data: SiteIn) -> Site:
        check_timezone(data.timezone)
        return await store.create_site(db, data)

    @get("/", summary="Sites the caller belongs to")
    async def list_sites(
        self, db: Connection, principal: Principal, after: int = 0, limit: Limit = DEFAULT_LIMIT
    ) -> Page[Site]:
        return page_of(await store.list_sites(db, principal.visible_sites(), after, limit), limit)

    @get("/{site_id:int}", summary="One site")
    async def get_site(self, db: Connection, principal: Principal, site_id: int) -> Site:
        return await visible_site(db, principal, site_id)

    @post("/{site_id:int}/zones", guards=[require_roles(*MANAGING_ROLES)], summary="Add a zone")
    async def create_zone(
        self, db: Connection, principal: Principal, site_id: int, data: ZoneIn
    ) -> Zone:
        await visible_site(db, principal, site_id)
        return await store.create_zone(db, site_id, data)

    @get("/{site_id:int}/zones", summary="Zones of a site")
    async def list_zones(
        self,
        db: Connection,
        principal: Principal,
        site_id: int,
        after: int = 0,
        limit: Limit = DEFAULT_LIMIT,
    ) -> Page[Zone]:
        await visible_site(db, principal, site_id)
        return page_of(await store.list_zones(db, site_id, after, limit), limit)

    @post("/{site_id:int}/units", guards=[require_roles(*MANAGING_ROLES)], summary="Add a unit")
    async def create_unit(
        self, db: Connection, principal: Principal, site_id: int, data: UnitIn
    ) -> Unit:
        await visible_site(db, principal, site_id)
        return await store.create_unit(db, site_id, data)

    @get("/{site_id:int}/units", guards=[staff_only()], summary="Units of a site")
    async def list_units(
        self,
        db: Connection,
        principal: Principal,
        site_id: int,
        after: int = 0,
        limit: Limit = DEFAULT_LIMIT,
    ) -> Page[Unit]:
        await visible_site(db, principal, site_id)
        return page_of(await store.list_units(db, site_id, after, limit), limit)

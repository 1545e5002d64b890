"""HTTP routes for devices and for the dead letters of the MQTT bridge."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, post
from litestar.params import QueryParameter

from server.auth import MANAGING_ROLES, SUPERVISING_ROLES, Principal, require_roles, staff_only
from server.db import Connection
from server.devices import store
from server.devices.kinds import default_inactivity_timeout
from server.devices.models import DeadLetter, Device, DeviceIn, DevicePage, DeviceState
from server.errors import Conflict, Invalid, NotFound
from server.pagination import DEFAULT_LIMIT, Limit, Page, page_of
from server.sites.routes import visible_site


async def _check_links(db: Connection, site_id: int, data: DeviceIn) -> None:
    if data.zone_id is not None and not await store.zone_exists(db, site_id, data.zone_id):
        raise Invalid("zone_id", "no such zone on this site")
    if data.gateway_id is None:
        return
    if data.kind == "gateway":
        raise Invalid("gateway_id", "a gateway talks to the broker itself")
    kind = await store.device_kind(db, site_id, data.gateway_id)
    if kind is None:
        raise Invalid("gateway_id", "no such device on this site; register the gateway first")
    if kind != "gateway":
        raise Invalid("gateway_id", f"{data.gateway_id!r} is a {kind} device, not a gateway")


class DeviceController(Controller):
    path = "/api/sites/{site_id:int}/devices"
    tags = ["devices"]

    @post("/", guards=[require_roles(*MANAGING_ROLES)], summary="Register a device")
    async def create_device(
        self, db: Connection, principal: Principal, site_id: int, data: DeviceIn
    ) -> Device:
        """The id is the one the device uses in its MQTT topic; the inactivity timeout
        defaults by kind (minutes for gateways and mains power, hours for battery sensors)."""
        await visible_site(db, principal, site_id)
        await _check_links(db, site_id, data)
        timeout = data.inactivity_timeout_s or default_inactivity_timeout(data.kind)
        device = await store.create_device(db, site_id, data, timeout)
        if device is None:
            raise Conflict(f"Device {data.id!r} exists on this site", field="id")
        return device

    @get("/", guards=[staff_only()], summary="Devices of a site")
    async def list_devices(
        self,
        db: Connection,
        principal: Principal,
        site_id: int,
        device_state: Annotated[DeviceState | None, QueryParameter(name="state")] = None,
        after: str = "",
        limit: Limit = DEFAULT_LIMIT,
    ) -> DevicePage:
        """Filter with `?state=offline` (online, offline, unknown); ordered by id."""
        await visible_site(db, principal, site_id)
        items = await store.list_devices(db, site_id, device_state, after, limit)
        more = len(items) > limit
        items = items[:limit]
        return DevicePage(items=items, next_after=items[-1].id if more and items else None)

    @get("/{device_id:str}", guards=[staff_only()], summary="One device")
    async def get_device(
        self, db: Connection, principal: Principal, site_id: int, device_id: str
    ) -> Device:
        await visible_site(db, principal, site_id)
        device = await store.get_device(db, site_id, device_id)
        if device is None:
            raise NotFound("device")
        return device


class DeadLetterController(Controller):
    path = "/api/dead-letters"
    tags = ["devices"]

    @get(
        "/",
        guards=[require_roles(*SUPERVISING_ROLES)],
        summary="Messages the MQTT bridge refused, with their bytes and the reason",
    )
    async def list_dead_letters(
        self,
        db: Connection,
        principal: Principal,
        site_id: int | None = None,
        reason: str | None = None,
        after: int = 0,
        limit: Limit = DEFAULT_LIMIT,
    ) -> Page[DeadLetter]:
        """Without `site_id`: an admin sees all, those naming no known site included;
        others see those of their own sites."""
        if site_id is not None:
            principal.require_site(site_id)
        sites = [site_id] if site_id is not None else principal.visible_sites()
        return page_of(await store.list_dead_letters(db, sites, reason, after, limit), limit)

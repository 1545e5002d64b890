"""HTTP routes for alarms: list, read, acknowledge."""

from __future__ import annotations

from litestar import Controller, get, post

from server.alarms import store
from server.alarms.models import Alarm, AlarmChange, AlarmStatus
from server.auth import Principal, require_roles, staff_only
from server.db import Connection
from server.devices.store import device_kind
from server.errors import NotFound
from server.incidents.hooks import on_alarm_changes
from server.pagination import DEFAULT_LIMIT, Limit, Page, page_of

# Who answers alarms on site; cleaners, the front desk and residents do not.
ACK_ROLES = ("admin", "manager", "supervisor", "guard", "technician")


async def _visible_alarm(db: Connection, principal: Principal, alarm_id: int) -> Alarm:
    alarm = await store.get_alarm(db, alarm_id)
    if alarm is None or not principal.sees_site(alarm.site_id):
        raise NotFound("alarm")
    return alarm


class AlarmController(Controller):
    path = "/api/alarms"
    tags = ["alarms"]

    @get("/", guards=[staff_only()], summary="Alarms, by site and status")
    async def list_alarms(
        self,
        db: Connection,
        principal: Principal,
        site_id: int | None = None,
        status: list[AlarmStatus] | None = None,
        after: int = 0,
        limit: Limit = DEFAULT_LIMIT,
    ) -> Page[Alarm]:
        """`status` may repeat (`?status=active_unack&status=cleared_unack`); without
        `site_id`, the alarms of every site the caller belongs to."""
        if site_id is not None:
            principal.require_site(site_id)
        sites = [site_id] if site_id is not None else principal.visible_sites()
        return page_of(await store.list_alarms(db, sites, status, after, limit), limit)

    @get("/{alarm_id:int}", guards=[staff_only()], summary="One alarm")
    async def get_alarm(self, db: Connection, principal: Principal, alarm_id: int) -> Alarm:
        return await _visible_alarm(db, principal, alarm_id)

    @post(
        "/{alarm_id:int}/ack",
        guards=[require_roles(*ACK_ROLES)],
        status_code=200,
        summary="Acknowledge an alarm",
    )
    async def ack_alarm(self, db: Connection, principal: Principal, alarm_id: int) -> Alarm:
        """active_unack -> active_ack, cleared_unack -> cleared_ack. Acknowledging an
        acknowledged alarm changes nothing and answers it as it is (safe to retry)."""
        alarm = await _visible_alarm(db, principal, alarm_id)
        acked = await store.ack_alarm(db, alarm_id, principal.id)
        if acked is None:
            return alarm
        kind = await device_kind(db, acked.site_id, acked.device_id)
        assert kind is not None  # an alarm's device exists (foreign key)
        await on_alarm_changes(
            db,
            [
                AlarmChange(
                    alarm_id=acked.id,
                    site_id=acked.site_id,
                    device_id=acked.device_id,
                    device_kind=kind,
                    zone_id=acked.zone_id,
                    type=acked.type,
                    severity=acked.severity,
                    change="acked",
                    at=acked.acked_at or acked.updated_at,
                )
            ],
        )
        return acked

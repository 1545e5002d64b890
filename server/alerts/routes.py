"""HTTP routes for alerts: supervisors list and acknowledge them."""

from __future__ import annotations

from litestar import Controller, get, post

from server.alerts import store
from server.alerts.models import Alert
from server.auth import SUPERVISING_ROLES, Principal, require_roles
from server.db import Connection
from server.errors import NotFound
from server.pagination import DEFAULT_LIMIT, Limit, Page, page_of


class AlertController(Controller):
    path = "/api/alerts"
    tags = ["alerts"]
    guards = [require_roles(*SUPERVISING_ROLES)]

    @get("/", summary="Alerts of the caller's sites, oldest first")
    async def list_alerts(
        self,
        db: Connection,
        principal: Principal,
        site_id: int | None = None,
        unacknowledged: bool = False,
        after: int = 0,
        limit: Limit = DEFAULT_LIMIT,
    ) -> Page[Alert]:
        if site_id is not None:
            principal.require_site(site_id)
        alerts = await store.list_alerts(
            db, principal.visible_sites(), site_id, unacknowledged, after, limit
        )
        return page_of(alerts, limit)

    @post("/{alert_id:int}/ack", summary="Acknowledge an alert (once; later calls keep the first)")
    async def acknowledge(self, db: Connection, principal: Principal, alert_id: int) -> Alert:
        alert = await store.get_alert(db, alert_id)
        if alert is None or not principal.sees_site(alert.site_id):
            raise NotFound("alert")
        return await store.acknowledge(db, alert_id, principal.id)

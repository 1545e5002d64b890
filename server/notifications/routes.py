"""HTTP routes for a site's webhook endpoints (managers): create, list, change, deliveries."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlsplit

from litestar import Controller, get, patch, post
from litestar.datastructures import State

from server.auth import MANAGING_ROLES, Principal, require_roles
from server.config import Settings
from server.db import Connection
from server.errors import Invalid, NotFound
from server.notifications import store
from server.notifications.models import (
    EVENT_KINDS,
    Delivery,
    WebhookCreated,
    WebhookEndpoint,
    WebhookIn,
    WebhookPatch,
)
from server.notifications.signing import new_secret, seal_context
from server.pagination import DEFAULT_LIMIT, Limit, Page, page_of
from server.sealed import seal
from server.sites.routes import visible_site


def check_url(url: str, settings: Settings) -> None:
    """An absolute http(s) URL with a host; plain http only in development (the payloads
    name incidents and, for escalations, staff phone numbers)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise Invalid("url", f"not a URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid("url", "an absolute http(s) URL with a host is required")
    if port == 0:
        raise Invalid("url", "port 0 is not a port")
    if parts.scheme == "http" and not settings.is_dev:
        raise Invalid("url", "webhooks are sent over https (http only in development mode)")
    if parts.username or parts.password:
        raise Invalid("url", "credentials do not go in the URL; verify the signature instead")


async def _endpoint(
    db: Connection, principal: Principal, site_id: int, endpoint_id: int, *, lock: bool = False
) -> WebhookEndpoint:
    await visible_site(db, principal, site_id)
    endpoint = await store.get_endpoint(db, site_id, endpoint_id, lock=lock)
    if endpoint is None:
        raise NotFound("webhook endpoint")
    return endpoint


class WebhookController(Controller):
    path = "/api/sites/{site_id:int}/webhooks"
    tags = ["notifications"]
    guards = [require_roles(*MANAGING_ROLES)]

    @post("/", summary="Add a webhook endpoint (the secret is shown once)")
    async def create_webhook(
        self, db: Connection, state: State, principal: Principal, site_id: int, data: WebhookIn
    ) -> WebhookCreated:
        """Incident events (opened, escalated, resolved) of the site are POSTed to `url`,
        signed: `X-EstateOps-Signature: sha256=<hex HMAC-SHA256 over "<timestamp>.<body>">`
        with `X-EstateOps-Timestamp`, keyed with `secret` (returned only here)."""
        settings: Settings = state.settings
        await visible_site(db, principal, site_id)
        check_url(data.url, settings)
        secret = new_secret()
        endpoint_id = await store.next_endpoint_id(db)
        sealed = seal(
            settings.keys.kek, secret.encode(), context=seal_context(site_id, endpoint_id)
        )
        events = list(dict.fromkeys(data.events)) if data.events else list(EVENT_KINDS)
        endpoint = await store.insert_endpoint(
            db, endpoint_id, site_id, data.url, sealed, events, data.description, principal.id
        )
        fields = {f: getattr(endpoint, f) for f in endpoint.__struct_fields__}
        return WebhookCreated(**fields, secret=secret)

    @get("/", summary="A site's webhook endpoints (without their secrets)")
    async def list_webhooks(
        self,
        db: Connection,
        principal: Principal,
        site_id: int,
        after: int = 0,
        limit: Limit = DEFAULT_LIMIT,
    ) -> Page[WebhookEndpoint]:
        await visible_site(db, principal, site_id)
        return page_of(await store.list_endpoints(db, site_id, after, limit), limit)

    @patch("/{endpoint_id:int}", summary="Activate, deactivate or change an endpoint")
    async def update_webhook(
        self,
        db: Connection,
        principal: Principal,
        site_id: int,
        endpoint_id: int,
        data: WebhookPatch,
    ) -> WebhookEndpoint:
        """Deactivating gives up what is still pending for it: an emergency notice sent
        hours late, when the endpoint comes back, would mislead more than it helps."""
        await _endpoint(db, principal, site_id, endpoint_id, lock=True)
        events = list(dict.fromkeys(data.events)) if data.events else None
        updated = await store.update_endpoint(
            db, endpoint_id, data.active, events, data.description
        )
        if data.active is False:
            await store.give_up_pending(db, endpoint_id, "endpoint deactivated", datetime.now(UTC))
        return updated

    @get("/{endpoint_id:int}/deliveries", summary="Deliveries to an endpoint, with errors")
    async def list_deliveries(
        self,
        db: Connection,
        principal: Principal,
        site_id: int,
        endpoint_id: int,
        after: int = 0,
        limit: Limit = DEFAULT_LIMIT,
    ) -> Page[Delivery]:
        await _endpoint(db, principal, site_id, endpoint_id)
        return page_of(await store.list_deliveries(db, endpoint_id, after, limit), limit)

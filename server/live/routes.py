"""GET /api/live: Server-Sent Events for supervisors (incidents, alarms, missed rounds, ...)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import msgspec
from litestar import Controller, get
from litestar.datastructures import State
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage

from server.auth import SUPERVISING_ROLES, Principal, require_roles
from server.live.hub import LiveHub

HEARTBEAT_S = 15.0


class LiveController(Controller):
    path = "/api/live"
    tags = ["live"]
    guards = [require_roles(*SUPERVISING_ROLES)]

    @get("/", summary="Live feed (text/event-stream) of the caller's sites, or one site")
    async def live(
        self, state: State, principal: Principal, site_id: int | None = None
    ) -> ServerSentEvent:
        if site_id is not None:
            principal.require_site(site_id)
        hub: LiveHub = state.live

        async def events() -> AsyncGenerator[ServerSentEventMessage | str, None]:
            async with hub.subscribe() as queue:
                yield ServerSentEventMessage(comment="connected", retry=3000)
                while True:
                    try:
                        event = await asyncio.wait_for(queue.get(), timeout=HEARTBEAT_S)
                    except TimeoutError:
                        yield ServerSentEventMessage(comment="keep-alive")
                        continue
                    if _wanted(event, principal, site_id):
                        yield ServerSentEventMessage(
                            data=_json(event), event=str(event.get("type", "message"))
                        )

        return ServerSentEvent(events())


def _wanted(event: dict[str, Any], principal: Principal, site_id: int | None) -> bool:
    event_site = event.get("site_id")
    if not isinstance(event_site, int) or not principal.sees_site(event_site):
        return False
    return site_id is None or event_site == site_id


def _json(event: dict[str, Any]) -> str:
    return msgspec.json.encode(event).decode()

"""Notifications into the outbox, in the transaction of the change they tell about.

Nothing leaves from here: the rows commit (or roll back) with the incident that made them,
and the scheduler delivers them (server.notifications.delivery). The body every endpoint
receives is `{"id", "event", "occurred_at", "site_id", ...data}`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from server.db import Connection
from server.notifications import store
from server.notifications.models import EventKind

__all__ = ["Outbound", "enqueue"]


@dataclass(frozen=True, slots=True)
class Outbound:
    """One event of a site; `data` is JSON-ready (strings, numbers, lists, dicts)."""

    site_id: int
    event: EventKind
    data: dict[str, Any]


async def enqueue(conn: Connection, events: Sequence[Outbound], now: datetime) -> int:
    """Queue events for the site's endpoints that want them; returns the rows written."""
    rows: list[store.OutboundRow] = []
    for e in events:
        event_id = uuid.uuid4()
        payload = {
            "id": str(event_id),
            "event": e.event,
            "occurred_at": now.isoformat(),
            "site_id": e.site_id,
            **e.data,
        }
        rows.append((e.site_id, event_id, e.event, payload))
    return await store.enqueue(conn, rows, now)

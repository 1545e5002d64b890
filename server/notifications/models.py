"""Wire types for webhook endpoints and their deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, TypeAlias

import msgspec

EventKind: TypeAlias = Literal["incident.opened", "incident.escalated", "incident.resolved"]
EVENT_KINDS: tuple[EventKind, ...] = ("incident.opened", "incident.escalated", "incident.resolved")
Url = Annotated[
    str,
    msgspec.Meta(
        min_length=8, max_length=2000, pattern=r"^https?://", examples=["https://sms.example/hook"]
    ),
]
Description = Annotated[str, msgspec.Meta(max_length=200)]
Events = Annotated[list[EventKind], msgspec.Meta(min_length=1, max_length=3)]


class WebhookIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A webhook endpoint of a site; it receives the events named (all by default)."""

    url: Url
    events: Events | None = None
    description: Description = ""


class WebhookPatch(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Change an endpoint; deactivating it gives up its pending deliveries."""

    active: bool | None = None
    events: Events | None = None
    description: Description | None = None


class WebhookEndpoint(msgspec.Struct, frozen=True):
    id: int
    site_id: int
    url: str
    events: list[EventKind]
    description: str
    active: bool
    created_by: int | None
    created_at: datetime
    updated_at: datetime


class WebhookCreated(WebhookEndpoint, frozen=True):
    """The new endpoint and its signing secret: shown this once, stored sealed."""

    secret: str


DeliveryState: TypeAlias = Literal["pending", "delivered", "failed"]


class Delivery(msgspec.Struct, frozen=True):
    """One event for one endpoint: its attempts so far and how the last one went."""

    id: int
    endpoint_id: int
    event_id: str
    event: EventKind
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime
    delivered_at: datetime | None
    failed_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime

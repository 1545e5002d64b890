"""Wire types for tickets: filing, events (one body per action), SLA policies, settings."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, TypeAlias

import msgspec

from server.checkpoints.verify import SunProof
from server.users.models import Id

Kind = Literal["repair", "complaint", "request", "maintenance"]
Priority = Literal["urgent", "high", "normal", "low"]
Status = Literal[
    "new", "assigned", "in_progress", "on_hold", "resolved", "reopened", "closed", "cancelled"
]
Channel = Literal["app", "hotline", "walk_in", "suggestion_box", "patrol", "sensor", "plan"]
# What the trade files tickets under; staff skills use the same words (a technician with the
# skill "elevator" takes elevator tickets). low_voltage is 弱电: network, CCTV, intercom, IoT.
Category = Literal[
    "plumbing",
    "electrical",
    "elevator",
    "low_voltage",
    "hvac",
    "fire_safety",
    "structure",
    "doors_locks",
    "cleaning",
    "waste",
    "landscaping",
    "pest_control",
    "security",
    "noise",
    "parking",
    "service",
    "other",
]
Satisfaction = Literal["satisfied", "neutral", "dissatisfied"]
Note = Annotated[str, msgspec.Meta(max_length=4000)]
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=4000, pattern=r"\S")]
Phone = Annotated[str, msgspec.Meta(pattern=r"^\+?[0-9 -]{5,20}$")]


class TicketIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A new ticket. A resident files for themself (their unit by default); staff give the
    reporter as a user (``reporter_id``) or, for a hotline or walk-in caller without an
    account, as ``reporter_name`` and ``reporter_phone``; staff filing with neither are the
    reporter themselves. ``unit_id`` and ``zone_id`` exclude each other."""

    site_id: Id
    kind: Kind
    category: Category
    title: Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"\S")]
    description: Note = ""
    priority: Priority = "normal"
    unit_id: Id | None = None
    zone_id: Id | None = None
    channel: Channel | None = None
    reporter_id: Id | None = None
    reporter_name: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"\S")] | None
    ) = None
    reporter_phone: Phone | None = None


class Ticket(msgspec.Struct, frozen=True):
    """A ticket. ``response_due``/``resolve_due`` are null while the clock is stopped (on
    hold); ``breached`` is true once either target was missed."""

    id: int
    site_id: int
    kind: Kind
    category: str
    priority: Priority
    title: str
    description: str
    unit_id: int | None
    zone_id: int | None
    channel: Channel
    reporter_id: int | None
    reporter_name: str | None
    reporter_phone: str | None
    created_by: int | None
    assignee_id: int | None
    status: Status
    hold_reason: str | None
    hold_until: datetime | None
    reopen_count: int
    respond_minutes: int
    resolve_minutes: int
    response_due: datetime | None
    resolve_due: datetime | None
    responded_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    cancelled_at: datetime | None
    breached: bool
    response_breached: bool
    resolve_breached: bool
    repeat: bool
    repeat_of: int | None
    attested_on_site: bool
    rating: int | None
    rating_comment: str | None
    satisfaction: Satisfaction | None
    followed_up_at: datetime | None
    incident_id: int | None
    created_at: datetime
    updated_at: datetime


class Attachment(msgspec.Struct, frozen=True):
    id: int
    ticket_id: int
    event_id: int
    content_type: str
    size: int
    original_name: str
    sha256: str
    uploaded_by: int
    created_at: datetime


class TicketDetail(Ticket, frozen=True):
    """A ticket with what the caller may do next and its files."""

    allowed_actions: list[str]
    attachments: list[Attachment]


class TicketEvent(msgspec.Struct, frozen=True):
    """One entry of the audit trail; ``actor_id`` is null for the system."""

    id: int
    ticket_id: int
    action: str
    actor_id: int | None
    actor_role: str
    from_status: Status | None
    to_status: Status
    note: str
    data: dict[str, Any]
    at: datetime
    attachment_ids: list[int]


class EventResult(msgspec.Struct, frozen=True):
    event: TicketEvent
    ticket: TicketDetail


# --- event bodies: one per action, told apart by "action" -------------------------------


class ScanProof(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A scan of the unit's or zone's checkpoint, as on patrol: exactly one of the three."""

    qr: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    nfc_uid: Annotated[str, msgspec.Meta(min_length=1, max_length=40)] | None = None
    nfc_sun: SunProof | None = None


class _Event(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, tag_field="action"
):
    note: Note = ""


class AssignIn(_Event, frozen=True, tag="assign"):
    assignee_id: Id


class AcceptIn(_Event, frozen=True, tag="accept"):
    pass


class StartIn(_Event, frozen=True, tag="start"):
    scan: ScanProof | None = None


class HoldIn(_Event, frozen=True, tag="hold"):
    reason: Reason
    until: datetime | None = None


class ResumeIn(_Event, frozen=True, tag="resume"):
    pass


class CommentIn(_Event, frozen=True, tag="comment"):
    pass


class ResolveIn(_Event, frozen=True, tag="resolve"):
    scan: ScanProof | None = None


class ConfirmIn(_Event, frozen=True, tag="confirm"):
    pass


class ReturnIn(_Event, frozen=True, tag="return"):
    note: Reason


class CancelIn(_Event, frozen=True, tag="cancel"):
    pass


class RateIn(_Event, frozen=True, tag="rate"):
    rating: Annotated[int, msgspec.Meta(ge=1, le=5)]
    comment: Annotated[str, msgspec.Meta(max_length=2000)] = ""


class FollowUpIn(_Event, frozen=True, tag="follow_up"):
    satisfaction: Satisfaction


class AutoCloseIn(_Event, frozen=True, tag="auto_close"):
    """Never accepted from a caller (the system closes); present so the refusal is a 409."""


EventIn: TypeAlias = (
    AssignIn
    | AcceptIn
    | StartIn
    | HoldIn
    | ResumeIn
    | CommentIn
    | ResolveIn
    | ConfirmIn
    | ReturnIn
    | CancelIn
    | RateIn
    | FollowUpIn
    | AutoCloseIn
)

# --- SLA policies and site settings ---------------------------------------------------

Minutes = Annotated[int, msgspec.Meta(ge=1, le=525_600)]


class SlaPolicyIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    priority: Priority
    respond_minutes: Minutes
    resolve_minutes: Minutes
    category: Category | None = None


class SlaPoliciesIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The site's whole set: replaces what was there."""

    policies: Annotated[list[SlaPolicyIn], msgspec.Meta(max_length=200)]


class SlaPolicy(msgspec.Struct, frozen=True):
    priority: Priority
    category: str | None
    respond_minutes: int
    resolve_minutes: int
    source: Literal["site", "default"]


class SlaPolicies(msgspec.Struct, frozen=True):
    site_id: int
    policies: list[SlaPolicy]


class TicketSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Per site: whether new tickets are dispatched automatically, and after how many days
    a resolved ticket the reporter leaves alone closes by itself."""

    auto_assign: bool = False
    auto_close_days: Annotated[int, msgspec.Meta(ge=1, le=90)] = 7

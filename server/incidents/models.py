"""Wire types for incidents: reports, the incident with its steps, alarms and timeline."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, TypeAlias

import msgspec

from server.incidents.lifecycle import Status
from server.incidents.playbooks import IncidentKind, Locale
from server.users.models import Id

Source: TypeAlias = Literal["manual", "alarm", "outage"]
TimelineAction: TypeAlias = Literal[
    "opened",
    "reported",
    "alarm_linked",
    "alarm_cleared",
    "step_acked",
    "step_done",
    "step_escalated",
    "ticket_opened",
    "mitigating",
    "resolved",
    "closed",
    "note",
]
Note = Annotated[str, msgspec.Meta(max_length=4000)]


class IncidentIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """An incident reported by staff (a guard on patrol who finds a fire or a theft).

    Without a title, the kind's title in the site's language (and the zone's name) is used.
    A report of a kind that is already open for the site and zone joins that incident.
    Power outages are site-wide: the zone is kept in the report, not in the incident's key.
    """

    site_id: Id
    kind: IncidentKind
    zone_id: Id | None = None
    title: Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"\S")] | None = None
    description: Note = ""


class NoteIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    note: Annotated[str, msgspec.Meta(min_length=1, max_length=4000, pattern=r"\S")]


class StepNoteIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Optional words with an acknowledgement, a completion, a resolve or a close."""

    note: Note = ""


class Incident(msgspec.Struct, frozen=True):
    """An incident; `title` as stored (in the site's language unless staff typed it)."""

    id: int
    site_id: int
    zone_id: int | None
    kind: IncidentKind
    status: Status
    title: str
    description: str
    source: Source
    opened_by: int | None
    opened_at: datetime
    mitigating_at: datetime | None
    resolved_at: datetime | None
    resolved_by: int | None
    closed_at: datetime | None
    closed_by: int | None
    updated_at: datetime


class IncidentStep(msgspec.Struct, frozen=True):
    """A playbook step in the requested language. `escalated_to` is the role asked now
    (null until the step escalates); `escalate_at` when it escalates next."""

    key: str
    position: int
    role: str
    text: str
    ack_minutes: int
    ack_due: datetime
    chain: list[str]
    escalation_level: int
    escalated_to: str | None
    escalated_at: datetime | None
    escalate_at: datetime | None
    assignee_id: int | None
    acked_at: datetime | None
    acked_by: int | None
    done_at: datetime | None
    done_by: int | None
    note: str
    opens_ticket: bool
    ticket_category: str | None
    ticket_id: int | None


class IncidentAlarm(msgspec.Struct, frozen=True):
    alarm_id: int
    device_id: str
    zone_id: int | None
    type: str
    severity: str
    status: str
    count: int
    first_at: datetime
    last_at: datetime
    cleared_at: datetime | None
    linked_at: datetime


class TimelineEntry(msgspec.Struct, frozen=True):
    id: int
    at: datetime
    action: TimelineAction
    actor_id: int | None
    actor_role: str
    step_key: str | None
    note: str
    data: dict[str, Any]


class IncidentDetail(Incident, frozen=True):
    """An incident with its steps, alarms and timeline; texts in `locale`."""

    locale: Locale
    kind_title: str
    steps: list[IncidentStep]
    alarms: list[IncidentAlarm]
    timeline: list[TimelineEntry]

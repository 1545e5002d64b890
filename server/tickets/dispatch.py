"""Dispatch: who may take a ticket, and the automatic pick for a new one.

Auto-assignment (when the site allows it) picks, among the site's active field staff who
may hold a ticket of this kind (``lifecycle.can_be_assigned``: technicians for repairs and
maintenance), one whose skills include the category, who holds a valid qualification where
the category is regulated work (elevators, electrical), and who has the fewest open tickets;
the lowest user id breaks a tie. With nobody suitable the ticket stays ``new`` in the
dispatch queue. A dispatcher can always assign by hand, but never regulated work to someone
without a valid qualification for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime
from types import MappingProxyType
from typing import Any, Final
from zoneinfo import ZoneInfo

from server.db import Connection
from server.errors import Invalid
from server.tickets import store
from server.tickets.lifecycle import can_be_assigned

# Categories whose work needs a licence (特种设备作业 / 电工证): category -> qualification kind.
QUALIFICATION_FOR: Final[Mapping[str, str]] = MappingProxyType(
    {"elevator": "elevator", "electrical": "electrical"}
)
# Auto-assignment hands work to the field; supervisors and front desk take it by hand.
_FIELD_ROLES: Final = ("technician", "guard", "cleaner")


def site_today(timezone: str, now: datetime) -> date:
    """The date on the site's calendar: a licence is valid through its expiry day there."""
    return now.astimezone(ZoneInfo(timezone)).date()


def has_valid_qualification(
    qualifications: Iterable[Mapping[str, Any]], kind: str, today: date
) -> bool:
    """Whether one of ``qualifications`` is of ``kind`` and not expired on ``today``."""
    for q in qualifications:
        if q.get("kind") != kind:
            continue
        try:
            if date.fromisoformat(str(q.get("expires_on"))) >= today:
                return True
        except ValueError:
            continue
    return False


async def auto_assignee(
    conn: Connection, site_id: int, kind: str, category: str, now: datetime
) -> int | None:
    """The staff member a new ticket goes to, or None for the dispatch queue."""
    roles = [r for r in _FIELD_ROLES if can_be_assigned(kind, r)]
    timezone = await store.site_timezone(conn, site_id)
    if not roles or timezone is None:
        return None
    await store.dispatch_lock(conn, site_id)
    return await store.dispatch_candidate(
        conn,
        site_id,
        roles,
        category,
        QUALIFICATION_FOR.get(category),
        site_today(timezone, now),
    )


async def check_assignee(
    conn: Connection, site_id: int, kind: str, category: str, user_id: int, now: datetime
) -> None:
    """Refuse (422 on ``assignee_id``) a user who may not take this ticket."""
    staff = await store.staff_on_site(conn, user_id, site_id)
    if staff is None or not staff.active:
        raise Invalid("assignee_id", "no active staff member of this site has that id")
    if not can_be_assigned(kind, staff.role):
        raise Invalid("assignee_id", f"a {staff.role} cannot be assigned a {kind}")
    needed = QUALIFICATION_FOR.get(category)
    if needed is not None:
        timezone = await store.site_timezone(conn, site_id) or "UTC"
        if not has_valid_qualification(staff.qualifications, needed, site_today(timezone, now)):
            raise Invalid("assignee_id", f"{category} work needs a valid {needed} qualification")

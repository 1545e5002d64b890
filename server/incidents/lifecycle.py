"""The incident lifecycle and who may act on it. Pure, no I/O.

open -> mitigating (a step was acknowledged) -> resolved (by itself when every alarm has
cleared and every step is done, or by a supervisor) -> closed (by a supervisor, after
review). Nothing leaves `closed`; a new alarm after `resolved` opens a new incident.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

from server.auth import STAFF_ROLES, SUPERVISING_ROLES

__all__ = [
    "ACTIVE_STATUSES",
    "STATUSES",
    "Status",
    "StepRefused",
    "check_close",
    "check_resolve",
    "check_step_action",
    "may_act_on_step",
    "resolves_by_itself",
]

Status: TypeAlias = Literal["open", "mitigating", "resolved", "closed"]
STATUSES: Final[tuple[Status, ...]] = ("open", "mitigating", "resolved", "closed")
ACTIVE_STATUSES: Final[frozenset[str]] = frozenset({"open", "mitigating"})


class StepRefused(Exception):
    """A move the rules do not allow; `code` says which rule (forbidden or conflict)."""

    def __init__(self, code: Literal["forbidden", "conflict"], message: str) -> None:
        super().__init__(message)
        self.code = code


def may_act_on_step(
    user_role: str, user_id: int, step_role: str, escalated_to: str | None, assignee_id: int | None
) -> bool:
    """Supervisors and managers act on any step; others on steps of their role, steps
    escalated to their role, or steps assigned to them."""
    if user_role in SUPERVISING_ROLES:
        return True
    if user_role not in STAFF_ROLES:
        return False
    return user_role in (step_role, escalated_to) or assignee_id == user_id


def check_step_action(
    status: str,
    user_role: str,
    user_id: int,
    step_role: str,
    escalated_to: str | None,
    assignee_id: int | None,
) -> None:
    """Raise StepRefused unless the caller may acknowledge or complete this step now."""
    if not may_act_on_step(user_role, user_id, step_role, escalated_to, assignee_id):
        raise StepRefused("forbidden", f"a {user_role} may not act on a {step_role}'s step")
    if status not in ACTIVE_STATUSES:
        raise StepRefused("conflict", f"the incident is {status}")


def check_resolve(status: str) -> None:
    if status not in ACTIVE_STATUSES:
        raise StepRefused("conflict", f"the incident is {status}; only an open one resolves")


def check_close(status: str) -> None:
    if status != "resolved":
        raise StepRefused("conflict", f"the incident is {status}; only a resolved one closes")


def resolves_by_itself(active_alarms: int, pending_steps: int) -> bool:
    """An incident resolves by itself once its alarms have cleared and its steps are done."""
    return active_alarms == 0 and pending_steps == 0

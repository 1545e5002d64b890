"""Ticket lifecycle: which moves a ticket may make, and who may make them. Pure rules, no I/O.

A ticket (repair, complaint, request, maintenance) goes ``new -> assigned -> in_progress ->
resolved -> closed``, with ``on_hold`` (the SLA clock pauses), ``reopened`` (the reporter
returned the work) and ``cancelled`` on the side. Every move is an appended ticket event;
``decide`` says whether a move is allowed and where it leads, and the caller stores it.

Who is who:

* *dispatchers*: front_desk, supervisor, manager, admin;
* *supervisors*: supervisor, manager, admin (an admin may do whatever a manager may);
* *field staff*: guard, technician, cleaner;
* *the assignee*: the staff user the ticket is assigned to (never a resident);
* *the reporter*: the user who filed it (a resident, or staff who found the problem).
  Hotline and walk-in reporters have no account, so front desk acts on their behalf;
* ``system``: the scheduler, which only closes resolved tickets left alone.

============  ========================================  ==============  ========================
action        from                                      to              who may
============  ========================================  ==============  ========================
assign        new, assigned, in_progress, on_hold,      assigned        dispatchers (1)
              reopened
accept        assigned                                  assigned        the assignee (2)
start         assigned, reopened                        in_progress     the assignee
hold          assigned, in_progress                     on_hold         assignee, supervisors (3)
resume        on_hold                                   status held     assignee, supervisors
                                                        from
comment       new, assigned, in_progress, on_hold,      same            staff; a resident on
              resolved, reopened                                        their own ticket
comment       closed                                    closed          staff only (4)
resolve       assigned, in_progress, reopened           resolved        assignee, supervisors (5)
confirm       resolved                                  closed          reporter or front_desk,
                                                                        not the assignee (6)
return        resolved                                  reopened        reporter or front_desk (7)
cancel        new, assigned                             cancelled       reporter or front_desk,
                                                                        supervisors
cancel        in_progress, on_hold, resolved, reopened  cancelled       supervisors
rate          resolved, closed                          same            reporter or front_desk,
                                                                        not the assignee (8)
follow_up     resolved, closed (complaints only)        same            front_desk, supervisors (9)
auto_close    resolved                                  closed          ``system`` only (10)
============  ========================================  ==============  ========================

1. Reassigning restarts at *assigned* (the new assignee accepts and starts) and ends a hold.
2. The acknowledgement that answers the SLA response target; the status does not change.
3. The ticket remembers the status it was held from, and ``resume`` goes back to it.
4. Notes after the fact; a resident whose problem came back files a new ticket.
5. From assigned or reopened it means "done at once". Repairs and maintenance are resolved
   only by a technician assignee or a supervisor: a guard, cleaner, front desk or resident
   never resolves a repair.
6. Front desk acts on the reporter's behalf (a hotline call-back). The one who did the work
   never certifies it, even when they reported the problem themselves.
7. The caller counts reopenings.
8. Once per ticket: the caller checks.
9. Staff record the reporter's satisfaction after a complaint is resolved.
10. The scheduler, after the site's idle days (7 by default).

Nothing moves a ``cancelled`` ticket, not even a comment. A ``closed`` ticket takes staff
comments, a rating and a complaint follow-up, none of which change its status. A resident
can never assign, accept, start, hold, resume, resolve or follow up, and sees only their own
tickets; staff visibility by site is the caller's check. An unknown role or status allows
nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

__all__ = [
    "ACTIONS",
    "KINDS",
    "ROLES",
    "STATUSES",
    "TERMINAL_STATUSES",
    "Actor",
    "MoveRefused",
    "TicketView",
    "Transition",
    "allowed_actions",
    "can_be_assigned",
    "decide",
]

# Statuses
NEW: Final = "new"
ASSIGNED: Final = "assigned"
IN_PROGRESS: Final = "in_progress"
ON_HOLD: Final = "on_hold"
RESOLVED: Final = "resolved"
REOPENED: Final = "reopened"
CLOSED: Final = "closed"
CANCELLED: Final = "cancelled"

STATUSES: Final[tuple[str, ...]] = (
    NEW,
    ASSIGNED,
    IN_PROGRESS,
    ON_HOLD,
    RESOLVED,
    REOPENED,
    CLOSED,
    CANCELLED,
)
TERMINAL_STATUSES: Final = frozenset({CLOSED, CANCELLED})

ACTIONS: Final[tuple[str, ...]] = (
    "assign",
    "accept",
    "start",
    "hold",
    "resume",
    "comment",
    "resolve",
    "confirm",
    "return",
    "cancel",
    "rate",
    "follow_up",
    "auto_close",
)

KINDS: Final[tuple[str, ...]] = ("repair", "complaint", "request", "maintenance")
# Work that needs a tradesperson: only a technician (or a supervisor) may resolve it.
_TECHNICAL_KINDS: Final = frozenset({"repair", "maintenance"})

SYSTEM: Final = "system"
ROLES: Final[tuple[str, ...]] = (
    "admin",
    "manager",
    "supervisor",
    "guard",
    "technician",
    "cleaner",
    "front_desk",
    "resident",
    SYSTEM,
)
_STAFF: Final = frozenset(
    {"admin", "manager", "supervisor", "guard", "technician", "cleaner", "front_desk"}
)
_SUPERVISORS: Final = frozenset({"supervisor", "manager", "admin"})
_DISPATCHERS: Final = _SUPERVISORS | {"front_desk"}
_ON_BEHALF: Final = frozenset({"front_desk"})

_REASSIGNABLE: Final = frozenset({NEW, ASSIGNED, IN_PROGRESS, ON_HOLD, REOPENED})
_COMMENTABLE: Final = frozenset({NEW, ASSIGNED, IN_PROGRESS, ON_HOLD, RESOLVED, REOPENED})


@dataclass(frozen=True, slots=True, kw_only=True)
class TicketView:
    """What the rules need to know about a ticket."""

    status: str
    kind: str
    category: str
    reporter_id: int | None
    assignee_id: int | None
    hold_resume_status: str | None = None


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asks for the move; ``user_id`` is None for ``system``."""

    user_id: int | None
    role: str


@dataclass(frozen=True, slots=True)
class Transition:
    """An allowed move: the status before and after, and what to store with it."""

    action: str
    from_status: str
    to_status: str
    hold_resume_status: str | None
    """The ticket's resume status after the move: set while on hold, None otherwise."""

    @property
    def changed(self) -> bool:
        """Whether the status changes."""
        return self.from_status != self.to_status

    @property
    def opens_hold(self) -> bool:
        """The SLA clock pauses from this move on (a hold interval opens)."""
        return self.to_status == ON_HOLD and self.from_status != ON_HOLD

    @property
    def closes_hold(self) -> bool:
        """The SLA clock runs again (the open hold interval ends at this move)."""
        return self.from_status == ON_HOLD and self.to_status != ON_HOLD

    @property
    def reopens(self) -> bool:
        """The reporter returned the work: the caller bumps the reopen count."""
        return self.to_status == REOPENED and self.from_status != REOPENED


class MoveRefused(Exception):
    """A move the ticket's status or the actor's role does not allow."""

    def __init__(
        self,
        current_status: str,
        action: str,
        allowed_actions: tuple[str, ...],
        reason: str,
    ) -> None:
        self.current_status = current_status
        self.action = action
        self.allowed_actions = allowed_actions
        self.reason = reason
        allowed = ", ".join(allowed_actions) or "none"
        super().__init__(
            f"cannot {action} a {current_status} ticket: {reason} (allowed: {allowed})"
        )


@dataclass(frozen=True, slots=True)
class _No:
    reason: str


_Outcome = str | _No
_Rule = Callable[[TicketView, Actor], _Outcome]


def _is_assignee(ticket: TicketView, actor: Actor) -> bool:
    return (
        actor.role in _STAFF and actor.user_id is not None and actor.user_id == ticket.assignee_id
    )


def _is_reporter(ticket: TicketView, actor: Actor) -> bool:
    return (
        actor.role != SYSTEM and actor.user_id is not None and actor.user_id == ticket.reporter_id
    )


def _only_from(action: str, status: str, statuses: frozenset[str]) -> _No:
    allowed = ", ".join(s for s in STATUSES if s in statuses)
    return _No(f"{action} is only possible when the ticket is {allowed}, not {status}")


def _assign(ticket: TicketView, actor: Actor) -> _Outcome:
    if ticket.status not in _REASSIGNABLE:
        return _only_from("assign", ticket.status, _REASSIGNABLE)
    if actor.role not in _DISPATCHERS:
        return _No("only front desk, supervisors, managers and admins dispatch tickets")
    return ASSIGNED


def _accept(ticket: TicketView, actor: Actor) -> _Outcome:
    if ticket.status != ASSIGNED:
        return _only_from("accept", ticket.status, frozenset({ASSIGNED}))
    if not _is_assignee(ticket, actor):
        return _No("only the assignee can accept the ticket")
    return ASSIGNED


def _start(ticket: TicketView, actor: Actor) -> _Outcome:
    allowed = frozenset({ASSIGNED, REOPENED})
    if ticket.status not in allowed:
        return _only_from("start", ticket.status, allowed)
    if not _is_assignee(ticket, actor):
        return _No("only the assignee can start the work")
    return IN_PROGRESS


def _hold(ticket: TicketView, actor: Actor) -> _Outcome:
    allowed = frozenset({ASSIGNED, IN_PROGRESS})
    if ticket.status not in allowed:
        return _only_from("hold", ticket.status, allowed)
    if not (_is_assignee(ticket, actor) or actor.role in _SUPERVISORS):
        return _No("only the assignee or a supervisor can put the ticket on hold")
    return ON_HOLD


def _resume(ticket: TicketView, actor: Actor) -> _Outcome:
    if ticket.status != ON_HOLD:
        return _only_from("resume", ticket.status, frozenset({ON_HOLD}))
    if not (_is_assignee(ticket, actor) or actor.role in _SUPERVISORS):
        return _No("only the assignee or a supervisor can resume the ticket")
    if ticket.hold_resume_status in (ASSIGNED, IN_PROGRESS):
        return ticket.hold_resume_status
    # A hold only starts from assigned or in_progress; without a record, restart safely.
    return ASSIGNED if ticket.assignee_id is not None else NEW


def _comment(ticket: TicketView, actor: Actor) -> _Outcome:
    if ticket.status == CLOSED:
        if actor.role in _STAFF:
            return CLOSED
        return _No("a closed ticket takes staff notes only; a new problem is a new ticket")
    if ticket.status not in _COMMENTABLE:
        return _only_from("comment", ticket.status, _COMMENTABLE | {CLOSED})
    if actor.role in _STAFF or (actor.role == "resident" and _is_reporter(ticket, actor)):
        return ticket.status
    return _No("only staff and the resident who reported it can comment")


def _resolve(ticket: TicketView, actor: Actor) -> _Outcome:
    allowed = frozenset({ASSIGNED, IN_PROGRESS, REOPENED})
    if ticket.status not in allowed:
        return _only_from("resolve", ticket.status, allowed)
    if actor.role in _SUPERVISORS:
        return RESOLVED
    if ticket.kind in _TECHNICAL_KINDS and actor.role != "technician":
        return _No(f"a {ticket.kind} is resolved by a technician or a supervisor")
    if not _is_assignee(ticket, actor):
        return _No("only the assignee or a supervisor can resolve the ticket")
    return RESOLVED


def _reporters_word(action: str, ticket: TicketView, actor: Actor) -> _No | None:
    """The reporter, or front desk on their behalf, speaks for the reporter."""
    if _is_reporter(ticket, actor) or actor.role in _ON_BEHALF:
        return None
    return _No(f"only the reporter, or front desk on their behalf, can {action} the ticket")


def _confirm(ticket: TicketView, actor: Actor) -> _Outcome:
    if ticket.status != RESOLVED:
        return _only_from("confirm", ticket.status, frozenset({RESOLVED}))
    if _is_assignee(ticket, actor):
        return _No("the one who did the work cannot confirm it")
    return _reporters_word("confirm", ticket, actor) or CLOSED


def _return(ticket: TicketView, actor: Actor) -> _Outcome:
    if ticket.status != RESOLVED:
        return _only_from("return", ticket.status, frozenset({RESOLVED}))
    return _reporters_word("return", ticket, actor) or REOPENED


def _cancel(ticket: TicketView, actor: Actor) -> _Outcome:
    if ticket.status in TERMINAL_STATUSES:
        return _only_from("cancel", ticket.status, frozenset(STATUSES) - TERMINAL_STATUSES)
    if actor.role in _SUPERVISORS:
        return CANCELLED
    if ticket.status not in (NEW, ASSIGNED):
        return _No("once work has started only a supervisor can cancel the ticket")
    return _reporters_word("cancel", ticket, actor) or CANCELLED


def _rate(ticket: TicketView, actor: Actor) -> _Outcome:
    allowed = frozenset({RESOLVED, CLOSED})
    if ticket.status not in allowed:
        return _only_from("rate", ticket.status, allowed)
    if _is_assignee(ticket, actor):
        return _No("the one who did the work cannot rate it")
    return _reporters_word("rate", ticket, actor) or ticket.status


def _follow_up(ticket: TicketView, actor: Actor) -> _Outcome:
    if ticket.kind != "complaint":
        return _No("only complaints are followed up")
    allowed = frozenset({RESOLVED, CLOSED})
    if ticket.status not in allowed:
        return _only_from("follow_up", ticket.status, allowed)
    if actor.role not in _DISPATCHERS:
        return _No("front desk or a supervisor follows up a complaint")
    return ticket.status


def _auto_close(ticket: TicketView, actor: Actor) -> _Outcome:
    if ticket.status != RESOLVED:
        return _only_from("auto_close", ticket.status, frozenset({RESOLVED}))
    if actor.role != SYSTEM:
        return _No("only the system closes a ticket by itself")
    return CLOSED


_RULES: Final[Mapping[str, _Rule]] = MappingProxyType(
    {
        "assign": _assign,
        "accept": _accept,
        "start": _start,
        "hold": _hold,
        "resume": _resume,
        "comment": _comment,
        "resolve": _resolve,
        "confirm": _confirm,
        "return": _return,
        "cancel": _cancel,
        "rate": _rate,
        "follow_up": _follow_up,
        "auto_close": _auto_close,
    }
)


def _outcome(ticket: TicketView, action: str, actor: Actor) -> _Outcome:
    if actor.role not in ROLES:
        return _No(f"unknown role {actor.role!r}")
    if ticket.status not in STATUSES:
        return _No(f"unknown status {ticket.status!r}")
    rule = _RULES.get(action)
    if rule is None:
        return _No(f"unknown action {action!r}")
    return rule(ticket, actor)


def allowed_actions(ticket: TicketView, actor: Actor) -> tuple[str, ...]:
    """The actions ``actor`` may take on ``ticket`` now, in ``ACTIONS`` order."""
    return tuple(a for a in ACTIONS if not isinstance(_outcome(ticket, a, actor), _No))


def decide(ticket: TicketView, action: str, actor: Actor) -> Transition:
    """The move ``action`` by ``actor`` makes, or ``MoveRefused`` saying why not."""
    outcome = _outcome(ticket, action, actor)
    if isinstance(outcome, _No):
        raise MoveRefused(ticket.status, action, allowed_actions(ticket, actor), outcome.reason)
    if outcome != ON_HOLD:
        resume_to = None
    elif ticket.status == ON_HOLD:
        resume_to = ticket.hold_resume_status  # a comment while on hold keeps the hold
    else:
        resume_to = ticket.status
    return Transition(action, ticket.status, outcome, resume_to)


def can_be_assigned(kind: str, role: str) -> bool:
    """Whether a user of ``role`` may be the assignee of a ticket of ``kind``.

    Repairs and maintenance go to technicians (the only field staff who may resolve them);
    complaints and requests to any operational staff. Admins and residents never.
    """
    if kind in _TECHNICAL_KINDS:
        return role == "technician"
    return kind in KINDS and role in _STAFF - {"admin"}

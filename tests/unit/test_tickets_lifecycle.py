"""Ticket lifecycle: the full role x action x status matrix, and the refused-move details."""

from __future__ import annotations

import itertools

import pytest

from server.tickets.lifecycle import (
    ACTIONS,
    KINDS,
    ROLES,
    STATUSES,
    Actor,
    MoveRefused,
    TicketView,
    allowed_actions,
    can_be_assigned,
    decide,
)

REPORTER_ID = 1
ASSIGNEE_ID = 2
BYSTANDER_ID = 99

# Who may take each action, per status (and kind where it matters), per role.
# A cell lists the relations to the ticket under which the actor may act:
#   b = neither reporter nor assignee, r = the reporter, a = the assignee, . = never.
# Roles: adm admin, mgr manager, sup supervisor, grd guard, tec technician, cln cleaner,
# fd front_desk, res resident, sys system ("system" has no user: only "b" or ".").
# Kinds: * all; trade = repair, maintenance; service = complaint, request;
# other = all but complaint.
# The ticket has reporter 1 and assignee 2; on hold it was held from in_progress.
MATRIX = """
action      status       kinds      adm  mgr  sup  grd  tec  cln  fd   res  sys
assign      new          *          bra  bra  bra  .    .    .    bra  .    .
assign      assigned     *          bra  bra  bra  .    .    .    bra  .    .
assign      in_progress  *          bra  bra  bra  .    .    .    bra  .    .
assign      on_hold      *          bra  bra  bra  .    .    .    bra  .    .
assign      resolved     *          .    .    .    .    .    .    .    .    .
assign      reopened     *          bra  bra  bra  .    .    .    bra  .    .
assign      closed       *          .    .    .    .    .    .    .    .    .
assign      cancelled    *          .    .    .    .    .    .    .    .    .
accept      new          *          .    .    .    .    .    .    .    .    .
accept      assigned     *          a    a    a    a    a    a    a    .    .
accept      in_progress  *          .    .    .    .    .    .    .    .    .
accept      on_hold      *          .    .    .    .    .    .    .    .    .
accept      resolved     *          .    .    .    .    .    .    .    .    .
accept      reopened     *          .    .    .    .    .    .    .    .    .
accept      closed       *          .    .    .    .    .    .    .    .    .
accept      cancelled    *          .    .    .    .    .    .    .    .    .
start       new          *          .    .    .    .    .    .    .    .    .
start       assigned     *          a    a    a    a    a    a    a    .    .
start       in_progress  *          .    .    .    .    .    .    .    .    .
start       on_hold      *          .    .    .    .    .    .    .    .    .
start       resolved     *          .    .    .    .    .    .    .    .    .
start       reopened     *          a    a    a    a    a    a    a    .    .
start       closed       *          .    .    .    .    .    .    .    .    .
start       cancelled    *          .    .    .    .    .    .    .    .    .
hold        new          *          .    .    .    .    .    .    .    .    .
hold        assigned     *          bra  bra  bra  a    a    a    a    .    .
hold        in_progress  *          bra  bra  bra  a    a    a    a    .    .
hold        on_hold      *          .    .    .    .    .    .    .    .    .
hold        resolved     *          .    .    .    .    .    .    .    .    .
hold        reopened     *          .    .    .    .    .    .    .    .    .
hold        closed       *          .    .    .    .    .    .    .    .    .
hold        cancelled    *          .    .    .    .    .    .    .    .    .
resume      new          *          .    .    .    .    .    .    .    .    .
resume      assigned     *          .    .    .    .    .    .    .    .    .
resume      in_progress  *          .    .    .    .    .    .    .    .    .
resume      on_hold      *          bra  bra  bra  a    a    a    a    .    .
resume      resolved     *          .    .    .    .    .    .    .    .    .
resume      reopened     *          .    .    .    .    .    .    .    .    .
resume      closed       *          .    .    .    .    .    .    .    .    .
resume      cancelled    *          .    .    .    .    .    .    .    .    .
comment     new          *          bra  bra  bra  bra  bra  bra  bra  r    .
comment     assigned     *          bra  bra  bra  bra  bra  bra  bra  r    .
comment     in_progress  *          bra  bra  bra  bra  bra  bra  bra  r    .
comment     on_hold      *          bra  bra  bra  bra  bra  bra  bra  r    .
comment     resolved     *          bra  bra  bra  bra  bra  bra  bra  r    .
comment     reopened     *          bra  bra  bra  bra  bra  bra  bra  r    .
comment     closed       *          bra  bra  bra  bra  bra  bra  bra  .    .
comment     cancelled    *          .    .    .    .    .    .    .    .    .
resolve     new          *          .    .    .    .    .    .    .    .    .
resolve     assigned     trade      bra  bra  bra  .    a    .    .    .    .
resolve     assigned     service    bra  bra  bra  a    a    a    a    .    .
resolve     in_progress  trade      bra  bra  bra  .    a    .    .    .    .
resolve     in_progress  service    bra  bra  bra  a    a    a    a    .    .
resolve     on_hold      *          .    .    .    .    .    .    .    .    .
resolve     resolved     *          .    .    .    .    .    .    .    .    .
resolve     reopened     trade      bra  bra  bra  .    a    .    .    .    .
resolve     reopened     service    bra  bra  bra  a    a    a    a    .    .
resolve     closed       *          .    .    .    .    .    .    .    .    .
resolve     cancelled    *          .    .    .    .    .    .    .    .    .
confirm     new          *          .    .    .    .    .    .    .    .    .
confirm     assigned     *          .    .    .    .    .    .    .    .    .
confirm     in_progress  *          .    .    .    .    .    .    .    .    .
confirm     on_hold      *          .    .    .    .    .    .    .    .    .
confirm     resolved     *          r    r    r    r    r    r    br   r    .
confirm     reopened     *          .    .    .    .    .    .    .    .    .
confirm     closed       *          .    .    .    .    .    .    .    .    .
confirm     cancelled    *          .    .    .    .    .    .    .    .    .
return      new          *          .    .    .    .    .    .    .    .    .
return      assigned     *          .    .    .    .    .    .    .    .    .
return      in_progress  *          .    .    .    .    .    .    .    .    .
return      on_hold      *          .    .    .    .    .    .    .    .    .
return      resolved     *          r    r    r    r    r    r    bra  r    .
return      reopened     *          .    .    .    .    .    .    .    .    .
return      closed       *          .    .    .    .    .    .    .    .    .
return      cancelled    *          .    .    .    .    .    .    .    .    .
cancel      new          *          bra  bra  bra  r    r    r    bra  r    .
cancel      assigned     *          bra  bra  bra  r    r    r    bra  r    .
cancel      in_progress  *          bra  bra  bra  .    .    .    .    .    .
cancel      on_hold      *          bra  bra  bra  .    .    .    .    .    .
cancel      resolved     *          bra  bra  bra  .    .    .    .    .    .
cancel      reopened     *          bra  bra  bra  .    .    .    .    .    .
cancel      closed       *          .    .    .    .    .    .    .    .    .
cancel      cancelled    *          .    .    .    .    .    .    .    .    .
rate        new          *          .    .    .    .    .    .    .    .    .
rate        assigned     *          .    .    .    .    .    .    .    .    .
rate        in_progress  *          .    .    .    .    .    .    .    .    .
rate        on_hold      *          .    .    .    .    .    .    .    .    .
rate        resolved     *          r    r    r    r    r    r    br   r    .
rate        reopened     *          .    .    .    .    .    .    .    .    .
rate        closed       *          r    r    r    r    r    r    br   r    .
rate        cancelled    *          .    .    .    .    .    .    .    .    .
follow_up   new          *          .    .    .    .    .    .    .    .    .
follow_up   assigned     *          .    .    .    .    .    .    .    .    .
follow_up   in_progress  *          .    .    .    .    .    .    .    .    .
follow_up   on_hold      *          .    .    .    .    .    .    .    .    .
follow_up   resolved     complaint  bra  bra  bra  .    .    .    bra  .    .
follow_up   resolved     other      .    .    .    .    .    .    .    .    .
follow_up   reopened     *          .    .    .    .    .    .    .    .    .
follow_up   closed       complaint  bra  bra  bra  .    .    .    bra  .    .
follow_up   closed       other      .    .    .    .    .    .    .    .    .
follow_up   cancelled    *          .    .    .    .    .    .    .    .    .
auto_close  new          *          .    .    .    .    .    .    .    .    .
auto_close  assigned     *          .    .    .    .    .    .    .    .    .
auto_close  in_progress  *          .    .    .    .    .    .    .    .    .
auto_close  on_hold      *          .    .    .    .    .    .    .    .    .
auto_close  resolved     *          .    .    .    .    .    .    .    .    b
auto_close  reopened     *          .    .    .    .    .    .    .    .    .
auto_close  closed       *          .    .    .    .    .    .    .    .    .
auto_close  cancelled    *          .    .    .    .    .    .    .    .    .
"""

# Where an allowed move leads; "same" keeps the status. Resume goes back to in_progress,
# the status the matrix's on-hold ticket was held from.
LEADS_TO = {
    "assign": "assigned",
    "accept": "assigned",
    "start": "in_progress",
    "hold": "on_hold",
    "resume": "in_progress",
    "comment": "same",
    "resolve": "resolved",
    "confirm": "closed",
    "return": "reopened",
    "cancel": "cancelled",
    "rate": "same",
    "follow_up": "same",
    "auto_close": "closed",
}

ROLE_COLUMNS = {
    "adm": "admin",
    "mgr": "manager",
    "sup": "supervisor",
    "grd": "guard",
    "tec": "technician",
    "cln": "cleaner",
    "fd": "front_desk",
    "res": "resident",
    "sys": "system",
}
KIND_GROUPS = {
    "*": KINDS,
    "trade": ("repair", "maintenance"),
    "service": ("complaint", "request"),
    "complaint": ("complaint",),
    "other": ("repair", "request", "maintenance"),
}


def _rows() -> list[tuple[str, str, tuple[str, ...], dict[str, str]]]:
    lines = [line.split() for line in MATRIX.strip().splitlines()]
    header, body = lines[0], lines[1:]
    assert header[3:] == list(ROLE_COLUMNS)
    rows = []
    for action, status, kinds, *cells in body:
        roles = ROLE_COLUMNS.values()
        rows.append((action, status, KIND_GROUPS[kinds], dict(zip(roles, cells, strict=True))))
    return rows


ROWS = _rows()


def _ticket(status: str, kind: str = "repair", **changes: object) -> TicketView:
    fields: dict[str, object] = {
        "status": status,
        "kind": kind,
        "category": "plumbing",
        "reporter_id": REPORTER_ID,
        "assignee_id": ASSIGNEE_ID,
        "hold_resume_status": "in_progress" if status == "on_hold" else None,
    }
    fields.update(changes)
    return TicketView(**fields)  # type: ignore[arg-type]


def test_matrix_covers_every_action_status_kind_and_role_once() -> None:
    assert set(ROLE_COLUMNS.values()) == set(ROLES)
    covered = [(a, s, k) for a, s, kinds, _ in ROWS for k in kinds]
    assert len(covered) == len(set(covered))
    assert set(covered) == set(itertools.product(ACTIONS, STATUSES, KINDS))
    assert set(LEADS_TO) == set(ACTIONS)
    for *_, cells in ROWS:
        assert set(cells["system"]) <= {"b", "."}
        assert "a" not in cells["resident"]  # a resident is never an assignee


@pytest.mark.parametrize(
    ("action", "status", "kinds", "cells"),
    ROWS,
    ids=[f"{a}-{s}-{'+'.join(k) if len(k) < 4 else 'any'}" for a, s, k, _ in ROWS],
)
def test_role_action_status_matrix(
    action: str, status: str, kinds: tuple[str, ...], cells: dict[str, str]
) -> None:
    wrong: list[str] = []
    for kind, role in itertools.product(kinds, ROLES):
        cell = cells[role]
        relations = (
            {"b": BYSTANDER_ID}
            if role == "system"
            else {
                "b": BYSTANDER_ID,
                "r": REPORTER_ID,
                "a": ASSIGNEE_ID,
            }
        )
        for relation, user_id in relations.items():
            ticket = _ticket(status, kind)
            actor = Actor(None if role == "system" else user_id, role)
            expected = relation in cell
            where = f"{role}/{relation} on {kind}"
            listed = action in allowed_actions(ticket, actor)
            if listed != expected:
                wrong.append(f"{where}: allowed_actions lists it={listed}, expected {expected}")
            try:
                move = decide(ticket, action, actor)
            except MoveRefused as refused:
                if expected:
                    wrong.append(f"{where}: refused ({refused.reason}), expected allowed")
                elif (
                    refused.current_status != status
                    or refused.action != action
                    or refused.allowed_actions != allowed_actions(ticket, actor)
                    or not refused.reason
                ):
                    wrong.append(f"{where}: refusal fields wrong: {refused!r}")
                continue
            if not expected:
                wrong.append(f"{where}: allowed, expected refused")
                continue
            to = status if LEADS_TO[action] == "same" else LEADS_TO[action]
            if (move.action, move.from_status, move.to_status) != (action, status, to):
                wrong.append(f"{where}: {move}, expected {status} -> {to}")
    assert not wrong, "\n".join(wrong)


def test_refused_move_names_status_allowed_actions_and_reason() -> None:
    guard = Actor(ASSIGNEE_ID, "guard")
    with pytest.raises(MoveRefused) as caught:
        decide(_ticket("in_progress", "repair"), "resolve", guard)
    refused = caught.value
    assert refused.current_status == "in_progress"
    assert refused.action == "resolve"
    assert refused.allowed_actions == ("hold", "comment")
    assert "technician" in refused.reason
    assert "in_progress" in str(refused)
    assert "hold, comment" in str(refused)


def test_resident_cannot_assign_and_is_told_what_they_can_do() -> None:
    resident = Actor(REPORTER_ID, "resident")
    with pytest.raises(MoveRefused) as caught:
        decide(_ticket("new", assignee_id=None), "assign", resident)
    assert caught.value.current_status == "new"
    assert caught.value.allowed_actions == ("comment", "cancel")
    assert "dispatch" in caught.value.reason


def test_wrong_status_reason_lists_the_statuses_that_allow_it() -> None:
    with pytest.raises(MoveRefused) as caught:
        decide(_ticket("closed"), "return", Actor(REPORTER_ID, "resident"))
    assert caught.value.allowed_actions == ("rate",)
    assert "resolved" in caught.value.reason
    assert "closed" in caught.value.reason


def test_unknown_action_is_refused_with_allowed_actions() -> None:
    with pytest.raises(MoveRefused) as caught:
        decide(_ticket("resolved"), "reopen", Actor(REPORTER_ID, "resident"))
    assert caught.value.action == "reopen"
    assert caught.value.allowed_actions == ("comment", "confirm", "return", "rate")
    assert "unknown action" in caught.value.reason


def test_unknown_role_or_status_allows_nothing() -> None:
    assert allowed_actions(_ticket("new"), Actor(BYSTANDER_ID, "janitor")) == ()
    assert allowed_actions(_ticket("archived"), Actor(BYSTANDER_ID, "admin")) == ()
    with pytest.raises(MoveRefused, match="unknown status"):
        decide(_ticket("archived"), "comment", Actor(BYSTANDER_ID, "admin"))


def test_cancelled_ticket_takes_nothing_from_anyone() -> None:
    for role in ROLES:
        for user_id in (REPORTER_ID, ASSIGNEE_ID, BYSTANDER_ID, None):
            assert allowed_actions(_ticket("cancelled", "complaint"), Actor(user_id, role)) == ()


def test_resident_sees_nothing_of_someone_elses_ticket() -> None:
    other = Actor(BYSTANDER_ID, "resident")
    for status in STATUSES:
        assert allowed_actions(_ticket(status, "complaint"), other) == ()


def test_hold_remembers_where_it_came_from_and_resume_goes_back() -> None:
    technician = Actor(ASSIGNEE_ID, "technician")
    for held_from in ("assigned", "in_progress"):
        hold = decide(_ticket(held_from), "hold", technician)
        assert (hold.to_status, hold.hold_resume_status) == ("on_hold", held_from)
        assert (hold.opens_hold, hold.closes_hold, hold.changed) == (True, False, True)
        on_hold = _ticket("on_hold", hold_resume_status=hold.hold_resume_status)
        resume = decide(on_hold, "resume", technician)
        assert (resume.to_status, resume.hold_resume_status) == (held_from, None)
        assert (resume.opens_hold, resume.closes_hold) == (False, True)


def test_comment_while_on_hold_keeps_the_hold() -> None:
    note = decide(_ticket("on_hold"), "comment", Actor(BYSTANDER_ID, "supervisor"))
    assert (note.to_status, note.hold_resume_status) == ("on_hold", "in_progress")
    assert (note.changed, note.opens_hold, note.closes_hold) == (False, False, False)


def test_resume_without_a_recorded_status_restarts_at_assigned() -> None:
    ticket = _ticket("on_hold", hold_resume_status=None)
    assert decide(ticket, "resume", Actor(ASSIGNEE_ID, "technician")).to_status == "assigned"


def test_reassigning_a_held_ticket_ends_the_hold() -> None:
    move = decide(_ticket("on_hold"), "assign", Actor(BYSTANDER_ID, "front_desk"))
    assert (move.to_status, move.hold_resume_status) == ("assigned", None)
    assert move.closes_hold


def test_return_reopens_and_the_assignee_starts_again() -> None:
    move = decide(_ticket("resolved"), "return", Actor(REPORTER_ID, "resident"))
    assert (move.to_status, move.reopens) == ("reopened", True)
    again = decide(_ticket("reopened"), "start", Actor(ASSIGNEE_ID, "technician"))
    assert (again.to_status, again.reopens) == ("in_progress", False)


def test_who_did_the_work_cannot_confirm_or_rate_it_even_as_reporter() -> None:
    ticket = _ticket("resolved", reporter_id=ASSIGNEE_ID)
    technician = Actor(ASSIGNEE_ID, "technician")
    assert allowed_actions(ticket, technician) == ("comment", "return")
    with pytest.raises(MoveRefused, match="did the work"):
        decide(ticket, "confirm", technician)
    with pytest.raises(MoveRefused, match="did the work"):
        decide(ticket, "rate", technician)
    # The front desk handling a complaint does not certify its own work either.
    desk = Actor(ASSIGNEE_ID, "front_desk")
    assert "confirm" not in allowed_actions(_ticket("resolved", "complaint"), desk)


def test_hotline_ticket_is_confirmed_by_front_desk_only() -> None:
    ticket = _ticket("resolved", reporter_id=None)
    assert decide(ticket, "confirm", Actor(BYSTANDER_ID, "front_desk")).to_status == "closed"
    # No user id never matches a missing reporter.
    for role in ROLES:
        if role != "front_desk":
            assert "confirm" not in allowed_actions(ticket, Actor(None, role))


def test_unassigned_ticket_cannot_be_accepted_or_started() -> None:
    ticket = _ticket("assigned", assignee_id=None)
    for role in ROLES:
        allowed = allowed_actions(ticket, Actor(None, role))
        assert {"accept", "start"}.isdisjoint(allowed)
    assert "hold" in allowed_actions(ticket, Actor(BYSTANDER_ID, "supervisor"))


def test_auto_close_is_recorded_as_the_system_closing() -> None:
    move = decide(_ticket("resolved"), "auto_close", Actor(None, "system"))
    assert (move.from_status, move.to_status) == ("resolved", "closed")
    assert allowed_actions(_ticket("resolved"), Actor(None, "system")) == ("auto_close",)


@pytest.mark.parametrize(
    ("kind", "role", "expected"),
    [
        ("repair", "technician", True),
        ("repair", "guard", False),
        ("repair", "cleaner", False),
        ("maintenance", "technician", True),
        ("maintenance", "supervisor", False),
        ("complaint", "front_desk", True),
        ("complaint", "supervisor", True),
        ("request", "cleaner", True),
        ("request", "guard", True),
        ("complaint", "resident", False),
        ("request", "admin", False),
        ("request", "system", False),
        ("unknown", "technician", False),
    ],
)
def test_who_can_be_assigned(kind: str, role: str, expected: bool) -> None:
    assert can_be_assigned(kind, role) is expected

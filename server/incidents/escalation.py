"""When an unacknowledged playbook step escalates, and to whom. Pure, no I/O.

A step must be acknowledged `ack_minutes` after its incident opened (its `ack_due`). Until
then the step's own role (the on-duty technician, guard or front desk) is asked; past it,
the next role of its escalation chain (supervisor, then manager), one more level for each
further `ack_minutes` without an acknowledgement, up to the end of the chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["Escalation", "escalate", "level_at", "next_escalation_at"]


def level_at(chain_length: int, ack_due: datetime, ack_minutes: int, now: datetime) -> int:
    """The escalation level an unacknowledged step has reached at `now`."""
    if chain_length < 1 or ack_minutes < 1:
        raise ValueError("a step has a chain and a positive acknowledgement time")
    if now < ack_due:
        return 0
    periods = (now - ack_due) // timedelta(minutes=ack_minutes)
    return min(chain_length - 1, 1 + periods)


def next_escalation_at(
    chain_length: int, ack_due: datetime, ack_minutes: int, level: int
) -> datetime | None:
    """When a step at `level` escalates next; None at the end of its chain."""
    if level >= chain_length - 1:
        return None
    return ack_due + level * timedelta(minutes=ack_minutes)


@dataclass(frozen=True, slots=True)
class Escalation:
    """A step moving up its chain: from one level (and role) to another."""

    from_level: int
    to_level: int
    from_role: str
    to_role: str
    next_at: datetime | None


def escalate(
    chain: tuple[str, ...] | list[str],
    level: int,
    ack_due: datetime,
    ack_minutes: int,
    now: datetime,
) -> Escalation | None:
    """The escalation due at `now` for an unacknowledged step at `level`, or None.

    A scheduler that was stopped for a while jumps straight to the level reached (one
    escalation recorded, not one per missed pass).
    """
    reached = level_at(len(chain), ack_due, ack_minutes, now)
    if reached <= level:
        return None
    return Escalation(
        from_level=level,
        to_level=reached,
        from_role=chain[level],
        to_role=chain[reached],
        next_at=next_escalation_at(len(chain), ack_due, ack_minutes, reached),
    )

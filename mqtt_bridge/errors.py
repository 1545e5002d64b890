"""The one error the bridge's parsers raise: a message that goes to the dead-letter table."""

from __future__ import annotations

from typing import Literal, TypeAlias

ReasonCode: TypeAlias = Literal[
    "bad_topic",
    "empty_payload",
    "too_large",
    "bad_json",
    "bad_schema",
    "unsupported_version",
    "topic_mismatch",
    "future_timestamp",
    # Decided against the database, not by the parsers:
    "unknown_site",
    "unknown_device",
    "gateway_mismatch",
    "not_storable",
]
"""Stable reason codes, stored with each dead letter; add new ones, never rename."""


class BadMessage(Exception):
    """A topic or payload that cannot be accepted; `reason` is stable, `detail` is for people."""

    reason: ReasonCode
    detail: str

    def __init__(self, reason: ReasonCode, detail: str) -> None:
        # Both go into args so the exception pickles and reprs faithfully.
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"

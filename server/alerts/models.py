"""Wire types for alerts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class Alert(msgspec.Struct, frozen=True):
    id: int
    site_id: int
    kind: str
    subject_type: str
    subject_id: int
    message: str
    data: dict[str, Any]
    created_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: int | None

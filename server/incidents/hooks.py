"""Where alarms meet incidents: called by the alarm domain inside its transaction.

The ingest of device messages (server.alarms.ingest), the inactivity check and the
acknowledgement route call `on_alarm_changes` with every alarm change they made, in
the same transaction, before it commits. Opening or joining incidents (one incident per
site, zone and kind; the outage grouping) belongs here.
"""

from __future__ import annotations

from collections.abc import Sequence

from server.alarms.models import AlarmChange
from server.db import Connection


async def on_alarm_changes(conn: Connection, changes: Sequence[AlarmChange]) -> None:
    """Open, join or resolve incidents for these alarm changes (not built yet: issue 4).

    Runs in the caller's transaction: an exception rolls back the messages that caused
    the changes (the bridge then retries them), so raise only for what a retry can fix.
    Called with a batch (possibly several changes of one alarm, in order); keep it
    set-based, since the bridge ingests thousands of events per second.
    """
    return None

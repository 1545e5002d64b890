"""Where alarms meet incidents: called by the alarm domain inside its transaction.

The ingest of device messages (server.alarms.ingest), the inactivity check and the
acknowledgement route call `on_alarm_changes` with every alarm change they made, in
the same transaction, before it commits. Opening or joining incidents (one incident per
site, zone and kind; the outage grouping) belongs here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from server.alarms.models import AlarmChange
from server.db import Connection
from server.incidents import grouping, service, store
from server.live import hub as live


def _alarm_event(change: AlarmChange) -> dict[str, Any]:
    return {
        "type": f"alarm_{change.change}",
        "site_id": change.site_id,
        "alarm_id": change.alarm_id,
        "device_id": change.device_id,
        "zone_id": change.zone_id,
        "alarm_type": change.type,
        "severity": change.severity,
        "at": change.at.isoformat(),
    }


async def on_alarm_changes(conn: Connection, changes: Sequence[AlarmChange]) -> None:
    """Open, join or resolve incidents for these alarm changes, and put the alarms that
    opened, cleared or were acknowledged on the live feed.

    Runs in the caller's transaction: an exception rolls back the messages that caused
    the changes (the bridge then retries them), so raise only for what a retry can fix.
    Called with a batch (possibly several changes of one alarm, in order). Repeats of
    open alarms, the bulk of a sensor storm, cost nothing here; a batch that opens or
    clears alarms costs a handful of set-based statements, whatever its size.
    """
    if not changes:
        return
    await live.publish_many(conn, [_alarm_event(c) for c in changes if c.change != "repeated"])
    plan = grouping.plan(changes)
    if not plan:
        return
    now = datetime.now(UTC)
    # One transaction at a time opens, joins or resolves incidents of a site: the outage
    # grouping then sees the offline alarms of concurrent batches, and no deadlocks.
    await store.lock_sites(conn, plan.sites)
    wanted = [
        service.Wanted(
            change.site_id,
            grouping.incident_zone(kind, change.zone_id),
            kind,
            "alarm",
            [change.alarm_id],
            place_zone_id=change.zone_id,
        )
        for change, kind in plan.opens
    ]
    if plan.offline:
        wanted += await service.outage_wanted(conn, plan.offline, now)
    if wanted:
        await service.open_or_join(conn, wanted, now)
    if plan.cleared:
        await service.on_alarms_cleared(conn, [c.alarm_id for c in plan.cleared], now)

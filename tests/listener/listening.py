"""Helpers of the alert listener's tests: a listener collecting events, alerts to write,
and waits on conditions (never on the clock)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

import asyncpg

from silentpulse_db import AlertEvent, AlertListener
from silentpulse_db.testing.alerts import HANG, listening

from helpers import fetchval, wait_for

# What the listener's role needs besides BYPASSRLS (docs/notifications.md).
LISTENER_GRANTS = (
    "ALTER ROLE {role} BYPASSRLS; "
    "GRANT SELECT ON alerts, alert_changes, alert_changes_pruned TO {role}; "
    "GRANT SELECT, INSERT, UPDATE ON alert_listener_positions TO {role};"
)


@contextlib.asynccontextmanager
async def running(
    dsn: str, *, ready: bool = True, **options: Any
) -> AsyncIterator[tuple[AlertListener, list[AlertEvent]]]:
    """A listener consuming in a task (quick reconnects), and what it delivered so far."""
    options = {"initial_backoff": 0.1, "max_backoff": 0.5, **options}
    async with listening(dsn, ready=ready, **options) as alerts:
        yield alerts.listener, alerts.events


@contextlib.asynccontextmanager
async def collecting(dsn: str, **options: Any) -> AsyncIterator[list[AlertEvent]]:
    """A ready listener's events."""
    async with running(dsn, **options) as (_, events):
        yield events


async def new_alert(
    conn: asyncpg.Connection, ids: dict[str, uuid.UUID], **columns: Any
) -> uuid.UUID:
    values = {
        "tenant_id": ids["tenants"],
        "flow_pulse_id": ids["flow_pulses"],
        "asset_id": ids["assets"],
        "alert_type": "silence",
        "severity": "high",
        "started_at": datetime.now(timezone.utc),
        **columns,
    }
    names = ", ".join(values)
    marks = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    alert_id: uuid.UUID = await conn.fetchval(
        f"INSERT INTO alerts ({names}) VALUES ({marks}) RETURNING id", *values.values()
    )
    return alert_id


async def delivered(events: list[AlertEvent], *alert_ids: uuid.UUID) -> None:
    """Until every one of ``alert_ids`` has an event in ``events``."""

    async def all_there() -> bool:
        seen = {e.alert_id for e in events}
        return all(a in seen for a in alert_ids)

    await wait_for(all_there, timeout=HANG)


async def settled(
    conn: asyncpg.Connection, ids: dict[str, uuid.UUID], *lists: list[AlertEvent]
) -> None:
    """Until everything committed so far has been delivered to each list: the listener
    delivers in transaction order, and a sentinel alert written now gets a transaction
    id above every one committed so far, so once it arrives nothing earlier is still on
    its way (a duplicate included). The sentinel's event is removed."""
    sentinel = await new_alert(conn, ids)
    for events in lists:
        await delivered(events, sentinel)
        events[:] = [e for e in events if e.alert_id != sentinel]


async def count_at_least(events: list[AlertEvent], n: int) -> None:
    async def enough() -> bool:
        return len(events) >= n

    await wait_for(enough, timeout=HANG)


async def listener_pid(dsn: str) -> int | None:
    pid: int | None = await fetchval(
        dsn,
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'silentpulse-db listener' "
        "AND datname = current_database() ORDER BY backend_start DESC LIMIT 1",
    )
    return pid

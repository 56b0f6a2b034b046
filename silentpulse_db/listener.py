"""Following alerts live: LISTEN on the alert channel, with reconnect and catch-up.

Migration 000019 makes PostgreSQL ``pg_notify`` on :data:`ALERT_CHANNEL` once
per statement that creates alerts or changes their status (each alert with its
status when up to 50 changed, else the range of their ``status_changed_at``; 000003's
one-per-row payload is still understood). :func:`listen_alerts` yields one
:class:`AlertEvent` per changed alert, reading the alerts from the table. When
its connection drops it reconnects with backoff, LISTENs again, and then reads
from the alerts table every alert whose status changed since the last one it
delivered (minus a safety margin), so nothing that happened while it was away
is lost; changes it already delivered are recognised and not delivered twice.

The notifications service is cross-tenant: connect as a role that bypasses
row-level security (or every tenant's alerts will be invisible to catch-up).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from .postgres.connect import connect, describe, is_connection_lost, is_transient
from .postgres.dsn import validate_dsn

logger = logging.getLogger("silentpulse_db.listener")

ALERT_CHANNEL = "silentpulse_alerts"

_COLUMNS = "id, tenant_id, status, started_at, status_changed_at"
_CATCH_UP = (
    f"SELECT {_COLUMNS} FROM alerts WHERE status_changed_at >= $1 ORDER BY status_changed_at, id"
)
_BY_IDS = f"SELECT {_COLUMNS} FROM alerts WHERE id = ANY($1::uuid[]) ORDER BY status_changed_at, id"
_BY_RANGE = (
    f"SELECT {_COLUMNS} FROM alerts WHERE status_changed_at BETWEEN $1 AND $2 "
    "ORDER BY status_changed_at, id"
)


@dataclass(frozen=True)
class AlertEvent:
    """An alert created or changed status. ``source`` says how it reached us."""

    alert_id: uuid.UUID
    tenant_id: uuid.UUID
    status: str
    started_at: datetime
    changed_at: datetime
    operation: Literal["INSERT", "UPDATE"] | None
    source: Literal["notify", "catch_up"]

    @property
    def key(self) -> tuple[uuid.UUID, str, datetime]:
        return (self.alert_id, self.status, self.changed_at)


@dataclass(frozen=True)
class _Statement:
    """One statement's notification (migration 000019): the alerts it created or changed
    with their status then, when few; else the range of their status_changed_at."""

    operation: Literal["INSERT", "UPDATE"]
    count: int
    since: datetime
    until: datetime
    alerts: tuple[tuple[uuid.UUID, str, datetime], ...] | None


def parse_payload(payload: str) -> AlertEvent | _Statement:
    data = json.loads(payload)
    if "count" in data:
        alerts = data.get("alerts")
        return _Statement(
            operation=data["op"],
            count=int(data["count"]),
            since=datetime.fromisoformat(data["since"]),
            until=datetime.fromisoformat(data["until"]),
            alerts=None
            if alerts is None
            else tuple((uuid.UUID(a), s, datetime.fromisoformat(at)) for a, s, at in alerts),
        )
    # 000003's one notification per row (a database not migrated yet).
    return AlertEvent(
        alert_id=uuid.UUID(data["alert_id"]),
        tenant_id=uuid.UUID(data["tenant_id"]),
        status=data["status"],
        started_at=datetime.fromisoformat(data["started_at"]),
        changed_at=datetime.fromisoformat(data["changed_at"]),
        operation=data["op"],
        source="notify",
    )


class _Lost:
    """Queued when the connection goes away, to wake the reader."""


async def listen_alerts(
    dsn: str,
    *,
    since: datetime | None = None,
    catch_up_margin: timedelta = timedelta(seconds=60),
    initial_backoff: float = 0.2,
    max_backoff: float = 30.0,
    health_check_interval: float = 10.0,
) -> AsyncIterator[AlertEvent]:
    """Yield alert changes forever (until the caller stops iterating).

    ``since``: also deliver changes from this time on at the first connection
    (default: only changes from now on). ``catch_up_margin``: how far before
    the last delivered change catch-up looks again, to cover transactions that
    committed late; anything it finds that was already delivered is skipped.
    """
    validate_dsn(dsn)
    last_seen: datetime | None = since
    floor: datetime | None = since
    delivered: dict[tuple[uuid.UUID, str, datetime], datetime] = {}
    backoff = initial_backoff

    def fresh(event: AlertEvent) -> bool:
        nonlocal last_seen
        if event.key in delivered:
            return False
        delivered[event.key] = event.changed_at
        if last_seen is None or event.changed_at > last_seen:
            last_seen = event.changed_at
        horizon = last_seen - catch_up_margin
        for key in [k for k, at in delivered.items() if at < horizon]:
            del delivered[key]
        return True

    while True:
        conn: Any = None
        try:
            # LISTEN first, then catch up: a change in between arrives both
            # ways and is delivered once.
            conn, queue = await _subscribe(dsn)
            if last_seen is not None:
                assert floor is not None
                # Never replay from before the listener's start (or ``since``).
                rows = await conn.fetch(_CATCH_UP, max(floor, last_seen - catch_up_margin))
                for row in rows:
                    event = _event(row, None, "catch_up")
                    if fresh(event):
                        yield event
            else:
                last_seen = floor = await conn.fetchval("SELECT now()")
            backoff = initial_backoff
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=health_check_interval)
                except asyncio.TimeoutError:
                    await conn.execute("SELECT 1")  # an idle dead connection shows here
                    continue
                if isinstance(item, _Lost):
                    raise ConnectionResetError("listener connection closed")
                for event in await _expand(conn, item):
                    if fresh(event):
                        yield event
        except Exception as exc:
            if not (is_transient(exc) or is_connection_lost(exc)):
                raise
            logger.warning(
                "alert listener lost its connection (%s); reconnecting in %.1fs",
                describe(exc, dsn),
                backoff,
            )
        finally:
            if conn is not None and not conn.is_closed():
                conn.terminate()
        await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
        backoff = min(backoff * 2, max_backoff)


def _event(
    row: Any, operation: Literal["INSERT", "UPDATE"] | None, source: Literal["notify", "catch_up"]
) -> AlertEvent:
    return AlertEvent(
        alert_id=row["id"],
        tenant_id=row["tenant_id"],
        status=row["status"],
        started_at=row["started_at"],
        changed_at=row["status_changed_at"],
        operation=operation,
        source=source,
    )


async def _expand(conn: Any, item: AlertEvent | _Statement) -> list[AlertEvent]:
    """The alerts a notification names: itself (per-row), or read from the table."""
    if isinstance(item, AlertEvent):
        return [item]
    if item.alerts is None:  # a bulk change: read what it left
        rows = await conn.fetch(_BY_RANGE, item.since, item.until)
        return [_event(row, item.operation, "notify") for row in rows]
    # The status each alert had then, with what does not change read from the table.
    found = {r["id"]: r for r in await conn.fetch(_BY_IDS, [a for a, _, _ in item.alerts])}
    return [
        AlertEvent(
            alert_id=alert_id,
            tenant_id=found[alert_id]["tenant_id"],
            status=status,
            started_at=found[alert_id]["started_at"],
            changed_at=changed_at,
            operation=item.operation,
            source="notify",
        )
        for alert_id, status, changed_at in item.alerts
        if alert_id in found  # deleted since
    ]


async def _subscribe(dsn: str) -> tuple[Any, asyncio.Queue[AlertEvent | _Statement | _Lost]]:
    """Connect and LISTEN; notifications and the connection's end arrive on the queue."""
    queue: asyncio.Queue[AlertEvent | _Statement | _Lost] = asyncio.Queue()

    def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            queue.put_nowait(parse_payload(payload))
        except (ValueError, KeyError) as exc:
            logger.warning("ignoring malformed alert notification: %s", exc)

    conn = await connect(dsn, attempts=1, application_name="silentpulse-db listener")
    try:
        conn.add_termination_listener(lambda _conn: queue.put_nowait(_Lost()))
        await conn.add_listener(ALERT_CHANNEL, on_notify)
    except BaseException:
        conn.terminate()
        raise
    return conn, queue

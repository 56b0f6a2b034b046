"""Following alerts live: LISTEN on the alert channel, with reconnect, catch-up and a
durable position.

Migration 000019 makes PostgreSQL ``pg_notify`` on :data:`ALERT_CHANNEL` once
per statement that creates alerts or changes their status (each alert with its
status when up to 50 changed, else the range of their ``status_changed_at``; 000003's
one-per-row payload is still understood). :func:`listen_alerts` yields one
:class:`AlertEvent` per changed alert, reading the alerts from the table.

It never gives up while the service runs: whatever ends its connection (a
restart, a network cut, its role unable to log in for a while) it reconnects
with capped backoff, LISTENs again, and reads from the alerts table every alert
whose status changed since the last one it delivered (minus a safety margin,
for transactions that committed late), skipping what it already delivered. A
*named consumer* keeps that position in the table ``alert_listener_positions``
(migration 000021), so that a restarted service resumes right after the last
change it delivered: nothing missed while it was down, nothing twice.

The notifications service is cross-tenant: connect as a role that bypasses
row-level security (or every tenant's alerts will be invisible to catch-up).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple

import asyncpg

from .errors import ConfigurationError, DatabaseConnectionError, RowSecurityError
from .postgres.connect import connect, describe, is_connection_lost, is_transient
from .postgres.dsn import split_migrations_table, validate_dsn
from .postgres.roles import session_role
from .postgres.translate import typed_errors

logger = logging.getLogger("silentpulse_db.listener")

ALERT_CHANNEL = "silentpulse_alerts"
# Reconnect failures in a row logged as warnings; the ones after, as errors.
QUIET_FAILURES = 3

NEEDS_A_SESSION = (
    "the listener LISTENs, which holds for a session; in this mode notifications reach "
    "whichever client has that server connection at the time, and most are lost"
)
# A named consumer's position is written when the listener waits for the next
# notification, and at least every this many delivered events in a long burst.
SAVE_EVERY = 1000
_CONSUMER = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")  # as migration 000021 checks it

# created_at comes with migration 000020; before it, a catch-up knows no operation.
_COLUMNS = "id, tenant_id, status, started_at, status_changed_at, {created_at} AS created_at"
_HAS_CREATED_AT = """
    SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass('alerts')
                   AND attname = 'created_at' AND NOT attisdropped)
"""
_CATCH_UP = (
    f"SELECT {_COLUMNS} FROM alerts WHERE status_changed_at >= $1 ORDER BY status_changed_at, id"
)
_BY_IDS = f"SELECT {_COLUMNS} FROM alerts WHERE id = ANY($1::uuid[]) ORDER BY status_changed_at, id"
_BY_RANGE = (
    f"SELECT {_COLUMNS} FROM alerts WHERE status_changed_at BETWEEN $1 AND $2 "
    "ORDER BY status_changed_at, id"
)
_LOAD = "SELECT since, changed_at, delivered FROM alert_listener_positions WHERE consumer = $1"
_SAVE = """
    INSERT INTO alert_listener_positions AS p (consumer, since, changed_at, delivered)
    VALUES ($1, $2, $3, $4::jsonb)
    ON CONFLICT (consumer) DO UPDATE
    SET changed_at = EXCLUDED.changed_at, delivered = EXCLUDED.delivered, updated_at = now()
"""

Operation = Literal["INSERT", "UPDATE"]


@dataclass(frozen=True)
class AlertEvent:
    """An alert created or changed status. ``source`` says how it reached us.

    ``operation``: ``INSERT`` (the alert was created with this status) or ``UPDATE``
    (its status changed); None only for an alert created before migration 000020
    and read back by a catch-up."""

    alert_id: uuid.UUID
    tenant_id: uuid.UUID
    status: str
    started_at: datetime
    changed_at: datetime
    operation: Operation | None
    source: Literal["notify", "catch_up"]

    @property
    def key(self) -> tuple[uuid.UUID, str, datetime]:
        return (self.alert_id, self.status, self.changed_at)


@dataclass(frozen=True)
class _Statement:
    """One statement's notification (migration 000019): the alerts it created or changed
    with their status then, when few; else the range of their status_changed_at."""

    operation: Operation
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


class _Position:
    """What the listener has delivered: the latest change, and every change within the
    catch-up margin before it (a catch-up reads them again and skips them)."""

    def __init__(self, margin: timedelta) -> None:
        self.margin = margin
        self.floor: datetime | None = None  # never catch up from before this
        self.last_seen: datetime | None = None
        self.delivered: dict[tuple[uuid.UUID, str, datetime], datetime] = {}
        self.unsaved = 0  # events delivered since the position was last written

    def start(self, at: datetime) -> None:
        self.floor = self.floor or at
        self.last_seen = self.last_seen or at

    def catch_up_from(self) -> datetime:
        assert self.floor is not None and self.last_seen is not None
        return max(self.floor, self.last_seen - self.margin)

    def fresh(self, event: AlertEvent) -> bool:
        """Record ``event`` as delivered, unless it already was."""
        if event.key in self.delivered:
            return False
        self.delivered[event.key] = event.changed_at
        if self.last_seen is None or event.changed_at > self.last_seen:
            self.last_seen = event.changed_at
        horizon = self.last_seen - self.margin
        for key in [k for k, at in self.delivered.items() if at < horizon]:
            del self.delivered[key]
        self.unsaved += 1
        return True

    def restore(self, since: datetime, changed_at: datetime, delivered: str) -> None:
        """A named consumer's stored position: resume right after it."""
        self.floor = since
        self.last_seen = changed_at
        for alert_id, status, at in json.loads(delivered):
            self.delivered[(uuid.UUID(alert_id), status, datetime.fromisoformat(at))] = (
                datetime.fromisoformat(at)
            )

    def as_json(self) -> str:
        return json.dumps([[str(a), s, at.isoformat()] for a, s, at in self.delivered])


class _Consumer:
    """A named consumer's position in alert_listener_positions."""

    def __init__(self, name: str) -> None:
        if not _CONSUMER.match(name):
            raise ConfigurationError(
                f"consumer {name[:120]!r}: 1 to 100 letters, digits or '_.:-' (it names a "
                f"row of alert_listener_positions)"
            )
        self.name = name

    async def load(self, conn: Any, position: _Position) -> bool:
        """Restore the stored position into ``position``; False when there is none."""
        try:
            row = await conn.fetchrow(_LOAD, self.name)
        except asyncpg.UndefinedTableError:
            raise ConfigurationError(
                f"consumer {self.name!r}: its position is kept in alert_listener_positions, "
                f"which migration 000021 creates, and this database has not reached it: "
                f"run the migrations first"
            ) from None
        if row is None:
            return False
        position.restore(row["since"], row["changed_at"], row["delivered"])
        return True

    async def save(self, conn: Any, position: _Position) -> None:
        if position.floor is None or position.last_seen is None:
            return
        await conn.execute(_SAVE, self.name, position.floor, position.last_seen, position.as_json())
        position.unsaved = 0


async def listen_alerts(
    dsn: str,
    *,
    since: datetime | None = None,
    consumer: str | None = None,
    catch_up_margin: timedelta = timedelta(seconds=60),
    initial_backoff: float = 0.2,
    max_backoff: float = 30.0,
    health_check_interval: float = 10.0,
) -> AsyncIterator[AlertEvent]:
    """Yield alert changes forever (until the caller stops iterating).

    ``since``: also deliver changes from this time on at the first connection
    (default: only changes from now on). ``consumer``: a name under which the
    position is kept in ``alert_listener_positions``: a listener started again with
    the same name resumes right after the last change delivered under it (``since``
    then applies only to its very first start). The position moves past an event
    once the caller asks for the next one or closes the iteration; it is written
    when the listener waits for more, every SAVE_EVERY events, and on close, so a
    process killed outright delivers again at most what it delivered since.
    ``catch_up_margin``: how far before the last delivered change a catch-up looks
    again, to cover transactions that committed late.

    While it runs it reconnects whatever the error, with backoff from
    ``initial_backoff`` doubling to ``max_backoff`` seconds, logging each failure
    (errors after QUIET_FAILURES in a row). Only the first connection raises, on a
    setting that cannot work (a wrong password or database, a role that may not log
    in or read alerts, a consumer without migration 000021): a typed error.
    """
    dsn, _ = split_migrations_table(dsn)  # the DSN a service also gives golang-migrate
    validate_dsn(dsn)
    named = _Consumer(consumer) if consumer is not None else None
    position = _Position(catch_up_margin)
    position.floor = since
    position.last_seen = since
    first, failures, backoff = True, 0, initial_backoff
    while True:
        sub: _Subscription | None = None
        try:
            # LISTEN first, then catch up: a change in between arrives both ways and
            # is delivered once.
            with typed_errors(dsn, "listen for alerts"):
                sub = await _subscribe(dsn)
                if first:
                    await _start(sub.conn, named, position)
                caught_up = await _catch_up(sub, position)
            first, failures, backoff = False, 0, initial_backoff
            for event in caught_up:
                if position.fresh(event):
                    yield event
            while True:
                if named is not None and position.unsaved:
                    await named.save(sub.conn, position)
                try:
                    item = await asyncio.wait_for(sub.queue.get(), timeout=health_check_interval)
                except asyncio.TimeoutError:
                    await sub.conn.execute("SELECT 1")  # an idle dead connection shows here
                    continue
                if isinstance(item, _Lost):
                    raise ConnectionResetError("listener connection closed")
                for event in await _expand(sub, item):
                    if position.fresh(event):
                        yield event
                        if named is not None and position.unsaved >= SAVE_EVERY:
                            await named.save(sub.conn, position)
        except Exception as exc:
            if first and not _worth_retrying(exc):
                raise
            failures += 1
            _log_failure(exc, dsn, failures, backoff)
        finally:
            await _close(sub, named, position)
        await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
        backoff = min(backoff * 2, max_backoff)


async def _start(conn: Any, named: _Consumer | None, position: _Position) -> None:
    """Where the first connection starts: the consumer's stored position, else ``since``
    or now (written at once for a consumer, so that a restart finds it). A role that
    row-level security limits is refused: it would read no tenant's alerts."""
    role = await session_role(conn)
    if not role.bypasses_rls:
        raise RowSecurityError(
            f"role {role.name!r} cannot listen for alerts: row-level security limits what it "
            f"reads (no BYPASSRLS), so it would deliver nothing and say nothing. Connect as "
            f"the deployment's jobs role, the role with BYPASSRLS (docs/operations.md).",
            role=role.name,
        )
    if named is not None and await named.load(conn, position):
        logger.info("alert listener %r resumes after %s", named.name, position.last_seen)
        return
    position.start(await conn.fetchval("SELECT now()"))
    if named is not None:
        await named.save(conn, position)


async def _catch_up(sub: _Subscription, position: _Position) -> list[AlertEvent]:
    """The changes since the last one delivered (the margin before it included)."""
    rows = await sub.fetch(_CATCH_UP, position.catch_up_from())
    return [_event(row, _operation(row), "catch_up") for row in rows]


def _operation(row: Any) -> Operation | None:
    """A new alert's created_at and status_changed_at are its transaction's now(); a
    status change stamps clock_timestamp() (migration 000020)."""
    if row["created_at"] is None:
        return None
    return "INSERT" if row["created_at"] == row["status_changed_at"] else "UPDATE"


def _worth_retrying(exc: BaseException) -> bool:
    """On the first connection: only what may pass by itself."""
    if isinstance(exc, DatabaseConnectionError):
        return exc.transient
    return is_transient(exc) or is_connection_lost(exc)


def _log_failure(exc: BaseException, dsn: str, failures: int, backoff: float) -> None:
    level = logging.WARNING if failures <= QUIET_FAILURES else logging.ERROR
    logger.log(
        level,
        "alert listener: %s (failure %d in a row); reconnecting in %.1fs",
        describe(exc, dsn),
        failures,
        backoff,
    )


async def _close(sub: _Subscription | None, named: _Consumer | None, position: _Position) -> None:
    """Write what was delivered (the caller had it), then drop the connection."""
    if sub is None:
        return
    conn = sub.conn
    if named is not None and position.unsaved and not conn.is_closed():
        try:
            await asyncio.wait_for(named.save(conn, position), 5)
        except Exception as exc:  # a lost connection: the next start delivers them again
            logger.warning(
                "alert listener %r could not write its position: %s", named.name, describe(exc)
            )
    if not conn.is_closed():
        conn.terminate()


def _event(
    row: Any, operation: Operation | None, source: Literal["notify", "catch_up"]
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


async def _expand(sub: _Subscription, item: AlertEvent | _Statement) -> list[AlertEvent]:
    """The alerts a notification names: itself (per-row), or read from the table."""
    if isinstance(item, AlertEvent):
        return [item]
    if item.alerts is None:  # a bulk change: read what it left
        rows = await sub.fetch(_BY_RANGE, item.since, item.until)
        return [_event(row, item.operation, "notify") for row in rows]
    # The status each alert had then, with what does not change read from the table.
    ids = [a for a, _, _ in item.alerts]
    found = {r["id"]: r for r in await sub.fetch(_BY_IDS, ids)}
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


class _Subscription(NamedTuple):
    """A LISTENing connection; its notifications and its end arrive on ``queue``."""

    conn: Any
    queue: asyncio.Queue[AlertEvent | _Statement | _Lost]
    created_at: str  # how its queries read created_at (NULL before migration 000020)

    async def fetch(self, template: str, *args: Any) -> list[Any]:
        return list(await self.conn.fetch(template.format(created_at=self.created_at), *args))


async def _subscribe(dsn: str) -> _Subscription:
    """Connect and LISTEN; notifications and the connection's end arrive on the queue."""
    queue: asyncio.Queue[AlertEvent | _Statement | _Lost] = asyncio.Queue()

    def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            queue.put_nowait(parse_payload(payload))
        except (ValueError, KeyError) as exc:
            logger.warning("ignoring malformed alert notification: %s", exc)

    # Behind a pooler that keeps no session, connect() refuses: LISTEN would hear only
    # while the server connection it ran on happened to be ours (1 notification of 4
    # was delivered that way, and no error).
    conn = await connect(
        dsn, attempts=1, application_name="silentpulse-db listener", need=NEEDS_A_SESSION
    )
    try:
        conn.add_termination_listener(lambda _conn: queue.put_nowait(_Lost()))
        await conn.add_listener(ALERT_CHANNEL, on_notify)
        has_created_at = await conn.fetchval(_HAS_CREATED_AT)
    except BaseException:
        conn.terminate()
        raise
    created_at = "created_at" if has_created_at else "NULL::timestamptz"
    return _Subscription(conn, queue, created_at)

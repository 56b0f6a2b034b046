"""A named consumer: one active process at a time, and its position in the log.

The position is a row of ``alert_listener_positions`` (migration 000021; the log
position since 000022). Which process delivers is decided by a session-level
advisory lock keyed by the name, held by the listener's own connection: a second
process with the same name waits as a standby and takes the lock (and the row)
over when the first one's session ends, whether it closed, was killed, or its
host vanished (the server drops the session once TCP keepalives fail).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..errors import ConfigurationError
from .events import AlertEvent, Position
from .nodes import Nodes
from .wakeups import Link

logger = logging.getLogger("silentpulse_db.listener")

_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")  # as migration 000021 checks it
# The lock's first key: the space of alert consumers, apart from golang-migrate's
# one-bigint key (two int4 keys are another lock space in pg_locks) and any other.
_LOCK_SPACE = 0x53504143  # "SPAC"

_LOAD = """
    SELECT log_xid, log_seq, delivered,
           greatest(since, least(changed_at, now()) - $2::interval) AS threshold
    FROM alert_listener_positions WHERE consumer = $1
"""
_CREATE = """
    INSERT INTO alert_listener_positions (consumer, since, changed_at, log_xid, log_seq)
    VALUES ($1, now(), now(), $2, $3)
"""
# On Citus, once the log is distributed (migration 000059's column): the positions on the
# other node groups too.
_LOAD_NODES = _LOAD.replace("SELECT log_xid,", "SELECT log_nodes, log_xid,")
_CREATE_NODES = """
    INSERT INTO alert_listener_positions (consumer, since, changed_at, log_xid, log_seq, log_nodes)
    VALUES ($1, now(), now(), $2, $3, $4::jsonb)
"""
# changed_at keeps meaning something to a listener of an older library version (a
# rollback): the server's time of the last change delivered. The position never
# moves back, even from a process that lost the lock without noticing yet.
_SAVE = """
    UPDATE alert_listener_positions
    SET log_xid = $2, log_seq = $3, changed_at = coalesce($4, changed_at),
        delivered = '[]'::jsonb, updated_at = now()
    WHERE consumer = $1
      AND (log_xid IS NULL OR (log_xid, log_seq) <= ($2::xid8, $3::bigint))
"""
# The same on every node group: none moves back. A group the row knows and the new
# positions do not (or say none of, or put before it) keeps the row as it is.
_SAVE_NODES = """
    UPDATE alert_listener_positions p
    SET log_xid = $2, log_seq = $3, log_nodes = $5::jsonb, changed_at = coalesce($4, changed_at),
        delivered = '[]'::jsonb, updated_at = now()
    WHERE consumer = $1
      AND (log_xid IS NULL OR (log_xid, log_seq) <= ($2::xid8, $3::bigint))
      AND NOT EXISTS (
          SELECT 1 FROM jsonb_each(coalesce(p.log_nodes -> 'at', '{}'::jsonb)) AS old (node, pos)
          WHERE jsonb_typeof(old.pos) = 'array'
            AND (jsonb_typeof($5::jsonb -> 'at' -> old.node) IS DISTINCT FROM 'array'
                 OR ((old.pos ->> 0)::xid8, (old.pos ->> 1)::bigint)
                    > (($5::jsonb -> 'at' -> old.node ->> 0)::xid8,
                       ($5::jsonb -> 'at' -> old.node ->> 1)::bigint)))
"""


def lock_keys(name: str) -> tuple[int, int]:
    """The advisory lock of consumer ``name``: (space, a 32-bit hash of the name)."""
    digest = hashlib.blake2b(name.encode(), digest_size=4).digest()
    return _LOCK_SPACE, int.from_bytes(digest, "big", signed=True)


def checked_name(name: str) -> str:
    if not _NAME.match(name):
        raise ConfigurationError(
            f"consumer {name[:120]!r}: 1 to 100 letters, digits or '_.:-' (it names a "
            f"row of alert_listener_positions)"
        )
    return name


async def try_lock(conn: Any, name: str) -> bool:
    """Become the one active process of ``name``, if no other session is."""
    space, key = lock_keys(name)
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", space, key))


async def take_the_lead(link: Link, name: str, poll: float, on_standby: Callable[[], None]) -> None:
    """Return once this process is the one that delivers under ``name``; until then,
    stand by (``on_standby()`` once), trying the lock every ``poll`` seconds (jittered).
    ConnectionLost if the connection ends meanwhile."""
    standing_by = False
    while not await try_lock(link.conn, name):
        if not standing_by:
            logger.info(
                "alert listener %r: another process is delivering under this name; "
                "standing by to take over",
                name,
            )
            on_standby()
            standing_by = True
        await link.sleep(poll * random.uniform(0.8, 1.2))
    if standing_by:
        logger.info("alert listener %r: took over", name)


@dataclass(frozen=True)
class Carried:
    """A position kept by a listener from before migration 000022 (by time): what it
    delivered, to carry over into the log once, skipping what it already had.

    ``threshold``: its last change's time less the margin it caught up with, and never
    later than now less that margin (a tenant's status_changed_at in the future poisoned
    positions by time), nor earlier than its first start (it delivered nothing older);
    changes before it, and those in ``delivered``, it had."""

    threshold: datetime
    delivered: frozenset[tuple[uuid.UUID, str, datetime]]

    def had(self, event: AlertEvent) -> bool:
        return event.changed_at < self.threshold or event.key in self.delivered


@dataclass(frozen=True)
class Stored:
    """A consumer's row: its log position, or what to carry over when it has none."""

    position: Position | None
    carried: Carried | None
    nodes: Nodes | None = None  # on the other node groups, once the log is distributed


async def load(conn: Any, name: str, margin: timedelta, distributed: bool = False) -> Stored | None:
    row = await conn.fetchrow(_LOAD_NODES if distributed else _LOAD, name, margin)
    if row is None:
        return None
    nodes = Nodes.from_json(row["log_nodes"]) if distributed else None
    if row["log_xid"] is not None:
        return Stored(Position(row["log_xid"], row["log_seq"]), None, nodes)
    delivered = frozenset(
        (uuid.UUID(alert), status, datetime.fromisoformat(at))
        for alert, status, at in json.loads(row["delivered"])
    )
    return Stored(None, Carried(row["threshold"], delivered))


async def create(conn: Any, name: str, position: Position, nodes: Nodes | None = None) -> None:
    if nodes is None:
        await conn.execute(_CREATE, name, position.xid, position.seq)
    else:
        await conn.execute(_CREATE_NODES, name, position.xid, position.seq, nodes.to_json())


async def save(
    conn: Any,
    name: str,
    position: Position,
    recorded_at: datetime | None,
    nodes: Nodes | None = None,
) -> None:
    if nodes is None:
        await conn.execute(_SAVE, name, position.xid, position.seq, recorded_at)
    else:
        await conn.execute(
            _SAVE_NODES, name, position.xid, position.seq, recorded_at, nodes.to_json()
        )


# Alerts changed before the log existed, which a carried-over position has not had:
# their latest state, as the listener before 000022 caught up (with their operation
# from created_at, migration 000020). An alert is (tenant_id, id): an id is unique
# within its tenant only (000044), and another tenant's alert of the same id in the
# log says nothing of this one. Matched on it, Citus runs the anti-join on each shard.
_BEFORE_THE_LOG = """
    SELECT a.id, a.tenant_id, a.status, a.started_at, a.status_changed_at, a.created_at
    FROM alerts a
    WHERE a.status_changed_at >= $1
      AND NOT EXISTS (SELECT 1 FROM alert_changes c
                      WHERE c.tenant_id = a.tenant_id AND c.alert_id = a.id
                        AND c.status = a.status
                        AND c.changed_at = a.status_changed_at)
    ORDER BY a.status_changed_at, a.tenant_id, a.id
"""


async def before_the_log(conn: Any, carried: Carried) -> list[AlertEvent]:
    events = []
    for row in await conn.fetch(_BEFORE_THE_LOG, carried.threshold):
        created = row["created_at"]
        event = AlertEvent(
            alert_id=row["id"],
            tenant_id=row["tenant_id"],
            status=row["status"],
            started_at=row["started_at"],
            changed_at=row["status_changed_at"],
            operation=None
            if created is None
            else ("INSERT" if created == row["status_changed_at"] else "UPDATE"),
            source="catch_up",
            id=f"{row['id']}@{row['status_changed_at'].isoformat()}",
            recorded_at=None,
        )
        if not carried.had(event):
            events.append(event)
    return events

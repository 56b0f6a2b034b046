"""Reading the alert change log (migration 000022) in order, below the horizon.

A transaction's rows share its xid and are ordered by seq. The reader takes only
rows whose xid is below ``pg_snapshot_xmin(pg_current_snapshot())``: every
transaction under it has ended, so nothing can still commit behind the position,
and a rolled-back one left no row to wait for. Rows above it that are already
visible (committed while an older transaction is still open) are *held back*:
read again once that transaction ends, which no notification announces.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .events import AlertEvent, Position, Source, from_log

LOG_TABLE = "alert_changes"
PRUNED_TABLE = "alert_changes_pruned"
LOG_VERSION = 22  # the core migration that creates them
# Whether it is there, and committed with its version (000022 runs in one transaction).
HAS_LOG = (
    "SELECT to_regclass('alert_changes') IS NOT NULL "
    "AND to_regclass('alert_changes_pruned') IS NOT NULL"
)

# events.from_log reads the first nine columns by position.
READ = """
    SELECT c.xid, c.seq, c.tenant_id, c.alert_id, c.started_at, c.operation, c.status,
           c.changed_at, c.recorded_at,
           c.xid < (SELECT pg_snapshot_xmin(pg_current_snapshot())) AS settled
    FROM alert_changes c
    WHERE (c.xid, c.seq) > ($1::xid8, $2::bigint)
    ORDER BY c.xid, c.seq
    LIMIT $3
"""
# Where "from now on" starts, in one snapshot: the horizon (the transactions still
# open may yet commit rows above it) and the transactions above it that committed
# already (their rows are visible now: not "from now on").
_NOW = """
    SELECT h.xmin, ARRAY(SELECT DISTINCT c.xid FROM alert_changes c WHERE c.xid >= h.xmin)
    FROM (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) h
"""
_SINCE = "SELECT xid FROM alert_changes WHERE recorded_at >= $1 ORDER BY xid, seq LIMIT 1"
_PRUNED = "SELECT xid, seq, pruned_at FROM alert_changes_pruned"
# Migration 000059's column: retention's marks on the other node groups, on Citus.
_PRUNED_NODES = "SELECT xid, seq, pruned_at, log_nodes FROM alert_changes_pruned"


@dataclass(frozen=True)
class Batch:
    """Rows read in order; ``held_back``: a committed row waits for an older transaction
    (its xid is given); ``full``: the limit was reached, more may follow at once."""

    changes: list[tuple[Position, AlertEvent]]
    held_back: int | None
    full: bool


async def read_after(conn: Any, position: Position, limit: int, source: Source) -> Batch:
    rows = await conn.fetch(READ, position.xid, position.seq, limit)
    changes: list[tuple[Position, AlertEvent]] = []
    for row in rows:
        if not row[9]:  # settled
            return Batch(changes, held_back=row[0], full=False)
        changes.append(from_log(row, source))
    return Batch(changes, held_back=None, full=len(rows) == limit)


@dataclass(frozen=True)
class Start:
    """Where a listener starts: ``position``, skipping the rows of ``committed`` (the
    transactions above it that had committed already)."""

    position: Position
    committed: frozenset[int] = frozenset()


async def from_now(conn: Any) -> Start:
    """Every change of a transaction not ended yet, and none committed before."""
    xmin, committed = await conn.fetchrow(_NOW)
    return Start(Position(xmin, 0), frozenset(committed))


async def from_time(conn: Any, since: datetime) -> Start:
    """Before the first change recorded at or after ``since`` (the server's time);
    from now when there is none."""
    xid = await conn.fetchval(_SINCE, since)
    return Start(Position(xid, 0)) if xid is not None else await from_now(conn)


@dataclass(frozen=True)
class Pruned:
    """Retention's mark: the highest position it deleted (on node group 0; on the others,
    ``nodes``, once the log is distributed), and when."""

    position: Position
    at: datetime
    nodes: dict[int, Position] = field(default_factory=dict)


async def pruned(conn: Any, distributed: bool = False) -> Pruned | None:
    row = await conn.fetchrow(_PRUNED_NODES if distributed else _PRUNED)
    if row is None:
        return None
    nodes = {}
    if distributed and row["log_nodes"] is not None:
        nodes = {
            int(group): Position(int(xid), int(seq))
            for group, (xid, seq) in json.loads(row["log_nodes"]).items()
        }
    return Pruned(Position(row["xid"], row["seq"]), row["pruned_at"], nodes)

"""Retention: SilentPulse's rules, applied by dropping whole expired partitions, and
the alert change log pruned behind its consumers (schema/alert_log.py).

Alerts go 365 days after they close and never while open (an open or
acknowledged alert keeps its whole partition); audit logs after 730 days; raw
observations after 90 days. A default partition is never dropped. The job
must see every row: a role that row-level security filters is refused, but for
the tables' owner, which lifts FORCE ROW LEVEL SECURITY for the rolled-back
transaction in which it judges a partition (schema/tenancy.seeing_every_row).
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

import asyncpg

from ..defaults import PARTITION_LOCK_TIMEOUT
from ..results.schema_jobs import RetentionAction, RetentionReport
from ..settings import milliseconds
from .alert_log import prune_alert_log
from .partitions import (
    RETENTION,
    Partition,
    PartitionedTable,
    partitioned_tables,
    require_unfiltered,
)
from .tenancy import seeing_every_row

logger = logging.getLogger("silentpulse_db.partitions")


async def apply_retention(
    conn: Any,
    *,
    dry_run: bool,
    now: datetime | None = None,
    lock_timeout: float = PARTITION_LOCK_TIMEOUT,
) -> RetentionReport:
    """Detach and drop every expired partition (``dry_run``: only say which)."""
    moment = now or datetime.now(timezone.utc)
    tables = [t for t in await partitioned_tables(conn) if t.name in RETENTION]
    lifted = await require_unfiltered(conn, tables, "apply retention")
    actions: list[RetentionAction] = []
    for table in tables:
        cutoff = moment - RETENTION[table.name]
        for part in table.partitions:
            if part.hi is None or part.hi > cutoff:
                continue  # the default partition, or not old enough
            if table.name in lifted and table.name == "alerts":  # the one judged by its rows
                action = await _judge_as_owner(conn, table, part, cutoff, lock_timeout)
            else:
                action = await _judge(conn, table, part, cutoff)
            if action.dropped and not dry_run:
                await _drop(conn, table, part, lock_timeout)
            logger.info("%s%s", "(dry run) " if dry_run else "", action)
            actions.append(action)
    pruned = await prune_alert_log(conn, dry_run=dry_run, now=moment, lock_timeout=lock_timeout)
    if pruned is not None and pruned.dropped:
        logger.info("%s%s", "(dry run) " if dry_run else "", pruned)
        actions.append(pruned)
    return RetentionReport(dry_run=dry_run, actions=tuple(actions))


async def _judge_as_owner(
    conn: Any, table: PartitionedTable, part: Partition, cutoff: datetime, lock_timeout: float
) -> RetentionAction:
    """_judge, seeing every row of ``part`` as its owner; a busy partition is kept."""
    try:
        async with seeing_every_row(conn, [part.name], lock_timeout):
            return await _judge(conn, table, part, cutoff)
    except asyncpg.LockNotAvailableError:
        reason = f"busy (no lock within {lock_timeout:g} s); will be retried"
        return RetentionAction(table.name, part.name, False, reason)


async def _judge(
    conn: Any, table: PartitionedTable, part: Partition, cutoff: datetime
) -> RetentionAction:
    age = RETENTION[table.name].days
    if table.name != "alerts":
        return RetentionAction(table.name, part.name, True, f"older than {age} days")
    row = await conn.fetchrow(
        f"SELECT count(*) FILTER (WHERE status <> 'resolved') AS open, "
        f"count(*) FILTER (WHERE status = 'resolved' AND resolved_at > $1) AS recent "
        f"FROM ONLY {part.name}",
        cutoff,
    )
    if row["open"]:
        return RetentionAction(
            table.name,
            part.name,
            False,
            f"still holds {row['open']} open or acknowledged alert(s): never dropped while open",
        )
    if row["recent"]:
        return RetentionAction(
            table.name,
            part.name,
            False,
            f"{row['recent']} alert(s) closed less than {age} days ago",
        )
    return RetentionAction(table.name, part.name, True, f"every alert closed over {age} days ago")


async def _drop(conn: Any, table: PartitionedTable, part: Partition, lock_timeout: float) -> None:
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = {milliseconds(lock_timeout)}")
        await conn.execute(f"ALTER TABLE {table.parent} DETACH PARTITION {part.name}")
        await conn.execute(f"DROP TABLE {part.name}")

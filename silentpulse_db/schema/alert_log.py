"""Retention of the alert change log (migration 000022): bounded growth, no silent loss.

A change is deleted once every named consumer has passed it and it is older than
ALERT_LOG_KEEP (listeners without a name, and ``since=``, read from memory or from a
time: they get that long), or once it is older than ALERT_LOG_MAX_AGE whoever still
needs it (a consumer gone for good must not keep the log growing). A consumer not
carried over to the log yet counts as needing all of it. The highest position
deleted is kept in ``alert_changes_pruned``: a listener behind it gets AlertGapError
(or skips ahead, if told to), never a silent loss.

The job must see every consumer's row and every change: a role that bypasses
row-level security (the jobs role), or the tables' owner, which lifts FORCE ROW
LEVEL SECURITY inside the deleting transaction and puts it back before the commit
(no other session ever sees the tables without it; they wait on the lock meanwhile).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial
from typing import Any

from ..defaults import ALERT_LOG_KEEP, ALERT_LOG_MAX_AGE
from ..errors import PermissionDeniedError
from ..listener.nodes import citus_present, log_distributed
from ..results.schema_jobs import RetentionAction
from ..settings import milliseconds
from .alert_log_nodes import prune_by_node
from .tenancy import rls_filters, seeing_every_row

TABLES = ("alert_changes", "alert_listener_positions", "alert_changes_pruned")

_DOOMED = """
    WITH slowest AS (
        SELECT coalesce(log_xid, '0'::xid8) AS xid, coalesce(log_seq, 0) AS seq
        FROM alert_listener_positions ORDER BY 1, 2 LIMIT 1
    )
    SELECT c.xid, c.seq, c.recorded_at < $2 AS expired FROM alert_changes c
    WHERE c.recorded_at < $2
       OR (c.recorded_at < $1
           AND NOT EXISTS (SELECT 1 FROM slowest s WHERE (c.xid, c.seq) > (s.xid, s.seq)))
"""
_PRUNE = f"""
    WITH doomed AS ({_DOOMED}),
    gone AS (
        DELETE FROM alert_changes c USING doomed d WHERE (c.xid, c.seq) = (d.xid, d.seq)
        RETURNING c.xid, c.seq
    ),
    marked AS (
        INSERT INTO alert_changes_pruned AS p (xid, seq)
        SELECT xid, seq FROM gone ORDER BY xid DESC, seq DESC LIMIT 1
        ON CONFLICT (one) DO UPDATE SET xid = EXCLUDED.xid, seq = EXCLUDED.seq, pruned_at = now()
        WHERE (p.xid, p.seq) < (EXCLUDED.xid, EXCLUDED.seq)
    )
    SELECT count(*) AS passed, count(*) FILTER (WHERE expired) AS expired FROM doomed
"""
_COUNT = f"SELECT count(*) AS passed, count(*) FILTER (WHERE expired) AS expired FROM ({_DOOMED}) d"


async def prune_alert_log(
    conn: Any,
    *,
    dry_run: bool,
    now: datetime,
    lock_timeout: float,
    keep: timedelta = ALERT_LOG_KEEP,
    max_age: timedelta = ALERT_LOG_MAX_AGE,
) -> RetentionAction | None:
    """Delete what no consumer needs any more (``dry_run``: count it); None when the
    database has no log (before migration 000022)."""
    if not await conn.fetchval("SELECT to_regclass('alert_changes') IS NOT NULL"):
        return None
    lifted = await _lifted_as_owner(conn)
    args = (now - keep, now - max_age)
    if await citus_present(conn) and await log_distributed(conn):
        owner = partial(lift, conn, lock_timeout) if lifted else None
        passed, expired = await prune_by_node(conn, dry_run, *args, owner, TABLES)
        return action(passed, expired, keep, max_age)
    if dry_run and lifted:
        async with seeing_every_row(conn, TABLES, lock_timeout):
            row = await conn.fetchrow(_COUNT, *args)
    elif dry_run:
        row = await conn.fetchrow(_COUNT, *args)
    else:
        async with conn.transaction():
            if lifted:
                await lift(conn, lock_timeout)
            row = await conn.fetchrow(_PRUNE, *args)
            if lifted:
                for table in TABLES:
                    await conn.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    return action(row["passed"], row["expired"], keep, max_age)


def action(deleted: int, expired: int, keep: timedelta, max_age: timedelta) -> RetentionAction:
    """Read as "drop 120 change(s) of alert_changes: 100 every named consumer has passed
    (older than 1 day), 20 older than 30 days"."""
    reason = (
        f"{deleted - expired} every named consumer has passed (older than {_days(keep)}), "
        f"{expired} older than {_days(max_age)}"
    )
    return RetentionAction(
        "alert_changes", f"{deleted} change(s) of alert_changes", deleted > 0, reason
    )


def _days(age: timedelta) -> str:
    return f"{age.days} days" if age.days != 1 else "1 day"


async def _lifted_as_owner(conn: Any) -> bool:
    """Whether row-level security hides rows of the log's tables from this role, which
    then must own them; refused otherwise."""
    for table in TABLES:
        filtered = await rls_filters(conn, table)
        if filtered is None:
            continue
        if filtered.owner:
            return True
        raise PermissionDeniedError(
            f"role {filtered.role!r} may not prune the alert change log: row-level security "
            f"hides rows of {table} from it, so it would judge changes by what it cannot see. "
            f"Run retention as the jobs role, which has BYPASSRLS, or as the owner "
            f"(docs/operations.md).",
            role=filtered.role,
            privilege="BYPASSRLS",
            object=f"table {table}",
        )
    return False


async def lift(conn: Any, lock_timeout: float) -> None:
    await conn.execute(f"SET LOCAL lock_timeout = {milliseconds(lock_timeout)}")
    for table in TABLES:
        await conn.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")

"""The schema jobs as public functions over a DSN: what cron and the CLI run.

silentpulse-db partitions [--ahead N]     # daily: months ahead, stray rows moved
silentpulse-db retention [--dry-run]      # daily: expired partitions dropped
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from ..defaults import CONNECT_ATTEMPTS, CONNECT_WAIT, PARTITIONS_AHEAD
from ..errors import SilentPulseDBError
from ..postgres.connect import close_quietly, connect
from ..postgres.translate import translate, typed_errors
from ..results import PartitionReport, RetentionReport
from .partitions import ensure_partitions
from .retention import apply_retention

logger = logging.getLogger("silentpulse_db.partitions")

# Anything to do at start-up? Months of the window without their partition
# (by name), or a partition without its parent's row-level security.
_NEEDS_WORK = r"""
    SELECT to_regprocedure('silentpulse_create_monthly_partition(regclass,date)') IS NOT NULL
       AND (EXISTS (
               SELECT 1 FROM pg_partitioned_table pt
               JOIN pg_class c ON c.oid = pt.partrelid
               CROSS JOIN generate_series(0, $1::int) AS m
               WHERE c.relnamespace = current_schema()::regnamespace AND pt.partstrat = 'r'
                 AND to_regclass(format('%I.%I', current_schema(), c.relname || '_p' || to_char(
                       date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => m),
                       'YYYY_MM'))) IS NULL)
            OR EXISTS (
               SELECT 1 FROM pg_inherits i
               JOIN pg_class p ON p.oid = i.inhparent
               JOIN pg_class c ON c.oid = i.inhrelid
               WHERE p.relrowsecurity AND p.relnamespace = current_schema()::regnamespace
                 AND NOT (c.relrowsecurity AND c.relforcerowsecurity)))
"""


async def maintain_partitions(
    dsn: str,
    *,
    ahead: int = PARTITIONS_AHEAD,
    now: datetime | None = None,
    attempts: int = CONNECT_ATTEMPTS,
    wait: float = CONNECT_WAIT,
) -> PartitionReport:
    """The partition job: months ahead, every default partition emptied into its months,
    every partition guarded by row-level security. Run it daily (docs/operations.md)."""
    with typed_errors(dsn, "maintain partitions"):
        conn = await connect(dsn, attempts=attempts, wait=wait)
        try:
            return await ensure_partitions(conn, ahead=ahead, now=now, stray_months=True)
        finally:
            await close_quietly(conn)


async def enforce_retention(
    dsn: str,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    attempts: int = CONNECT_ATTEMPTS,
    wait: float = CONNECT_WAIT,
) -> RetentionReport:
    """The retention job: drop whole expired partitions; ``dry_run`` changes nothing."""
    with typed_errors(dsn, "apply retention"):
        conn = await connect(dsn, attempts=attempts, wait=wait)
        try:
            return await apply_retention(conn, dry_run=dry_run, now=now)
        finally:
            await close_quietly(conn)


async def partitions_at_startup(conn: Any, dsn: str, ahead: int) -> PartitionReport | None:
    """What run_migrations does after migrating: cheap when nothing is due, never fatal.

    A busy table, a missing privilege or any other failure is a warning: the
    service starts, and the daily job (or the next start) tries again.
    """
    try:
        if not await conn.fetchval(_NEEDS_WORK, ahead):
            return None
        return await ensure_partitions(conn, ahead=ahead)
    except Exception as exc:
        typed = exc if isinstance(exc, SilentPulseDBError) else None
        typed = typed or translate(exc, role=await _role(conn), doing="create partitions", dsn=dsn)
        if typed is None:
            raise
        logger.warning("partitions not maintained at start-up: %s", typed)
        return None


async def _role(conn: Any) -> str:
    try:
        return str(await conn.fetchval("SELECT current_user"))
    except Exception:
        return "<unknown>"

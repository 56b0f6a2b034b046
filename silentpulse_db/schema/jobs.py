"""The schema jobs as public functions over a DSN: what cron and the CLI run.

silentpulse-db partitions [--ahead N]     # daily: months ahead, stray rows moved
silentpulse-db retention [--dry-run]      # daily: expired partitions dropped
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..defaults import PARTITIONS_AHEAD, PARTITIONS_MAX_AHEAD
from ..postgres.connect import close_quietly
from ..postgres.connect import connect as connected
from ..postgres.translate import typed_errors
from ..results.schema_jobs import PartitionReport, RetentionReport
from ..settings import CONNECTING, DEFAULT_CONNECT, ConnectRetry, settings
from .partitions import ensure_partitions, months_ahead
from .retention import apply_retention


async def maintain_partitions(
    dsn: str,
    *,
    ahead: int = PARTITIONS_AHEAD,
    now: datetime | None = None,
    max_ahead: int = PARTITIONS_MAX_AHEAD,
    connect: ConnectRetry = DEFAULT_CONNECT,
    **deprecated: Any,
) -> PartitionReport:
    """The partition job: months ahead, every default partition emptied into its months,
    every partition guarded by row-level security. Run it daily (docs/operations.md).

    No month after the next ``max_ahead`` is created (ConfigurationError if ``ahead``
    asks for one): rows dated past it, or where no partition can be, stay in the
    default partition and are reported in ``skipped``, by table and month."""
    retry = settings("maintain_partitions", deprecated, CONNECTING, connect=connect).connect
    months_ahead(now, ahead, max_ahead)  # a wrong number fails before connecting
    with typed_errors(dsn, "maintain partitions"):
        conn = await connected(dsn, retry)
        try:
            return await ensure_partitions(
                conn, ahead=ahead, now=now, stray_months=True, max_ahead=max_ahead
            )
        finally:
            await close_quietly(conn)


async def enforce_retention(
    dsn: str,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    connect: ConnectRetry = DEFAULT_CONNECT,
    **deprecated: Any,
) -> RetentionReport:
    """The retention job: drop whole expired partitions; ``dry_run`` changes nothing."""
    retry = settings("enforce_retention", deprecated, CONNECTING, connect=connect).connect
    with typed_errors(dsn, "apply retention"):
        conn = await connected(dsn, retry)
        try:
            return await apply_retention(conn, dry_run=dry_run, now=now)
        finally:
            await close_quietly(conn)

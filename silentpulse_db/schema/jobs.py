"""The schema jobs as public functions over a DSN: what cron and the CLI run.

silentpulse-db partitions [--ahead N]     # daily: months ahead, stray rows moved
silentpulse-db retention [--dry-run]      # daily: expired partitions dropped
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, NamedTuple

from ..defaults import PARTITIONS_AHEAD, PARTITIONS_MAX_AHEAD
from ..errors import InvalidArgumentError, SilentPulseDBError
from ..postgres.connect import close_quietly
from ..postgres.connect import connect as connected
from ..postgres.translate import translate, typed_errors
from ..results.schema_jobs import PartitionReport, RetentionReport
from ..settings import CONNECTING, DEFAULT_CONNECT, ConnectRetry, settings
from .partitions import PARTITIONED, add_months, ensure_partitions, month_of, months_ahead
from .retention import apply_retention

logger = logging.getLogger("silentpulse_db.partitions")


def partitions_due(ahead: int, now: datetime | None = None) -> str:
    """A boolean SQL expression: is a partition of this month or of the furthest one
    missing for a table the packaged schema partitions?

    Name lookups only (syscache): a no-op start-up pays about 0.1 ms for it, where
    reading pg_class or pg_inherits in a fresh backend cost 1-2 ms. Partitions
    without row-level security are the daily job's and `status`'s to find.
    """
    current = month_of(now or datetime.now(timezone.utc))
    months = (current, add_months(current, ahead))
    checks = [
        f"(to_regclass('{table}') IS NOT NULL AND ("
        + " OR ".join(f"to_regclass('{table}_p{m:%Y_%m}') IS NULL" for m in months)
        + "))"
        for table in PARTITIONED
    ]
    return "(" + " OR ".join(checks) + ")"


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
        conn = await connected(dsn, attempts=retry.attempts, wait=retry.wait)
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
        conn = await connected(dsn, attempts=retry.attempts, wait=retry.wait)
        try:
            return await apply_retention(conn, dry_run=dry_run, now=now)
        finally:
            await close_quietly(conn)


class PartitionsAtStartup(NamedTuple):
    """What run_migrations does after migrating (the engine's AfterApply): this month's
    partitions and ``ahead`` more, cheap when nothing is due, never fatal."""

    ahead: int

    @property
    def probe(self) -> str:
        return partitions_due(self.ahead)

    async def __call__(self, conn: Any, dsn: str, *, due: bool | None) -> None:
        """``due``: what the session's query found (None: ask now). A busy table, a
        missing privilege or any other failure is a warning: the service starts, and
        the daily job (or the next start) tries again."""
        try:
            if due is None:
                due = await conn.fetchval(f"SELECT {self.probe}")
            if due:
                await ensure_partitions(conn, ahead=self.ahead)
        except Exception as exc:
            typed = exc if isinstance(exc, SilentPulseDBError) else None
            typed = typed or translate(
                exc, role=await _role(conn), doing="create partitions", dsn=dsn
            )
            if typed is None:
                raise
            logger.warning("partitions not maintained at start-up: %s", typed)


def partitions_at_startup(ahead: int) -> PartitionsAtStartup:
    """run_migrations' ``partitions_ahead``, checked before connecting: a number the job
    would refuse (over PARTITIONS_MAX_AHEAD) or cannot make (past year 9999) would
    otherwise be a warning at every start, with no month ever made."""
    if (
        isinstance(ahead, bool)
        or not isinstance(ahead, int)
        or not 0 <= ahead <= PARTITIONS_MAX_AHEAD
    ):
        raise InvalidArgumentError(
            f"run_migrations(partitions_ahead={ahead!r}): a whole number of months from 0 "
            f"to {PARTITIONS_MAX_AHEAD} (PARTITIONS_MAX_AHEAD), or None for no partition "
            "work at start-up"
        )
    return PartitionsAtStartup(ahead)


async def _role(conn: Any) -> str:
    try:
        return str(await conn.fetchval("SELECT current_user"))
    except Exception:
        return "<unknown>"

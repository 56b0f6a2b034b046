"""The two catalogs drift compares: the live database's, read as it is, and the one the
migration files build at the live version, on a scratch database (as `check` builds
its proof: created beside the live one, or the operator's empty ``--scratch-dsn``)."""

from __future__ import annotations

from typing import Any

from ...results import VersionState
from ..files.source import MigrationSource
from ..plan import Up, make_plan
from ..proofs.check import prerequisites_in, proof_database
from ..run.applier import Applier
from ..version_table import ensure_tables
from .catalog import Catalog, read_catalog

# Partition bounds read in one time zone, whatever each database's default.
UTC = "SELECT set_config('TimeZone', 'UTC', false)"
# Reading a partition's bound or a default (pg_get_expr) opens the relation: an
# ACCESS SHARE lock, as a SELECT takes. Behind a migration's or an operator's
# exclusive lock, give up rather than wait (and queue their next DDL behind us).
LIVE_LOCK_TIMEOUT = "5s"


async def live_catalog(conn: Any) -> Catalog:
    """The live database's catalog (reads only; UTC; waits at most LIVE_LOCK_TIMEOUT for
    a relation another session holds exclusively)."""
    await conn.execute(f"{UTC}, set_config('lock_timeout', '{LIVE_LOCK_TIMEOUT}', false)")
    return await read_catalog(conn)


async def built_catalog(
    dsn: str, scratch_dsn: str | None, source: MigrationSource, version: int | None
) -> Catalog:
    """The catalog of prerequisites.sql and the files up to ``version``, built on a
    scratch database."""
    async with proof_database(dsn, scratch_dsn, "drift") as scratch:
        await scratch.execute(UTC)
        await prerequisites_in(scratch, source, "drift")
        await ensure_tables(scratch)
        if version is not None:
            plan = make_plan(source, VersionState(None, False), Up(target=version))
            await Applier(scratch, source).apply(plan)
        return await read_catalog(scratch)

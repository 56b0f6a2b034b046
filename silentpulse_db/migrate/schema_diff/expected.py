"""The two catalogs drift compares: the live database's, read as it is, and the one the
migration files build at the live version, on a scratch database (as `check` builds
its proof: created beside the live one, or the operator's empty ``--scratch-dsn``)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, NamedTuple

import asyncpg

from ...errors import ConfigurationError, ScratchDatabaseError
from ...postgres.connect import close_quietly, connect
from ...postgres.databases import empty_database
from ...results.migrations import VersionState
from ...settings import ONE_ATTEMPT
from ..catalog.reader import Catalog, read_catalog
from ..files.source import MigrationSource
from ..plan import Up, make_plan
from ..proofs.check import prerequisites_in, proof_database
from ..run.applier import Applier
from ..stored_files import stored_source
from ..version_table import HISTORY_TABLE, VersionStore, VersionTable, recorded_sets

logger = logging.getLogger("silentpulse_db.migrate")

# The kinds of object drift compares (catalog/queries.py): every one but a function's
# comment, which its fix (CREATE OR REPLACE FUNCTION) would leave as it is.
COMPARED = (
    "relation",
    "column",
    "constraint",
    "index",
    "policy",
    "trigger",
    "function",
    "sequence",
    "owner",
    "function grant",
    "column grant",
    "grant",
    "schema",
    "extension",
    "type",
)

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
    return await read_catalog(conn, COMPARED)


# A drift cut mid-build (killed, the host restarted) cannot empty the operator's scratch
# database, and the next would refuse it as not empty. So each build marks it first:
# a table naming the extensions it held before (the history's prefix keeps it out of
# both catalogs), while a session advisory lock of the scratch database says a run is
# under way. A later run that finds the mark and gets the lock empties what was left.
MARK = f"{HISTORY_TABLE}_drift_build"
_MARK_REGCLASS = f"SELECT to_regclass('public.{MARK}') IS NOT NULL"
SCRATCH_LOCK = 0x5349_4C44_5249_4654  # any constant: the scratch database holds no other
# How long a run waits for another one on the same scratch database (or for the
# session of one cut short, which the server ends once it sees the client gone).
SCRATCH_LOCK_TIMEOUT = "30s"


class ServiceSet(NamedTuple):
    """A service's own set as the live database records it: its files, its version
    table, and the version that table holds."""

    source: MigrationSource
    table: str
    version: int | None


async def all_service_sets(
    conn: Any, given: Sequence[tuple[MigrationSource, str]]
) -> list[ServiceSet]:
    """Every service set the live database records, to build after the packaged one:
    those given (their folders), and the others from the files the database stored
    when it applied them (stored_files.py)."""
    store = VersionStore(conn)
    recorded = await recorded_sets(store)  # looks at the history's layout first
    tables = {table for _source, table in given}
    stored: dict[str, MigrationSource | str] = {}  # read only where needed
    for table, state in recorded.items():
        if table not in tables and not state.dirty:
            theirs = VersionStore(conn, VersionTable(table), store.found)
            stored[table] = await stored_source(theirs, state.version)
    return service_sets(given, recorded, stored)


def service_sets(
    given: Sequence[tuple[MigrationSource, str]],
    recorded: dict[str, VersionState],
    stored: dict[str, MigrationSource | str] | None = None,
) -> list[ServiceSet]:
    """The sets to build after the packaged one, each at its live version, a set after
    those it requires. Every recorded set is built: given (its folder), or from the
    files the database stored (``stored``: the source, or why there is none); drift
    compares the whole schema, and a set it does not build would read as tables to drop
    (its data)."""
    stored = stored or {}
    tables = {table for _source, table in given}
    chosen = []
    for table, state in recorded.items():
        if state.dirty:
            raise ConfigurationError(
                f"{table} is dirty at version {state.version}: that set is between two "
                f"versions; finish or force it first. Nothing was compared."
            )
        found = stored.get(table, "drift was not told its folder")
        if table not in tables and isinstance(found, str):
            raise ConfigurationError(
                f"the database also holds a service's own migration set, recorded in "
                f"{table} (version {state.version}), and drift cannot build it from the "
                f"files the database stored: {found}. Drift compares the whole schema, so it "
                f"builds every set: give that one's files, --set DIR:{table} (Python: "
                f"drift(..., sets=[(DIR, {table!r})])). Nothing was compared."
            )
        if table not in tables and not isinstance(found, str):
            chosen.append(ServiceSet(found, table, state.version))
    for source, table in given:
        if table not in recorded:
            raise ConfigurationError(
                f"the set of {source.description} (version table {table}) is not recorded in "
                f"the live database: there is nothing of it to compare. Nothing was compared."
            )
        chosen.append(ServiceSet(source, table, recorded[table].version))
    return _in_requires_order(chosen)


def _in_requires_order(sets: list[ServiceSet]) -> list[ServiceSet]:
    def required(one: ServiceSet) -> set[str]:
        return {
            table
            for migration in one.source.migrations
            for table, _version in (migration.up.directives.requires if migration.up else ())
        }

    ordered: list[ServiceSet] = []
    left = list(sets)
    while left:
        names = {one.table for one in left}
        ready = [one for one in left if not (required(one) & names - {one.table})]
        if not ready:
            raise ConfigurationError(
                "the service sets require each other in a circle: "
                + ", ".join(sorted(names))
                + ". Nothing was compared."
            )
        ordered += ready
        left = [one for one in left if one not in ready]
    return ordered


async def built_catalog(
    dsn: str,
    scratch_dsn: str | None,
    source: MigrationSource,
    version: int | None,
    sets: Sequence[ServiceSet] = (),
) -> Catalog:
    """The catalog of prerequisites.sql and the files up to ``version``, then each of
    ``sets`` at its version, built on a scratch database (the operator's one left as it
    was: see MARK)."""
    async with (
        _left_by_a_run_cut_short(scratch_dsn),
        proof_database(dsn, scratch_dsn, "drift") as scratch,
    ):
        if scratch_dsn is not None:
            await scratch.execute(f"CREATE TABLE public.{MARK} AS SELECT extname FROM pg_extension")
        await scratch.execute(UTC)
        await prerequisites_in(scratch, source, "drift")
        await VersionStore(scratch).ensure()
        if version is not None:
            plan = make_plan(source, VersionState(None, False), Up(target=version))
            await Applier(scratch, source).apply(plan)
        for one in sets:
            table = VersionTable(one.table)
            await prerequisites_in(scratch, one.source, "drift")
            await VersionStore(scratch, table).ensure()
            if one.version is not None:
                plan = make_plan(one.source, VersionState(None, False), Up(target=one.version))
                await Applier(scratch, one.source, table=table).apply(plan)
        return await read_catalog(scratch, COMPARED)


@contextlib.asynccontextmanager
async def _left_by_a_run_cut_short(scratch_dsn: str | None) -> AsyncIterator[None]:
    """Holds the scratch database's lock for the block, having emptied what a run cut
    short left there (its mark found: extensions it did not find are dropped too)."""
    if scratch_dsn is None:  # a database of its own, dropped afterwards
        yield
        return
    guard = await connect(scratch_dsn, ONE_ATTEMPT)
    try:
        try:
            await guard.execute(f"SET lock_timeout = '{SCRATCH_LOCK_TIMEOUT}'")
            await guard.execute(f"SELECT pg_advisory_lock({SCRATCH_LOCK})")
        except asyncpg.LockNotAvailableError:
            raise ScratchDatabaseError(
                f"the scratch database given to drift is in use by another drift run "
                f"(waited {SCRATCH_LOCK_TIMEOUT}): run them one after the other, or give "
                f"each its own. Nothing was changed."
            ) from None
        if await guard.fetchval(_MARK_REGCLASS):
            kept = {r["extname"] for r in await guard.fetch(f"SELECT extname FROM {MARK}")}
            logger.warning(
                "the scratch database holds what a drift run cut short left: emptying it"
            )
            await empty_database(scratch_dsn, kept)
        yield
    finally:
        await close_quietly(guard)  # the lock goes with the session

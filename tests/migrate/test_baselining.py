"""Adopting a database created before migrations: baseline checks the schema, then records version 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from silentpulse_db import BaselineError, RequiredVersionError, run_migrations
from silentpulse_db.migrate import apply_prerequisites, baseline, load_source

from helpers import execute, fetch, version_rows, write_migrations


async def premigration_database(dsn: str, *, prerequisites: bool = True) -> None:
    """What an older deployment did by hand: the prerequisites and 000001's SQL, no version table."""
    if prerequisites:
        await apply_prerequisites(dsn)
    first = load_source().get(1)
    assert first is not None and first.up is not None
    await execute(dsn, first.up.sql)
    await execute(dsn, "DROP TABLE IF EXISTS schema_migrations, schema_migrations_history")


async def test_baseline_adopts_a_matching_database(silentpulse_database: str) -> None:
    await premigration_database(silentpulse_database)
    result = await baseline(silentpulse_database)
    assert result.version_after == 1
    assert await version_rows(silentpulse_database) == [(1, False)]
    history = await fetch(
        silentpulse_database, "SELECT version, direction FROM schema_migrations_history"
    )
    assert [tuple(r) for r in history] == [(1, "baseline")]
    migrated = await run_migrations(silentpulse_database)
    assert [a.version for a in migrated.applied] == list(load_source().versions[1:])


async def test_baseline_refuses_a_different_schema_listing_differences(
    silentpulse_database: str,
) -> None:
    await premigration_database(silentpulse_database)
    await execute(
        silentpulse_database, "ALTER TABLE assets DROP COLUMN region; CREATE TABLE extra (id int)"
    )
    with pytest.raises(BaselineError) as info:
        await baseline(silentpulse_database)
    text = str(info.value)
    assert "column public.assets.region: missing" in text
    assert "relation public.extra: unexpected" in text
    assert await version_rows(silentpulse_database) == []


async def test_baseline_without_the_prerequisites_says_to_run_them_first(
    silentpulse_database: str,
) -> None:
    """000001's SQL run by hand without prerequisites.sql: not 000001's difference to
    answer for (issue 27, 10)."""
    await premigration_database(silentpulse_database, prerequisites=False)
    with pytest.raises(BaselineError) as info:
        await baseline(silentpulse_database)
    text = str(info.value)
    assert "run `silentpulse-db prerequisites` first" in text, text
    assert "does not match" not in text and "000001" not in text, text
    await apply_prerequisites(silentpulse_database)
    assert (await baseline(silentpulse_database)).version_after == 1


async def test_baseline_refuses_a_versioned_database(silentpulse_migrated_database: str) -> None:
    # One line saying so, not a schema diff (the comparison is not even made).
    with pytest.raises(BaselineError, match="already versioned") as info:
        await baseline(silentpulse_migrated_database)
    assert "\n" not in str(info.value)
    assert await version_rows(silentpulse_migrated_database) == [(load_source().latest, False)]


async def test_a_service_sets_version_table_is_no_difference_to_baseline(
    silentpulse_database: str, tmp_path: Path
) -> None:
    """A service's set started before the core was adopted is refused (it requires the
    core's version) and leaves its version table behind: bookkeeping, like the core's,
    which baseline's comparison leaves out (it listed every part of it as unexpected)."""
    dsn = silentpulse_database
    await premigration_database(dsn)
    requires = (
        "-- silentpulse: requires schema_migrations >= 1\nCREATE TABLE worker_jobs (id int);\n"
    )
    source = write_migrations(tmp_path, {1: ("worker_jobs", requires, "DROP TABLE worker_jobs;\n")})
    with pytest.raises(RequiredVersionError):
        await run_migrations(dsn, source=source, table="worker_schema_migrations")
    assert await fetch(dsn, "SELECT 1 FROM worker_schema_migrations") == []
    result = await baseline(dsn)
    assert result.version_after == 1
    applied = await run_migrations(dsn, source=source, table="worker_schema_migrations")
    assert [a.version for a in applied.applied] == [1]

"""A database migrated by the project reports no drift; each hand change operators make
during incidents is named, object and difference, with exit 1, and the fixes bring it back."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from silentpulse_db.migrate import drift
from silentpulse_db.settings import ConnectRetry

from .hand_changes import HAND_CHANGES
from helpers import cli, execute


async def test_a_migrated_database_has_no_drift(silentpulse_migrated_database: str) -> None:
    report = await drift(silentpulse_migrated_database, connect=ConnectRetry(attempts=1))
    assert report.matches, "\n".join(str(d) for d in report.differences)
    assert report.version is not None and report.objects > 500
    done = await asyncio.to_thread(cli, "drift", dsn=silentpulse_migrated_database)
    assert done.returncode == 0, done.stderr
    assert "no drift" in done.stdout


@pytest.mark.parametrize(("story", "sql", "named"), HAND_CHANGES, ids=[h[0] for h in HAND_CHANGES])
async def test_each_hand_change_is_named(
    silentpulse_migrated_database: str, story: str, sql: str, named: tuple[str, str, str]
) -> None:
    await execute(silentpulse_migrated_database, sql)
    report = await drift(silentpulse_migrated_database, connect=ConnectRetry(attempts=1))
    found = {(d.kind, d.key, d.change) for d in report.differences}
    kind, key, change = named
    assert any(f[0] == kind and f[1].endswith(key) and f[2] == change for f in found), (
        f"{story}: {sorted(found)}"
    )
    # One change, one difference: not one more for each month's copy of it, nor for
    # each column of a table reported whole.
    assert len(found) <= 2 or kind == "grant", f"{story}: {sorted(found)}"
    done = await asyncio.to_thread(cli, "drift", dsn=silentpulse_migrated_database)
    assert done.returncode == 1, done.stderr
    assert named[1] in done.stdout


async def test_the_fix_brings_the_database_back(silentpulse_migrated_database: str) -> None:
    """Where one statement does, running the report's fixes leaves no drift."""
    dsn = silentpulse_migrated_database
    for story, sql, _named in HAND_CHANGES:
        if "detached" not in story:  # its own test: attached again, it has fixes of its own
            await execute(dsn, sql)
    report = await drift(dsn, connect=ConnectRetry(attempts=1))
    fixes = [d.fix for d in report.differences if d.fix]
    assert len(fixes) >= 14, [str(d) for d in report.differences]
    assert not any("TO PUBLIC" in fix and "GRANT" in fix for fix in fixes)
    conn = await asyncpg.connect(dsn)
    try:
        for fix in fixes:
            await conn.execute(fix)
    finally:
        await conn.close()
    left = await drift(dsn, connect=ConnectRetry(attempts=1))
    unfixed = {(d.kind, d.key) for d in left.differences}
    # What had no statement of its own is left.
    assert unfixed <= {(d.kind, d.key) for d in report.differences if not d.fix}, unfixed

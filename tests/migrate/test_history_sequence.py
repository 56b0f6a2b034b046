"""The history table's id sequence behind its rows (found by bench/fault_campaign.py,
issue 28): every run then fails on the history's primary key, and a rerun never heals.

How a database gets there: PostgreSQL 15+ copies a template's sequences with
CREATE DATABASE ... TEMPLATE (STRATEGY WAL_LOG, the default) including their log_cnt,
so the copy's first nextval() calls write no WAL; after a crash (`pg_ctl restart -m
immediate`) or a failover the sequence comes back at the template's value while the
rows written since are there (reported on pgsql-hackers, "CREATE DATABASE ... TEMPLATE
with WAL_LOG strategy can cause sequence values to rollback"; seen on 15.20). In the
campaign: a database cloned from a migrated one, `goto` killed by an immediate restart,
then `goto` again fails with ``UniqueViolationError: duplicate key value violates
unique constraint "schema_migrations_history_pkey"`` on every rerun.

The test puts the sequence behind its rows with setval (what the crash leaves), so it
does not depend on the server's bug; the runner puts it back above them under the lock
(version_table.VersionStore.ensure), and the run goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from silentpulse_db import MigrationResult, run_migrations
from silentpulse_db.migrate import goto, up
from silentpulse_db.settings import ConnectRetry

from helpers import execute, fetchval, login_role, version_rows, write_migrations

FILES = {
    1: ("add_t1", "CREATE TABLE t1 (id int);\n", "DROP TABLE t1;\n"),
    2: ("add_t2", "CREATE TABLE t2 (id int);\n", "DROP TABLE t2;\n"),
    3: ("add_t3", "CREATE TABLE t3 (id int);\n", "DROP TABLE t3;\n"),
}


async def test_a_history_sequence_behind_its_rows_does_not_stop_the_next_run(
    silentpulse_database: str, tmp_path: Path
) -> None:
    dsn = silentpulse_database
    source = write_migrations(tmp_path / "set", {v: FILES[v] for v in (1, 2)})
    await run_migrations(dsn, source=source)
    rows = await fetchval(dsn, "SELECT max(id) FROM schema_migrations_history")
    assert rows >= 2
    # What the crash leaves: the sequence at the template's value, the rows still there.
    await execute(
        dsn,
        "SELECT setval(pg_get_serial_sequence('schema_migrations_history', 'id'), 1)",
    )
    (tmp_path / "set" / "000003_add_t3.up.sql").write_text(FILES[3][1])
    (tmp_path / "set" / "000003_add_t3.down.sql").write_text(FILES[3][2])

    await run_migrations(dsn, source=source)

    assert await version_rows(dsn) == [(3, False)]
    assert await fetchval(dsn, "SELECT to_regclass('t3') IS NOT NULL")


BEHIND = "SELECT setval(pg_get_serial_sequence('schema_migrations_history', 'id'), 1)"
# Read without moving it (a nextval here would itself put it one further).
AHEAD = (
    "SELECT last_value >= (SELECT max(id) FROM schema_migrations_history)"
    " FROM schema_migrations_history_id_seq"
)


@pytest.mark.parametrize("verb", ["run_migrations", "up"])
async def test_the_next_run_that_writes_puts_it_back_and_says_so(
    silentpulse_database: str, tmp_path: Path, verb: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A start with nothing to apply takes no lock and asks nothing of the sequence (one
    query: asking cost a fresh backend ~1 ms, a fifth of the probe); the next run that
    writes puts it back, with a warning, before its first history row."""
    dsn = silentpulse_database
    source = write_migrations(tmp_path / "set", {v: FILES[v] for v in (1, 2)})
    await run_migrations(dsn, source=source)
    await execute(dsn, BEHIND)
    verbs: dict[str, Callable[..., Awaitable[MigrationResult]]] = {
        "run_migrations": run_migrations,
        "up": up,
    }
    await verbs[verb](dsn, source=source)
    assert not await fetchval(dsn, AHEAD)  # nothing to apply: left as it was
    (tmp_path / "set" / "000003_add_t3.up.sql").write_text(FILES[3][1])
    (tmp_path / "set" / "000003_add_t3.down.sql").write_text(FILES[3][2])

    with caplog.at_level(logging.WARNING, logger="silentpulse_db"):
        result = await verbs[verb](dsn, source=source)

    assert [a.version for a in result.applied] == [3]
    assert "id sequence was behind its rows" in caplog.text
    assert await fetchval(dsn, AHEAD)


async def test_a_role_that_may_not_set_it_is_not_stopped_by_it(
    silentpulse_database: str, tmp_path: Path
) -> None:
    """Put back only by a role that may read the sequence: a role without that, whose
    verb takes the lock and has nothing to write (`goto` the version it is at), goes on
    without an error (a setval would be refused)."""
    dsn = silentpulse_database
    source = write_migrations(tmp_path / "set", {v: FILES[v] for v in (1, 2)})
    await run_migrations(dsn, source=source)
    await execute(dsn, BEHIND)
    grants = "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"
    async with login_role(dsn, grants, prefix="reader") as (_, reader):
        result = await goto(reader, 2, source=source, connect=ConnectRetry(attempts=1))
    assert not result.applied and result.version_after == 2
    assert not await fetchval(dsn, AHEAD)  # still behind: nobody who may set it ran

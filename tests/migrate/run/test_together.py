"""Schema migrations sent several to a message (migrate/run/sent_together.py), against a real
server: each still commits alone with its version, and a failure, a lock conflict or
a killed backend in the middle of a message is handled as for a migration sent alone."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from silentpulse_db import (
    MigrationFailedError,
    MigrationInterruptedError,
    TableLockTimeoutError,
    run_migrations,
)
from silentpulse_db.migrate import status
from silentpulse_db.settings import DDLLimits

from helpers import (
    fetch,
    fetchval,
    pending_after_t1,
    reading,
    simple_set,
    user_tables,
    version_rows,
    wait_for,
    write_migrations,
)


@pytest.fixture
def messages(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every simple-query message the runner sends that opens a migration's transaction."""
    sent: list[str] = []
    original = asyncpg.Connection.execute

    async def spy(self: asyncpg.Connection, query: str, *args: Any, **kwargs: Any) -> Any:
        if query.startswith("BEGIN; SET LOCAL lock_timeout"):
            sent.append(query)
        return await original(self, query, *args, **kwargs)

    monkeypatch.setattr(asyncpg.Connection, "execute", spy)
    yield sent


async def history(dsn: str) -> list[tuple[int, str]]:
    rows = await fetch(dsn, "SELECT version, direction FROM schema_migrations_history ORDER BY id")
    return [(r["version"], r["direction"]) for r in rows]


async def test_each_migration_of_a_message_commits_alone_with_its_version(
    silentpulse_database: str, tmp_path: Path, messages: list[str]
) -> None:
    dsn = silentpulse_database
    source = write_migrations(tmp_path, simple_set(120))
    result = await run_migrations(dsn, source=source, partitions_ahead=None)
    assert [m.version for m in result.applied] == list(range(1, 121))
    assert len(messages) == 3  # 50 + 50 + 20
    assert await version_rows(dsn) == [(120, False)]
    assert await history(dsn) == [(v, "up") for v in range(1, 121)]
    # One transaction each: 120 distinct transaction ids wrote the history rows.
    assert (
        await fetchval(dsn, "SELECT count(DISTINCT xmin::text) FROM schema_migrations_history")
        == 120
    )
    durations = await fetch(dsn, "SELECT duration_ms FROM schema_migrations_history")
    assert all(r["duration_ms"] is not None and r["duration_ms"] >= 0 for r in durations)
    assert all(m.duration >= 0 for m in result.applied)
    rows = await status(dsn, source=source)
    assert [r.state for r in rows.rows] == ["applied"] * 120


async def test_files_that_run_code_are_sent_alone(
    silentpulse_database: str, tmp_path: Path, messages: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    migrations = simple_set(6)
    migrations[3] = (
        "backfill",
        "CREATE TABLE t3 (id int);\nINSERT INTO t3 VALUES (1);\n"
        "DO $$ BEGIN RAISE WARNING 'left 1 row as it was'; END $$;\n",
        "DROP TABLE t3;\n",
    )
    migrations[5] = (
        "drop_if",
        "DROP TABLE IF EXISTS nowhere;\nCREATE TABLE t5 (id int);\n",
        "DROP TABLE t5;\n",
    )
    source = write_migrations(tmp_path, migrations)
    # DEBUG: an IF EXISTS notice is not news at INFO (issue 20, 6).
    with caplog.at_level(logging.DEBUG, logger="silentpulse_db"):
        await run_migrations(silentpulse_database, source=source, partitions_ahead=None)
    assert len(messages) == 3  # 1-2 together, 3 alone, 4-6 together
    assert "INSERT INTO t3" in messages[1] and "t4" not in messages[1]
    warning = next(r.getMessage() for r in caplog.records if "left 1 row" in r.getMessage())
    assert warning.startswith(f"{source}/000003_backfill.up.sql: ")
    # A notice from a message of several files names them all.
    notice = next(r.getMessage() for r in caplog.records if "nowhere" in r.getMessage())
    assert "000004_add_t4.up.sql to 000006_add_t6.up.sql (sent together): " in notice


async def test_a_failure_mid_message_keeps_those_before_and_names_its_line(
    silentpulse_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dsn = silentpulse_database
    migrations = simple_set(5)
    migrations[3] = (
        "bad",
        "CREATE TABLE t3 (id int);\nALTER TABLE t3 ADD b nosuchtype;\n",
        "DROP TABLE t3;\n",
    )
    source = write_migrations(tmp_path, migrations)
    with (
        caplog.at_level(logging.INFO, logger="silentpulse_db"),
        pytest.raises(MigrationFailedError) as info,
    ):
        await run_migrations(dsn, source=source, partitions_ahead=None)
    # Those that committed are reported as applied, with the server's durations.
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("applied")]
    assert [line.split(" (")[0] for line in logged] == [
        "applied 000001_add_t1",
        "applied 000002_add_t2",
    ]
    message = str(info.value)
    assert "000003_bad.up.sql line 2, column 22" in message, message
    assert 'type "nosuchtype" does not exist' in message
    assert await version_rows(dsn) == [(2, False)]
    assert await user_tables(dsn) == {"t1", "t2"}
    assert await history(dsn) == [(1, "up"), (2, "up")]
    # Fixed, the rest lands.
    write_migrations(tmp_path, {3: ("bad", "CREATE TABLE t3 (id int);\n", "DROP TABLE t3;\n")})
    result = await run_migrations(dsn, source=source, partitions_ahead=None)
    assert [m.version for m in result.applied] == [3, 4, 5]


async def test_an_error_without_position_mid_message_is_located_by_replay(
    silentpulse_database: str, tmp_path: Path
) -> None:
    dsn = silentpulse_database
    migrations = simple_set(4)
    migrations[2] = (
        "no_position",
        "CREATE TABLE t2 (id int);\n\n-- the table is misspelt\nALTER TABLE t_2 ADD b int;\n",
        "DROP TABLE t2;\n",
    )
    source = write_migrations(tmp_path, migrations)
    with pytest.raises(MigrationFailedError) as info:
        await run_migrations(dsn, source=source, partitions_ahead=None)
    assert "000002_no_position.up.sql line 4" in str(info.value), str(info.value)
    assert await version_rows(dsn) == [(1, False)]
    assert await user_tables(dsn) == {"t1"}


ALTER_T1 = ("alter_t1", "ALTER TABLE t1 ADD b int;\n", "ALTER TABLE t1 DROP b;\n")


async def test_a_lock_conflict_mid_message_is_retried_and_the_rest_lands(
    silentpulse_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dsn = silentpulse_database
    source = await pending_after_t1(dsn, tmp_path, 4, {3: ALTER_T1})
    holder = await reading(dsn, "t1")
    try:
        with caplog.at_level(logging.WARNING, logger="silentpulse_db"):
            task = asyncio.create_task(
                run_migrations(
                    dsn,
                    source=source,
                    partitions_ahead=None,
                    ddl=DDLLimits(table_lock_timeout=0.1, retry_for=60),
                )
            )
            # 2 committed before 3 met the lock; 3 waits for its retry.
            await wait_for(lambda: _version_is(dsn, 2))
            await wait_for(lambda: _logged(caplog, "000003_alter_t1.up.sql: a table lock"))
            assert not task.done()
            await holder.execute("COMMIT")
            result = await task
    finally:
        await holder.close()
    assert [m.version for m in result.applied] == [2, 3, 4]
    assert await version_rows(dsn) == [(4, False)]
    assert await history(dsn) == [(v, "up") for v in (1, 2, 3, 4)]


async def test_retries_spent_mid_message_leave_the_version_of_those_before(
    silentpulse_database: str, tmp_path: Path
) -> None:
    dsn = silentpulse_database
    source = await pending_after_t1(dsn, tmp_path, 4, {3: ALTER_T1})
    holder = await reading(dsn, "t1")
    try:
        with pytest.raises(TableLockTimeoutError) as info:
            await run_migrations(
                dsn,
                source=source,
                partitions_ahead=None,
                ddl=DDLLimits(table_lock_timeout=0.1, retry_for=0.5),
            )
    finally:
        await holder.close()
    assert "000003_alter_t1.up.sql" in str(info.value)
    assert "version 2" in str(info.value)
    assert await version_rows(dsn) == [(2, False)]


async def test_a_backend_killed_mid_message_leaves_a_clean_version_and_the_next_run_finishes(
    silentpulse_database: str, tmp_path: Path
) -> None:
    dsn = silentpulse_database
    waits = (
        "alter_t1",
        "-- silentpulse: lock_timeout=0\nALTER TABLE t1 ADD b int;\n",
        "ALTER TABLE t1 DROP b;\n",
    )
    source = await pending_after_t1(dsn, tmp_path, 4, {3: waits})
    holder = await reading(dsn, "t1")
    try:
        task = asyncio.create_task(run_migrations(dsn, source=source, partitions_ahead=None))
        await wait_for(lambda: _waiting_pid(dsn))
        pid = await _waiting_pid(dsn)
        assert await fetchval(dsn, "SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(MigrationInterruptedError) as info:
            await task
    finally:
        await holder.close()
    message = str(info.value)
    assert "000002_add_t2.up.sql to" in message and "000004_add_t4.up.sql, sent together" in message
    assert "clean, at version 1 if none of them committed, version 4 if all did" in message
    assert await version_rows(dsn) == [(2, False)]
    result = await run_migrations(dsn, source=source, partitions_ahead=None)
    assert [m.version for m in result.applied] == [3, 4]
    assert await history(dsn) == [(v, "up") for v in (1, 2, 3, 4)]


async def test_a_migration_that_moves_search_path_does_not_move_the_version_tables(
    silentpulse_database: str, tmp_path: Path
) -> None:
    dsn = silentpulse_database
    migrations = simple_set(6)
    migrations[2] = (
        "elsewhere",
        "CREATE SCHEMA other;\nSET search_path TO other;\n",
        "RESET search_path;\nDROP SCHEMA other;\n",
    )
    migrations[4] = ("add_t4", "CREATE TABLE public.t4 (id int);\n", "DROP TABLE public.t4;\n")
    source = write_migrations(tmp_path, migrations)
    result = await run_migrations(dsn, source=source, partitions_ahead=None)
    assert [m.version for m in result.applied] == list(range(1, 7))
    assert await version_rows(dsn) == [(6, False)]
    assert await history(dsn) == [(v, "up") for v in range(1, 7)]
    # Files after the SET ran with the search_path it set; the version tables stayed put.
    tables = await fetch(
        dsn, "SELECT schemaname, tablename FROM pg_tables WHERE tablename ~ '^t[0-9]$'"
    )
    assert {(r["schemaname"], r["tablename"]) for r in tables} == {
        ("public", "t1"),
        ("other", "t3"),
        ("public", "t4"),
        ("other", "t5"),
        ("other", "t6"),
    }


async def _version_is(dsn: str, version: int) -> bool:
    return await version_rows(dsn) == [(version, False)]


async def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in r.getMessage() for r in caplog.records)


async def _waiting_pid(dsn: str) -> int | None:
    pid: int | None = await fetchval(
        dsn,
        "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND query LIKE '%ALTER TABLE t1 ADD b%' AND datname = current_database()",
    )
    return pid


async def test_down_travels_together_too(silentpulse_database: str, tmp_path: Path) -> None:
    from silentpulse_db.migrate import down

    dsn = silentpulse_database
    source = write_migrations(tmp_path, simple_set(8))
    await run_migrations(dsn, source=source, partitions_ahead=None)
    result = await down(dsn, 5, source=source)
    assert [m.version for m in result.applied] == [8, 7, 6, 5, 4]
    assert await version_rows(dsn) == [(3, False)]
    assert await user_tables(dsn) == {"t1", "t2", "t3"}

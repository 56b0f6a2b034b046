"""Migrations sent several to a message, at their edges (found by a review, each test
failed before its fix): durations, lock-conflict retries, replay, what the operator is
told, a lost prepared write, byte positions. Real servers, real concurrent sessions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from silentpulse_db import MigrationFailedError, TableLockTimeoutError, run_migrations
from silentpulse_db.migrate.run import locate
from silentpulse_db.settings import DDLLimits

from helpers import (
    fetch,
    fetchval,
    pending_after_t1,
    reading,
    simple_set,
    version_rows,
    write_migrations,
)


async def _release_after(conn: asyncpg.Connection, seconds: float) -> None:
    await asyncio.sleep(seconds)
    await conn.execute("COMMIT")


async def _history(dsn: str) -> dict[int, float]:
    rows = await fetch(
        dsn, "SELECT version, duration_ms FROM schema_migrations_history WHERE direction = 'up'"
    )
    return {r["version"]: r["duration_ms"] for r in rows}


@contextlib.asynccontextmanager
async def lock_waits(dsn: str) -> AsyncIterator[set[object]]:
    """While inside: each distinct transaction of the runner seen waiting for the lock on
    t1, polled by another session."""
    seen: set[object] = set()
    stop = asyncio.Event()

    async def watch() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            while not stop.is_set():
                rows = await conn.fetch(
                    "SELECT pid, xact_start FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '%ALTER TABLE t1 ADD b%' AND datname = current_database()"
                )
                seen.update((r["pid"], r["xact_start"]) for r in rows)
                await asyncio.sleep(0.02)
        finally:
            await conn.close()

    monitor = asyncio.create_task(watch())
    try:
        yield seen
    finally:
        stop.set()
        await monitor


# Durations -----------------------------------------------------------------------


async def test_grouped_durations_are_each_migrations_own_not_since_the_message_arrived(
    silentpulse_database: str, tmp_path: Path
) -> None:
    """Every transaction of a simple-query message has now() = when the MESSAGE arrived:
    a migration after a slow one in the same message must not be recorded as slow
    (history duration_ms, `status`, MigrationResult.applied[i].duration)."""
    dsn = silentpulse_database
    slow = (
        "alter_t1",
        "-- silentpulse: lock_timeout=30s\nALTER TABLE t1 ADD b int;\n",
        "ALTER TABLE t1 DROP b;\n",
    )
    source = await pending_after_t1(dsn, tmp_path, 5, {2: slow})  # 2 (waits ~1.5 s), 3, 4, 5
    holder = await reading(dsn, "t1")
    try:
        release = asyncio.create_task(_release_after(holder, 1.5))
        result = await run_migrations(dsn, source=source, partitions_ahead=None)
        await release
    finally:
        await holder.close()
    assert [m.version for m in result.applied] == [2, 3, 4, 5]
    durations = await _history(dsn)
    assert durations[2] >= 1000  # the ALTER waited for the lock
    # 3, 4 and 5 each create an empty table: a few ms at most, not 1.5 s.
    assert [durations[v] < 500 for v in (3, 4, 5)] == [True] * 3, durations
    assert [m.duration < 0.5 for m in result.applied[1:]] == [True] * 3, result.applied


# Lock conflicts in a group: the retry -------------------------------------------


async def test_a_lock_conflict_in_a_group_is_retried_after_a_pause_and_a_warning(
    silentpulse_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """As for a file sent alone, an attempt in a group that loses a lock conflict is
    attempt 1: the holders are logged ("... (attempt 1), rolled back; held by: ...;
    retrying in 0.6s") and the next attempt comes after the backoff pause, so that the
    queries queued behind the ALTER get through."""
    dsn = silentpulse_database
    source = await pending_after_t1(
        dsn,
        tmp_path,
        4,
        {3: ("alter_t1", "ALTER TABLE t1 ADD b int;\n", "ALTER TABLE t1 DROP b;\n")},
    )
    holder = await reading(dsn, "t1")
    warned_before_second_wait: bool | None = None
    try:
        async with lock_waits(dsn) as seen:
            with caplog.at_level(logging.WARNING, logger="silentpulse_db"):
                task = asyncio.create_task(
                    run_migrations(
                        dsn,
                        source=source,
                        partitions_ahead=None,
                        ddl=DDLLimits(table_lock_timeout=0.5, retry_for=30),
                    )
                )
                deadline = time.monotonic() + 20
                while len(seen) < 2 and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                assert len(seen) >= 2, "the runner never retried"
                warned_before_second_wait = any(
                    "a table lock stayed out of reach" in r.getMessage() for r in caplog.records
                )
                await holder.execute("COMMIT")
                await task
    finally:
        await holder.close()
    assert warned_before_second_wait, (
        "the second attempt started with no warning (and no pause) after the first conflict"
    )


async def test_a_lock_conflict_in_a_group_reports_every_attempt_it_made(
    silentpulse_database: str, tmp_path: Path
) -> None:
    """ddl_retry_for=0 means one attempt, in a group as alone, and the error counts the
    attempts and the time the queries on t1 were really held up."""
    dsn = silentpulse_database
    source = await pending_after_t1(
        dsn,
        tmp_path,
        4,
        {3: ("alter_t1", "ALTER TABLE t1 ADD b int;\n", "ALTER TABLE t1 DROP b;\n")},
    )
    holder = await reading(dsn, "t1")
    try:
        async with lock_waits(dsn) as seen:
            with pytest.raises(TableLockTimeoutError) as info:
                await run_migrations(
                    dsn,
                    source=source,
                    partitions_ahead=None,
                    ddl=DDLLimits(table_lock_timeout=0.8, retry_for=0),
                )
    finally:
        await holder.close()
    message = str(info.value)
    assert "1 attempt(s)" in message, message
    assert len(seen) == 1, f"{len(seen)} lock waits for an error that says 1 attempt: {message}"


# Errors without a position in a group ---------------------------------------------


async def test_an_error_without_position_after_a_slow_member_is_still_located(
    silentpulse_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replay limit (a migration that ran long is not replayed to find its failing
    statement) counts the failed file's own time, not the group's: a quick file after a
    slow one is still located by replay. REPLAY_LIMIT is shortened to 1 s here."""
    monkeypatch.setattr(locate, "REPLAY_LIMIT", 1.0)
    dsn = silentpulse_database
    slow = (
        "alter_t1",
        "-- silentpulse: lock_timeout=30s\nALTER TABLE t1 ADD b int;\n",
        "ALTER TABLE t1 DROP b;\n",
    )
    bad = (
        "misspelt",
        "CREATE TABLE t3 (id int);\nALTER TABLE t_3 ADD b int;\n",
        "DROP TABLE t3;\n",
    )
    source = await pending_after_t1(dsn, tmp_path, 4, {2: slow, 3: bad})
    holder = await reading(dsn, "t1")
    try:
        release = asyncio.create_task(_release_after(holder, 1.5))
        with pytest.raises(MigrationFailedError) as info:
            await run_migrations(dsn, source=source, partitions_ahead=None)
        await release
    finally:
        await holder.close()
    assert await version_rows(dsn) == [(2, False)]
    message = str(info.value)
    assert "000003_misspelt.up.sql line 2 (the statement starting there)" in message, message


# What the operator is told about the members committed before a failure ---------------


async def test_members_committed_before_a_failure_in_their_group_are_logged_as_applied(
    silentpulse_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Members that committed before another failed are logged "applied ..." (the
    service's start-up log, `silentpulse-db up -v`) before the failure is raised."""
    dsn = silentpulse_database
    bad = ("bad", "CREATE TABLE t4 (id nosuchtype);\n", "DROP TABLE t4;\n")
    source = await pending_after_t1(dsn, tmp_path, 5, {4: bad})
    with (
        caplog.at_level(logging.INFO, logger="silentpulse_db"),
        pytest.raises(MigrationFailedError),
    ):
        await run_migrations(dsn, source=source, partitions_ahead=None)
    assert await version_rows(dsn) == [(3, False)]
    logged = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("applied 000002_add_t2") for m in logged), logged
    assert any(m.startswith("applied 000003_add_t3") for m in logged), logged


async def test_a_failure_in_a_group_names_the_version_the_database_stays_at(
    silentpulse_database: str, tmp_path: Path
) -> None:
    """A database at version 1: 2 and 3 commit, 4 fails. The error (all the CLI prints at
    its default log level) names the version the database stays at, 3 (it said "the
    version is unchanged", read as "still 1")."""
    dsn = silentpulse_database
    bad = ("bad", "CREATE TABLE t4 (id nosuchtype);\n", "DROP TABLE t4;\n")
    source = await pending_after_t1(dsn, tmp_path, 5, {4: bad})
    with pytest.raises(MigrationFailedError) as info:
        await run_migrations(dsn, source=source, partitions_ahead=None)
    assert await version_rows(dsn) == [(3, False)]
    assert "version 3" in str(info.value), str(info.value)


# The prepared version write ------------------------------------------------------------


async def test_a_lost_prepared_write_is_not_blamed_on_the_next_file(
    silentpulse_database: str, tmp_path: Path
) -> None:
    """DEALLOCATE ALL is refused in a file, but dynamic SQL (DO ... EXECUTE 'DEALLOCATE
    ALL') gets through and drops the runner's prepared write (and asyncpg's statements):
    the next group's failure is not blamed on its innocent first file; the runner
    prepares again and goes on."""
    dsn = silentpulse_database
    migrations = simple_set(6)
    migrations[3] = (
        "reset_session",
        "CREATE TABLE t3 (id int);\nDO $$ BEGIN EXECUTE 'DEALLOCATE ALL'; END $$;\n",
        "DROP TABLE t3;\n",
    )
    source = write_migrations(tmp_path, migrations)
    try:
        await run_migrations(dsn, source=source, partitions_ahead=None)
    except MigrationFailedError as exc:
        pytest.fail(f"a good file was reported as failing: {exc}")
    assert await version_rows(dsn) == [(6, False)]


async def test_holds_grouped_migrations_each_have_one_history_row_in_order(
    silentpulse_database: str, tmp_path: Path
) -> None:
    """Each grouped migration has exactly one history row, in order."""
    dsn = silentpulse_database
    source = write_migrations(tmp_path, simple_set(25))
    await run_migrations(dsn, source=source, partitions_ahead=None)
    rows = await fetch(dsn, "SELECT version FROM schema_migrations_history ORDER BY id")
    assert [r["version"] for r in rows] == list(range(1, 26))
    assert await fetchval(dsn, "SELECT count(*) FROM schema_migrations") == 1


# Error positions in a database whose encoding is SQL_ASCII ------------------------------


async def test_an_other_files_accent_does_not_move_the_caret_in_an_sql_ascii_database(
    silentpulse_postgres: object, tmp_path: Path
) -> None:
    """In a SQL_ASCII database (what initdb makes under LANG=C) the server counts error
    positions in BYTES: the non-ASCII characters of an earlier file in the same message
    must not move a later file's caret (such a file ends its group there)."""
    import uuid

    server_dsn: str = silentpulse_postgres.dsn  # type: ignore[attr-defined]
    name = "ascii_" + uuid.uuid4().hex[:8]
    admin = await asyncpg.connect(server_dsn)
    await admin.execute(
        f"CREATE DATABASE {name} ENCODING 'SQL_ASCII' TEMPLATE template0 "
        "LC_COLLATE 'C' LC_CTYPE 'C'"
    )
    dsn = server_dsn.rsplit("/", 1)[0] + "/" + name
    try:
        migrations = simple_set(3)
        migrations[1] = ("accent", "CREATE TABLE t1 (id int); -- créée\n", "DROP TABLE t1;\n")
        migrations[2] = (
            "bad",
            "CREATE TABLE t2 (a int);\nALTER TABLE t2 ADD b nosuchtype;\n",
            "DROP TABLE t2;\n",
        )
        source = write_migrations(tmp_path, migrations)
        with pytest.raises(MigrationFailedError) as info:
            await run_migrations(dsn, source=source, partitions_ahead=None)
        assert (info.value.line, info.value.column) == (2, 22), str(info.value)
    finally:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()

"""Role-level limits, as managed PostgreSQL sets them (issue 21): an owner role with
``statement_timeout = 5s`` and ``idle_in_transaction_session_timeout = 2s`` (ALTER ROLE
... SET). The library sets its own values for its sessions (defaults.ENGINE_SESSION_SETTINGS):
a migration longer than the role's limit, a concurrent index build waiting for an older
transaction longer than that, and a replica waiting for the lock all complete; a file
sets its own limit with a directive."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from silentpulse_db import MigrationFailedError, run_migrations
from silentpulse_db.migrate import apply_prerequisites, down, force, up
from silentpulse_db.settings import ConnectRetry

from helpers import execute, fetch, fetchval, hold_migration_lock, login_role, write_migrations

LIMITS = (
    "GRANT CREATE, USAGE ON SCHEMA public TO {role}; "
    "ALTER ROLE {role} SET statement_timeout = '2s'; "
    "ALTER ROLE {role} SET idle_in_transaction_session_timeout = '1s'; "
    "ALTER ROLE {role} SET lock_timeout = '1s';"
)


@pytest.fixture
async def limited_owner(silentpulse_database: str) -> AsyncIterator[str]:
    """The DSN of an owner role (no superuser) whose role-level limits are tight."""
    await apply_prerequisites(silentpulse_database)
    async with login_role(silentpulse_database, LIMITS, prefix="limited") as (_role, dsn):
        conn = await asyncpg.connect(dsn)
        try:  # the limits are the role's, as a plain client sees them
            assert await conn.fetchval("SHOW statement_timeout") == "2s"
        finally:
            await conn.close()
        yield dsn


async def test_a_migration_longer_than_the_roles_statement_timeout(
    limited_owner: str, tmp_path: Path
) -> None:
    source = write_migrations(
        tmp_path,
        {
            1: ("slow", "CREATE TABLE slow (id int);\nSELECT pg_sleep(3);\n", "DROP TABLE slow;\n"),
            2: ("slower", "SELECT pg_sleep(1.5);\nSELECT pg_sleep(1.5);\n", "SELECT 1;\n"),
        },
    )
    result = await run_migrations(limited_owner, source=source, connect=ConnectRetry(attempts=1))
    assert [a.version for a in result.applied] == [1, 2]


async def test_a_concurrent_index_build_waiting_longer_than_the_roles_limit(
    limited_owner: str, silentpulse_database: str, tmp_path: Path
) -> None:
    """CREATE INDEX CONCURRENTLY waits for every older transaction: one held open for 3 s
    outlasts the role's statement_timeout. It was cancelled and left INVALID, the
    database dirty."""
    source = write_migrations(
        tmp_path,
        {
            1: ("table", "CREATE TABLE things (id int);\n", "DROP TABLE things;\n"),
            2: (
                "index",
                "CREATE INDEX CONCURRENTLY things_id ON things (id);\n",
                "DROP INDEX CONCURRENTLY things_id;\n",
            ),
        },
    )
    await run_migrations(limited_owner, source=source, connect=ConnectRetry(attempts=1), target=1)
    older = await asyncpg.connect(silentpulse_database)
    try:
        await older.execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM pg_class")
        build = asyncio.create_task(
            run_migrations(limited_owner, source=source, connect=ConnectRetry(attempts=1))
        )
        await asyncio.sleep(3)
        assert not build.done()
        await older.execute("COMMIT")
        result = await asyncio.wait_for(build, timeout=60)
    finally:
        await older.close()
    assert [a.version for a in result.applied] == [2]
    valid = "SELECT indisvalid FROM pg_index WHERE indexrelid = 'things_id'::regclass"
    assert await fetchval(silentpulse_database, valid) is True


async def test_a_replica_waiting_for_the_lock_longer_than_the_roles_limits(
    limited_owner: str, tmp_path: Path
) -> None:
    source = write_migrations(tmp_path, {1: ("t", "CREATE TABLE t (id int);\n", "DROP TABLE t;\n")})
    holder = await hold_migration_lock(limited_owner)
    try:
        waiting = asyncio.create_task(
            run_migrations(
                limited_owner,
                source=source,
                connect=ConnectRetry(attempts=1),
                migration_lock_timeout=60,
            )
        )
        await asyncio.sleep(3)
        assert not waiting.done()
    finally:
        await holder.close()
    result = await asyncio.wait_for(waiting, timeout=60)
    assert [a.version for a in result.applied] == [1]


async def test_a_files_own_statement_timeout(limited_owner: str, tmp_path: Path) -> None:
    """A file sets its own limit with a directive; the error says the limit was its own."""
    source = write_migrations(
        tmp_path,
        {
            1: (
                "bounded",
                "-- silentpulse: statement_timeout=500ms\nSELECT pg_sleep(2);\n",
                "SELECT 1;\n",
            ),
        },
    )
    with pytest.raises(MigrationFailedError) as info:
        await run_migrations(limited_owner, source=source, connect=ConnectRetry(attempts=1))
    text = str(info.value)
    assert "statement timeout" in text and "statement_timeout=500ms (set by the file itself" in text


async def test_a_files_own_limit_ends_with_the_file(limited_owner: str, tmp_path: Path) -> None:
    """Outside a transaction the directive is SET for the session: once the file is done
    the session is back to the library's value (no limit), not the role's 2 s."""
    source = write_migrations(
        tmp_path,
        {
            1: ("table", "CREATE TABLE things (id int);\n", "DROP TABLE things;\n"),
            2: (
                "index",
                "-- silentpulse: statement_timeout=2500ms\n"
                "CREATE INDEX CONCURRENTLY things_id ON things (id);\n",
                "DROP INDEX CONCURRENTLY things_id;\n",
            ),
            3: ("slow", "SELECT pg_sleep(3);\n", "SELECT 1;\n"),
        },
    )
    result = await run_migrations(limited_owner, source=source, connect=ConnectRetry(attempts=1))
    assert [a.version for a in result.applied] == [1, 2, 3]


async def test_a_files_session_set_ends_with_the_file(
    silentpulse_database: str, tmp_path: Path
) -> None:
    """A file that SETs the session's statement_timeout (not LOCAL) keeps it to itself:
    the files after it, in a transaction or not, run with the library's (none). It
    leaked before: the next file failed, and its error blamed its own SQL."""
    source = write_migrations(
        tmp_path,
        {
            # The file's own limit covers the rest of its transaction (the runner's
            # version write too): 1 s, which neither the write nor COMMIT come near.
            1: (
                "a_limit",
                "CREATE TABLE things (id int);\nINSERT INTO things VALUES (1);\n"
                "CREATE FUNCTION slow_id(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE\n"
                "AS $$ BEGIN PERFORM pg_sleep(1.5); RETURN i; END $$;\n"
                "SET statement_timeout = '1s';\n",
                "DROP TABLE things;\nDROP FUNCTION slow_id(int);\n",
            ),
            2: ("slow", "SELECT pg_sleep(1.5);\n", "SELECT 1;\n"),
            3: ("limit_again", "SET statement_timeout = '1s';\n", "SELECT 1;\n"),
            4: (
                "slow_outside",  # the build calls slow_id on the row: 1.5 s at least
                "CREATE INDEX CONCURRENTLY things_slow ON things (slow_id(id));\n",
                "DROP INDEX CONCURRENTLY things_slow;\n",
            ),
        },
    )
    result = await run_migrations(silentpulse_database, source=source, partitions_ahead=None)
    assert [a.version for a in result.applied] == [1, 2, 3, 4]
    assert [a.transactional for a in result.applied] == [True, True, True, False]


# Every write of the version, as the writing session sees synchronous_commit.
_NOTE_COMMITS = """
CREATE TABLE schema_migrations (version bigint not null primary key, dirty boolean not null);
CREATE TABLE commits_seen (version bigint, dirty boolean, setting text);
CREATE FUNCTION note_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO commits_seen VALUES (NEW.version, NEW.dirty, current_setting('synchronous_commit'));
    RETURN NEW;
END $$;
CREATE TRIGGER note_commit AFTER INSERT OR UPDATE ON schema_migrations
    FOR EACH ROW EXECUTE FUNCTION note_commit();
"""


async def test_the_runners_commits_are_durable_whatever_the_database_sets(
    silentpulse_database: str, tmp_path: Path
) -> None:
    """synchronous_commit = off as the database's default (a throughput setting): a COMMIT
    returns before its WAL is flushed, and a crash a moment after `up` reported version 21
    brought the database back at 20 (issue 28). Every session the engine writes a version
    on sets it on: a trigger on the version table notes the setting of each writer's
    session, on every path (in a transaction, sent together, the dirty protocol outside
    a transaction, down, force)."""
    dsn = silentpulse_database
    database = await fetchval(dsn, "SELECT current_database()")
    await execute(dsn, f'ALTER DATABASE "{database}" SET synchronous_commit = off')
    assert await fetchval(dsn, "SHOW synchronous_commit") == "off"  # as any client has it
    await execute(dsn, _NOTE_COMMITS)
    index = (
        "create_index_t1_id",
        "CREATE INDEX CONCURRENTLY t1_id ON t1 (id);\n",
        "DROP INDEX CONCURRENTLY IF EXISTS t1_id;\n",
    )
    source = write_migrations(
        tmp_path,
        {
            1: ("add_t1", "CREATE TABLE t1 (id int);\n", "DROP TABLE t1;\n"),
            2: index,
            3: ("add_t3", "CREATE TABLE t3 (id int);\n", "DROP TABLE t3;\n"),
        },
    )
    await run_migrations(dsn, source=source, partitions_ahead=None)
    await down(dsn, 2, source=source)
    await force(dsn, 1, source=source)
    await up(dsn, source=source)
    seen = await fetch(dsn, "SELECT version, dirty, setting FROM commits_seen")
    writes = {(r["version"], r["dirty"]) for r in seen}
    assert {(1, False), (2, True), (2, False), (3, False)} <= writes
    assert {r["setting"] for r in seen} == {"on"}

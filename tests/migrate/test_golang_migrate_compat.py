"""Sharing the database with the golang-migrate CLI: same table, same rows, same lock keys.

golang-migrate itself is not installable here, so its side is reproduced with
the exact statements its postgres driver sends (see
shared/reference/golang-migrate-compat.md, checked against v4.17.1).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest

from silentpulse_db import LockTimeoutError, MigrationStateError, run_migrations
from silentpulse_db.migrate import down, force, goto, status, up, version
from silentpulse_db.migrate.session import golang_migrate_lock_key

from helpers import execute, fetch, lock_keys, simple_set, version_rows, write_migrations

GOLANG_CREATE = (
    'CREATE TABLE IF NOT EXISTS "public"."schema_migrations" '
    "(version bigint not null primary key, dirty boolean not null)"
)


def golang_set_version(version: int, dirty: bool) -> str:
    """golang-migrate's SetVersion: TRUNCATE, then INSERT unless the clean nil version."""
    insert = (
        f"INSERT INTO schema_migrations (version, dirty) VALUES ({version}, {str(dirty).lower()});"
        if version >= 0 or dirty
        else ""
    )
    return f"BEGIN; TRUNCATE schema_migrations; {insert} COMMIT;"


CATALOG = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull, a.attnum,
       (SELECT string_agg(pg_get_constraintdef(c.oid), ';' ORDER BY c.conname)
          FROM pg_constraint c WHERE c.conrelid = 'schema_migrations'::regclass) AS constraints,
       (SELECT string_agg(regexp_replace(pg_get_indexdef(i.indexrelid), ' ON .*? USING', ' USING'), ';')
          FROM pg_index i WHERE i.indrelid = 'schema_migrations'::regclass) AS indexes
FROM pg_attribute a
WHERE a.attrelid = 'schema_migrations'::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


async def test_table_ddl_matches_golang_migrate(
    silentpulse_postgres: object, silentpulse_database: str, tmp_path: Path
) -> None:
    await run_migrations(silentpulse_database, source=write_migrations(tmp_path, simple_set(1)))
    ours = [dict(r) for r in await fetch(silentpulse_database, CATALOG)]

    other = silentpulse_database.rsplit("/", 1)[0] + "/postgres"
    name = f"golang_{int(time.time() * 1000)}"
    admin = await asyncpg.connect(other)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        peer = other.rsplit("/", 1)[0] + f"/{name}"
        await execute(peer, GOLANG_CREATE)
        theirs = [dict(r) for r in await fetch(peer, CATALOG)]
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    assert ours == theirs
    assert [(r["attname"], r["type"], r["attnotnull"]) for r in ours] == [
        ("version", "bigint", True),
        ("dirty", "boolean", True),
    ]


def test_lock_key_worked_example() -> None:
    # Observed in pg_locks while the golang-migrate CLI ran against database "gm".
    assert golang_migrate_lock_key("/gm", "public") == 3596941855


async def test_both_lock_keys_of_this_database(silentpulse_database: str) -> None:
    conn = await asyncpg.connect(silentpulse_database)
    try:
        keys = await lock_keys(conn)
        database = await conn.fetchval("SELECT current_database()")
    finally:
        await conn.close()
    assert keys.url_path == golang_migrate_lock_key("/" + database, "public")
    assert keys.current_database == golang_migrate_lock_key(database, "public")
    assert keys.url_path != keys.current_database


@pytest.mark.parametrize("which", ["url_path", "current_database"])
async def test_waits_for_a_golang_migrate_holder_then_names_it(
    which: str, silentpulse_database: str, tmp_path: Path
) -> None:
    source = write_migrations(tmp_path, simple_set(1))
    holder = await asyncpg.connect(
        silentpulse_database, server_settings={"application_name": "migrate-cli"}
    )
    try:
        key = getattr(await lock_keys(holder), which)
        # golang-migrate's Lock: a session-level advisory lock on its key.
        await holder.execute("SELECT pg_advisory_lock($1)", key)
        pid = holder.get_server_pid()
        with pytest.raises(LockTimeoutError) as info:
            await run_migrations(silentpulse_database, source=source, migration_lock_timeout=1.0)
        text = str(info.value)
        assert f"pid {pid}" in text and "'migrate-cli'" in text and str(key) in text
        assert [h.pid for h in info.value.holders] == [pid]
        assert "timed out after 1s" in text
        # Who it is (its role: application_name is what it calls itself), and what to do.
        role = await holder.fetchval("SELECT current_user")
        assert f"pid {pid}, role '{role}'" in text and "pg_terminate_backend" in text
        # Nothing ran while the peer held the lock.
        assert await version_rows(silentpulse_database) == []

        # Once the peer lets go, a waiting runner proceeds.
        runner = asyncio.create_task(
            run_migrations(silentpulse_database, source=source, migration_lock_timeout=30)
        )
        await asyncio.sleep(0.5)
        assert not runner.done()
        await holder.execute("SELECT pg_advisory_unlock($1)", key)
        result = await runner
        assert result.version_after == 1
    finally:
        await holder.close()


async def test_waiting_runner_polls_and_never_blocks_in_pg_advisory_lock(
    silentpulse_database: str, tmp_path: Path
) -> None:
    source = write_migrations(tmp_path, simple_set(1))
    holder = await asyncpg.connect(silentpulse_database)
    try:
        key = (await lock_keys(holder)).url_path
        await holder.execute("SELECT pg_advisory_lock($1)", key)
        runner = asyncio.create_task(
            run_migrations(silentpulse_database, source=source, migration_lock_timeout=30)
        )
        await asyncio.sleep(0.5)
        # A blocked pg_advisory_lock would show as a waiting advisory lock and
        # hold a snapshot; polling shows neither.
        waiting = await holder.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        )
        snapshots = await holder.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'silentpulse-db' "
            "AND backend_xmin IS NOT NULL AND state <> 'active'"
        )
        assert (waiting, snapshots) == (0, 0)
        await holder.execute("SELECT pg_advisory_unlock($1)", key)
        assert (await runner).version_after == 1
    finally:
        await holder.close()


async def test_runbook_steps_leave_the_table_as_golang_migrate_would(
    silentpulse_database: str, tmp_path: Path
) -> None:
    source = write_migrations(tmp_path, simple_set(3))
    dsn = silentpulse_database
    await run_migrations(dsn, source=source)
    assert await version_rows(dsn) == [(3, False)]

    # migrate down 1  ->  (2, false)
    await down(dsn, 1, source=source)
    assert await version_rows(dsn) == [(2, False)]
    # migrate goto 1  ->  (1, false)
    await goto(dsn, 1, source=source)
    assert await version_rows(dsn) == [(1, False)]
    # migrate goto 3  ->  (3, false)
    await goto(dsn, 3, source=source)
    assert await version_rows(dsn) == [(3, False)]
    # a failed golang-migrate up leaves (N, true); migrate force 2 -> (2, false)
    await execute(dsn, golang_set_version(3, True))
    await force(dsn, 2, source=source)
    assert await version_rows(dsn) == [(2, False)]
    # migrate force -1 -> no row at all; and down of everything -> no row.
    await force(dsn, -1, source=source)
    assert await version_rows(dsn) == []
    await force(dsn, 3, source=source)
    await down(dsn, "all", source=source)
    assert await version_rows(dsn) == []


async def test_reads_what_golang_migrate_wrote(silentpulse_database: str, tmp_path: Path) -> None:
    """A database migrated to 2 by golang-migrate (no history table): we continue from 2."""
    source = write_migrations(tmp_path, simple_set(3))
    await execute(silentpulse_database, "CREATE TABLE t1 (id int); CREATE TABLE t2 (id int);")
    await execute(silentpulse_database, GOLANG_CREATE)
    await execute(silentpulse_database, golang_set_version(2, False))
    result = await run_migrations(silentpulse_database, source=source)
    assert [a.version for a in result.applied] == [3]
    assert await version_rows(silentpulse_database) == [(3, False)]


async def test_a_version_table_with_stray_rows_is_refused_until_forced(
    silentpulse_database: str, tmp_path: Path
) -> None:
    """golang-migrate keeps one row; read with LIMIT 1, two rows gave whichever came
    first, and `down 1` reverted a migration the schema was not at (a stray row put in
    by hand, or a SetVersion run without its TRUNCATE). Every verb refuses, naming the
    count and the fix, with nothing run; `force` leaves the one row it is given."""
    dsn = silentpulse_database
    source = write_migrations(tmp_path, simple_set(3))
    await run_migrations(dsn, source=source, partitions_ahead=None)
    await execute(dsn, "INSERT INTO schema_migrations VALUES (1, false)")
    for verb in (
        run_migrations(dsn, source=source, partitions_ahead=None),
        up(dsn, source=source),
        down(dsn, 1, source=source),
        goto(dsn, 2, source=source),
        version(dsn),
        status(dsn, source=source),
    ):
        with pytest.raises(MigrationStateError, match="schema_migrations holds 2 rows") as info:
            await verb
        assert "silentpulse-db force V" in str(info.value)
    assert sorted(await version_rows(dsn)) == [(1, False), (3, False)]
    tables = "SELECT count(*) FROM pg_tables WHERE tablename IN ('t1', 't2', 't3')"
    assert (await fetch(dsn, tables))[0][0] == 3
    await force(dsn, 3, source=source)
    assert await version_rows(dsn) == [(3, False)]
    assert (await down(dsn, 1, source=source)).version_after == 2

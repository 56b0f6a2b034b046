"""Online safety (issue 12) against a real server with real concurrent sessions: a
blocking transaction, a failing unique concurrent index then fixed, an older
replica's files against a newer database."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from silentpulse_db import (
    DatabaseAheadError,
    MigrationFailedError,
    ReversibilityError,
    TableLockTimeoutError,
    run_migrations,
)
from silentpulse_db.migrate import check, force, plan_up, status, up, version
from silentpulse_db.migrate.dryrun.preview import format_plan
from silentpulse_db.settings import DDLLimits

from helpers import execute, fetch, fetchval, login_role, version_rows, write_migrations

TABLE = ("add_t1", "CREATE TABLE t1 (id int, v int);\n", "DROP TABLE t1;\n")
ALTER = ("add_b", "ALTER TABLE t1 ADD COLUMN b int;\n", "ALTER TABLE t1 DROP COLUMN b;\n")


async def blocker(dsn: str) -> asyncpg.Connection:
    """A long transaction that has read t1 (ACCESS SHARE held until it ends)."""
    conn = await asyncpg.connect(dsn, server_settings={"application_name": "long-report"})
    # Its literals hold secrets: they must never reach a log line or an error.
    await conn.execute(
        "BEGIN; SELECT count(*) FROM t1 WHERE 'postgresql://bob:hunter2@db/x' <> 'sk-TOPSECRET';"
    )
    return conn


SECRETS = ("hunter2", "TOPSECRET")


async def test_ddl_never_stalls_queries_and_lands_once_the_blocker_ends(
    silentpulse_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dsn = silentpulse_database
    source = write_migrations(tmp_path, {1: TABLE})
    await run_migrations(dsn, source=source)
    write_migrations(tmp_path, {2: ALTER})
    holder = await blocker(dsn)
    # An ordinary reader that gives up after 5 s: queued behind an ALTER TABLE
    # that waits without a lock_timeout, it would fail.
    reader = await asyncpg.connect(dsn, server_settings={"lock_timeout": "5s"})
    try:
        with caplog.at_level(logging.WARNING, logger="silentpulse_db"):
            migrating = asyncio.create_task(
                run_migrations(
                    dsn, source=source, ddl=DDLLimits(table_lock_timeout=0.3, retry_for=120)
                )
            )
            answered = 0
            while answered < 15 or "stayed out of reach" not in caplog.text:
                assert not migrating.done(), migrating
                await reader.fetchval("SELECT count(*) FROM t1")
                answered += 1
                await asyncio.sleep(0.1)
            assert f"pid {holder.get_server_pid()}" in caplog.text
            assert "'long-report'" in caplog.text and "ACCESS SHARE on t1" in caplog.text
            assert "WHERE '?' <> '?'" in caplog.text
            assert not any(secret in caplog.text for secret in SECRETS)
            assert await version_rows(dsn) == [(1, False)]
            await holder.execute("COMMIT")
            result = await asyncio.wait_for(migrating, 60)
    finally:
        await holder.close()
        await reader.close()
    assert [a.version for a in result.applied] == [2]
    assert await fetchval(dsn, "SELECT count(*) FROM pg_attribute WHERE attname = 'b'") == 1


async def test_retries_spent_fail_cleanly_naming_the_blocker(
    silentpulse_database: str, tmp_path: Path
) -> None:
    dsn = silentpulse_database
    source = write_migrations(tmp_path, {1: TABLE, 2: ALTER})
    await run_migrations(dsn, source=source, target=1)
    holder = await blocker(dsn)
    try:
        with pytest.raises(TableLockTimeoutError) as info:
            await run_migrations(
                dsn, source=source, ddl=DDLLimits(table_lock_timeout=0.1, retry_for=0.8)
            )
    finally:
        await holder.close()
    error = info.value
    assert [b.pid for b in error.blockers] == [holder.get_server_pid()]
    assert error.blockers[0].application_name == "long-report"
    assert "000002_add_b.up.sql" in str(error) and "stays at version 1, clean" in str(error)
    assert not any(secret in str(error) or secret in repr(error.blockers) for secret in SECRETS)
    assert await version_rows(dsn) == [(1, False)]
    assert await fetchval(dsn, "SELECT count(*) FROM pg_attribute WHERE attname = 'b'") == 0


async def test_a_file_sets_its_own_lock_timeout_and_statement_timeout_stays_off(
    silentpulse_database: str, tmp_path: Path
) -> None:
    dsn = silentpulse_database
    probe = (
        "settings",
        "-- silentpulse: lock_timeout=250ms\n"
        "CREATE TABLE seen AS SELECT current_setting('lock_timeout') AS lock, "
        "current_setting('statement_timeout') AS statement;\n",
        "DROP TABLE seen;\n",
    )
    source = write_migrations(tmp_path, {1: TABLE, 2: probe})
    await run_migrations(dsn, source=source)
    rows = await fetch(dsn, "SELECT lock, statement FROM seen")
    assert [tuple(r) for r in rows] == [("250ms", "0")]
    # The run's own setting applies to files without one.
    write_migrations(tmp_path, {3: ALTER})
    holder = await blocker(dsn)
    try:
        with pytest.raises(TableLockTimeoutError, match="each waiting at most 0.05s"):
            await run_migrations(
                dsn, source=source, ddl=DDLLimits(table_lock_timeout=0.05, retry_for=0)
            )
        # A file that sets lock_timeout itself (as 000004 and later do) is reported so.
        own = "SET LOCAL lock_timeout = '150ms';\nALTER TABLE t1 ADD COLUMN b int;\n"
        write_migrations(tmp_path, {3: ("add_b", own, ALTER[2])})
        with pytest.raises(TableLockTimeoutError, match=r"150ms \(set by the file itself\)"):
            await run_migrations(
                dsn, source=source, ddl=DDLLimits(table_lock_timeout=5, retry_for=0)
            )
    finally:
        await holder.close()


@pytest.mark.parametrize("if_not_exists", ["", "IF NOT EXISTS "])
async def test_a_failed_unique_concurrent_index_heals_on_a_plain_rerun(
    silentpulse_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, if_not_exists: str
) -> None:
    dsn = silentpulse_database
    index = (
        "unique_v",
        f"CREATE UNIQUE INDEX CONCURRENTLY {if_not_exists}t1_v_key ON t1 (v);\n",
        "DROP INDEX CONCURRENTLY IF EXISTS t1_v_key;\n",
    )
    source = write_migrations(tmp_path, {1: TABLE, 2: index})
    await run_migrations(dsn, source=source, target=1)
    await execute(dsn, "INSERT INTO t1 SELECT g, g % 100 FROM generate_series(1, 1000) AS g")
    with pytest.raises(MigrationFailedError) as info:
        await run_migrations(dsn, source=source)
    assert info.value.dirty and info.value.sqlstate == "23505"
    assert "run `silentpulse-db up` again" in str(info.value)
    assert "Do not `force`" in str(info.value) and "force 2" not in str(info.value)
    assert await version_rows(dsn) == [(2, True)]
    valid = "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('t1_v_key')"
    assert await fetchval(dsn, valid) is False
    report = await status(dsn, source=source)
    assert any("t1_v_key on t1 is INVALID" in line for line in report.invalid_indexes)
    with pytest.raises(ReversibilityError, match="t1_v_key on t1 is INVALID"):
        await check(dsn, source=source)

    # Still broken data: the rerun fails the same way, dirty, nothing else changed.
    with pytest.raises(MigrationFailedError):
        await run_migrations(dsn, source=source)
    assert await version_rows(dsn) == [(2, True)]
    # The cause fixed, a plain rerun is the whole recovery.
    await execute(dsn, "DELETE FROM t1 WHERE id > 100")
    with caplog.at_level(logging.WARNING, logger="silentpulse_db"):
        result = await run_migrations(dsn, source=source)
    assert [a.version for a in result.applied] == [2]
    assert "is INVALID (a failed earlier build): dropping it" in caplog.text
    assert await fetchval(dsn, valid) is True
    assert await version_rows(dsn) == [(2, False)]
    assert (await status(dsn, source=source)).invalid_indexes == ()


async def test_force_then_up_also_rebuilds_the_invalid_index(
    silentpulse_database: str, tmp_path: Path
) -> None:
    dsn = silentpulse_database
    index = (
        "unique_v",
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS t1_v_key ON t1 (v);\n",
        "DROP INDEX CONCURRENTLY IF EXISTS t1_v_key;\n",
    )
    source = write_migrations(tmp_path, {1: TABLE, 2: index})
    await run_migrations(dsn, source=source, target=1)
    await execute(dsn, "INSERT INTO t1 VALUES (1, 7), (2, 7)")
    with pytest.raises(MigrationFailedError):
        await up(dsn, source=source)
    await execute(dsn, "DELETE FROM t1 WHERE id = 2")
    await force(dsn, 1, source=source)
    await up(dsn, source=source)
    # IF NOT EXISTS used to skip the INVALID index and record version 2 clean.
    valid = "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('t1_v_key')"
    assert await fetchval(dsn, valid) is True


def _versions(breaking: set[int], count: int) -> dict[int, tuple[str, str, str]]:
    files = {1: TABLE}
    for v in range(2, count + 1):
        mark = "-- silentpulse: breaking\n" if v in breaking else ""
        body = f"ALTER TABLE t1 ADD COLUMN c{v} int;\n"
        if v in breaking:
            body = f"ALTER TABLE t1 DROP COLUMN v{v};\n"
        name = f"drop_v{v}" if v in breaking else f"add_c{v}"
        files[v] = (name, mark + body, "SELECT 1;\n")
    return files


async def test_older_replicas_refuse_only_breaking_migrations(
    silentpulse_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dsn = silentpulse_database
    await run_migrations(dsn, source=write_migrations(tmp_path / "base", {1: TABLE}))
    await execute(dsn, "ALTER TABLE t1 ADD COLUMN v4 int")
    newest = write_migrations(tmp_path / "new", _versions({4}, 4))
    dry = await plan_up(dsn, source=newest)
    assert [(m.version, m.breaking) for m in dry.migrations] == [(2, False), (3, False), (4, True)]
    assert "4/up drop_v4  [in one transaction]  [BREAKING" in format_plan(dry)
    await run_migrations(dsn, source=newest)
    history = await fetch(
        dsn, "SELECT version, breaking FROM schema_migrations_history WHERE direction = 'up'"
    )
    assert sorted((r["version"], r["breaking"]) for r in history) == [
        (1, False),
        (2, False),
        (3, False),
        (4, True),
    ]
    report = await status(dsn, source=newest)
    assert [r.breaking for r in report.rows] == [False, False, False, True]

    # Files up to 2 or 3: version 4 (breaking) is beyond them: refuse, naming it.
    for count in (2, 3):
        old = write_migrations(tmp_path / f"old{count}", _versions({4}, count))
        with pytest.raises(DatabaseAheadError, match="4_drop_v4 is marked breaking"):
            await run_migrations(dsn, source=old)
        rows = (await status(dsn, source=old)).rows
        assert [(r.version, r.state, r.breaking) for r in rows if r.version > count] == [
            (v, "applied (no file)", v == 4) for v in range(count + 1, 5)
        ]
    # Files up to 4: only 5 is newer, and it is additive: warn and start.
    await run_migrations(dsn, source=write_migrations(tmp_path / "new5", _versions({4}, 5)))
    old4 = write_migrations(tmp_path / "old4", _versions({4}, 4))
    with caplog.at_level(logging.WARNING, logger="silentpulse_db"):
        result = await run_migrations(dsn, source=old4)
    assert result.database_ahead and result.applied == ()
    assert "not breaking: starting" in caplog.text
    with pytest.raises(DatabaseAheadError):
        await run_migrations(dsn, source=old4, strict=True)


async def test_a_history_table_from_before_the_mark_is_upgraded(
    silentpulse_database: str, tmp_path: Path
) -> None:
    dsn = silentpulse_database
    source = write_migrations(tmp_path, {1: TABLE})
    await run_migrations(dsn, source=source)
    await execute(dsn, "ALTER TABLE schema_migrations_history DROP COLUMN breaking")
    assert (await status(dsn, source=source)).current.version == 1  # still readable
    write_migrations(tmp_path, _versions({2}, 2) | {1: TABLE})
    await execute(dsn, "ALTER TABLE t1 ADD COLUMN v2 int")
    await run_migrations(dsn, source=source)
    marks: Any = await fetch(
        dsn, "SELECT version, breaking FROM schema_migrations_history ORDER BY id"
    )
    assert [(r["version"], r["breaking"]) for r in marks] == [(1, False), (2, True)]


_NEWER_COLUMNS = (
    "SELECT count(*) FROM pg_attribute WHERE attrelid = 'schema_migrations_history'::regclass "
    "AND attname IN ('breaking', 'migrations_table') AND NOT attisdropped"
)


async def test_an_older_history_is_read_as_it_is_and_upgraded_once_under_the_lock(
    silentpulse_database: str, tmp_path: Path
) -> None:
    """A history an older release created (no breaking mark, no version table's name):
    the verbs that only read read it as it is, as a role that may not write; a start with
    nothing to do reads it too and writes nothing; the first run that takes the lock
    brings it to this layout (VersionStore.ensure), its rows schema_migrations'."""
    dsn = silentpulse_database
    source = write_migrations(tmp_path, {1: TABLE})
    await run_migrations(dsn, source=source)
    await execute(
        dsn,
        "ALTER TABLE schema_migrations_history DROP COLUMN breaking, DROP COLUMN migrations_table",
    )
    grant = "GRANT SELECT ON schema_migrations, schema_migrations_history TO {role}"
    async with login_role(dsn, grant) as (_role, reader):
        assert (await version(reader)).version == 1
        rows = (await status(reader, source=source)).rows
        assert [(r.version, r.state, r.checksum) for r in rows] == [(1, "applied", "ok")]
        assert (await plan_up(reader, source=source)).migrations == ()
    assert (await run_migrations(dsn, source=source)).applied == ()
    assert await fetchval(dsn, _NEWER_COLUMNS) == 0  # nothing to do: nothing written
    write_migrations(tmp_path, {1: TABLE, 2: ALTER})
    assert [a.version for a in (await run_migrations(dsn, source=source)).applied] == [2]
    assert await fetchval(dsn, _NEWER_COLUMNS) == 2
    marks: Any = await fetch(
        dsn,
        "SELECT version, breaking, migrations_table FROM schema_migrations_history ORDER BY id",
    )
    assert [tuple(r) for r in marks] == [
        (1, False, "schema_migrations"),
        (2, False, "schema_migrations"),
    ]

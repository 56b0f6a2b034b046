"""golang-migrate's ``x-`` URL options on real runs (issue 28, 5): the DSN a team gives
golang-migrate works here unchanged. x-statement-timeout limits each migration
statement (a file's own directive wins), x-multi-statement runs, every connection the
library makes drops them, x-lock-strategy=table is refused before anything runs.
The table of DSNs, good and bad, is tests/postgres/test_dsn_options.py."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
from pathlib import Path

import asyncpg
import pytest

from silentpulse_db import (
    ConfigurationError,
    MigrationFailedError,
    create_pool,
    maintain_partitions,
    run_migrations,
)
from silentpulse_db.credentials import migrate_credentials, verify_credentials
from silentpulse_db.crypto import Keyring
from silentpulse_db.migrate import plan_up, status, up, version
from silentpulse_db.settings import ConnectRetry

from helpers import cli, fetchval, simple_set, user_tables, version_rows, write_migrations

# Whatever golang-migrate's postgres and pgx drivers take, together: none reaches the server.
EVERY_OPTION = (
    "x-migrations-table=schema_migrations&x-migrations-table-quoted=false"
    "&x-statement-timeout=600000&x-multi-statement=true&x-multi-statement-max-size=10485760"
    "&x-lock-strategy=advisory&x-lock-table=schema_lock"
)
GOLANG_MIGRATE = shutil.which("migrate") or str(Path.home() / "go/bin/migrate")


def with_options(dsn: str, options: str) -> str:
    return f"{dsn}{'&' if '?' in dsn else '?'}{options}"


def sleeping_set(directory: Path) -> Path:
    """1 creates a table; 2 creates one and sleeps far longer than the limit given."""
    return write_migrations(
        directory,
        {
            1: ("add_t1", "CREATE TABLE t1 (id int);\n", "DROP TABLE t1;\n"),
            2: (
                "sleep_long",
                "CREATE TABLE t2 (id int);\nSELECT pg_sleep(60);\n",
                "DROP TABLE t2;\n",
            ),
        },
    )


async def test_x_statement_timeout_cancels_a_migration_statement(
    silentpulse_database: str, tmp_path: Path
) -> None:
    source = sleeping_set(tmp_path)
    dsn = with_options(silentpulse_database, "x-statement-timeout=200")
    with pytest.raises(MigrationFailedError) as info:
        await run_migrations(dsn, source=source, connect=ConnectRetry(attempts=1))
    text = str(info.value)
    assert info.value.sqlstate == "57014"
    assert "canceling statement due to statement timeout" in text
    assert "000002_sleep_long.up.sql line 2" in text
    assert "x-statement-timeout=200" in text  # where the limit came from
    # Rolled back whole: 1 stays applied, 2 left nothing, and the version is 1, clean.
    assert await version_rows(silentpulse_database) == [(1, False)]
    assert await user_tables(silentpulse_database) == {"t1"}


async def test_a_files_own_statement_timeout_wins_over_the_dsns(
    silentpulse_database: str, tmp_path: Path
) -> None:
    """The order: a file's `-- silentpulse: statement_timeout` > the DSN's
    x-statement-timeout > none (the library's; a role's or database's never applies)."""
    source = write_migrations(
        tmp_path,
        {
            1: (
                "sleep_unbounded",
                "-- silentpulse: statement_timeout=0\nSELECT pg_sleep(0.5);\n",
                "SELECT 1;\n",
            ),
            2: (
                "sleep_bounded",
                "-- silentpulse: statement_timeout=100ms\nSELECT pg_sleep(60);\n",
                "SELECT 1;\n",
            ),
        },
    )
    dsn = with_options(silentpulse_database, "x-statement-timeout=50")
    with pytest.raises(MigrationFailedError) as info:
        await up(dsn, source=source, connect=ConnectRetry(attempts=1))
    assert info.value.file is not None and info.value.file.endswith("000002_sleep_bounded.up.sql")
    assert "statement_timeout=100ms (set by the file itself" in str(info.value)
    assert await version_rows(silentpulse_database) == [(1, False)]


async def test_x_statement_timeout_applies_outside_a_transaction_too(
    silentpulse_database: str, tmp_path: Path
) -> None:
    """A concurrent index build waits for every older transaction: held open by another
    session, it runs into the DSN's limit (golang-migrate's dirty protocol then)."""
    source = write_migrations(
        tmp_path,
        {
            1: ("add_t1", "CREATE TABLE t1 (id int);\n", "DROP TABLE t1;\n"),
            2: (
                "index_t1",
                "CREATE INDEX CONCURRENTLY t1_id ON t1 (id);\n",
                "DROP INDEX CONCURRENTLY t1_id;\n",
            ),
        },
    )
    await run_migrations(
        silentpulse_database, source=source, target=1, connect=ConnectRetry(attempts=1)
    )
    holder = await asyncpg.connect(silentpulse_database)
    try:
        await holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM t1")
        dsn = with_options(silentpulse_database, "x-statement-timeout=300")
        with pytest.raises(MigrationFailedError) as info:
            # Only a safety net: without the limit the build would wait for the holder,
            # which waits for it.
            await asyncio.wait_for(up(dsn, source=source, connect=ConnectRetry(attempts=1)), 300)
    finally:
        await holder.close()
    assert info.value.sqlstate == "57014"
    assert "x-statement-timeout=300" in str(info.value)
    assert info.value.dirty
    # Nothing holds it back now: a plain rerun without the option heals and finishes.
    await up(silentpulse_database, source=source, connect=ConnectRetry(attempts=1))
    assert await version_rows(silentpulse_database) == [(2, False)]


async def test_x_multi_statement_and_every_option_run(
    silentpulse_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="silentpulse_db")
    source = write_migrations(tmp_path, simple_set(3))
    dsn = with_options(silentpulse_database, EVERY_OPTION)
    assert (await plan_up(dsn, source=source)).version_after == 3
    result = await run_migrations(dsn, source=source, connect=ConnectRetry(attempts=1))
    assert result.version_after == 3
    assert (await version(dsn)).version == 3
    assert [r.state for r in (await status(dsn, source=source)).rows] == ["applied"] * 3
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # all understood


async def test_unknown_options_are_ignored_with_one_warning(
    silentpulse_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="silentpulse_db")
    source = write_migrations(tmp_path, simple_set(2))
    dsn = with_options(silentpulse_database, "x-engine-run-a=1&x-engine-run-b=on")
    await run_migrations(dsn, source=source, target=1, connect=ConnectRetry(attempts=1))
    await up(dsn, source=source, connect=ConnectRetry(attempts=1))
    await version(dsn)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "x-engine-run-a, x-engine-run-b" in warned[0], warned
    assert await version_rows(silentpulse_database) == [(2, False)]


async def test_a_lock_table_is_refused_before_anything_runs(
    silentpulse_database: str, tmp_path: Path
) -> None:
    source = write_migrations(tmp_path, simple_set(1))
    dsn = with_options(silentpulse_database, "x-lock-strategy=table&x-lock-table=schema_lock")
    with pytest.raises(ConfigurationError, match="would not exclude each other"):
        await run_migrations(dsn, source=source, connect=ConnectRetry(attempts=1))
    assert (
        await fetchval(
            silentpulse_database, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        )
        == 0
    )
    done = await asyncio.to_thread(cli, "up", "--path", str(source), dsn=dsn)
    assert done.returncode == 2 and "x-lock-strategy=table" in done.stderr, done.stderr


async def test_every_connection_with_a_users_dsn_drops_them(
    silentpulse_migrated_database: str,
) -> None:
    """The application's pool, the jobs, migrate-credentials, the operator CLI: the same DSN."""
    dsn = with_options(silentpulse_migrated_database, EVERY_OPTION + "&x-connection-c=1")
    pool = await create_pool(dsn, bypass_rls=True, min_size=1, max_size=1)
    try:
        assert await pool.fetchval("SELECT 1") == 1
    finally:
        await pool.close()
    await maintain_partitions(dsn, connect=ConnectRetry(attempts=1))
    keyring = Keyring(bytes.fromhex("b2d4" * 16), salt=b"test-salt")
    report = await migrate_credentials(dsn, keyring=keyring, dry_run=True)
    assert not report.committed
    await verify_credentials(dsn, keyring=keyring)
    for args in (["version"], ["status"], ["up"], ["partitions"]):
        done = await asyncio.to_thread(cli, *args, dsn=dsn)
        assert done.returncode == 0, (args, done.stderr)
        assert "unrecognized configuration parameter" not in done.stderr
    # One warning a process: the CLI's own, naming the option and no password.
    done = await asyncio.to_thread(cli, "version", dsn=dsn)
    assert done.stderr.count("x-connection-c") == 1, done.stderr


@pytest.mark.skipif(
    not Path(GOLANG_MIGRATE).exists(),
    reason="golang-migrate's CLI is not built here (bench/build_golang_migrate.sh)",
)
async def test_the_dsn_golang_migrate_runs_with_runs_here(
    silentpulse_database: str, tmp_path: Path
) -> None:
    """golang-migrate applies 1-2 with the options, this engine 3 with the same DSN."""
    source = write_migrations(tmp_path, simple_set(3))
    dsn = with_options(silentpulse_database, "sslmode=disable&" + EVERY_OPTION)
    done = await asyncio.to_thread(
        subprocess.run,
        [GOLANG_MIGRATE, "-database", dsn, "-path", str(source), "up", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = await run_migrations(dsn, source=source, connect=ConnectRetry(attempts=1))
    assert [a.version for a in result.applied] == [3]
    assert await version_rows(silentpulse_database) == [(3, False)]

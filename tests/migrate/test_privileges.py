"""A role without the privileges it needs gets a typed, one-line error naming the role,
the object and the privilege, from every public function and both CLIs (issue 10, 1)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from silentpulse_db import (
    LockTimeoutError,
    PermissionDeniedError,
    SilentPulseDBError,
    TableLockTimeoutError,
    run_migrations,
)
from silentpulse_db.migrate import check, force, status, up, version
from silentpulse_db.settings import ConnectRetry, DDLLimits

from helpers import (
    execute,
    hold_migration_lock,
    login_role,
    reading,
    simple_set,
    write_migrations,
)


def cli(tool: str, *args: str, dsn: str, **env: str) -> subprocess.CompletedProcess[str]:
    module = "silentpulse_db" if tool == "silentpulse-db" else "silentpulse_db.credentials.cli"
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "DATABASE_URL": dsn, **env},
        timeout=120,
    )


@contextlib.asynccontextmanager
async def owner_and_app(dsn: str) -> AsyncIterator[tuple[str, str, str, str]]:
    """The runbook's two roles (docs/operations.md): an owner that migrates, and an app
    role its default privileges give DML on every table it creates. Yields the app
    role, its DSN, the owner and its DSN."""
    async with (
        login_role(dsn, "", prefix="app") as (app, app_dsn),
        login_role(
            dsn,
            "GRANT CREATE, USAGE ON SCHEMA public TO {role}; "
            f"GRANT USAGE ON SCHEMA public TO {app}; "
            "ALTER DEFAULT PRIVILEGES FOR ROLE {role} IN SCHEMA public "
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app};",
            prefix="owner",
        ) as (owner, owner_dsn),
    ):
        yield app, app_dsn, owner, owner_dsn


async def test_no_create_on_the_schema(silentpulse_database: str, tmp_path: Path) -> None:
    source = write_migrations(tmp_path, simple_set(1))
    # PostgreSQL 15: PUBLIC has no CREATE on schema public; this role gets nothing more.
    async with login_role(silentpulse_database, "REVOKE CREATE ON SCHEMA public FROM {role};") as (
        role,
        dsn,
    ):
        for call in (run_migrations(dsn, source=source), up(dsn, source=source)):
            with pytest.raises(PermissionDeniedError) as info:
                await call
            error = info.value
            assert (error.role, error.privilege, error.object) == (role, "CREATE", "schema public")
            assert "version tables" in str(error)
            assert f"GRANT CREATE ON SCHEMA public TO {role}" in str(error)
            assert "\n" not in str(error)

        done = cli("silentpulse-db", "up", "--path", str(source), dsn=dsn)
        assert done.returncode == 1
        assert done.stderr.startswith("silentpulse-db up: error: role ")
        assert "Traceback" not in done.stderr and "asyncpg" not in done.stderr
        assert f"GRANT CREATE ON SCHEMA public TO {role}" in done.stderr


async def test_no_select_on_the_version_tables(silentpulse_database: str, tmp_path: Path) -> None:
    source = write_migrations(tmp_path, simple_set(1))
    await run_migrations(silentpulse_database, source=source)
    await execute(silentpulse_database, "REVOKE ALL ON schema_migrations FROM PUBLIC")
    async with login_role(silentpulse_database) as (role, dsn):
        for call in (version(dsn), status(dsn, source=source)):
            with pytest.raises(PermissionDeniedError) as info:
                await call
            assert info.value.object.startswith("table schema_migrations")
            assert info.value.role == role
        for command in ("version", "status"):
            done = cli("silentpulse-db", command, "--path", str(source), dsn=dsn)
            assert done.returncode == 1 and "Traceback" not in done.stderr
            assert f"role {role!r}" in done.stderr and "schema_migrations" in done.stderr


async def test_check_without_createdb(silentpulse_database: str, tmp_path: Path) -> None:
    async with login_role(silentpulse_database) as (role, dsn):
        with pytest.raises(PermissionDeniedError) as info:
            await check(dsn, source=write_migrations(tmp_path, simple_set(1)))
        assert info.value.privilege == "CREATEDB"
        assert f"ALTER ROLE {role} CREATEDB" in str(info.value)


async def test_migrate_credentials_without_privileges(silentpulse_migrated_database: str) -> None:
    from silentpulse_db.credentials.rotation import migrate_credentials
    from silentpulse_db.crypto import Keyring

    # BYPASSRLS (as the runbook says) but no grant on the tables.
    setup = "ALTER ROLE {role} BYPASSRLS;"
    async with login_role(silentpulse_migrated_database, setup) as (role, dsn):
        with pytest.raises(SilentPulseDBError) as info:
            await migrate_credentials(dsn, keyring=Keyring(bytes(range(32))))
        assert isinstance(info.value, PermissionDeniedError)
        assert info.value.role == role
        done = cli("migrate-credentials", dsn=dsn, ENCRYPTION_KEY=bytes(range(32)).hex())
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert f"role {role!r}" in done.stderr


async def test_holders_hidden_from_the_role_say_what_shows_them(
    silentpulse_database: str, tmp_path: Path
) -> None:
    """pg_stat_activity hides other roles' sessions unless pg_read_all_stats: the lock's
    holder and a table's blocker say so instead of showing blanks (issue 20, 6)."""
    first = write_migrations(tmp_path / "a", simple_set(1))
    setup = "GRANT CREATE ON SCHEMA public TO {role};"
    async with login_role(silentpulse_database, setup, prefix="owner") as (role, dsn):
        await run_migrations(dsn, source=first, partitions_ahead=None)
        holder = await hold_migration_lock(silentpulse_database)  # another role's runner
        try:
            with pytest.raises(LockTimeoutError) as lock_info:
                await force(dsn, 1, source=first, migration_lock_timeout=0.3)
        finally:
            await holder.close()
        text = str(lock_info.value)
        assert f"hidden from role {role!r}: GRANT pg_read_all_stats TO {role}" in text, text
        assert lock_info.value.holders[0].hidden_from == role
        blocker = await reading(silentpulse_database, "t1")  # a superuser's open transaction
        alter = {
            2: ("alter_t1", "ALTER TABLE t1 ADD COLUMN c int;\n", "ALTER TABLE t1 DROP COLUMN c;\n")
        }
        more = write_migrations(tmp_path / "a", alter)
        try:
            with pytest.raises(TableLockTimeoutError) as table_info:
                await run_migrations(
                    dsn,
                    source=more,
                    ddl=DDLLimits(table_lock_timeout=0.1, retry_for=0.3),
                    partitions_ahead=None,
                )
        finally:
            await blocker.close()
        text = str(table_info.value)
        assert f"GRANT pg_read_all_stats TO {role}" in text, text
        assert "<insufficient privilege>" not in text


async def test_the_app_role_cannot_rewrite_the_bookkeeping_whatever_it_is_granted(
    silentpulse_database: str, tmp_path: Path
) -> None:
    """docs/operations.md's default privileges give the app role DML on what the owner
    creates, the version tables included, and a blanket GRANT ALL gives TRUNCATE: it may
    read the version (as golang-migrate's `migrate version` does) and change nothing
    (issue 27, 9). The owner, and golang-migrate run as the owner, write as before."""
    dsn = silentpulse_database
    source = write_migrations(tmp_path, simple_set(2))
    async with owner_and_app(dsn) as (app, app_dsn, owner, owner_dsn):
        await run_migrations(owner_dsn, source=source, target=1, connect=ConnectRetry(attempts=1))
        await execute(owner_dsn, f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {app}")
        conn = await asyncpg.connect(app_dsn)
        try:
            assert await conn.fetchval("SELECT version FROM schema_migrations") == 1
            assert await conn.fetchval("SELECT count(*) FROM schema_migrations_history") == 1
            assert await conn.execute("UPDATE schema_migrations SET dirty = true") == "UPDATE 0"
            assert await conn.execute("DELETE FROM schema_migrations_history") == "DELETE 0"
            for statement in (
                "INSERT INTO schema_migrations (version, dirty) VALUES (99, false)",
                "INSERT INTO schema_migrations_history (version, name, direction, applied_by) "
                "VALUES (99, 'x', 'up', 'me')",
                "TRUNCATE schema_migrations",
                "TRUNCATE schema_migrations_history",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(statement)
        finally:
            await conn.close()
        result = await run_migrations(owner_dsn, source=source, connect=ConnectRetry(attempts=1))
        assert result.version_after == 2
        # golang-migrate's SetVersion, as the owner: TRUNCATE, then INSERT.
        await execute(
            owner_dsn, "TRUNCATE schema_migrations; INSERT INTO schema_migrations VALUES (2, false)"
        )
        assert owner


async def test_an_app_role_locking_the_version_tables_delays_a_run_no_longer_than_its_lock_wait(
    silentpulse_database: str, tmp_path: Path
) -> None:
    """The runbook's default privileges give the app role UPDATE on the version tables,
    and with it `LOCK TABLE`: a session of it holding a lock on them must not hang a
    start (the probe read them with no limit, for ever) or be hidden from the operator.
    A start waits at most its migration lock wait, then LockTimeoutError names the
    session and its role; a migration whose version write is blocked names it too."""
    dsn = silentpulse_database
    source = write_migrations(tmp_path, simple_set(1))
    one = ConnectRetry(attempts=1)
    async with owner_and_app(dsn) as (app, app_dsn, _owner, owner_dsn):
        await run_migrations(owner_dsn, source=source, connect=one, partitions_ahead=None)
        source = write_migrations(tmp_path, simple_set(2))
        attacker = await asyncpg.connect(app_dsn)
        try:
            pid = attacker.get_server_pid()
            await attacker.execute("BEGIN; LOCK TABLE schema_migrations IN ACCESS EXCLUSIVE MODE")
            # The guard only keeps the old code's hang from stalling the suite.
            with pytest.raises(LockTimeoutError) as info:
                await asyncio.wait_for(
                    run_migrations(
                        owner_dsn,
                        source=source,
                        connect=one,
                        migration_lock_timeout=0.5,
                        partitions_ahead=None,
                    ),
                    timeout=60,
                )
            (blocker,) = info.value.blockers
            assert (blocker.pid, blocker.role, blocker.mode) == (pid, app, "ACCESS EXCLUSIVE")
            text = str(info.value)
            assert f"pid {pid}, role '{app}'" in text and "schema_migrations" in text, text
            assert "pg_terminate_backend" in text
            process = await asyncio.to_thread(
                cli,
                "silentpulse-db",
                "--migration-lock-timeout",
                "0.5",
                "up",
                "--path",
                str(source),
                dsn=owner_dsn,
            )
            assert process.returncode == 1, process.stderr
            assert f"pid {pid}, role '{app}'" in process.stderr, process.stderr

            # A lock that lets the run read but not write: the migration's own version
            # write waits, and its TableLockTimeoutError names that session, not "no one".
            await attacker.execute("ROLLBACK; BEGIN; LOCK TABLE schema_migrations IN SHARE MODE")
            with pytest.raises(TableLockTimeoutError) as table_info:
                await asyncio.wait_for(
                    run_migrations(
                        owner_dsn,
                        source=source,
                        connect=one,
                        ddl=DDLLimits(table_lock_timeout=0.1, retry_for=0.3),
                        partitions_ahead=None,
                    ),
                    timeout=60,
                )
            text = str(table_info.value)
            assert f"pid {pid}, role '{app}'" in text and "SHARE on schema_migrations" in text
            assert "no session holds it now" not in text
        finally:
            await attacker.close()
        # The session gone, the same run goes through.
        result = await run_migrations(owner_dsn, source=source, connect=one, partitions_ahead=None)
        assert result.version_after == 2


async def test_every_read_of_a_locked_version_table_is_bounded_and_named(
    silentpulse_database: str, tmp_path: Path
) -> None:
    """The rarer paths to the version tables wait no longer than a start-up's probe: a
    file's `requires` reading another set's version, and ensure() bringing a table only
    golang-migrate made to this layout (its ALTERs wait for any lock: the error names the
    holder, not an aborted transaction). A lock wait of 0 (do not wait for another
    runner) still leaves each read its milliseconds."""
    dsn = silentpulse_database
    one = ConnectRetry(attempts=1)
    async with owner_and_app(dsn) as (app, app_dsn, _owner, owner_dsn):
        # golang-migrate's table alone, made by the owner: the app role may lock it.
        await execute(
            owner_dsn,
            "CREATE TABLE schema_migrations (version bigint not null primary key, "
            "dirty boolean not null); INSERT INTO schema_migrations VALUES (1, false)",
        )
        core = write_migrations(tmp_path / "core", simple_set(2))
        attacker = await asyncpg.connect(app_dsn)
        try:
            pid = attacker.get_server_pid()
            await attacker.execute("BEGIN; LOCK TABLE schema_migrations IN ROW EXCLUSIVE MODE")
            with pytest.raises(LockTimeoutError) as info:
                await asyncio.wait_for(
                    run_migrations(
                        owner_dsn,
                        source=core,
                        connect=one,
                        migration_lock_timeout=1,
                        partitions_ahead=None,
                    ),
                    timeout=60,
                )
            assert f"pid {pid}, role '{app}'" in str(info.value), str(info.value)
            await attacker.execute("ROLLBACK")
            result = await run_migrations(
                owner_dsn, source=core, connect=one, migration_lock_timeout=0, partitions_ahead=None
            )
            assert result.version_after == 2

            requires = "-- silentpulse: requires schema_migrations >= 2\nCREATE TABLE w (id int);\n"
            worker = write_migrations(tmp_path / "worker", {1: ("w", requires, "DROP TABLE w;\n")})
            await attacker.execute("BEGIN; LOCK TABLE schema_migrations IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(LockTimeoutError) as info:
                await asyncio.wait_for(
                    run_migrations(
                        owner_dsn,
                        source=worker,
                        table="worker_schema_migrations",
                        connect=one,
                        migration_lock_timeout=1,
                        partitions_ahead=None,
                    ),
                    timeout=60,
                )
            assert f"pid {pid}, role '{app}'" in str(info.value), str(info.value)
        finally:
            await attacker.close()

"""A role without the privileges it needs gets a typed, one-line error naming the role,
the object and the privilege, from every public function and both CLIs (issue 10, 1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from silentpulse_db import (
    PermissionDeniedError,
    SilentPulseDBError,
    check,
    run_migrations,
    status,
    up,
    version,
)

from helpers import execute, login_role, simple_set, write_migrations


def cli(tool: str, *args: str, dsn: str, **env: str) -> subprocess.CompletedProcess[str]:
    module = "silentpulse_db" if tool == "silentpulse-db" else "silentpulse_db.credentials.cli"
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "DATABASE_URL": dsn, **env},
        timeout=120,
    )


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

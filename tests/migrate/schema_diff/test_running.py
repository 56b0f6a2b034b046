"""How a drift run goes: its scratch database (the operator's, a killed run's leftovers),
its read-only role, the errors it gives as text and JSON, and no lock option."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from silentpulse_db import DirtyDatabaseError
from silentpulse_db.migrate import drift
from silentpulse_db.results import DriftReport
from silentpulse_db.settings import ConnectRetry

from helpers import cli, execute, fetchval, login_role, wait_for


def _cli_with(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with ``env`` (DSNs) and nothing of the test's own."""
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "POSTGRES_DSN")}
    return subprocess.run(
        [sys.executable, "-m", "silentpulse_db", *args],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=120,
        check=False,
    )


async def test_json_errors_and_the_scratch_dsn_from_the_environment(
    silentpulse_migrated_database: str, silentpulse_database: str
) -> None:
    """Issue 29, 8: `--json` answers an error with a JSON object (CI reads stdout), its
    password hidden; the scratch database can be given as SCRATCH_DATABASE_URL, so that
    its password is not in the process list."""
    failed = await asyncio.to_thread(
        _cli_with, {"DATABASE_URL": silentpulse_database}, "drift", "--json"
    )
    assert failed.returncode == 2, failed.stderr
    error = json.loads(failed.stdout)["error"]
    assert error["type"] == "ConfigurationError" and error["exit"] == 2
    assert "never migrated" in error["message"]
    assert "never migrated" in failed.stderr
    grants = (
        "GRANT USAGE ON SCHEMA public TO {role}; "
        "GRANT SELECT ON schema_migrations, schema_migrations_history TO {role};"
    )
    async with login_role(silentpulse_migrated_database, grants, prefix="reader") as (_, dsn):
        password = urlsplit(dsn).password
        assert password is not None
        env = {"DATABASE_URL": dsn, "SCRATCH_DATABASE_URL": silentpulse_database}
        done = await asyncio.to_thread(_cli_with, env, "drift", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["matches"] is True
        # A role without CREATEDB and no scratch database: exit 3, as JSON too.
        refused = await asyncio.to_thread(_cli_with, {"DATABASE_URL": dsn}, "drift", "--json")
        assert refused.returncode == 3, refused.stderr
        error = json.loads(refused.stdout)["error"]
        assert error["exit"] == 3 and "CREATEDB" in error["message"]
        assert password not in refused.stdout + refused.stderr


def test_drift_lists_and_takes_no_lock_option() -> None:
    """Issue 29, 4: drift takes neither the migration lock nor a table lock for DDL: its
    help lists no such option, and it refuses one rather than ignore it."""
    shown = subprocess.run(
        [sys.executable, "-m", "silentpulse_db", "drift", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "--scratch-dsn" in shown and "--attempts" in shown
    for option in (
        "--migration-lock-timeout",
        "--lock-timeout",
        "--table-lock-timeout",
        "--ddl-lock-timeout",
        "--ddl-retry-for",
    ):
        assert option not in shown, shown
        refused = subprocess.run(
            [sys.executable, "-m", "silentpulse_db", "drift", option, "5"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        advice = f"{option} does nothing after `silentpulse-db drift`, which refuses it"
        assert refused.returncode == 2 and advice in refused.stderr, refused.stderr
        assert "give it before the command" in refused.stderr, refused.stderr
    up = subprocess.run(
        [sys.executable, "-m", "silentpulse_db", "up", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for option in ("--migration-lock-timeout", "--lock-timeout", "--table-lock-timeout"):
        assert option in up
    assert "--ddl-retry-for" in up and "--ddl-lock-timeout" not in up  # the old name: hidden


async def test_read_only_role_with_a_scratch_database(
    silentpulse_migrated_database: str, silentpulse_database: str
) -> None:
    """A role that may only read (no CREATEDB, no write) with an empty database the
    operator provides: the report as for the owner, the scratch database left empty."""
    dsn = silentpulse_migrated_database
    await execute(dsn, "ALTER TABLE assets ALTER COLUMN hostname TYPE varchar(1000)")
    grants = (
        "GRANT USAGE ON SCHEMA public TO {role}; "
        "GRANT SELECT ON schema_migrations, schema_migrations_history TO {role};"
    )
    async with login_role(dsn, grants, prefix="reader") as (_role, reader):
        done = await asyncio.to_thread(
            cli, "drift", "--json", "--scratch-dsn", silentpulse_database, dsn=reader
        )
        assert done.returncode == 1, done.stderr
        document = json.loads(done.stdout)
        assert document["matches"] is False
        assert [(d["kind"], d["key"]) for d in document["differences"]] == [
            ("column", "public.assets.hostname")
        ]
    left = await fetchval(
        silentpulse_database,
        "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace",
    )
    assert left == 0


async def test_a_drift_killed_mid_build_does_not_break_the_next(
    silentpulse_migrated_database: str, silentpulse_database: str
) -> None:
    """Issue 29, 7: a drift killed while it builds on the operator's scratch database
    leaves it half built; the next drift empties what that one left (its mark), compares
    as usual, and leaves the scratch database empty."""
    dsn, scratch = silentpulse_migrated_database, silentpulse_database
    name = urlsplit(scratch).path.lstrip("/")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "POSTGRES_DSN")}
    command = [sys.executable, "-m", "silentpulse_db", "drift", "--scratch-dsn", scratch]
    process = subprocess.Popen(
        command,
        env={**env, "DATABASE_URL": dsn},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    blocker = await asyncpg.connect(scratch)
    try:

        async def first_migration_built() -> bool:
            return bool(await blocker.fetchval("SELECT to_regclass('public.tenants') IS NOT NULL"))

        await wait_for(first_migration_built, interval=0.01)
        # The rest of the build (and its cleanup) waits behind this: killed mid-build.
        await blocker.execute("BEGIN; LOCK TABLE tenants IN ACCESS EXCLUSIVE MODE")

        async def build_waiting() -> bool:
            return bool(
                await fetchval(
                    dsn,
                    "SELECT count(*) > 0 FROM pg_stat_activity "
                    "WHERE datname = $1 AND wait_event_type = 'Lock'",
                    name,
                )
            )

        await wait_for(build_waiting)
        process.kill()
        await asyncio.to_thread(process.wait)
    finally:
        await blocker.close()

    async def its_sessions_ended() -> bool:
        query = "SELECT count(*) = 0 FROM pg_stat_activity WHERE datname = $1"
        return bool(await fetchval(dsn, query, name))

    await wait_for(its_sessions_ended)
    tables = "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
    assert await fetchval(scratch, tables) > 0  # half built, left as it was
    for _ in range(2):  # and the next one leaves it empty for the one after
        done = await asyncio.to_thread(cli, "drift", "--scratch-dsn", scratch, dsn=dsn)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "no drift" in done.stdout
        assert await fetchval(scratch, tables) == 0


async def test_a_role_without_createdb_is_told_what_the_administrator_must_do(
    silentpulse_migrated_database: str,
) -> None:
    """As for `check` (exit 3): drift's own 1 means drift found, its errors are 2, and an
    administrator's step is 3 as for every command (issue 27, 13)."""
    grants = (
        "GRANT USAGE ON SCHEMA public TO {role}; "
        "GRANT SELECT ON schema_migrations, schema_migrations_history TO {role};"
    )
    async with login_role(silentpulse_migrated_database, grants, prefix="reader") as (_, dsn):
        done = await asyncio.to_thread(cli, "drift", dsn=dsn)
        checked = await asyncio.to_thread(cli, "check", dsn=dsn)
    assert done.returncode == checked.returncode == 3, done.stderr + checked.stderr
    assert "CREATEDB" in done.stderr, done.stderr


async def test_a_database_never_migrated_is_an_error(silentpulse_database: str) -> None:
    done = await asyncio.to_thread(cli, "drift", dsn=silentpulse_database)
    assert done.returncode == 2, done.stderr
    assert "never migrated" in done.stderr


async def test_a_relation_held_exclusively_is_an_error_not_a_wait(
    silentpulse_migrated_database: str,
) -> None:
    """Reading a partition's bound opens it (ACCESS SHARE): behind a migration's
    exclusive lock drift gives up after its lock_timeout instead of queueing."""
    holder = await asyncpg.connect(silentpulse_migrated_database)
    try:
        await holder.execute("BEGIN; LOCK TABLE alerts IN ACCESS EXCLUSIVE MODE")
        done = await asyncio.to_thread(cli, "drift", dsn=silentpulse_migrated_database)
    finally:
        await holder.close()
    assert done.returncode == 2, done.stderr
    assert "lock" in done.stderr.lower()


async def test_a_dirty_database_is_an_error(silentpulse_migrated_database: str) -> None:
    await execute(silentpulse_migrated_database, "UPDATE schema_migrations SET dirty = true")
    with pytest.raises(DirtyDatabaseError):
        await drift(silentpulse_migrated_database, connect=ConnectRetry(attempts=1))
    done = await asyncio.to_thread(cli, "drift", dsn=silentpulse_migrated_database)
    assert done.returncode == 2, done.stderr
    assert "dirty" in done.stderr.lower()


def test_the_report_reads_by_object(silentpulse_migrated_database: str) -> None:
    del silentpulse_migrated_database
    from silentpulse_db.migrate.cli.proving import drift_json, format_drift
    from silentpulse_db.results import DriftDifference, DriftExcuse

    report = DriftReport(
        version=21,
        differences=(
            DriftDifference("index", "public.x", "unexpected", None, "CREATE INDEX x", "DROP"),
            DriftDifference("policy", "public.t.p", "changed", "a", "b", None),
        ),
        excused=(DriftExcuse("partition", "public.alerts_p2030_01", "monthly"),),
        objects=3,
        checked_at=datetime(2026, 12, 4, tzinfo=timezone.utc),
    )
    text = format_drift(report)
    assert text.splitlines()[1:3] == [
        "index:",
        "  index public.x: not built by the files (found: CREATE INDEX x)",
    ]
    assert "policy:" in text and "no single statement" in text and "1 x monthly" in text
    document: dict[str, Any] = json.loads(drift_json(report))
    assert document["matches"] is False and document["version"] == 21

"""A service's own migrations (issue 20, part 2): a set with a version table of its own,
started before or after the core set, requiring the core schema; the identity guard
when two sets share one table; the DSN's ?x-migrations-table=, the CLI's --table."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from silentpulse_db import (
    ConfigurationError,
    LockTimeoutError,
    MigrationSetMismatchError,
    RequiredVersionError,
    run_migrations,
)
from silentpulse_db.migrate import (
    apply_prerequisites,
    check,
    down,
    load_source,
    plan_up,
    status,
    version,
)
from silentpulse_db.migrate.session import lock_keys_for
from silentpulse_db.settings import ConnectRetry

from helpers import cli as run_cli
from helpers import fetch, fetchval, hold_migration_lock, write_migrations

WORKER = "worker_schema_migrations"
CORE_LATEST = load_source().latest
assert CORE_LATEST is not None


def worker_set(directory: Path, requires: int = CORE_LATEST) -> Path:
    """The worker's own set: a table of its own that references the core's tenants."""
    header = f"-- silentpulse: requires schema_migrations >= {requires}\n"
    return write_migrations(
        directory,
        {
            1: (
                "create_worker_jobs",
                header + "CREATE TABLE worker_jobs (id uuid PRIMARY KEY, "
                "tenant_id uuid NOT NULL REFERENCES tenants (id));\n"
                "ALTER TABLE worker_jobs ENABLE ROW LEVEL SECURITY;\n"
                "ALTER TABLE worker_jobs FORCE ROW LEVEL SECURITY;\n"
                "CREATE POLICY tenant_isolation_worker_jobs ON worker_jobs USING (tenant_id = "
                "NULLIF(current_setting('app.current_tenant', true), '')::uuid);\n",
                "DROP TABLE worker_jobs;\n",
            ),
            2: (
                "add_worker_jobs_state",
                "ALTER TABLE worker_jobs ADD COLUMN state text;\n",
                "ALTER TABLE worker_jobs DROP COLUMN state;\n",
            ),
        },
    )


async def versions(dsn: str) -> dict[str, int | None]:
    out = {}
    for table in ("schema_migrations", WORKER):
        out[table] = await fetchval(dsn, f"SELECT version FROM {table}")
    return out


async def test_the_worker_started_first_waits_for_the_core_schema(
    silentpulse_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dsn = silentpulse_database
    await apply_prerequisites(dsn)
    worker = asyncio.create_task(
        run_migrations(
            dsn,
            source=worker_set(tmp_path),
            table=WORKER,
            connect=ConnectRetry(attempts=60, wait=0.2),
        )
    )
    with caplog.at_level(logging.WARNING, logger="silentpulse_db"):
        await asyncio.sleep(1.0)
        assert not worker.done()  # waiting for schema_migrations >= latest
        core = await run_migrations(dsn)  # the API starts
        result = await asyncio.wait_for(worker, 30)
    assert (core.version_after, result.version_after) == (CORE_LATEST, 2)
    assert await versions(dsn) == {"schema_migrations": CORE_LATEST, WORKER: 2}
    waits = [
        r.getMessage() for r in caplog.records if "requires schema_migrations" in r.getMessage()
    ]
    assert waits and "no such table" in waits[0] and "trying again" in waits[0]
    # The history says which set each row belongs to.
    rows = await fetch(
        dsn,
        "SELECT migrations_table, count(*) AS n FROM schema_migrations_history "
        "GROUP BY migrations_table ORDER BY 1",
    )
    assert [(r["migrations_table"], r["n"]) for r in rows] == [
        ("schema_migrations", CORE_LATEST),
        (WORKER, 2),
    ]
    # Each set answers for itself: both up to date, and down reverts only the worker's.
    assert (await status(dsn, source=worker_set(tmp_path), table=WORKER)).current.version == 2
    reverted = await down(dsn, 1, source=worker_set(tmp_path), table=WORKER)
    assert reverted.version_after == 1
    assert await versions(dsn) == {"schema_migrations": CORE_LATEST, WORKER: 1}


async def test_the_worker_after_the_core_and_with_the_dsns_table_parameter(
    silentpulse_database: str, tmp_path: Path
) -> None:
    dsn = silentpulse_database
    await apply_prerequisites(dsn)
    await run_migrations(dsn)
    worker_dsn = f"{dsn}?x-migrations-table={WORKER}"  # golang-migrate's own spelling
    result = await run_migrations(worker_dsn, source=worker_set(tmp_path))
    assert result.version_after == 2
    assert (await version(worker_dsn)).version == 2
    assert (await version(dsn)).version == CORE_LATEST
    # Starting again: nothing to do, for either.
    assert (await run_migrations(worker_dsn, source=worker_set(tmp_path))).applied == ()
    assert (await run_migrations(dsn)).applied == ()


async def test_a_required_version_not_reached_is_a_typed_error_in_the_end(
    silentpulse_database: str, tmp_path: Path
) -> None:
    dsn = silentpulse_database
    source = worker_set(tmp_path)
    with pytest.raises(RequiredVersionError) as info:
        await run_migrations(
            dsn, source=source, table=WORKER, connect=ConnectRetry(attempts=2, wait=0.1)
        )
    error = info.value
    assert (error.table, error.version, error.found) == (
        "schema_migrations",
        CORE_LATEST,
        "no such table",
    )
    assert error.file.endswith("000001_create_worker_jobs.up.sql")
    assert await fetchval(dsn, f"SELECT version FROM {WORKER}") is None  # nothing applied


async def test_each_set_has_its_own_lock(silentpulse_database: str, tmp_path: Path) -> None:
    """golang-migrate's key formula takes the table: the worker's lock is not the core's."""
    dsn = silentpulse_database
    await apply_prerequisites(dsn)
    holder = await hold_migration_lock(dsn)  # the core's keys, held by another runner
    try:
        with pytest.raises(LockTimeoutError):
            await run_migrations(dsn, migration_lock_timeout=0.3)
    finally:
        await holder.close()
    await run_migrations(dsn)
    database = await fetchval(dsn, "SELECT current_database()")
    worker_keys = lock_keys_for(database, "public", WORKER)
    assert worker_keys != lock_keys_for(database, "public")
    held = await hold_keys(dsn, worker_keys.ordered)
    try:
        with pytest.raises(LockTimeoutError):
            await run_migrations(
                dsn, source=worker_set(tmp_path), table=WORKER, migration_lock_timeout=0.3
            )
        assert (await run_migrations(dsn)).applied == ()  # the core's lock is free
    finally:
        await held.close()


async def hold_keys(dsn: str, keys: tuple[int, ...]) -> Any:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    for key in keys:
        await conn.execute("SELECT pg_advisory_lock($1)", key)
    return conn


@pytest.mark.parametrize("first", ["worker", "core"])
async def test_two_sets_on_one_table_are_refused_naming_the_other_files(
    silentpulse_database: str, tmp_path: Path, first: str
) -> None:
    """The trap the issue found: the worker's 000001 on schema_migrations. Whichever
    starts second is refused, naming the files, instead of skipping or crashing."""
    dsn = silentpulse_database
    await apply_prerequisites(dsn)
    worker = write_migrations(
        tmp_path,
        {
            1: (
                "create_worker_jobs",
                "CREATE TABLE worker_jobs (id int);\n",
                "DROP TABLE worker_jobs;\n",
            )
        },
    )
    if first == "worker":
        await run_migrations(dsn, source=worker)  # on the core's table, by mistake
        with pytest.raises(MigrationSetMismatchError) as info:
            await run_migrations(dsn)
        assert "version 1 was applied as 000001_create_worker_jobs" in str(info.value)
        assert "000001_initial_schema" in str(info.value)
    else:
        await run_migrations(dsn)
        with pytest.raises(MigrationSetMismatchError) as info:
            await run_migrations(dsn, source=worker)
        assert "version 1 was applied as 000001_initial_schema" in str(info.value)
    assert info.value.table == "schema_migrations"
    assert "x-migrations-table" in str(info.value)


@pytest.mark.parametrize(
    ("table", "dsn_table", "match"),
    [
        ("worker schema", None, "plain table name"),
        ("public.worker_migrations", None, "no schema"),
        ("schema_migrations_history", None, "other than schema_migrations_history"),
        (None, "x;drop", "x-migrations-table"),
        ("worker_a", "worker_b", "two version tables"),
    ],
)
async def test_bad_version_tables_are_configuration_errors(
    silentpulse_database: str, table: str | None, dsn_table: str | None, match: str
) -> None:
    dsn = silentpulse_database + (f"?x-migrations-table={dsn_table}" if dsn_table else "")
    with pytest.raises(ConfigurationError, match=match):
        await run_migrations(dsn, table=table, connect=ConnectRetry(attempts=1))


async def test_check_proves_a_service_set_on_the_core_it_requires(
    silentpulse_postgres: object, silentpulse_database: str, tmp_path: Path
) -> None:
    report = await check(silentpulse_database, source=worker_set(tmp_path), table=WORKER)
    assert report.checked == (1, 2)


def test_the_cli_takes_table_and_create_warns_of_a_second_set(
    silentpulse_migrated_database: str, tmp_path: Path
) -> None:
    dsn = silentpulse_migrated_database
    folder = worker_set(tmp_path / "worker")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, dsn=dsn)

    up = cli("up", "--path", str(folder), "--table", WORKER)
    assert up.returncode == 0, up.stderr
    assert cli("version", "--table", WORKER).stdout.strip() == "2"
    assert cli("version").stdout.strip() == str(CORE_LATEST)
    listed = cli("status", "--path", str(folder), "--table", WORKER)
    assert listed.returncode == 0 and "add_worker_jobs_state" in listed.stdout
    refused = cli("baseline", "--table", WORKER)
    assert refused.returncode == 2 and "packaged set" in refused.stderr
    empty = tmp_path / "billing"
    empty.mkdir()
    created = cli("create", "--path", str(empty), "create_invoices")
    assert created.returncode == 0, created.stderr
    assert "starts a set of migrations at 000001" in created.stderr
    assert "x-migrations-table" in created.stderr
    again = cli("create", "--path", str(empty), "add_invoice_due_date")
    assert "warning" not in again.stderr  # the set exists now


@pytest.mark.skipif(
    shutil.which("migrate") is None and not (Path.home() / "go/bin/migrate").exists(),
    reason="golang-migrate's CLI is not built here (bench/build_golang_migrate.sh)",
)
def test_golang_migrates_cli_reads_the_workers_table(
    silentpulse_database: str, tmp_path: Path
) -> None:
    dsn = silentpulse_database
    asyncio.run(_migrate_both(dsn, tmp_path))
    binary = shutil.which("migrate") or str(Path.home() / "go/bin/migrate")
    sslmode = "&" if "?" in dsn else "?"
    url = f"{dsn}{sslmode}sslmode=disable&x-migrations-table={WORKER}"
    done = subprocess.run(
        [binary, "-database", url, "-path", str(tmp_path / "worker"), "version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "2"  # migrate prints the version on stderr


async def _migrate_both(dsn: str, tmp_path: Path) -> None:
    await apply_prerequisites(dsn)
    await run_migrations(dsn)
    await run_migrations(dsn, source=worker_set(tmp_path / "worker"), table=WORKER)


async def test_the_dry_run_and_status_say_what_the_real_command_would(
    silentpulse_database: str, tmp_path: Path
) -> None:
    """Found by a review: the dry run planned a file whose requirement was not met, and
    status read another set's files against the table as if they were its own."""
    dsn = silentpulse_database
    folder = worker_set(tmp_path)
    plan = await plan_up(dsn, source=folder, table=WORKER)
    assert any("would stop here" in w and "no such table" in w for w in plan.warnings)
    await apply_prerequisites(dsn)
    await run_migrations(dsn)
    with pytest.raises(MigrationSetMismatchError, match="give the set's own folder"):
        await status(dsn, source=folder)  # the worker's files, the core's table
    await run_migrations(dsn, source=folder, table=WORKER)
    with pytest.raises(MigrationSetMismatchError, match="worker_schema_migrations records"):
        await status(dsn, table=WORKER)  # the core's files against the worker's table

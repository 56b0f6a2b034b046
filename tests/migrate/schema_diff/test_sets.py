"""A service's own migration set beside the packaged one: every set the database records
is built in its requires order, from its folder or from the files stored when it ran."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
from pathlib import Path

import pytest

from silentpulse_db import ConfigurationError, run_migrations
from silentpulse_db.migrate import apply_prerequisites, drift
from silentpulse_db.settings import ConnectRetry

from helpers import cli, execute, fetchval, login_role, write_migrations


async def test_a_service_set_is_built_not_dropped(
    silentpulse_migrated_database: str, tmp_path: Path
) -> None:
    """Issue 29, 6: with the worker's own set applied, plain drift builds it after the core
    (from the files the database stored when it applied them) and finds no drift; a hand
    change in it is named. Given its folder, the same."""
    from ..test_service_sets import WORKER, worker_set

    dsn = silentpulse_migrated_database
    worker = worker_set(tmp_path / "worker")
    await run_migrations(dsn, source=worker, table=WORKER, connect=ConnectRetry(attempts=1))
    report = await drift(dsn, connect=ConnectRetry(attempts=1))
    assert report.matches, [str(d) for d in report.differences]
    plain = await asyncio.to_thread(cli, "drift", dsn=dsn)
    assert plain.returncode == 0 and "no drift" in plain.stdout, plain.stdout + plain.stderr
    report = await drift(dsn, sets=[(worker, WORKER)], connect=ConnectRetry(attempts=1))
    assert report.matches, [str(d) for d in report.differences]
    for args in (["--path", str(worker), "--table", WORKER], ["--set", f"{worker}:{WORKER}"]):
        done = await asyncio.to_thread(cli, "drift", *args, dsn=dsn)
        assert done.returncode == 0 and "no drift" in done.stdout, done.stdout + done.stderr
    await execute(dsn, "DROP POLICY tenant_isolation_worker_jobs ON worker_jobs")
    for given in ([], [(worker, WORKER)]):
        report = await drift(dsn, sets=given, connect=ConnectRetry(attempts=1))
        assert [(d.kind, d.key, d.change) for d in report.differences] == [
            ("policy", "public.worker_jobs.tenant_isolation_worker_jobs", "missing")
        ]


async def test_every_recorded_set_is_built_in_requires_order(
    silentpulse_migrated_database: str, tmp_path: Path
) -> None:
    """Issue 29, 6: two service sets, the second requiring the first (and recorded before
    it by name), applied in steps (a file changed and re-applied after a down included):
    plain drift builds both, each at its version, the required one first."""
    from ..test_service_sets import WORKER, worker_set

    dsn = silentpulse_migrated_database
    worker = worker_set(tmp_path / "worker")
    billing = write_migrations(
        tmp_path / "billing",
        {
            1: (
                "create_billing_runs",
                f"-- silentpulse: requires {WORKER} >= 2\n"
                "CREATE TABLE billing_runs (id uuid PRIMARY KEY, state text);\n"
                "CREATE VIEW billing_worker_states AS SELECT state FROM worker_jobs;\n",
                "DROP VIEW billing_worker_states; DROP TABLE billing_runs;\n",
            ),
            2: (
                "add_billing_total",
                "ALTER TABLE billing_runs ADD COLUMN total numeric;\n",
                "ALTER TABLE billing_runs DROP COLUMN total;\n",
            ),
        },
    )
    await run_migrations(dsn, source=worker, table=WORKER, connect=ConnectRetry(attempts=1))
    await run_migrations(
        dsn, source=billing, table="billing_schema_migrations", connect=ConnectRetry(attempts=1)
    )
    # Reverted, its file changed, applied again: the file that ran last is the one built.
    await asyncio.to_thread(
        cli, "down", "1", "--path", str(billing), "--table", "billing_schema_migrations", dsn=dsn
    )
    changed = billing / "000002_add_billing_total.up.sql"
    changed.write_text("ALTER TABLE billing_runs ADD COLUMN total numeric(12, 2);\n")
    await run_migrations(
        dsn, source=billing, table="billing_schema_migrations", connect=ConnectRetry(attempts=1)
    )
    report = await drift(dsn, connect=ConnectRetry(attempts=1))
    assert report.matches, [str(d) for d in report.differences]
    await execute(dsn, "ALTER TABLE billing_runs ALTER COLUMN total TYPE numeric")
    report = await drift(dsn, connect=ConnectRetry(attempts=1))
    assert [(d.kind, d.key) for d in report.differences] == [
        ("column", "public.billing_runs.total")
    ], [str(d) for d in report.differences]


async def test_a_sets_prerequisites_are_stored_and_built(
    silentpulse_migrated_database: str, tmp_path: Path
) -> None:
    """A service set whose files need an extension its prerequisites.sql creates: built
    from what the database stored, the extension comes first (no failed build, no
    DROP EXTENSION proposed)."""
    from ..test_service_sets import WORKER

    dsn = silentpulse_migrated_database
    worker = write_migrations(
        tmp_path / "worker",
        {
            1: (
                "create_worker_tags",
                "CREATE TABLE worker_tags (id int PRIMARY KEY, name citext);\n",
                "DROP TABLE worker_tags;\n",
            )
        },
    )
    (worker / "prerequisites.sql").write_text("CREATE EXTENSION IF NOT EXISTS citext;\n")
    await apply_prerequisites(dsn, source=worker)
    await run_migrations(dsn, source=worker, table=WORKER, connect=ConnectRetry(attempts=1))
    report = await drift(dsn, connect=ConnectRetry(attempts=1))
    assert report.matches, [str(d) for d in report.differences]


async def test_a_set_whose_files_the_database_did_not_store_needs_its_folder(
    silentpulse_migrated_database: str, tmp_path: Path
) -> None:
    """A set applied before the runner stored files (or whose files this role may not
    read): drift says which set and how to give it, and proposes dropping nothing."""
    from ..test_service_sets import WORKER, worker_set

    dsn = silentpulse_migrated_database
    worker = worker_set(tmp_path / "worker")
    await run_migrations(dsn, source=worker, table=WORKER, connect=ConnectRetry(attempts=1))
    await execute(dsn, "DELETE FROM schema_migrations_history_files")
    with pytest.raises(ConfigurationError, match=f"--set DIR:{WORKER}") as refused:
        await drift(dsn, connect=ConnectRetry(attempts=1))
    assert "not stored" in str(refused.value)
    plain = await asyncio.to_thread(cli, "drift", dsn=dsn)
    assert plain.returncode == 2 and WORKER in plain.stderr, plain.stderr
    assert "DROP" not in plain.stdout + plain.stderr
    assert (await drift(dsn, sets=[(worker, WORKER)], connect=ConnectRetry(attempts=1))).matches


@pytest.mark.skipif(
    shutil.which("migrate") is None and not (Path.home() / "go/bin/migrate").exists(),
    reason="golang-migrate's CLI is not built here (bench/build_golang_migrate.sh)",
)
async def test_a_set_golang_migrate_began_needs_its_folder(
    silentpulse_migrated_database: str, tmp_path: Path
) -> None:
    """Version 1 of the worker's set applied by golang-migrate (nothing stored), version 2
    by the runner (stored): drift does not build version 2 alone (its table would be
    missing: a failed build, or drift); it asks for the folder, and with it matches."""
    from ..test_service_sets import WORKER, worker_set

    dsn = silentpulse_migrated_database
    worker = worker_set(tmp_path / "worker")
    binary = shutil.which("migrate") or str(Path.home() / "go/bin/migrate")
    url = f"{dsn}{'&' if '?' in dsn else '?'}sslmode=disable&x-migrations-table={WORKER}"
    done = await asyncio.to_thread(
        subprocess.run,
        [binary, "-database", url, "-path", str(worker), "up", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    await run_migrations(dsn, source=worker, table=WORKER, connect=ConnectRetry(attempts=1))
    with pytest.raises(ConfigurationError, match=f"--set DIR:{WORKER}") as refused:
        await drift(dsn, connect=ConnectRetry(attempts=1))
    assert "below 2" in str(refused.value) and "golang-migrate" in str(refused.value)
    assert (await drift(dsn, sets=[(worker, WORKER)], connect=ConnectRetry(attempts=1))).matches


async def test_a_role_that_may_not_store_the_files_still_migrates(
    silentpulse_migrated_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Storing a set's files is drift's convenience: a role that may not write the stored
    files' table (another role's) applies its migration, with a warning, and drift then
    asks for that set's folder."""
    from ..test_service_sets import WORKER, worker_set

    dsn = silentpulse_migrated_database
    worker = worker_set(tmp_path / "worker")
    await run_migrations(
        dsn, source=worker, table=WORKER, target=1, connect=ConnectRetry(attempts=1)
    )
    setup = (
        "GRANT USAGE, CREATE ON SCHEMA public TO {role}; "
        "GRANT SELECT ON schema_migrations TO {role}; "
        f"ALTER TABLE {WORKER} OWNER TO {{role}}; ALTER TABLE worker_jobs OWNER TO {{role}}; "
        "ALTER TABLE schema_migrations_history OWNER TO {role}"
    )
    async with login_role(dsn, setup, prefix="worker") as (_role, role_dsn):
        with caplog.at_level(logging.WARNING, logger="silentpulse_db"):
            result = await run_migrations(
                role_dsn,
                source=worker,
                table=WORKER,
                partitions_ahead=None,
                connect=ConnectRetry(attempts=1),
            )
        assert result.version_after == 2
        assert any("not stored for drift" in r.getMessage() for r in caplog.records)
        with pytest.raises(ConfigurationError, match=f"--set DIR:{WORKER}") as refused:
            await drift(dsn, connect=ConnectRetry(attempts=1))
        assert "version 2 is not stored" in str(refused.value)
        await execute(dsn, "ALTER TABLE schema_migrations_history OWNER TO CURRENT_USER")


async def test_the_stored_files_belong_to_the_historys_owner(
    silentpulse_migrated_database: str, tmp_path: Path
) -> None:
    """An administrator applying a set's first file by hand (a superuser) leaves the
    stored files' table to the role that owns the history (the one that migrates), not
    a table that role may not write."""
    from ..test_service_sets import WORKER, worker_set

    dsn = silentpulse_migrated_database
    async with login_role(dsn, prefix="owner") as (role, _role_dsn):
        await execute(dsn, f"ALTER TABLE schema_migrations_history OWNER TO {role}")
        worker = worker_set(tmp_path / "worker")
        await run_migrations(dsn, source=worker, table=WORKER, connect=ConnectRetry(attempts=1))
        owner = "SELECT relowner::regrole::text FROM pg_class WHERE relname = $1"
        assert await fetchval(dsn, owner, "schema_migrations_history_files") == role
        await execute(
            dsn,
            "ALTER TABLE schema_migrations_history OWNER TO CURRENT_USER; "
            "ALTER TABLE schema_migrations_history_files OWNER TO CURRENT_USER",
        )


async def test_the_stored_files_are_readable_by_their_owner_only(
    silentpulse_migrated_database: str, silentpulse_database: str, tmp_path: Path
) -> None:
    """A migration file may hold a secret (CREATE ROLE ... PASSWORD): a role given SELECT on
    every table, the stored files' included, reads none of them; as a reader, drift needs
    the set's folder, and with it finds no drift."""
    from ..test_service_sets import WORKER, worker_set

    dsn = silentpulse_migrated_database
    worker = worker_set(tmp_path / "worker")
    (worker / "000003_create_worker_key.up.sql").write_text(
        "CREATE FUNCTION worker_api_key() RETURNS text LANGUAGE sql "
        "AS $$ SELECT 'hunter2-secret' $$;\n"
    )
    (worker / "000003_create_worker_key.down.sql").write_text("DROP FUNCTION worker_api_key();\n")
    await run_migrations(dsn, source=worker, table=WORKER, connect=ConnectRetry(attempts=1))
    assert await fetchval(dsn, "SELECT count(*) FROM schema_migrations_history_files") == 3
    grants = "GRANT USAGE ON SCHEMA public TO {role}; GRANT SELECT ON ALL TABLES IN SCHEMA "
    grants += "public TO {role};"
    async with login_role(dsn, grants, prefix="reader") as (_role, reader):
        stored = "SELECT count(*) FROM schema_migrations_history_files"
        assert await fetchval(reader, stored) == 0
        with pytest.raises(ConfigurationError, match=f"--set DIR:{WORKER}"):
            await drift(reader, scratch_dsn=silentpulse_database, connect=ConnectRetry(attempts=1))
        report = await drift(
            reader,
            scratch_dsn=silentpulse_database,
            sets=[(worker, WORKER)],
            connect=ConnectRetry(attempts=1),
        )
        # the reader's own blanket grant aside (a role the runbook does not name)
        assert all(d.kind == "grant" for d in report.differences), report.differences
    # The least a reader needs (docs/migrations.md, 'Drift'): no SELECT on the files at all.
    grants = (
        "GRANT USAGE ON SCHEMA public TO {role}; GRANT SELECT ON schema_migrations, "
        f"schema_migrations_history, {WORKER} TO {{role}};"
    )
    async with login_role(dsn, grants, prefix="reader") as (_role, reader):
        with pytest.raises(ConfigurationError, match=f"--set DIR:{WORKER}") as refused:
            await drift(reader, scratch_dsn=silentpulse_database, connect=ConnectRetry(attempts=1))
        assert "may not read" in str(refused.value)
        report = await drift(
            reader,
            scratch_dsn=silentpulse_database,
            sets=[(worker, WORKER)],
            connect=ConnectRetry(attempts=1),
        )
        # Its SELECT on the set's version table is no drift: every set's version table is
        # bookkeeping, as schema_migrations is (it used to read as a grant's drift).
        assert report.differences == (), [str(d) for d in report.differences]
    assert (await drift(dsn, connect=ConnectRetry(attempts=1))).matches

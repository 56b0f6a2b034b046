"""`up/down/goto --dry-run` (issue 12 part 4): the plan, its locks and warnings, changing nothing."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from silentpulse_db import VersionState
from silentpulse_db.defaults import LARGE_TABLE_ROWS
from silentpulse_db.migrate import (
    MigrationPlan,
    PlannedMigration,
    PlannedStatement,
    down,
    plan_down,
    plan_goto,
    plan_up,
    up,
)
from silentpulse_db.migrate.dryrun.preview import format_plan
from silentpulse_db.migrate.files.lock_levels import LockTaken
from silentpulse_db.migrate.files.source import load_source

from helpers import (
    execute,
    fetchval,
    hold_migration_lock,
    simple_set,
    user_tables,
    version_rows,
    write_migrations,
)


def cli(*args: str, dsn: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "POSTGRES_DSN")}
    env["DATABASE_URL"] = dsn
    return subprocess.run(
        [sys.executable, "-m", "silentpulse_db", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def headers(stdout: str) -> list[str]:
    """The "version/direction name" of every file the plan lists, in order."""
    return [line.split()[0] for line in stdout.splitlines() if line[:1].isdigit()]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_migrations(tmp_path / "m", simple_set(3))


async def test_up_dry_run_on_an_empty_database_lists_every_packaged_migration(
    silentpulse_database: str,
) -> None:
    r = cli("up", "--dry-run", dsn=silentpulse_database)
    assert r.returncode == 0, r.stderr
    packaged = load_source().migrations
    assert headers(r.stdout) == [f"{m.version}/up" for m in packaged]
    for migration in packaged:
        assert f"{migration.version}/up {migration.name}" in r.stdout
    assert r.stdout.startswith("current version: none\n")
    assert f"version after: {packaged[-1].version}" in r.stdout
    assert "ACCESS EXCLUSIVE on tenants (new table)" in r.stdout
    assert re.search(r"^  line \d+: CREATE TABLE IF NOT EXISTS tenants", r.stdout, re.M)
    assert "NO transaction (CREATE INDEX CONCURRENTLY at line" in r.stdout
    # Every relation is new: nothing uses it yet, so nothing to warn about.
    assert "WARNING" not in r.stdout

    # Nothing was created: not even the version tables.
    assert await fetchval(silentpulse_database, "SELECT to_regclass('schema_migrations')") is None
    assert (
        await fetchval(silentpulse_database, "SELECT to_regclass('schema_migrations_history')")
        is None
    )
    assert await user_tables(silentpulse_database) == set()
    assert await fetchval(silentpulse_database, "SELECT count(*) FROM pg_extension") == 1


async def test_locks_transactions_and_warnings(silentpulse_database: str, tmp_path: Path) -> None:
    rows = LARGE_TABLE_ROWS + 50_000
    await execute(
        silentpulse_database,
        "CREATE TABLE small (id int PRIMARY KEY, v int); "
        "CREATE TABLE big (id int PRIMARY KEY, v text); "
        f"INSERT INTO big SELECT g, 'x' FROM generate_series(1, {rows}) g; "
        "ANALYZE big;",
    )
    folder = write_migrations(
        tmp_path / "m",
        {
            1: (
                "alter_small_v_type",
                "-- widen v\nALTER TABLE small ALTER COLUMN v TYPE bigint;\n",
                "ALTER TABLE small ALTER COLUMN v TYPE int;\n",
            ),
            2: (
                "create_index_small_v",
                "CREATE INDEX CONCURRENTLY small_v ON small (v);\n",
                "DROP INDEX CONCURRENTLY small_v;\n",
            ),
            3: (
                "add_big_note",
                "SELECT 1;\n\nALTER TABLE big ADD COLUMN note text;\n",
                "ALTER TABLE big DROP COLUMN note;\n",
            ),
        },
    )

    plan = await plan_up(silentpulse_database, source=folder)
    assert isinstance(plan, MigrationPlan)
    assert plan.current == VersionState(None, False) and plan.version_after == 3
    first, second, third = plan.migrations
    assert isinstance(first, PlannedMigration) and isinstance(first.statements[0], PlannedStatement)
    assert (first.version, first.name, first.direction) == (1, "alter_small_v_type", "up")
    assert first.location.endswith("000001_alter_small_v_type.up.sql")
    assert first.transactional is True and third.transactional is True
    assert second.transactional is False
    assert second.non_transactional == ("CREATE INDEX CONCURRENTLY at line 1",)

    alter = first.statements[0]
    assert alter.line == 2 and alter.sql_head == "ALTER TABLE small ALTER COLUMN v TYPE bigint"
    assert [(lock.relation, lock.mode, lock.rewrites) for lock in alter.locks] == [
        ("small", "ACCESS EXCLUSIVE", True)
    ]
    assert len(alter.warnings) == 1 and "rewrites small" in alter.warnings[0]

    index = second.statements[0]
    assert [(lock.relation, lock.mode, lock.scans) for lock in index.locks] == [
        ("small", "SHARE UPDATE EXCLUSIVE", True)
    ]
    assert index.warnings == ()  # it scans, but writes go on

    select, add = third.statements
    assert (select.line, select.locks, select.warnings) == (1, (), ())
    assert add.line == 3
    assert [(lock.relation, lock.mode) for lock in add.locks] == [("big", "ACCESS EXCLUSIVE")]
    assert len(add.warnings) == 1
    assert "large table" in add.warnings[0] and "big" in add.warnings[0]

    r = cli("up", "--dry-run", "--path", str(folder), dsn=silentpulse_database)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert headers(out) == ["1/up", "2/up", "3/up"]
    assert "ACCESS EXCLUSIVE on small" in out and "SHARE UPDATE EXCLUSIVE on small" in out
    assert "NO transaction (CREATE INDEX CONCURRENTLY at line 1)" in out
    assert "WARNING: line 2: rewrites small" in out
    assert "WARNING: line 3: ACCESS EXCLUSIVE on big, a large table (~" in out
    assert "warnings: 2 (" in out
    assert await version_rows(silentpulse_database) == []
    assert await fetchval(silentpulse_database, "SELECT to_regclass('schema_migrations')") is None
    columns = await fetchval(
        silentpulse_database, "SELECT count(*) FROM pg_attribute WHERE attrelid = 'big'::regclass"
    )
    assert await fetchval(silentpulse_database, "SELECT to_regclass('small_v')") is None
    assert columns == 8  # 2 columns + 6 system columns: no `note`


async def test_down_and_goto_dry_run(silentpulse_database: str, source: Path) -> None:
    await up(silentpulse_database, source=source)
    before = await version_rows(silentpulse_database)
    assert before == [(3, False)]
    path = ["--path", str(source)]

    r = cli("down", "1", "--dry-run", *path, dsn=silentpulse_database)
    assert r.returncode == 0, r.stderr
    assert headers(r.stdout) == ["3/down"] and "version after: 2" in r.stdout
    assert "ACCESS EXCLUSIVE on t3 (DROP TABLE" in r.stdout

    r = cli("down", "--all", "--dry-run", *path, dsn=silentpulse_database)
    assert headers(r.stdout) == ["3/down", "2/down", "1/down"] and "version after: none" in r.stdout

    r = cli("goto", "1", "--dry-run", *path, dsn=silentpulse_database)
    assert r.returncode == 0, r.stderr
    assert headers(r.stdout) == ["3/down", "2/down"] and "version after: 1" in r.stdout

    plan = await plan_goto(silentpulse_database, 1, source=source)
    assert [(m.version, m.direction) for m in plan.migrations] == [(3, "down"), (2, "down")]
    plan = await plan_down(silentpulse_database, "all", source=source)
    assert [m.version for m in plan.migrations] == [3, 2, 1] and plan.version_after is None

    await down(silentpulse_database, 2, source=source)
    r = cli("goto", "3", "--dry-run", *path, dsn=silentpulse_database)
    assert headers(r.stdout) == ["2/up", "3/up"] and "current version: 1" in r.stdout

    r = cli("up", "1", "--dry-run", *path, dsn=silentpulse_database)
    assert headers(r.stdout) == ["2/up"]

    assert await version_rows(silentpulse_database) == [(1, False)]
    assert await user_tables(silentpulse_database) == {"t1"}


async def test_nothing_to_do_and_refusals(silentpulse_database: str, source: Path) -> None:
    await up(silentpulse_database, source=source)
    r = cli("up", "--dry-run", "--path", str(source), dsn=silentpulse_database)
    assert r.returncode == 0 and "dry run: no change to make" in r.stdout

    await execute(silentpulse_database, "UPDATE schema_migrations SET dirty = true")
    r = cli("up", "--dry-run", "--path", str(source), dsn=silentpulse_database)
    assert r.returncode == 1 and "Dirty database version 3" in r.stderr
    r = cli("down", "--dry-run", "--path", str(source), dsn=silentpulse_database)
    assert r.returncode == 2 and "give N (down 1) or --all" in r.stderr


async def test_a_golang_migrate_database_without_history(
    silentpulse_database: str, source: Path
) -> None:
    await execute(
        silentpulse_database,
        "CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL); "
        "INSERT INTO schema_migrations VALUES (1, false); CREATE TABLE t1 (id int);",
    )
    plan = await plan_up(silentpulse_database, source=source)
    assert plan.current == VersionState(1, False)
    assert [m.version for m in plan.migrations] == [2, 3]
    assert (
        await fetchval(silentpulse_database, "SELECT to_regclass('schema_migrations_history')")
        is None
    )


async def test_dry_run_does_not_wait_for_the_migration_lock(
    silentpulse_database: str, source: Path
) -> None:
    holder = await hold_migration_lock(silentpulse_database)
    try:
        plan = await asyncio.wait_for(plan_up(silentpulse_database, source=source), timeout=10)
        assert [m.version for m in plan.migrations] == [1, 2, 3]
        r = cli(
            "up", "--dry-run", "--lock-timeout", "0", "--path", str(source),
            dsn=silentpulse_database,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert headers(r.stdout) == ["1/up", "2/up", "3/up"]
    finally:
        await holder.close()
    assert await version_rows(silentpulse_database) == []


def test_format_plan() -> None:
    lock = LockTaken("t", "ACCESS EXCLUSIVE", rewrites=True, note="why")
    plan = MigrationPlan(
        current=VersionState(4, False),
        migrations=(
            PlannedMigration(
                5,
                "add_x",
                "up",
                "m/000005_add_x.up.sql",
                True,
                (PlannedStatement(2, "ALTER TABLE t ...", (lock,), ("line 2: rewrites t",)),),
            ),
        ),
        warnings=("m/000001 changed",),
        version_after=5,
    )
    assert format_plan(plan).splitlines() == [
        "current version: 4",
        "warning: m/000001 changed",
        "dry run: would run 1 migration file (nothing changed, no lock taken):",
        "",
        "5/up add_x  [in one transaction]",
        "  m/000005_add_x.up.sql",
        "  line 2: ALTER TABLE t ...",
        "      ACCESS EXCLUSIVE on t (rewrite; why)",
        "      WARNING: line 2: rewrites t",
        "",
        "version after: 5",
        "warnings: 1 (read the WARNING lines above)",
    ]

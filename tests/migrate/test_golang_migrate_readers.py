"""version, status and drift on a database only golang-migrate has migrated (issue 28, 7):
its schema_migrations is there, our schema_migrations_history is not. Each reader reads
the version from golang-migrate's table alone (dirty included), through the CLI and the
Python verbs, and creates nothing: no table, no function, no row-level security."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import silentpulse_db
from silentpulse_db import DirtyDatabaseError, VersionState
from silentpulse_db.migrate import apply_prerequisites, drift, load_source, status, version
from silentpulse_db.settings import ConnectRetry

from helpers import cli, execute, fetch, simple_set, write_migrations

PACKAGED = Path(silentpulse_db.__file__).parent / "migrations"
GOLANG_MIGRATE = shutil.which("migrate") or str(Path.home() / "go/bin/migrate")
needs_golang_migrate = pytest.mark.skipif(
    not Path(GOLANG_MIGRATE).exists(),
    reason="golang-migrate's CLI is not built here (bench/build_golang_migrate.sh)",
)

# golang-migrate v4.17.1, database/postgres/postgres.go: ensureVersionTable (schema and
# table quoted with pq.QuoteIdentifier, the schema being current_schema()) ...
GOLANG_CREATE = (
    'CREATE TABLE IF NOT EXISTS "public"."schema_migrations" '
    "(version bigint not null primary key, dirty boolean not null)"
)


def golang_set_version(version: int, dirty: bool) -> str:
    """... and SetVersion: one transaction, TRUNCATE then INSERT (no row for the clean
    nil version)."""
    insert = (
        'INSERT INTO "public"."schema_migrations" (version, dirty) '
        f"VALUES ({version}, {str(dirty).lower()});"
        if version >= 0 or dirty
        else ""
    )
    return f'BEGIN; TRUNCATE "public"."schema_migrations"; {insert} COMMIT;'


async def catalog(dsn: str) -> list[str]:
    """Everything a reader could create: relations (with their row-level security),
    functions, triggers."""
    rows = await fetch(
        dsn,
        "SELECT 'relation ' || relname || ' rls=' || relrowsecurity FROM pg_class "
        "WHERE relnamespace = 'public'::regnamespace "
        "UNION ALL SELECT 'function ' || proname FROM pg_proc "
        "WHERE pronamespace = 'public'::regnamespace "
        "UNION ALL SELECT 'trigger ' || tgname FROM pg_trigger WHERE NOT tgisinternal "
        "ORDER BY 1",
    )
    return [r[0] for r in rows]


def run_golang_migrate(dsn: str, path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    url = f"{dsn}{'&' if '?' in dsn else '?'}sslmode=disable"
    return subprocess.run(
        [GOLANG_MIGRATE, "-database", url, "-path", str(path), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


async def readers_see(dsn: str, source: Path, expected: VersionState) -> list[str]:
    """version and status (Python and CLI) read ``expected``; returns status's states."""
    assert await version(dsn, connect=ConnectRetry(attempts=1)) == expected
    report = await status(dsn, source=source, connect=ConnectRetry(attempts=1))
    assert report.current == expected and report.versioned
    assert (await status(dsn, files=False, connect=ConnectRetry(attempts=1))).current == expected
    shown = await asyncio.to_thread(cli, "version", dsn=dsn)
    assert (shown.returncode, shown.stdout.strip()) == (0, str(expected)), shown.stderr
    assert "no version table" not in shown.stderr
    listed = await asyncio.to_thread(cli, "status", "--path", str(source), dsn=dsn)
    assert listed.returncode == 0, listed.stderr
    assert f"current version: {expected}" in listed.stdout
    return [row.state for row in report.rows]


async def test_a_version_golang_migrate_wrote_by_hand_dirty_then_clean(
    silentpulse_database: str, tmp_path: Path
) -> None:
    """Without the binary: the table and rows exactly as golang-migrate v4.17.1 writes them."""
    dsn = silentpulse_database
    source = write_migrations(tmp_path, simple_set(3))
    await execute(dsn, "CREATE TABLE t1 (id int); CREATE TABLE t2 (id int);")
    await execute(dsn, GOLANG_CREATE)
    await execute(dsn, golang_set_version(2, True))  # 2 failed halfway, golang-migrate-style
    before = await catalog(dsn)

    states = await readers_see(dsn, source, VersionState(2, True))
    assert states == ["applied", "dirty", "pending"]
    with pytest.raises(DirtyDatabaseError, match="Dirty database version 2"):
        await drift(dsn, source=source, connect=ConnectRetry(attempts=1))
    refused = await asyncio.to_thread(cli, "drift", "--path", str(source), dsn=dsn)
    assert refused.returncode == 2 and "Dirty database version 2" in refused.stderr

    await execute(dsn, golang_set_version(2, False))  # `migrate force 2`
    assert await readers_see(dsn, source, VersionState(2, False)) == [
        "applied",
        "applied",
        "pending",
    ]
    report = await drift(dsn, source=source, connect=ConnectRetry(attempts=1))
    assert report.version == 2 and report.matches, report.differences
    matched = await asyncio.to_thread(cli, "drift", "--path", str(source), dsn=dsn)
    assert matched.returncode == 0 and "no drift" in matched.stdout, matched.stderr
    assert await catalog(dsn) == before  # no read created anything


async def test_a_database_never_migrated_reads_none_and_stays_untouched(
    silentpulse_database: str, tmp_path: Path
) -> None:
    """`version` prints "none" and exits 0, as `status` does (golang-migrate exits 1 with
    "error: no migration", and creates schema_migrations on the way)."""
    dsn = silentpulse_database
    source = write_migrations(tmp_path, simple_set(2))
    before = await catalog(dsn)
    assert await version(dsn, connect=ConnectRetry(attempts=1)) == VersionState(None, False)
    report = await status(dsn, source=source, connect=ConnectRetry(attempts=1))
    assert not report.versioned and [r.state for r in report.rows] == ["pending", "pending"]
    shown = await asyncio.to_thread(cli, "version", dsn=dsn)
    assert (shown.returncode, shown.stdout.strip()) == (0, "none")
    assert "no version table" in shown.stderr
    listed = await asyncio.to_thread(cli, "status", "--path", str(source), dsn=dsn)
    assert listed.returncode == 0 and "current version: none" in listed.stdout
    never = await asyncio.to_thread(cli, "drift", "--path", str(source), dsn=dsn)
    assert never.returncode == 2 and "never migrated" in never.stderr
    assert await catalog(dsn) == before


def documented_partition_keys() -> str:
    """docs/migrations.md's query that writes the partitions' CREATE INDEX CONCURRENTLY
    statements of 000045-000047 for golang-migrate's users, without psql's \\gexec."""
    text = (Path(__file__).parents[2] / "docs" / "migrations.md").read_text()
    section = text[text.index("golang-migrate cannot run 000045-000047") :]
    block = re.search(r"```sql\n(.*?)```", section, re.S)
    assert block is not None
    return block.group(1).replace("\\gexec", "").strip()


@needs_golang_migrate
async def test_the_packaged_set_migrated_by_golang_migrate_alone(
    silentpulse_database: str,
) -> None:
    """The real CLI applies the packaged set: every reader sees its version, drift finds
    the schema the files build, and nothing reading it creates our history."""
    dsn = silentpulse_database
    await apply_prerequisites(
        dsn, connect=ConnectRetry(attempts=1)
    )  # extensions only: no version table
    done = await asyncio.to_thread(run_golang_migrate, dsn, PACKAGED, "goto", "44")
    assert done.returncode == 0, done.stderr
    # 000045-000047 build on partitions what PostgreSQL refuses on a partitioned table:
    # golang-migrate stops dirty there; docs/migrations.md says what to run by hand.
    refused = await asyncio.to_thread(run_golang_migrate, dsn, PACKAGED, "up", "1")
    assert 'cannot create index on partitioned table "alerts" concurrently' in refused.stderr
    await asyncio.to_thread(run_golang_migrate, dsn, PACKAGED, "force", "44")
    for (statement,) in await fetch(dsn, documented_partition_keys()):
        await execute(dsn, statement)
    forced = await asyncio.to_thread(run_golang_migrate, dsn, PACKAGED, "force", "47")
    assert forced.returncode == 0, forced.stderr
    done = await asyncio.to_thread(run_golang_migrate, dsn, PACKAGED, "up")
    assert done.returncode == 0, done.stderr
    latest = load_source().latest
    before = await catalog(dsn)
    assert "relation schema_migrations_history rls=false" not in before

    assert await version(dsn, connect=ConnectRetry(attempts=1)) == VersionState(latest, False)
    report = await status(dsn, connect=ConnectRetry(attempts=1))
    assert report.current == VersionState(latest, False)
    assert {(row.state, row.checksum) for row in report.rows} == {("applied", "unknown")}
    shown = await asyncio.to_thread(cli, "version", dsn=dsn)
    assert (shown.returncode, shown.stdout.strip()) == (0, str(latest)), shown.stderr
    compared = await drift(dsn, connect=ConnectRetry(attempts=1))
    assert compared.version == latest and compared.matches, compared.differences
    matched = await asyncio.to_thread(cli, "drift", dsn=dsn)
    assert matched.returncode == 0 and "no drift" in matched.stdout, matched.stderr
    assert await catalog(dsn) == before


@needs_golang_migrate
async def test_a_dirty_version_left_by_golang_migrate(
    silentpulse_database: str, tmp_path: Path
) -> None:
    dsn = silentpulse_database
    migrations = simple_set(3)
    migrations[3] = ("add_t3", "CREATE TABLE t3 (id int);\nSELECT 1 / 0;\n", "DROP TABLE t3;\n")
    source = write_migrations(tmp_path, migrations)
    failed = await asyncio.to_thread(run_golang_migrate, dsn, source, "up")
    assert failed.returncode == 1 and "division by zero" in failed.stderr, failed.stderr
    before = await catalog(dsn)

    states = await readers_see(dsn, source, VersionState(3, True))
    assert states == ["applied", "applied", "dirty"]
    with pytest.raises(DirtyDatabaseError, match="Dirty database version 3"):
        await drift(dsn, source=source, connect=ConnectRetry(attempts=1))
    refused = await asyncio.to_thread(cli, "drift", "--path", str(source), dsn=dsn)
    assert refused.returncode == 2 and "Dirty database version 3" in refused.stderr
    assert await catalog(dsn) == before
    # golang-migrate reads it back as it wrote it.
    theirs = await asyncio.to_thread(run_golang_migrate, dsn, source, "version")
    assert theirs.stderr.strip().splitlines()[-1] == "3 (dirty)"

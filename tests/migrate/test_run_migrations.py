"""run_migrations against a real server: results, history, checksums, ahead, dirty protocol."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from silentpulse_db import (
    ChecksumMismatchError,
    DatabaseAheadError,
    MigrationFailedError,
    run_migrations,
)

from helpers import fetch, fetchval, simple_set, user_tables, version_rows, write_migrations


async def test_applies_pending_and_reports_each(silentpulse_database: str, tmp_path: Path) -> None:
    source = write_migrations(tmp_path, simple_set(3))
    result = await run_migrations(silentpulse_database, source=source)
    assert (result.version_before, result.version_after) == (None, 3)
    assert [(a.version, a.name, a.direction) for a in result.applied] == [
        (1, "add_t1", "up"),
        (2, "add_t2", "up"),
        (3, "add_t3", "up"),
    ]
    assert all(a.duration > 0 for a in result.applied)
    assert await version_rows(silentpulse_database) == [(3, False)]
    assert await user_tables(silentpulse_database) == {"t1", "t2", "t3"}

    again = await run_migrations(silentpulse_database, source=source)
    assert (again.version_before, again.version_after, again.applied) == (3, 3, ())


async def test_history_records_name_checksum_direction_and_runner(
    silentpulse_database: str, tmp_path: Path
) -> None:
    source = write_migrations(tmp_path, simple_set(2))
    await run_migrations(silentpulse_database, source=source)
    rows = await fetch(
        silentpulse_database,
        "SELECT version, name, direction, checksum, duration_ms, applied_by, applied_at "
        "FROM schema_migrations_history ORDER BY id",
    )
    import hashlib

    expected = hashlib.sha256((tmp_path / "000001_add_t1.up.sql").read_bytes()).hexdigest()
    assert [(r["version"], r["name"], r["direction"]) for r in rows] == [
        (1, "add_t1", "up"),
        (2, "add_t2", "up"),
    ]
    assert rows[0]["checksum"] == expected
    assert rows[0]["duration_ms"] > 0
    role = await fetchval(silentpulse_database, "SELECT current_user")
    assert "pid" in rows[0]["applied_by"] and f"as role {role}" in rows[0]["applied_by"]
    # schema_migrations keeps golang-migrate's two columns only.
    columns = await fetch(
        silentpulse_database,
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'schema_migrations' "
        "ORDER BY ordinal_position",
    )
    assert [c["column_name"] for c in columns] == ["version", "dirty"]


async def test_target_stops_at_version(silentpulse_database: str, tmp_path: Path) -> None:
    source = write_migrations(tmp_path, simple_set(3))
    result = await run_migrations(silentpulse_database, source=source, target=2)
    assert result.version_after == 2
    assert await user_tables(silentpulse_database) == {"t1", "t2"}


async def test_changed_checksum_warns_and_strict_refuses(
    silentpulse_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = write_migrations(tmp_path, simple_set(2))
    await run_migrations(silentpulse_database, source=source)
    (tmp_path / "000001_add_t1.up.sql").write_text("CREATE TABLE t1 (id bigint);\n")
    with caplog.at_level(logging.WARNING, logger="silentpulse_db"):
        result = await run_migrations(silentpulse_database, source=source)
    assert any("000001_add_t1.up.sql changed after it was applied" in w for w in result.warnings)
    assert "000001_add_t1.up.sql changed" in caplog.text
    with pytest.raises(ChecksumMismatchError, match="000001_add_t1.up.sql"):
        await run_migrations(silentpulse_database, source=source, strict=True)


async def test_database_ahead_warns_or_fails_in_strict(
    silentpulse_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    new = write_migrations(tmp_path / "new", simple_set(3))
    old = write_migrations(tmp_path / "old", simple_set(2))
    await run_migrations(silentpulse_database, source=new)
    with caplog.at_level(logging.WARNING, logger="silentpulse_db"):
        result = await run_migrations(silentpulse_database, source=old)
    assert result.database_ahead and result.version_after == 3 and not result.applied
    assert "ahead of the newest migration file (2)" in caplog.text
    with pytest.raises(DatabaseAheadError, match="version 3, ahead of the newest migration file"):
        await run_migrations(silentpulse_database, source=old, strict=True)
    assert await version_rows(silentpulse_database) == [(3, False)]


async def test_failed_transactional_migration_stays_clean_at_previous_version(
    silentpulse_database: str, tmp_path: Path
) -> None:
    migrations = simple_set(1)
    migrations[2] = (
        "add_b",
        "CREATE TABLE b (id int);\nINSERT INTO b VALUES (1);\nINSERT INTO missing VALUES (1);\n",
        "DROP TABLE b;",
    )
    source = write_migrations(tmp_path, migrations)
    with pytest.raises(MigrationFailedError) as info:
        await run_migrations(silentpulse_database, source=source)
    err = info.value
    assert (err.line, err.column, err.sqlstate, err.dirty) == (3, 13, "42P01", False)
    assert "000002_add_b.up.sql line 3, column 13" in str(err)
    assert "INSERT INTO missing VALUES (1);" in str(err)
    # golang-migrate would leave (2, dirty); we keep 1, clean, and nothing of 2.
    assert await version_rows(silentpulse_database) == [(1, False)]
    assert await user_tables(silentpulse_database) == {"t1"}


async def test_concurrent_index_uses_dirty_protocol(
    silentpulse_database: str, tmp_path: Path
) -> None:
    migrations = simple_set(1)
    migrations[2] = (
        "create_index_t1",
        "CREATE INDEX CONCURRENTLY t1_id ON t1 (id);\n",
        "DROP INDEX CONCURRENTLY t1_id;\n",
    )
    source = write_migrations(tmp_path, migrations)
    result = await run_migrations(silentpulse_database, source=source)
    assert [a.transactional for a in result.applied] == [True, False]
    assert await fetchval(silentpulse_database, "SELECT to_regclass('t1_id') IS NOT NULL")
    assert await version_rows(silentpulse_database) == [(2, False)]


async def test_failure_outside_a_transaction_leaves_dirty_with_recovery(
    silentpulse_database: str, tmp_path: Path
) -> None:
    migrations = simple_set(1)
    migrations[2] = (
        "create_index_t1",
        "-- a table that does not exist\n\nVACUUM nope;\n",
        "SELECT 1;\n",
    )
    source = write_migrations(tmp_path, migrations)
    with pytest.raises(MigrationFailedError) as info:
        await run_migrations(silentpulse_database, source=source)
    assert info.value.dirty and info.value.line == 3
    assert "silentpulse-db force 1" in str(info.value) and "silentpulse-db force 2" in str(
        info.value
    )
    assert await version_rows(silentpulse_database) == [(2, True)]


@pytest.mark.parametrize(
    ("body", "line"),
    [
        ("CREATE INDEX CONCURRENTLY t1_id ON t1 (id);\nVACUUM t1;\n", 2),
        ("SELECT 1;\n-- then\nCREATE INDEX CONCURRENTLY t1_id ON t1 (id);\n", 3),
        ("ALTER TABLE t1 ADD COLUMN b int;\nVACUUM t1;\n", 2),
    ],
)
async def test_a_non_transactional_statement_must_be_alone_in_its_file(
    silentpulse_database: str, tmp_path: Path, body: str, line: int
) -> None:
    migrations = simple_set(1)
    migrations[2] = ("mixed", body, "SELECT 1;\n")
    source = write_migrations(tmp_path, migrations)
    from silentpulse_db import MigrationSourceError

    with pytest.raises(MigrationSourceError) as info:
        await run_migrations(silentpulse_database, source=source)
    assert f"000002_mixed.up.sql:{line}:" in str(info.value)
    assert "must be the only statement of its file" in str(info.value)
    assert await version_rows(silentpulse_database) == []  # refused before anything ran


async def test_up_to_date_database_is_answered_without_the_lock(
    silentpulse_database: str, tmp_path: Path
) -> None:

    from silentpulse_db import LockTimeoutError

    from helpers import hold_migration_lock

    source = write_migrations(tmp_path, simple_set(2))
    await run_migrations(silentpulse_database, source=source)
    holder = await hold_migration_lock(silentpulse_database)
    try:
        result = await run_migrations(
            silentpulse_database, source=source, migration_lock_timeout=0.5
        )
        assert (result.version_after, result.applied) == (2, ())
        # With something pending it must queue for the lock.
        write_migrations(tmp_path, simple_set(3))
        with pytest.raises(LockTimeoutError):
            await run_migrations(silentpulse_database, source=source, migration_lock_timeout=0.5)
        assert await version_rows(silentpulse_database) == [(2, False)]
    finally:
        await holder.close()


async def test_server_warnings_of_a_migration_reach_the_log_naming_the_file(
    silentpulse_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = write_migrations(
        tmp_path,
        {
            1: (
                "reports",
                "CREATE TABLE t1 (id int);\n"
                "DO $$ BEGIN RAISE WARNING 'left 2 rows NOT VALID'; END $$;\n",
                "DROP TABLE t1;\n",
            ),
            2: ("quiet", "CREATE TABLE t2 (id int);\n", "DROP TABLE t2;\n"),
        },
    )
    with caplog.at_level(logging.INFO, logger="silentpulse_db"):
        await run_migrations(silentpulse_database, source=source)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "000001_reports.up.sql" in warnings[0]
    assert "left 2 rows NOT VALID" in warnings[0]


async def test_files_are_read_before_waiting_for_the_lock(
    silentpulse_database: str, tmp_path: Path
) -> None:
    """A file that cannot run is refused at once, not after queueing behind another runner."""

    from silentpulse_db import MigrationSourceError

    from helpers import hold_migration_lock

    source = write_migrations(tmp_path, simple_set(1))
    await run_migrations(silentpulse_database, source=source)
    bad = "CREATE TABLE b (id int);\nCOMMIT;\nCREATE TABLE c (id int);\n"  # two transactions
    (tmp_path / "000002_add_bad.up.sql").write_text(bad)
    (tmp_path / "000002_add_bad.down.sql").write_text("DROP TABLE b;\n")
    holder = await hold_migration_lock(silentpulse_database)
    try:
        with pytest.raises(MigrationSourceError, match=r"000002_add_bad.up.sql:3: this statement"):
            await run_migrations(silentpulse_database, source=source, migration_lock_timeout=2)
    finally:
        await holder.close()
    assert await version_rows(silentpulse_database) == [(1, False)]


async def test_a_long_migration_logs_its_progress(
    silentpulse_database: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from silentpulse_db.migrate.run import in_transaction

    monkeypatch.setattr(in_transaction, "PROGRESS_EVERY", 0.0)  # "a few seconds", made instant
    body = "CREATE TABLE p (id int);\n" + "INSERT INTO p VALUES (1);\n" * 299
    source = write_migrations(tmp_path, {1: ("add_p", body, "DROP TABLE p;\n")})
    with caplog.at_level(logging.INFO, logger="silentpulse_db"):
        await run_migrations(silentpulse_database, source=source)
    progress = [r.getMessage() for r in caplog.records if "statements in" in r.getMessage()]
    assert progress[:3] == [
        f"{source / '000001_add_p.up.sql'}: {n} of 300 statements in 0 s" for n in (100, 200, 300)
    ]


async def test_a_start_compares_each_version_with_its_latest_up_alone(
    silentpulse_database: str, tmp_path: Path
) -> None:
    """The history a start-up reads holds downs, forces and other sets' rows beside the
    ups: the file is compared with the latest 'up' of its version in its own set only."""
    from silentpulse_db.migrate import down, force

    dsn = silentpulse_database
    first = write_migrations(tmp_path / "first", simple_set(2))
    await run_migrations(dsn, source=first)
    await down(dsn, 1, source=first)
    # Version 2 again with another text: its newest 'up' has the new checksum.
    changed = {**simple_set(2), 2: ("add_t2", "CREATE TABLE t2 (id bigint);\n", "DROP TABLE t2;\n")}
    second = write_migrations(tmp_path / "second", changed)
    await run_migrations(dsn, source=second)
    await force(dsn, 2, source=second)  # a 'force' row, newer than every 'up'
    # Another set on the same history, its version 2 with the first text's checksum.
    other = write_migrations(tmp_path / "other", simple_set(2, prefix="o"))
    await run_migrations(dsn, source=other, table="other_migrations", partitions_ahead=None)

    result = await run_migrations(dsn, source=second, strict=True)
    assert (result.version_after, result.applied, result.warnings) == (2, (), ())
    with pytest.raises(ChecksumMismatchError) as failure:
        await run_migrations(dsn, source=first, strict=True)  # the text before: changed
    assert "000002_add_t2.up.sql" in str(failure.value)

"""Bad input: each case names its culprit and applies nothing."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from silentpulse_db import (
    ConfigurationError,
    DatabaseAheadError,
    DatabaseConnectionError,
    DirtyDatabaseError,
    MigrationFailedError,
    MigrationSourceError,
    SilentPulseDBError,
    run_migrations,
)
from silentpulse_db.migrate import up
from silentpulse_db.postgres.dsn import validate_dsn
from silentpulse_db.settings import ConnectRetry

from helpers import execute, simple_set, user_tables, version_rows, write_migrations


@dataclass
class Case:
    """Files to write (on top of a valid 000001), what to expect in the error."""

    files: dict[str, bytes]
    error: type[SilentPulseDBError]
    mentions: tuple[str, ...]


GOOD = {
    "000001_add_t1.up.sql": b"CREATE TABLE t1 (id int);\n",
    "000001_add_t1.down.sql": b"DROP TABLE t1;\n",
}

CASES = {
    "no direction": Case(
        {"000002_add_x.sql": b"SELECT 1;"}, MigrationSourceError, ("000002_add_x.sql", "malformed")
    ),
    "not a number": Case(
        {"abc_add_x.up.sql": b"SELECT 1;"}, MigrationSourceError, ("abc_add_x.up.sql", "malformed")
    ),
    "wrong extension": Case(
        {"000002_add_x.up.txt": b"SELECT 1;", "000002_add_x.down.sql": b"SELECT 1;"},
        MigrationSourceError,
        ("000002_add_x.up.txt", "not a .sql file"),
    ),
    "empty name": Case(
        {"000002_.up.sql": b"SELECT 1;", "000002_.down.sql": b"SELECT 1;"},
        MigrationSourceError,
        ("000002_.",),
    ),
    "duplicate version": Case(
        {"1_other.up.sql": b"SELECT 1;", "1_other.down.sql": b"SELECT 1;"},
        MigrationSourceError,
        ("duplicate migration file", "1_other.down.sql", "000001_add_t1.down.sql"),
    ),
    # A missing down file, names that differ, empty files: accepted, as golang-migrate
    # accepts them (test_golang_migrate_sets.py). A missing up file refuses the up.
    "missing up": Case(
        {"000002_add_x.down.sql": b"DROP TABLE x;"},
        MigrationSourceError,
        ("000002_add_x.down.sql", "up needs 000002_add_x.up.sql"),
    ),
    "not utf-8": Case(
        {
            "000002_add_x.up.sql": b"-- ok\nSELECT '\xff\xfe';\n",
            "000002_add_x.down.sql": b"SELECT 1;",
        },
        MigrationSourceError,
        ("000002_add_x.up.sql", "UTF-8", "line 2"),
    ),
    "a commit halfway": Case(
        {
            "000002_add_x.up.sql": b"CREATE TABLE x ();\nCOMMIT;\nCREATE TABLE y ();\n",
            "000002_add_x.down.sql": b"DROP TABLE x;",
        },
        MigrationSourceError,
        ("000002_add_x.up.sql:3", "follows the file's COMMIT at line 2"),
    ),
    "syntax error at a known line": Case(
        {
            "000002_add_x.up.sql": b"CREATE TABLE x (id int);\n\nCREATE TABLE y (id int,);\n",
            "000002_add_x.down.sql": b"DROP TABLE x;",
        },
        MigrationSourceError,
        ("000002_add_x.up.sql:3:24: syntax error", "CREATE TABLE y (id int,);"),
    ),
    "unterminated quote": Case(
        {
            "000002_add_x.up.sql": b"CREATE TABLE x (id int);\nSELECT 'abc\n",
            "000002_add_x.down.sql": b"DROP TABLE x;",
        },
        MigrationSourceError,
        ("000002_add_x.up.sql:2:8: unterminated quoted string",),
    ),
    "unterminated dollar quote": Case(
        {
            "000002_add_x.up.sql": b"CREATE FUNCTION f() RETURNS int AS $q$ SELECT 1\n",
            "000002_add_x.down.sql": b"SELECT 1;",
        },
        MigrationSourceError,
        ("000002_add_x.up.sql:1:", "unterminated dollar-quoted string"),
    ),
    "copy from stdin": Case(
        {
            "000002_add_x.up.sql": b"CREATE TABLE x (id int);\nCOPY x FROM STDIN;\n",
            "000002_add_x.down.sql": b"DROP TABLE x;",
        },
        MigrationSourceError,
        ("000002_add_x.up.sql:2: COPY ... FROM STDIN",),
    ),
    "deallocate all": Case(
        {
            "000002_add_x.up.sql": b"CREATE TABLE x (id int);\n\nDEALLOCATE ALL;\n",
            "000002_add_x.down.sql": b"DROP TABLE x;",
        },
        MigrationSourceError,
        ("000002_add_x.up.sql:3: DEALLOCATE ALL", "the runner's own prepared statements"),
    ),
    "runtime error at a known line": Case(
        {
            "000002_add_x.up.sql": b"CREATE TABLE x (id int);\nALTER TABLE x ADD CONSTRAINT c CHECK (nope > 0);\n",
            "000002_add_x.down.sql": b"DROP TABLE x;",
        },
        MigrationFailedError,
        ("000002_add_x.up.sql line 2", "42703", "nope"),
    ),
    "unknown directive": Case(
        {
            "000002_add_x.up.sql": b"-- about x\n-- silentpulse: lock_timeout=5sec\nSELECT 1;",
            "000002_add_x.down.sql": b"SELECT 1;",
        },
        MigrationSourceError,
        ("000002_add_x.up.sql:2:", "unknown directive 'lock_timeout=5sec'"),
    ),
    "misspelt mark": Case(
        {
            "000002_add_x.up.sql": b"-- silentpulse: breakin\nSELECT 1;",
            "000002_add_x.down.sql": b"SELECT 1;",
        },
        MigrationSourceError,
        ("000002_add_x.up.sql:1:", "unknown directive 'breakin'"),
    ),
    "mark after the first statement": Case(
        {
            "000002_add_x.up.sql": b"CREATE TABLE x (i int);\n-- silentpulse: breaking\n",
            "000002_add_x.down.sql": b"DROP TABLE x;",
        },
        MigrationSourceError,
        ("000002_add_x.up.sql:2:", "belong in the file's header"),
    ),
    "lock_timeout beyond a day": Case(
        {
            "000002_add_x.up.sql": b"-- silentpulse: lock_timeout=99999999999s\nSELECT 1;",
            "000002_add_x.down.sql": b"SELECT 1;",
        },
        MigrationSourceError,
        ("000002_add_x.up.sql:1:", "more than a day"),
    ),
    "error without a position": Case(
        {
            "000002_add_x.up.sql": b"CREATE TABLE x (id int);\nSELECT 1/0;\n",
            "000002_add_x.down.sql": b"DROP TABLE x;",
        },
        MigrationFailedError,
        ("000002_add_x.up.sql", "division by zero", "22012"),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_bad_migration_files(name: str, silentpulse_database: str, tmp_path: Path) -> None:
    case = CASES[name]
    for filename, content in {**GOOD, **case.files}.items():
        (tmp_path / filename).write_bytes(content)
    with pytest.raises(case.error) as info:
        await run_migrations(silentpulse_database, source=tmp_path)
    for needle in case.mentions:
        assert needle in str(info.value), f"{needle!r} not in {info.value}"
    # Nothing applied: an invalid set stops before 000001; a failing 000002
    # leaves 000001 only, clean.
    expected = [(1, False)] if case.error is MigrationFailedError else []
    assert await version_rows(silentpulse_database) == expected
    assert await user_tables(silentpulse_database) == ({"t1"} if expected else set())


async def test_dirty_database_is_refused_with_recovery_command(
    silentpulse_database: str, tmp_path: Path
) -> None:
    source = write_migrations(tmp_path, simple_set(3))
    await run_migrations(silentpulse_database, source=source, target=2)
    # What golang-migrate leaves after a failed 000003: (3, dirty).
    await execute(
        silentpulse_database,
        "TRUNCATE schema_migrations; INSERT INTO schema_migrations VALUES (3, true)",
    )
    with pytest.raises(DirtyDatabaseError) as info:
        await run_migrations(silentpulse_database, source=source)
    text = str(info.value)
    assert "Dirty database version 3" in text and "000003_add_t3.up.sql" in text
    assert "`silentpulse-db force 2`" in text and "`silentpulse-db force 3`" in text
    assert await version_rows(silentpulse_database) == [(3, True)]
    assert await user_tables(silentpulse_database) == {"t1", "t2"}


async def test_database_ahead_in_strict_mode(silentpulse_database: str, tmp_path: Path) -> None:
    await run_migrations(
        silentpulse_database, source=write_migrations(tmp_path / "new", simple_set(3))
    )
    with pytest.raises(DatabaseAheadError, match=r"version 3, ahead .* \(2\)") as info:
        await run_migrations(
            silentpulse_database,
            source=write_migrations(tmp_path / "old", simple_set(2)),
            strict=True,
        )
    assert info.value.database_version == 3
    assert await version_rows(silentpulse_database) == [(3, False)]


async def test_a_bad_later_file_stops_the_earlier_pending_ones_too(
    silentpulse_database: str, tmp_path: Path
) -> None:
    files = simple_set(3)
    await run_migrations(silentpulse_database, source=write_migrations(tmp_path, {1: files[1]}))
    files[3] = ("add_t3", "-- silentpulse: lock_timeout=abc\nCREATE TABLE t3 (id int);\n", "")
    files[3] = (files[3][0], files[3][1], "DROP TABLE t3;\n")
    source = write_migrations(tmp_path, files)
    with pytest.raises(MigrationSourceError, match="000003_add_t3.up.sql:1: unknown directive"):
        await run_migrations(silentpulse_database, source=source)
    assert await version_rows(silentpulse_database) == [(1, False)]  # 000002 did not run


async def test_version_without_a_file_is_named(silentpulse_database: str, tmp_path: Path) -> None:
    await run_migrations(
        silentpulse_database, source=write_migrations(tmp_path / "a", simple_set(3))
    )
    gap = simple_set(3)
    del gap[2]
    source = write_migrations(tmp_path / "b", gap)
    await execute(
        silentpulse_database,
        "TRUNCATE schema_migrations; INSERT INTO schema_migrations VALUES (2, false)",
    )
    with pytest.raises(DatabaseAheadError, match="version 2, which has no migration file"):
        await run_migrations(silentpulse_database, source=source)


@pytest.mark.parametrize("source", ["/nonexistent/migrations/dir", "no_such_package.migrations"])
async def test_unknown_source(source: str, silentpulse_database: str) -> None:
    with pytest.raises(MigrationSourceError) as info:
        await run_migrations(silentpulse_database, source=source)
    assert source in str(info.value)
    assert await version_rows(silentpulse_database) == []


@pytest.mark.parametrize(
    ("dsn", "mentions"),
    [
        ("mysql://root:hunter2@localhost/db", "must start with postgresql://"),
        # No scheme: nothing marks where the password is (the review of issue 20 found
        # it shown); every form of it.
        ("root:hunter2@localhost:5432/db", "got no scheme"),
        ("hunter2", "got no scheme"),
        ("//root:hunter2@localhost/db", "must start with postgresql://"),
        ("root@localhost password=hunter2", "must start with postgresql://"),
        ("postgresql://u:hunter2@localhost:notaport/db", "not a valid PostgreSQL URL"),
        # An unencoded "@": asyncpg reads the userinfo to the first one, so tried the host
        # "hunter2@localhost" (a DNS failure, retried as transient for a minute).
        ("postgresql://u:S3c@hunter2@localhost/db", "must be percent-encoded (%40)"),
        ("postgresql://u:hunter2@@localhost/db", "must be percent-encoded (%40)"),
        ("postgresql://me@corp:hunter2@localhost:5432/db", "must be percent-encoded (%40)"),
        ("postgresql://me@corp@localhost/db", "must be percent-encoded (%40)"),
        ("", "empty"),
        ("postgresql://u:hunter2@localhost/db?sslmode=sometimes", "invalid DSN"),
    ],
)
async def test_malformed_dsn(dsn: str, mentions: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        await run_migrations(
            dsn, source=write_migrations(tmp_path, simple_set(1)), connect=ConnectRetry(attempts=1)
        )
    assert mentions in str(info.value)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://u:p@h1,h2/db",
        "postgresql://u:p@h1,h2:5433/db",
        "postgresql://u:p@[::1]:5432/db",
        "postgresql://u@[::1]/db",
        "postgresql://u@localhost/db",
        "postgresql://localhost/db",
        "postgres://u:S3c%40hunter2@localhost:5432/db",
        "postgresql://u%40corp:S3c%2F%23%3F%40@localhost/db",
        "postgresql:///db?host=/tmp&user=u&password=S3c@hunter2",
        "postgresql://u:p@localhost/db?application_name=a@b",
    ],
)
def test_well_formed_dsns_pass_validation(dsn: str) -> None:
    assert validate_dsn(dsn) == dsn


async def test_unknown_database_fails_at_once(
    silentpulse_postgres: object, silentpulse_database: str, tmp_path: Path
) -> None:
    dsn = silentpulse_database.rsplit("/", 1)[0] + "/no_such_database"
    with pytest.raises(DatabaseConnectionError, match="no_such_database"):
        await run_migrations(
            dsn,
            source=write_migrations(tmp_path, simple_set(1)),
            connect=ConnectRetry(attempts=30, wait=2.0),
        )


async def test_goto_unknown_version(silentpulse_database: str, tmp_path: Path) -> None:
    source = write_migrations(tmp_path, simple_set(2))
    from silentpulse_db import VersionNotFoundError
    from silentpulse_db.migrate import goto

    with pytest.raises(VersionNotFoundError, match="version 7"):
        await goto(silentpulse_database, 7, source=source)
    assert await version_rows(silentpulse_database) == []


def _unreadable(folder: Path, name: str) -> None:
    """``name`` in ``folder``, listed as a file that cannot be read: for a user, one its
    mode forbids; for root (whom modes do not stop), a link to /proc/self/mem, whose
    first byte no process may read (EIO)."""
    path = folder / name
    if os.geteuid() == 0:
        path.symlink_to("/proc/self/mem")
    else:
        path.write_text("CREATE TABLE t2 (id int);\n")
        path.chmod(0)


@pytest.mark.parametrize("verb", ["run_migrations", "up"])
async def test_an_unreadable_file_is_a_source_error_naming_it(
    verb: str, silentpulse_database: str, tmp_path: Path
) -> None:
    write_migrations(tmp_path, simple_set(1))
    _unreadable(tmp_path, "000002_add_t2.up.sql")
    (tmp_path / "000002_add_t2.down.sql").write_text("DROP TABLE t2;\n")
    run = run_migrations if verb == "run_migrations" else up
    with pytest.raises(
        MigrationSourceError, match=r"000002_add_t2\.up\.sql: cannot be read"
    ) as info:
        await run(silentpulse_database, source=tmp_path)
    assert info.value.file == str(tmp_path / "000002_add_t2.up.sql")
    assert await user_tables(silentpulse_database) == set()  # nothing applied

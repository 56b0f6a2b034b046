"""The operator CLI as operators run it: a real process, real exit codes, stdout and stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import cli, execute, free_port, simple_set, version_rows, write_migrations


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_migrations(tmp_path / "m", simple_set(3))


async def test_up_version_status_down_goto_force(silentpulse_database: str, source: Path) -> None:
    path = ["--path", str(source)]
    r = cli("up", "2", *path, dsn=silentpulse_database)
    assert r.returncode == 0, r.stderr
    assert "1/up add_t1" in r.stdout and "2/up add_t2" in r.stdout and "version: 2" in r.stdout

    r = cli("version", *path, dsn=silentpulse_database)
    assert (r.returncode, r.stdout.strip()) == (0, "2")

    r = cli("status", *path, dsn=silentpulse_database, env_var="POSTGRES_DSN")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["version", "name", "state", "applied_at", "duration", "checksum"]
    assert lines[1].split()[:3] == ["1", "add_t1", "applied"] and lines[1].split()[-1] == "ok"
    assert lines[3].split() == ["3", "add_t3", "pending", "-", "-", "-"]

    r = cli("up", *path, dsn=silentpulse_database)
    assert r.returncode == 0 and "3/up add_t3" in r.stdout
    r = cli("down", "1", *path, dsn=silentpulse_database)
    assert r.returncode == 0 and "3/down add_t3" in r.stdout
    r = cli("goto", "1", *path, dsn=silentpulse_database)
    assert r.returncode == 0 and await version_rows(silentpulse_database) == [(1, False)]

    await execute(
        silentpulse_database,
        "TRUNCATE schema_migrations; INSERT INTO schema_migrations VALUES (2, true)",
    )
    r = cli("version", *path, dsn=silentpulse_database)
    assert r.stdout.strip() == "2 (dirty)"
    r = cli("up", *path, dsn=silentpulse_database)
    assert r.returncode == 1 and "Dirty database version 2" in r.stderr and r.stdout == ""
    r = cli("force", "1", *path, dsn=silentpulse_database)
    assert r.returncode == 0 and await version_rows(silentpulse_database) == [(1, False)]

    r = cli("down", "--all", *path, dsn=silentpulse_database)
    assert r.returncode == 0 and await version_rows(silentpulse_database) == []
    r = cli("version", *path, dsn=silentpulse_database)
    assert r.stdout.strip() == "none"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["down"], "give N (down 1) or --all"),
        (["down", "0"], "expected a number >= 1"),
        (["goto"], "required"),
        (["frobnicate"], "invalid choice"),
        ([], "a command is required"),
        (["create", "Bad Name!"], "bad migration name: 'Bad Name!' is not snake_case"),
    ],
)
def test_usage_errors_exit_2(
    args: list[str], needle: str, silentpulse_database: str, source: Path
) -> None:
    r = cli(*args, *(["--path", str(source)] if args else []), dsn=silentpulse_database)
    assert r.returncode == 2 and needle in r.stderr


def test_missing_database_is_a_usage_error(source: Path) -> None:
    r = cli("version", "--path", str(source))
    assert r.returncode == 2 and "DATABASE_URL" in r.stderr


def test_up_on_a_database_ahead_fails(silentpulse_database: str, tmp_path: Path) -> None:
    new = write_migrations(tmp_path / "new", simple_set(3))
    old = write_migrations(tmp_path / "old", simple_set(2))
    assert cli("up", "--path", str(new), dsn=silentpulse_database).returncode == 0
    r = cli("up", "--path", str(old), dsn=silentpulse_database)
    assert r.returncode == 1 and "ahead of the newest migration file (2)" in r.stderr


def test_errors_never_print_the_password(silentpulse_database: str, source: Path) -> None:
    dsn = "postgresql://app:TopSecret99@127.0.0.1:1/nodb"
    r = cli("up", "--path", str(source), "--attempts", "1", dsn=dsn)
    assert r.returncode == 1
    assert "TopSecret99" not in r.stderr + r.stdout and "***" in r.stderr


def test_an_unencoded_at_in_the_password_is_refused_before_connecting() -> None:
    """asyncpg read `S3cret@PW@127.0.0.1` as user and password up to the first "@", tried
    the host `PW@127.0.0.1` (a DNS failure, retried as transient): refused at once now."""
    r = cli("version", "--attempts", "30", dsn="postgresql://u:S3cret@PW@127.0.0.1/db")
    assert r.returncode == 2, r.stderr
    assert "must be percent-encoded (%40)" in r.stderr and "gaierror" not in r.stderr, r.stderr
    assert "S3cret" not in r.stderr + r.stdout, r.stderr


def test_unknown_path(silentpulse_database: str, tmp_path: Path) -> None:
    r = cli("up", "--path", str(tmp_path / "nope"), dsn=silentpulse_database)
    assert r.returncode == 2 and "nope" in r.stderr  # a configuration error


def test_options_after_the_command(silentpulse_database: str, source: Path) -> None:
    r = cli("up", "--path", str(source), "--database", silentpulse_database, "--lock-timeout", "5")
    assert r.returncode == 0, r.stderr


# --- usage, as a new user meets it (issue 10, 6 and 7) --------------------------------------


def test_an_empty_migrations_folder_is_a_usage_error(
    silentpulse_database: str, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    r = cli("up", "--path", str(tmp_path / "empty"), dsn=silentpulse_database)
    assert r.returncode == 2 and "no migration files in" in r.stderr
    assert "ahead" not in r.stderr


def test_force_to_a_version_without_a_file_needs_confirming(
    silentpulse_database: str, source: Path
) -> None:
    assert cli("up", "--path", str(source), dsn=silentpulse_database).returncode == 0
    r = cli("force", "7", "--path", str(source), dsn=silentpulse_database)
    assert r.returncode == 1 and "--allow-missing-file" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    confirmed = cli(
        "force", "7", "--allow-missing-file", "--path", str(source), dsn=silentpulse_database
    )
    assert confirmed.returncode == 0, confirmed.stderr


async def test_down_more_than_applied_points_to_all(
    silentpulse_database: str, source: Path
) -> None:
    assert cli("up", "2", "--path", str(source), dsn=silentpulse_database).returncode == 0
    r = cli("down", "5", "--path", str(source), dsn=silentpulse_database)
    assert r.returncode == 2 and "only 2 migrations are applied" in r.stderr and "--all" in r.stderr
    assert await version_rows(silentpulse_database) == [(2, False)]
    one = cli("down", "2", "--path", str(source), dsn=silentpulse_database)
    assert one.returncode == 0
    r = cli("up", "1", "--path", str(source), dsn=silentpulse_database)
    r = cli("down", "2", "--path", str(source), dsn=silentpulse_database)
    assert "only 1 migration is applied" in r.stderr


@pytest.mark.parametrize("value", ["-1", "abc", "nan"])
def test_a_bad_lock_timeout_is_a_usage_error(value: str, source: Path) -> None:
    r = cli(
        "up", "--lock-timeout", value, "--path", str(source), dsn="postgresql://u@127.0.0.1:1/db"
    )
    assert r.returncode == 2 and "--lock-timeout" in r.stderr


def test_a_fresh_migration_pair_is_refused_until_written(
    silentpulse_database: str, tmp_path: Path
) -> None:
    folder = write_migrations(tmp_path / "m", simple_set(1))
    made = cli("create", "add_widgets_table", "--path", str(folder))
    assert made.returncode == 0
    up_file = folder / "000002_add_widgets_table.up.sql"
    assert up_file.exists() and "--" in up_file.read_text()
    r = cli("up", "--path", str(folder), dsn=silentpulse_database)
    assert r.returncode == 1
    assert "000002_add_widgets_table.up.sql: still the template `create` wrote" in r.stderr
    assert "write the migration's SQL" in r.stderr


async def test_up_warns_about_a_changed_file(silentpulse_database: str, source: Path) -> None:
    assert cli("up", "2", "--path", str(source), dsn=silentpulse_database).returncode == 0
    first = source / "000001_add_t1.up.sql"
    first.write_text(first.read_text() + "-- edited after it was applied\n")
    r = cli("up", "--path", str(source), dsn=silentpulse_database)
    assert r.returncode == 0
    assert "WARNING" in r.stderr and "000001_add_t1.up.sql changed after it was applied" in r.stderr


def test_version_reads_the_version_even_with_a_broken_file(
    silentpulse_database: str, tmp_path: Path
) -> None:
    import asyncio

    from silentpulse_db import run_migrations

    from helpers import simple_set, write_migrations

    source = write_migrations(tmp_path, simple_set(2))
    asyncio.run(run_migrations(silentpulse_database, source=source))
    (tmp_path / "000003_add_x.up.sql").write_text("-- silentpulse: nonsense\nSELECT 1;\n")
    (tmp_path / "000003_add_x.down.sql").write_text("SELECT 1;\n")
    env = {**os.environ, "DATABASE_URL": silentpulse_database}
    version = subprocess.run(
        [sys.executable, "-m", "silentpulse_db", "version", "--path", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert (version.returncode, version.stdout.strip()) == (0, "2"), version.stderr
    status = subprocess.run(
        [sys.executable, "-m", "silentpulse_db", "status", "--path", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert status.returncode == 1 and "unknown directive" in status.stderr


def test_prerequisites_says_an_absent_optional_extension_once(silentpulse_database: str) -> None:
    done = cli("prerequisites", dsn=silentpulse_database)
    assert done.returncode == 0, done.stderr
    installed = done.stdout.split("extensions installed:")[1].splitlines()[0]
    about_age = [line for line in done.stdout.splitlines() if "'age'" in line or '"age"' in line]
    expected = (
        []
        if "age" in installed.split(", ")
        else ["optional extension 'age' is not available on this server: skipped"]
    )
    assert about_age == expected, done.stdout


def test_the_cli_does_not_wait_for_a_server_that_is_not_there() -> None:
    """A mistyped port: one attempt and the error, not 30 retry warnings over a minute
    (issue 27, 3); --attempts N waits as a deploy job beside a starting server needs."""
    port = free_port()
    dsn = f"postgresql://postgres@127.0.0.1:{port}/silentpulse"
    r = cli("version", dsn=dsn)
    assert r.returncode == 1, r.stderr
    assert "not reachable yet" not in r.stderr and "after 1 attempt:" in r.stderr, r.stderr
    assert f"127.0.0.1:{port}" in r.stderr and "ConnectionRefusedError" in r.stderr, r.stderr
    r = cli("version", "--attempts", "2", dsn=dsn)
    assert r.returncode == 1 and r.stderr.count("not reachable yet") == 1, r.stderr
    assert "after 2 attempts" in r.stderr, r.stderr


def test_check_waits_for_the_server_as_told() -> None:
    """check's --attempts and --wait reach the verb (they were accepted and ignored)."""
    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/silentpulse"
    r = cli("check", "--attempts", "2", "--wait", "0", dsn=dsn)
    assert r.returncode == 1 and r.stderr.count("not reachable yet") == 1, r.stderr
    assert "after 2 attempts" in r.stderr, r.stderr


def test_create_in_a_folder_that_is_not_there_names_it(tmp_path: Path) -> None:
    r = cli("create", "--path", str(tmp_path / "nope"), "add_tags")
    assert r.returncode == 2, r.stderr
    assert f"{tmp_path / 'nope'} is not a directory: check --path" in r.stderr, r.stderr


@pytest.mark.parametrize(
    ("words", "said"),
    [
        (("down",), "refusing to revert everything implicitly: give N (down 1) or --all"),
        (("down", "--dry-run"), "refusing to revert everything implicitly"),
        (("down", "1", "--all"), "give either N or --all, not both"),
        (("distribute", "--table", "x"), "distribute belongs to the packaged set: no --table"),
        (("prerequisites", "--table", "x"), "prerequisites belongs to the packaged set"),
        (("baseline", "--table", "x"), "baseline belongs to the packaged set"),
    ],
)
def test_wrong_words_are_said_before_a_missing_database(words: tuple[str, ...], said: str) -> None:
    """A usage error is the first thing said, with or without a DSN (exit 2)."""
    done = cli(*words)
    assert done.returncode == 2, done.stderr
    assert said in done.stderr and "no database" not in done.stderr

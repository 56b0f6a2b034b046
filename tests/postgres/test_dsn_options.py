"""golang-migrate's ``x-`` URL options (issue 28, 5): every one is taken out of the DSN,
read as golang-migrate v4.17.1 reads it (database/postgres/postgres.go, the pgx driver's
x-lock-strategy), honoured where it means something here, refused where it cannot be,
warned about once where it means nothing. No server: the DSNs are only read."""

from __future__ import annotations

import logging

import pytest

from silentpulse_db import ConfigurationError
from silentpulse_db.migrate.version_table import resolve
from silentpulse_db.postgres.dsn import connection_dsn, split_options

BASE = "postgresql://app:s3cret%40pw@db.example:5432/silentpulse"


@pytest.mark.parametrize(
    ("query", "clean", "table", "timeout"),
    [
        # Nothing of golang-migrate's: the DSN as it was.
        ("?sslmode=disable", "?sslmode=disable", "schema_migrations", None),
        ("", "", "schema_migrations", None),
        # Taken out, the rest kept byte for byte and in order.
        (
            "?sslmode=disable&x-migrations-table=worker&application_name=a%20b",
            "?sslmode=disable&application_name=a%20b",
            "worker",
            None,
        ),
        ("?x-statement-timeout=1500", "", "schema_migrations", 1.5),
        ("?x-statement-timeout=0", "", "schema_migrations", None),  # 0: no limit
        ("?x-statement-timeout=", "", "schema_migrations", None),  # empty: the default
        ("?x-statement-timeout=%2B250", "", "schema_migrations", 0.25),  # Go's Atoi takes "+"
        ("?x-multi-statement=true&x-multi-statement-max-size=1024", "", "schema_migrations", None),
        ("?x-multi-statement=0&x-multi-statement-max-size=-1", "", "schema_migrations", None),
        ("?x-lock-strategy=advisory&x-lock-table=my_lock", "", "schema_migrations", None),
        # Quoted as golang-migrate's x-migrations-table-quoted wants it: a plain name maps.
        (
            "?x-migrations-table=%22worker%22&x-migrations-table-quoted=true",
            "",
            "worker",
            None,
        ),
        # golang-migrate v4.17.1 panics on this one (index out of range): the default here.
        ("?x-migrations-table-quoted=1", "", "schema_migrations", None),
        ("?x-migrations-table=", "", "schema_migrations", None),  # empty: the default
        # The first of two, as golang-migrate's Query().Get() reads it.
        ("?x-migrations-table=a&x-migrations-table=b", "", "a", None),
        # An encoded name is the same option; "X-" is not golang-migrate's (it keeps it).
        ("?x%2Dmigrations-table=enc&X-Other=1", "?X-Other=1", "enc", None),
        ("?x-migrations-table=w#frag", "#frag", "w", None),
    ],
)
def test_golang_migrate_options_are_taken_out_and_read(
    query: str, clean: str, table: str, timeout: float | None
) -> None:
    resolved = resolve(BASE + query, None)
    assert resolved == (BASE + clean, table, timeout)
    assert connection_dsn(BASE + query) == BASE + clean


def test_a_dsn_without_host_keeps_its_form() -> None:
    """urlsplit().geturl() made postgresql:///db into postgresql:/db (no host: the socket)."""
    dsn = "postgresql:///silentpulse?host=/var/run/postgresql&x-multi-statement=true"
    assert connection_dsn(dsn) == "postgresql:///silentpulse?host=/var/run/postgresql"


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("?x-statement-timeout=abc", "x-statement-timeout='abc': expected milliseconds"),
        ("?x-statement-timeout=-5", "x-statement-timeout='-5'"),
        ("?x-statement-timeout=1.5", "x-statement-timeout='1.5'"),
        ("?x-statement-timeout=99999999999", "x-statement-timeout='99999999999'"),
        ("?x-multi-statement=maybe", "x-multi-statement='maybe': expected true or false"),
        ("?x-multi-statement-max-size=10MB", "x-multi-statement-max-size='10MB'"),
        ("?x-migrations-table-quoted=yes", "x-migrations-table-quoted='yes'"),
        ("?x-lock-strategy=mutex", "x-lock-strategy='mutex': expected advisory or table"),
        ("?x-migrations-table=x%3Bdrop", "x-migrations-table='x;drop': a version table"),
        (
            "?x-migrations-table=worker&x-migrations-table-quoted=true",
            "with x-migrations-table-quoted=true it must be quoted",
        ),
        (
            "?x-migrations-table=%22migrate%22.%22schema_migrations%22&x-migrations-table-quoted=t",
            "a version table in schema 'migrate' is not supported here",
        ),
        (
            "?x-migrations-table=%22a%22.%22b%22.%22c%22&x-migrations-table-quoted=t",
            "more than schema and table",
        ),
        (
            "?x-migrations-table=%22bad%20name%22&x-migrations-table-quoted=t",
            "plain table name",
        ),
        ("?x-lock-strategy=table", "would not exclude each other"),
    ],
)
def test_options_that_cannot_work_are_configuration_errors_naming_them(
    query: str, named: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve(BASE + query, None)
    assert named in str(info.value)
    assert "s3cret" not in str(info.value) and "db.example" not in str(info.value)


def test_a_lock_table_is_refused_by_the_engine_only() -> None:
    """Only the migration engine takes golang-migrate's lock: the application's pool or
    the jobs with the same DSN have no lock to share."""
    assert connection_dsn(BASE + "?x-lock-strategy=table&x-lock-table=l") == BASE


def test_options_without_meaning_here_are_warned_about_once_by_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="silentpulse_db")
    dsn = BASE + "?x-unit-once-b=1&sslmode=disable&x-unit-once-a=&x-multi-statement=true"
    for _ in range(3):
        assert resolve(dsn, None).dsn == BASE + "?sslmode=disable"
        assert connection_dsn(dsn) == BASE + "?sslmode=disable"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "x-unit-once-a, x-unit-once-b" in warnings[0]
    assert "x-multi-statement" not in warnings[0]  # understood: no word about it
    assert "s3cret" not in warnings[0]
    # A new unknown option later in the process: its own warning, the old ones not again.
    connection_dsn(BASE + "?x-unit-once-a=1&x-unit-once-c=1")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "x-unit-once-c:" in warnings[1].replace(" golang", ":")
    assert "x-unit-once-a" not in warnings[1]


def test_split_options_reads_every_option() -> None:
    clean, options = split_options(
        BASE + "?x-statement-timeout=20&x-lock-strategy=table&x-migrations-table=w&x-z=1"
    )
    assert clean == BASE
    assert options.statement_timeout == 0.02
    assert options.lock_strategy == "table"
    assert options.migrations_table == "w"
    assert options.unknown == ("x-z",)


def test_a_password_read_as_the_query_is_not_shown() -> None:
    """A "?" left unencoded in a password puts the rest of it in the query as urlsplit
    reads it: a value that may be the password's is never printed."""
    with pytest.raises(ConfigurationError) as info:
        split_options("postgresql://app:pa?x-statement-timeout=s3cret@db.example/silentpulse")
    assert "s3cret" not in str(info.value) and "x-statement-timeout" in str(info.value)

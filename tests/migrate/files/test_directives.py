"""`-- silentpulse:` directives: every spelling the header allows is read, and the quick
check that skips files without any never skips one that has one."""

from __future__ import annotations

import pytest

from silentpulse_db import MigrationSourceError
from silentpulse_db.migrate.files.directives import parse_directives


@pytest.mark.parametrize(
    ("sql", "breaking", "timeout"),
    [
        ("-- silentpulse: breaking\nALTER TABLE t DROP COLUMN c;\n", True, None),
        ("--silentpulse: breaking\nSELECT 1;\n", True, None),
        ("--   SilentPulse:   lock_timeout=10s\nSELECT 1;\n", False, 10.0),
        ("\ufeff-- silentpulse: lock_timeout=250ms\nSELECT 1;\n", False, 0.25),
        ("-- a note\n\n-- SILENTPULSE: breaking\nSELECT 1;\n", True, None),
        # Names our functions, holds no directive: nothing to read.
        ("SELECT silentpulse_ensure_monthly_partitions('alerts');\n", False, None),
        ("-- calls silentpulse_secure_partition()\nSELECT 1;\n", False, None),
    ],
)
def test_directives_are_read_in_any_spelling(
    sql: str, breaking: bool, timeout: float | None
) -> None:
    directives = parse_directives(sql, "000001_x.up.sql")
    assert (directives.breaking, directives.lock_timeout) == (breaking, timeout)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1;\n-- silentpulse: breaking\n",
        "SELECT 1;\n--SILENTPULSE:lock_timeout=5s\n",
        "-- silentpulse: breakingg\nSELECT 1;\n",
        "-- silentpulse: requires extension\nSELECT 1;\n",
        "-- silentpulse: requires extension pg trgm\nSELECT 1;\n",
    ],
)
def test_a_misplaced_or_unknown_directive_is_refused(sql: str) -> None:
    with pytest.raises(MigrationSourceError, match="000001_x.up.sql"):
        parse_directives(sql, "000001_x.up.sql")


@pytest.mark.parametrize(
    ("header", "lock", "statement"),
    [
        ("-- silentpulse: statement_timeout=30min", None, 1800.0),
        ("-- silentpulse: statement_timeout=0\n-- silentpulse: lock_timeout=2s", 2.0, 0.0),
        ("-- SilentPulse: Statement_Timeout = 500ms", None, 0.5),
    ],
)
def test_a_files_own_statement_timeout_is_read(
    header: str, lock: float | None, statement: float | None
) -> None:
    directives = parse_directives(f"{header}\nSELECT 1;\n", "000001_x.up.sql")
    assert (directives.lock_timeout, directives.statement_timeout) == (lock, statement)


@pytest.mark.parametrize(
    ("header", "named"),
    [
        ("-- silentpulse: statement_timeout=2d", "unknown directive"),
        ("-- silentpulse: statement_timeout=25h", "unknown directive"),
        ("-- silentpulse: statement_timeout=1441min", "more than a day"),
        ("-- silentpulse: statement_timeout", "unknown directive"),
    ],
)
def test_a_bad_statement_timeout_is_refused_naming_the_line(header: str, named: str) -> None:
    with pytest.raises(MigrationSourceError, match=f"000001_x.up.sql:1: .*{named}"):
        parse_directives(f"{header}\nSELECT 1;\n", "000001_x.up.sql")


def test_the_extensions_a_file_requires_are_read() -> None:
    sql = (
        "-- silentpulse: requires extension pg_trgm\n"
        "-- SilentPulse: Requires Extension uuid-ossp\n"
        "-- silentpulse: requires schema_migrations >= 21\n"
        "CREATE INDEX ...;\n"
    )
    directives = parse_directives(sql, "000002_x.up.sql")
    assert directives.extensions == ("pg_trgm", "uuid-ossp")
    assert directives.requires == (("schema_migrations", 21),)

"""`-- silentpulse:` directives: every spelling the header allows is read, and the quick
check that skips files without any never skips one that has one."""

from __future__ import annotations

from pathlib import Path

import pytest

from silentpulse_db import MigrationSourceError
from silentpulse_db.migrate import load_source
from silentpulse_db.migrate.files.directives import parse_directives
from silentpulse_db.migrate.files.statements import analyze_cached
from silentpulse_db.migrate.run.index_healing import leaf_index_name

from helpers import write_migrations


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


def test_partitions_only_is_read_and_refused_on_any_other_file(tmp_path: Path) -> None:
    header = "-- silentpulse:  Partitions  Only\n"
    index = "CREATE UNIQUE INDEX CONCURRENTLY t_key ON t (tenant_id, id);\n"
    assert parse_directives(header + index, "000001_x.up.sql").partitions_only
    assert not parse_directives(index, "000001_x.up.sql").partitions_only
    with pytest.raises(MigrationSourceError, match="unknown directive 'partitions only=1'"):
        parse_directives("-- silentpulse: partitions only=1\n" + index, "000001_x.up.sql")
    source = write_migrations(
        tmp_path, {1: ("add_t", header + "CREATE TABLE t (id int);\n", "DROP TABLE t;\n")}
    )
    (migration,) = load_source(source).migrations
    assert migration.up is not None
    with pytest.raises(MigrationSourceError, match="remove the directive"):
        analyze_cached(migration.up)


@pytest.mark.parametrize(
    ("leaf", "index", "table", "expected"),
    [
        ("alerts_p2026_12", "alerts_tenant_key", "alerts", "alerts_p2026_12_tenant_key"),
        ("alerts_default", "tenant_key", "alerts", "alerts_default_tenant_key"),
        ("t_p1", "t_", "t", "t_p1_t_"),
        # Past 63 bytes: as 000048 spells it in SQL,
        # left(name, 43) || '_' || left(md5(name), 8) || '_tenant_key' (the same bytes).
        ("a" * 60, "alerts_tenant_key", "alerts", "a" * 43 + "_cc7ed669_tenant_key"),
        ("é" * 30, "t_key", "t", "é" * 25 + "_e54f7b5a_key"),  # no character split
        ("p", "x" * 70, "t", "p_" + "x" * 52 + "_41143580"),  # the suffix alone too long
    ],
)
def test_a_partitions_index_name(leaf: str, index: str, table: str, expected: str) -> None:
    assert leaf_index_name(leaf, index, table) == expected
    assert len(expected.encode()) <= 63

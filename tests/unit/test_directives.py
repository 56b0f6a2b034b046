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
    ],
)
def test_a_misplaced_or_unknown_directive_is_refused(sql: str) -> None:
    with pytest.raises(MigrationSourceError, match="000001_x.up.sql"):
        parse_directives(sql, "000001_x.up.sql")

"""`check` (proofs/check.py): every down undoes its up, on a scratch database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from silentpulse_db import ReversibilityError
from silentpulse_db.migrate import check

from helpers import simple_set, write_migrations


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "silentpulse_db", *args], capture_output=True, text=True, check=False
    )


async def test_check_passes_a_reversible_set(silentpulse_database: str, tmp_path: Path) -> None:
    migrations = simple_set(2)
    migrations[4] = (
        "add_index_and_comment",
        "CREATE INDEX t1_id ON t1 (id);\nCOMMENT ON TABLE t1 IS 'one';\nALTER TABLE t2 ADD COLUMN note text DEFAULT 'x';\n",
        "ALTER TABLE t2 DROP COLUMN note;\nCOMMENT ON TABLE t1 IS NULL;\nDROP INDEX t1_id;\n",
    )
    report = await check(silentpulse_database, source=write_migrations(tmp_path, migrations))
    assert report.checked == (1, 2, 4)


async def test_check_catches_a_down_that_forgets_an_index(
    silentpulse_database: str, tmp_path: Path
) -> None:
    migrations = simple_set(1)
    migrations[4] = (
        "add_t1_name",
        "ALTER TABLE t1 ADD COLUMN name text;\nCREATE INDEX t1_name_idx ON t1 (name);\n",
        "ALTER TABLE t1 DROP COLUMN name CASCADE;\n",  # the index goes with the column...
    )
    migrations[5] = (
        "add_t1_code",
        "ALTER TABLE t1 ADD COLUMN code text;\nCREATE INDEX t1_id_idx ON t1 (id);\n",
        "ALTER TABLE t1 DROP COLUMN code;\n",  # ...but this one stays behind
    )
    with pytest.raises(ReversibilityError) as info:
        await check(silentpulse_database, source=write_migrations(tmp_path, migrations))
    text = str(info.value)
    assert "000005_add_t1_code: down does not restore the schema before up" in text
    assert "index public.t1_id_idx: unexpected" in text
    assert "000004" not in text


async def test_check_catches_a_down_dropping_a_column_up_did_not_add(
    silentpulse_database: str, tmp_path: Path
) -> None:
    migrations = {
        1: ("add_t1", "CREATE TABLE t1 (id int, legacy text);\n", "DROP TABLE t1;\n"),
        4: (
            "add_t1_code",
            "ALTER TABLE t1 ADD COLUMN code text;\n",
            "ALTER TABLE t1 DROP COLUMN code;\nALTER TABLE t1 DROP COLUMN legacy;\n",
        ),
    }
    with pytest.raises(ReversibilityError) as info:
        await check(silentpulse_database, source=write_migrations(tmp_path, migrations))
    text = str(info.value)
    assert "000004_add_t1_code: down does not restore" in text
    assert "column public.t1.legacy: missing" in text


async def test_check_catches_a_down_that_leaves_settings_and_a_comment(
    silentpulse_database: str, tmp_path: Path
) -> None:
    """check reads a table and a column as drift does (migrate/catalog/): a down that
    leaves storage options, the replica identity or a statistics target behind does not
    restore the schema; nor one that leaves a function's comment."""
    migrations = simple_set(1)
    migrations[4] = (
        "add_f",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';\n",
        "DROP FUNCTION f();\n",
    )
    migrations[5] = (
        "alter_t1_settings",
        "ALTER TABLE t1 SET (fillfactor = 70), REPLICA IDENTITY FULL,\n"
        "  ALTER COLUMN id SET STATISTICS 500;\nCOMMENT ON FUNCTION f() IS 'one';\n",
        "SELECT 1;\n",
    )
    with pytest.raises(ReversibilityError) as info:
        await check(silentpulse_database, source=write_migrations(tmp_path, migrations))
    text = str(info.value)
    assert "000005_alter_t1_settings: down does not restore the schema before up" in text
    assert "000004" not in text and "up after down" not in text, text
    relation = next(line for line in text.splitlines() if "relation public.t1:" in line)
    assert "options fillfactor=70 | replica identity f" in relation, relation
    column = next(line for line in text.splitlines() if "column public.t1.id:" in line)
    assert "statistics 500" in column, column
    assert "function comment public.f(): unexpected (now: one)" in text, text


async def test_check_reports_naming_rules(silentpulse_database: str, tmp_path: Path) -> None:
    migrations = simple_set(1)
    migrations[4] = ("tags", "CREATE TABLE tags ();", "DROP TABLE tags;")
    with pytest.raises(
        ReversibilityError, match="000004_tags.up.sql: 'tags' does not start with a verb prefix"
    ):
        await check(silentpulse_database, source=write_migrations(tmp_path, migrations))


def test_check_cli_exit_codes(silentpulse_database: str, tmp_path: Path) -> None:
    good = write_migrations(tmp_path / "good", simple_set(2))
    r = _cli("check", "--path", str(good), "--database", silentpulse_database)
    assert r.returncode == 0 and "checked 2 migration(s)" in r.stdout, r.stderr
    bad = write_migrations(
        tmp_path / "bad", {1: ("add_t1", "CREATE TABLE t1 (id int);", "SELECT 1;")}
    )
    r = _cli("check", "--path", str(bad), "--database", silentpulse_database)
    assert r.returncode == 1 and "relation public.t1: unexpected" in r.stderr

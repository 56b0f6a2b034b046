"""Which migrations share a message (together.group_size): pure, no server."""

from __future__ import annotations

from pathlib import Path

import pytest

from silentpulse_db.migrate.files.source import load_source
from silentpulse_db.migrate.files.statements import ParsedSQL, analyze
from silentpulse_db.migrate.plan import Down, Up, make_plan
from silentpulse_db.migrate.run.chunks import CHUNK_STATEMENTS
from silentpulse_db.migrate.run.sent_together import GROUP_MIGRATIONS, group_size
from silentpulse_db.results import VersionState

CREATE = "CREATE TABLE t{v} (id int);\n"


def runs(
    tmp_path: Path, ups: list[str], *, down: bool = False, byte_positions: bool = False
) -> list[int]:
    """The group sizes, in order, of applying (or reverting) migrations with these up files."""
    for v, up in enumerate(ups, start=1):
        (tmp_path / f"{v:06d}_m{v}.up.sql").write_text(up.format(v=v))
        (tmp_path / f"{v:06d}_m{v}.down.sql").write_text(CREATE.format(v=v))
    source = load_source(tmp_path)
    if down:
        plan = make_plan(source, VersionState(len(ups), False), Down(None), history={})
    else:
        plan = make_plan(source, VersionState(None, False), Up(), history={})
    parsed: list[ParsedSQL] = [analyze(s.file.sql, s.file.location) for s in plan.steps]
    sizes, start = [], 0
    while start < len(plan.steps):
        sizes.append(group_size(plan.steps, parsed, start, byte_positions=byte_positions))
        start += sizes[-1]
    return sizes


def test_schema_migrations_travel_together_up_to_the_cap(tmp_path: Path) -> None:
    assert runs(tmp_path, [CREATE] * (GROUP_MIGRATIONS + 3)) == [GROUP_MIGRATIONS, 3]


@pytest.mark.parametrize(
    "alone",
    [
        "DO $$ BEGIN RAISE NOTICE 'x'; END $$;",
        "INSERT INTO t1 VALUES (1);",
        "UPDATE t1 SET id = 2;",
        "SELECT pg_sleep(1);",
        "CALL p();",
        "CREATE TABLE c AS SELECT 1 AS one;",
        "REFRESH MATERIALIZED VIEW v;",
        "LOCK TABLE t1;",
        "TRUNCATE t1;",
        "CREATE EXTENSION IF NOT EXISTS pgcrypto;",
        "CREATE INDEX CONCURRENTLY i ON t1 (id);",
        "CREATE TABLE t{v} (id int);\n" + "COMMENT ON TABLE t{v} IS 'x';\n" * CHUNK_STATEMENTS,
    ],
)
def test_files_that_run_code_or_need_several_messages_go_alone(tmp_path: Path, alone: str) -> None:
    assert runs(tmp_path, [CREATE, CREATE, alone, CREATE, CREATE]) == [2, 1, 2]


def test_a_group_holds_at_most_one_message_of_statements(tmp_path: Path) -> None:
    half = CREATE + "COMMENT ON TABLE t{v} IS 'x';\n" * (CHUNK_STATEMENTS // 2 - 1)
    assert runs(tmp_path, [half, half, half]) == [2, 1]


def test_the_revert_to_no_version_goes_alone(tmp_path: Path) -> None:
    # Down to "no version" deletes the version row: not the prepared write.
    assert runs(tmp_path, [CREATE] * 4, down=True) == [3, 1]


def test_in_a_sql_ascii_database_a_file_with_other_characters_ends_its_group(
    tmp_path: Path,
) -> None:
    accent = "CREATE TABLE t{v} (id int); -- créée\n"
    ups = [CREATE, accent, CREATE, CREATE]
    assert runs(tmp_path, ups, byte_positions=True) == [2, 2]
    assert runs(tmp_path, ups, byte_positions=False) == [4]

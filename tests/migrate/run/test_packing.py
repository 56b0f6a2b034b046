"""What travels in each message (migrate/run/packing.py): a file cut into messages, and
which migrations share one (group_size). Pure, no server."""

from __future__ import annotations

from pathlib import Path

import pytest

from silentpulse_db.migrate.files.source import load_source
from silentpulse_db.migrate.files.statements import ParsedSQL, analyze
from silentpulse_db.migrate.plan import Down, Up, make_plan
from silentpulse_db.migrate.run.packing import (
    CHUNK_STATEMENTS,
    GROUP_MIGRATIONS,
    group_size,
    messages,
    one_by_one,
)
from silentpulse_db.results import VersionState

SQL = (
    "SET LOCAL lock_timeout = '3s';\n"
    "-- the index\n"
    "CREATE INDEX things_kind ON things (tenant_id, kind_id);\n"
    "ALTER TABLE things ALTER COLUMN n SET DEFAULT 1; -- last"
)
BEGIN, COMMIT = "BEGIN; SET LOCAL lock_timeout = '1000ms';", "UPDATE v SET x = 1;\nCOMMIT;"


def test_a_small_file_is_one_message_with_the_runners_statements() -> None:
    parsed = analyze(SQL, "m.up.sql")
    (only,) = messages(SQL, parsed.statements, begin=BEGIN, commit=COMMIT)
    assert only.text.startswith(BEGIN) and only.text.endswith(COMMIT)
    assert SQL in only.text


def test_one_by_one_sends_each_statement_alone_between_the_runners_own() -> None:
    """As on a Citus coordinator: no statement of the file shares its message."""
    parsed = analyze(SQL, "m.up.sql")
    sent = one_by_one(parsed.statements, begin=BEGIN, commit=COMMIT, end=len(SQL))
    assert [m.text for m in sent] == [BEGIN, *(s.sql for s in parsed.statements), COMMIT]
    assert [len(m.statements) for m in sent] == [0, 1, 1, 1, 0]
    # A server position in a statement's message maps back to the file; none in the
    # runner's own messages does.
    create = sent[2]
    at = create.text.index("kind_id")
    assert create.file_offset(at + 1) == SQL.index("kind_id")
    assert sent[0].file_offset(1) is None and sent[-1].file_offset(1) is None


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

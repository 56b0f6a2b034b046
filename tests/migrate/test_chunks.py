"""A migration's messages (migrate/run/chunks.py): pure, no server."""

from __future__ import annotations

from silentpulse_db.migrate.files.statements import analyze
from silentpulse_db.migrate.run.chunks import messages, one_by_one

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

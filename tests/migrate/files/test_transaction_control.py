"""A file's own transaction control, read without a server (issue 28, item 1): what is
dropped and what the runner's BEGIN becomes; which one-statement files run outside a
transaction. The refusals, with their lines, are in tests/migrate/test_golang_migrate_sets.py."""

from __future__ import annotations

import pytest

from silentpulse_db.migrate.files.statements import analyze

# {case: (file, statements sent, the runner's BEGIN, runs outside a transaction)}
ACCEPTED = {
    "BEGIN ... COMMIT": ("BEGIN;\nCREATE TABLE a (id int);\nCOMMIT;\n", 1, "BEGIN;", False),
    "START TRANSACTION ... END": (
        "-- header\nSTART TRANSACTION;\nCREATE TABLE a (id int);\nEND;\n",
        1,
        "BEGIN;",
        False,
    ),
    "a statement before BEGIN": ("SET x.y = 1;\nBEGIN;\nSELECT 1;\nCOMMIT;\n", 2, "BEGIN;", False),
    "COMMIT ending a file without BEGIN": ("SELECT 1;\nCOMMIT;\n", 1, "BEGIN;", False),
    "BEGIN without COMMIT": ("BEGIN;\nSELECT 1;\n", 1, "BEGIN;", False),
    "a nested BEGIN": ("BEGIN;\nSELECT 1;\nBEGIN WORK;\nSELECT 2;\nCOMMIT;\n", 2, "BEGIN;", False),
    "savepoints stay": (
        "BEGIN;\nSAVEPOINT a;\nSELECT 1;\nROLLBACK TO SAVEPOINT a;\nRELEASE a;\nCOMMIT;\n",
        4,
        "BEGIN;",
        False,
    ),
    "isolation level": (
        "BEGIN ISOLATION LEVEL SERIALIZABLE, READ WRITE, DEFERRABLE;\nSELECT 1;\nCOMMIT;\n",
        1,
        "BEGIN ISOLATION LEVEL SERIALIZABLE, READ WRITE, DEFERRABLE;",
        False,
    ),
    "empty": ("", 0, "BEGIN;", False),
    "comments only": ("-- nothing\n/* at all */\n;\n", 0, "BEGIN;", False),
    "BEGIN and COMMIT only": ("BEGIN;\nCOMMIT;\n", 0, "BEGIN;", False),
    "a DO block that commits, alone": (
        "DO $$\nBEGIN\n  LOOP\n    COMMIT;\n    EXIT;\n  END LOOP;\nEND $$;\n",
        1,
        "BEGIN;",
        True,
    ),
    "a DO block that does not commit": ("DO $$ BEGIN PERFORM 1; END $$;\n", 1, "BEGIN;", False),
    "a DO block in another language": (
        "DO LANGUAGE plperl $$ COMMIT; $$;\n",
        1,
        "BEGIN;",
        False,
    ),
    "a CALL alone": ("-- the backfill\nCALL backfill(3);\n", 1, "BEGIN;", True),
    "a CALL beside a statement": ("CALL backfill(3);\nSELECT 1;\n", 2, "BEGIN;", False),
    "a CALL inside BEGIN ... COMMIT": ("BEGIN;\nCALL backfill(3);\nCOMMIT;\n", 1, "BEGIN;", False),
}


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_accepted(case: str) -> None:
    sql, count, begin, outside = ACCEPTED[case]
    parsed = analyze(sql, "f.up.sql")
    assert (len(parsed.statements), parsed.begin, bool(parsed.non_transactional)) == (
        count,
        begin,
        outside,
    )
    sent = parsed.text(sql)
    # Blanked in place: every offset and line of the file stays where it was.
    assert len(sent) == len(sql) and sent.count("\n") == sql.count("\n")
    for statement in parsed.statements:
        assert sent[statement.offset :].startswith(statement.sql)
    if parsed.sent is not None:  # the file had transaction statements: none is sent
        words = {w.strip(";").upper() for w in sent.split()}
        assert not {"BEGIN", "START", "END", "COMMIT", "WORK"} & words


def test_the_statement_alone_is_named() -> None:
    parsed = analyze("-- one\n\nCALL backfill(3);\n", "f.up.sql")
    assert parsed.non_transactional == ("CALL at line 3",)
    parsed = analyze("\nDO $$ BEGIN ROLLBACK; END $$;\n", "f.up.sql")
    assert parsed.non_transactional == ("a DO block that commits at line 2",)

"""Table-level locks per statement: a pure reading of pglast's parse tree."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from pglast import parser

import silentpulse_db.migrate.files.lock_levels as locks_module
from silentpulse_db.errors import InvalidArgumentError, SilentPulseDBError
from silentpulse_db.migrate.files.lock_levels import (
    MODES,
    LockTaken,
    blocks_reads,
    blocks_writes,
    statement_locks,
    strongest,
)

MIGRATIONS = Path(__file__).resolve().parents[3] / "silentpulse_db" / "migrations"

AEL = "ACCESS EXCLUSIVE"
SUE = "SHARE UPDATE EXCLUSIVE"
SRE = "SHARE ROW EXCLUSIVE"
SH = "SHARE"
RE = "ROW EXCLUSIVE"
AS = "ACCESS SHARE"

# (sql, [(relation, mode, rewrites, scans), ...]) in the order the locks are reported.
CASES: list[tuple[str, list[tuple[str, str, bool, bool]]]] = [
    # --- indexes
    ("CREATE INDEX i ON t (a)", [("t", SH, False, True)]),
    ("CREATE UNIQUE INDEX CONCURRENTLY i ON s.t (a)", [("s.t", SUE, False, True)]),
    ("DROP INDEX i", [("i", AEL, False, False)]),
    ("DROP INDEX CONCURRENTLY IF EXISTS s.i", [("s.i", SUE, False, False)]),
    ("REINDEX INDEX i", [("i", AEL, False, True)]),
    ("REINDEX TABLE t", [("t", SH, False, True)]),
    ("REINDEX TABLE CONCURRENTLY t", [("t", SUE, False, True)]),
    ("REINDEX SCHEMA public", []),
    ("ALTER INDEX i RENAME TO j", [("i", SUE, False, False)]),
    # --- ALTER TABLE: lock levels
    ("ALTER TABLE t ADD COLUMN a int", [("t", AEL, False, False)]),
    ("ALTER TABLE t DROP COLUMN a", [("t", AEL, False, False)]),
    ("ALTER TABLE t ALTER COLUMN a SET DEFAULT 1", [("t", AEL, False, False)]),
    ("ALTER TABLE t ALTER COLUMN a DROP NOT NULL", [("t", AEL, False, False)]),
    ("ALTER TABLE t VALIDATE CONSTRAINT c", [("t", SUE, False, True)]),
    ("ALTER TABLE t ALTER COLUMN a SET STATISTICS 500", [("t", SUE, False, False)]),
    ("ALTER TABLE t ALTER COLUMN a SET (n_distinct = 100)", [("t", SUE, False, False)]),
    ("ALTER TABLE t CLUSTER ON t_pkey", [("t", SUE, False, False)]),
    ("ALTER TABLE t SET WITHOUT CLUSTER", [("t", SUE, False, False)]),
    ("ALTER TABLE t SET (fillfactor = 70, autovacuum_enabled = false)", [("t", SUE, False, False)]),
    ("ALTER TABLE t SET (toast.autovacuum_enabled = false)", [("t", SUE, False, False)]),
    ("ALTER TABLE t RESET (parallel_workers)", [("t", SUE, False, False)]),
    ("ALTER TABLE t SET (user_catalog_table = true)", [("t", AEL, False, False)]),
    ("ALTER TABLE t ENABLE TRIGGER tr", [("t", SRE, False, False)]),
    ("ALTER TABLE t DISABLE TRIGGER ALL", [("t", SRE, False, False)]),
    (
        "ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (o_id) REFERENCES s.o (id) NOT VALID",
        [("t", SRE, False, False), ("s.o", SRE, False, False)],
    ),
    (
        "ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (o_id) REFERENCES o (id)",
        [("t", SRE, False, True), ("o", SRE, False, False)],
    ),
    (
        "ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (parent_id) REFERENCES t (id) NOT VALID",
        [("t", SRE, False, False)],
    ),
    (
        # The strongest mode over the subcommands wins.
        "ALTER TABLE t VALIDATE CONSTRAINT c, ALTER COLUMN a SET STATISTICS 10, DROP COLUMN b",
        [("t", AEL, False, True)],
    ),
    (
        "ALTER TABLE p ATTACH PARTITION p_2024 FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')",
        [("p", SUE, False, False), ("p_2024", AEL, False, True)],
    ),
    (
        "ALTER TABLE p DETACH PARTITION p_2020 CONCURRENTLY",
        [("p", SUE, False, False), ("p_2020", AEL, False, False)],
    ),
    (
        "ALTER TABLE p DETACH PARTITION p_2020",
        [("p", AEL, False, False), ("p_2020", AEL, False, False)],
    ),
    ("ALTER TABLE t ENABLE ROW LEVEL SECURITY", [("t", AEL, False, False)]),
    ("ALTER TABLE t FORCE ROW LEVEL SECURITY", [("t", AEL, False, False)]),
    ("ALTER TABLE t OWNER TO someone", [("t", AEL, False, False)]),
    (
        "ALTER INDEX p_idx ATTACH PARTITION c_idx",
        [("p_idx", SUE, False, False), ("c_idx", AEL, False, False)],
    ),
    ("ALTER TABLE c INHERIT p", [("c", AEL, False, False), ("p", SUE, False, False)]),
    # --- ALTER TABLE: rewrites and scans
    ("ALTER TABLE t ALTER COLUMN a TYPE bigint", [("t", AEL, True, False)]),
    ("ALTER TABLE t ALTER COLUMN a SET DATA TYPE text USING a::text", [("t", AEL, True, False)]),
    ("ALTER TABLE t ADD COLUMN a int NOT NULL DEFAULT 0", [("t", AEL, False, False)]),
    ("ALTER TABLE t ADD COLUMN a timestamptz DEFAULT now()", [("t", AEL, False, False)]),
    (
        "ALTER TABLE t ADD COLUMN a timestamptz DEFAULT CURRENT_TIMESTAMP",
        [("t", AEL, False, False)],
    ),
    ("ALTER TABLE t ADD COLUMN a text DEFAULT 'x'::text", [("t", AEL, False, False)]),
    ("ALTER TABLE t ADD COLUMN a uuid DEFAULT gen_random_uuid()", [("t", AEL, True, False)]),
    ("ALTER TABLE t ADD COLUMN a float8 DEFAULT random()", [("t", AEL, True, False)]),
    ("ALTER TABLE t ADD COLUMN a timestamptz DEFAULT clock_timestamp()", [("t", AEL, True, False)]),
    ("ALTER TABLE t ADD COLUMN a bigserial", [("t", AEL, True, False)]),
    ("ALTER TABLE t ADD COLUMN a int GENERATED ALWAYS AS IDENTITY", [("t", AEL, True, False)]),
    (
        "ALTER TABLE t ADD COLUMN a int GENERATED ALWAYS AS (b * 2) STORED",
        [("t", AEL, True, False)],
    ),
    ("ALTER TABLE t SET LOGGED", [("t", AEL, True, False)]),
    ("ALTER TABLE t SET UNLOGGED", [("t", AEL, True, False)]),
    ("ALTER TABLE t SET TABLESPACE fast", [("t", AEL, True, False)]),
    ("ALTER TABLE t SET ACCESS METHOD heap", [("t", AEL, True, False)]),
    ("ALTER TABLE t ALTER COLUMN a SET NOT NULL", [("t", AEL, False, True)]),
    ("ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0)", [("t", AEL, False, True)]),
    ("ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0) NOT VALID", [("t", AEL, False, False)]),
    ("ALTER TABLE t ADD PRIMARY KEY (id)", [("t", AEL, False, True)]),
    ("ALTER TABLE t ADD CONSTRAINT u UNIQUE (a, b)", [("t", AEL, False, True)]),
    ("ALTER TABLE t ADD CONSTRAINT u UNIQUE USING INDEX t_a_idx", [("t", AEL, False, False)]),
    (
        "ALTER TABLE t ADD COLUMN o_id int REFERENCES o (id)",
        [("o", SRE, False, False), ("t", AEL, False, False)],
    ),
    ("ALTER TABLE t RENAME TO u", [("t", AEL, False, False)]),
    ("ALTER TABLE s.t RENAME COLUMN a TO b", [("s.t", AEL, False, False)]),
    ("ALTER TABLE t RENAME CONSTRAINT c TO d", [("t", AEL, False, False)]),
    ("ALTER TABLE t SET SCHEMA archive", [("t", AEL, False, False)]),
    ("ALTER TYPE mood ADD ATTRIBUTE a int", []),
    # --- CREATE / DROP / TRUNCATE
    ("CREATE TABLE t (id bigint PRIMARY KEY)", [("t", AEL, False, False)]),
    (
        "CREATE TABLE IF NOT EXISTS s.t (id int, o_id int REFERENCES o (id), "
        "p_id int, FOREIGN KEY (p_id) REFERENCES s.p (id), self_id int REFERENCES s.t (id))",
        [("s.t", AEL, False, False), ("o", SRE, False, False), ("s.p", SRE, False, False)],
    ),
    (
        # PostgreSQL locks the parent ACCESS EXCLUSIVE here (DefineRelation); ATTACH
        # PARTITION is the SHARE UPDATE EXCLUSIVE way.
        "CREATE TABLE p_2024 PARTITION OF p FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')",
        [("p_2024", AEL, False, False), ("p", AEL, False, False)],
    ),
    ("CREATE TABLE c (x int) INHERITS (p)", [("c", AEL, False, False), ("p", SUE, False, False)]),
    ("CREATE TABLE c (LIKE p INCLUDING ALL)", [("c", AEL, False, False), ("p", AS, False, False)]),
    (
        "CREATE TABLE c AS SELECT * FROM a JOIN b USING (id)",
        [("c", AEL, False, False), ("a", AS, False, False), ("b", AS, False, False)],
    ),
    (
        "CREATE MATERIALIZED VIEW mv AS SELECT count(*) FROM a",
        [("mv", AEL, False, False), ("a", AS, False, False)],
    ),
    (
        "CREATE OR REPLACE VIEW v AS SELECT a FROM t",
        [("v", AEL, False, False), ("t", AS, False, False)],
    ),
    ("DROP TABLE a, s.b CASCADE", [("a", AEL, False, False), ("s.b", AEL, False, False)]),
    ("DROP MATERIALIZED VIEW IF EXISTS mv", [("mv", AEL, False, False)]),
    ("TRUNCATE a, b", [("a", AEL, False, False), ("b", AEL, False, False)]),
    (
        "CREATE TRIGGER tr BEFORE UPDATE ON s.t FOR EACH ROW EXECUTE FUNCTION f()",
        [("s.t", SRE, False, False)],
    ),
    (
        "CREATE OR REPLACE TRIGGER tr AFTER INSERT ON t FOR EACH STATEMENT EXECUTE FUNCTION f()",
        [("t", SRE, False, False)],
    ),
    # RemoveTriggerById opens the table with AccessExclusiveLock.
    ("DROP TRIGGER IF EXISTS tr ON s.t", [("s.t", AEL, False, False)]),
    ("CREATE POLICY p ON t USING (tenant_id = 1)", [("t", AEL, False, False)]),
    ("ALTER POLICY p ON t USING (true)", [("t", AEL, False, False)]),
    ("DROP POLICY IF EXISTS p ON s.t", [("s.t", AEL, False, False)]),
    ("COMMENT ON TABLE s.t IS 'x'", [("s.t", SUE, False, False)]),
    ("COMMENT ON COLUMN s.t.a IS 'x'", [("s.t", SUE, False, False)]),
    ("COMMENT ON FUNCTION f() IS 'x'", []),
    # --- maintenance and explicit locks
    ("VACUUM t", [("t", SUE, False, False)]),
    ("VACUUM (ANALYZE, VERBOSE) a, b", [("a", SUE, False, False), ("b", SUE, False, False)]),
    ("VACUUM FULL t", [("t", AEL, True, False)]),
    ("VACUUM (FULL false) t", [("t", SUE, False, False)]),
    ("ANALYZE s.t", [("s.t", SUE, False, False)]),
    ("CLUSTER t USING t_pkey", [("t", AEL, True, False)]),
    ("REFRESH MATERIALIZED VIEW mv", [("mv", AEL, True, False)]),
    ("REFRESH MATERIALIZED VIEW CONCURRENTLY mv", [("mv", "EXCLUSIVE", False, False)]),
    ("LOCK TABLE t IN SHARE ROW EXCLUSIVE MODE", [("t", SRE, False, False)]),
    ("LOCK TABLE a, b", [("a", AEL, False, False), ("b", AEL, False, False)]),
    ("LOCK t IN ROW SHARE MODE NOWAIT", [("t", "ROW SHARE", False, False)]),
    # --- DML and queries
    ("INSERT INTO s.t (a) VALUES (1)", [("s.t", RE, False, False)]),
    ("INSERT INTO t SELECT * FROM u", [("t", RE, False, False), ("u", AS, False, False)]),
    (
        "UPDATE t SET a = u.a FROM u WHERE t.id = u.id",
        [("t", RE, False, False), ("u", AS, False, False)],
    ),
    ("DELETE FROM t USING u WHERE t.id = u.id", [("t", RE, False, False), ("u", AS, False, False)]),
    (
        "MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN UPDATE SET a = u.a",
        [("t", RE, False, False), ("u", AS, False, False)],
    ),
    (
        "WITH gone AS (DELETE FROM q RETURNING *) INSERT INTO r SELECT * FROM gone",
        [("r", RE, False, False), ("q", RE, False, False)],
    ),
    (
        "SELECT * FROM a JOIN s.b ON true WHERE x IN (SELECT y FROM c)",
        [("a", AS, False, False), ("s.b", AS, False, False), ("c", AS, False, False)],
    ),
    ("SELECT * FROM t FOR UPDATE", [("t", "ROW SHARE", False, False)]),
    ("SELECT 1", []),
    ("SELECT a INTO n FROM t", [("n", AEL, False, False), ("t", AS, False, False)]),
    ("COPY t FROM STDIN", [("t", RE, False, False)]),
    ("COPY (SELECT * FROM t) TO STDOUT", [("t", AS, False, False)]),
    # --- no table lock to name
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", []),
    ("DO $$ BEGIN PERFORM 1; END $$", []),
    ("SET lock_timeout = '2s'", []),
    ("GRANT SELECT ON t TO someone", []),
    ("REVOKE ALL ON t FROM someone", []),
    ("CREATE TYPE mood AS ENUM ('a', 'b')", []),
    ("CREATE EXTENSION IF NOT EXISTS pgcrypto", []),
    ("DROP FUNCTION f()", []),
]


def _locks(sql: str) -> tuple[LockTaken, ...]:
    (item,) = parser.parse_sql(sql)
    return statement_locks(item.stmt)


@pytest.mark.parametrize(("sql", "expected"), CASES, ids=[sql[:60] for sql, _ in CASES])
def test_statement_locks(sql: str, expected: list[tuple[str, str, bool, bool]]) -> None:
    got = [(lock.relation, lock.mode, lock.rewrites, lock.scans) for lock in _locks(sql)]
    assert got == expected


def test_cases_are_many() -> None:
    assert len(CASES) >= 40


def test_notes_explain_rewrites_and_scans() -> None:
    (lock,) = _locks("ALTER TABLE t ALTER COLUMN a TYPE bigint")
    assert "ALTER COLUMN TYPE" in lock.note and "may rewrite" in lock.note
    (lock,) = _locks("ALTER TABLE t ADD COLUMN a uuid DEFAULT gen_random_uuid()")
    assert "gen_random_uuid" in lock.note
    (lock,) = _locks("DROP INDEX i")
    assert "table" in lock.note
    (lock,) = _locks("ALTER TABLE t ALTER COLUMN a TYPE bigint, ALTER COLUMN b SET NOT NULL")
    assert lock.rewrites and lock.scans
    assert "ALTER COLUMN TYPE" in lock.note and "SET NOT NULL" in lock.note


def test_unknown_default_function_is_treated_as_volatile() -> None:
    (lock,) = _locks("ALTER TABLE t ADD COLUMN a int DEFAULT my_counter()")
    assert lock.rewrites and "my_counter" in lock.note
    (lock,) = _locks("ALTER TABLE t ADD COLUMN a text DEFAULT lower('X')")
    assert not lock.rewrites


def test_statement_locks_ignores_non_statements() -> None:
    assert statement_locks(None) == ()
    assert statement_locks(object()) == ()


def test_strongest_orders_the_eight_modes() -> None:
    assert len(MODES) == 8
    for weaker, stronger in itertools.pairwise(MODES):
        assert strongest([stronger, weaker]) == stronger
        assert strongest([weaker, stronger]) == stronger
    assert strongest(["ROW EXCLUSIVE"]) == "ROW EXCLUSIVE"
    assert strongest(iter([SUE, SH, AS])) == SH
    assert strongest([SRE, "EXCLUSIVE", SH]) == "EXCLUSIVE"
    with pytest.raises(ValueError):
        strongest([])
    with pytest.raises(ValueError):
        strongest(["SHARE", "ROW LOCK"])


def test_blocks_reads_and_writes() -> None:
    assert [m for m in MODES if blocks_reads(m)] == [AEL]
    assert [m for m in MODES if blocks_writes(m)] == [SH, SRE, "EXCLUSIVE", AEL]
    assert not blocks_writes(SUE) and not blocks_writes(RE)
    with pytest.raises(ValueError):
        blocks_reads("exclusive")


def test_a_bad_lock_mode_is_the_projects_own_error() -> None:
    with pytest.raises(SilentPulseDBError, match="not a PostgreSQL table lock mode: 'ROW LOCK'"):
        strongest(["SHARE", "ROW LOCK"])
    with pytest.raises(InvalidArgumentError, match="of no lock modes"):
        strongest([])


def test_module_is_pure() -> None:
    source = Path(locks_module.__file__).read_text()
    assert "asyncpg" not in source


def _packaged_statements() -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for path in sorted(MIGRATIONS.glob("*.up.sql")):
        for item in parser.parse_sql(path.read_text()):
            found.append((path.name, item.stmt))
    return found


def test_packaged_migrations() -> None:
    statements = _packaged_statements()
    assert statements
    kinds_seen: set[str] = set()
    for name, node in statements:
        kind = type(node).__name__
        result = statement_locks(node)  # must not raise
        for lock in result:
            assert lock.relation, (name, kind)
            assert lock.mode in MODES, (name, kind, lock.mode)
        if kind in ("AlterTableStmt", "IndexStmt"):
            kinds_seen.add(kind)
            assert result, f"{name}: {kind} yields no lock"
        if kind == "IndexStmt" and node.concurrent:
            assert result[0].mode == SUE, name
    assert kinds_seen == {"AlterTableStmt", "IndexStmt"}

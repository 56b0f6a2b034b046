"""Which table-level lock a SQL statement takes, and whether it rewrites or scans the table.

Pure: it reads a statement already parsed by pglast (``item.stmt`` from
``pglast.parser.parse_sql``) and never talks to a server, so it can feed an
``up --dry-run`` plan. The lock levels follow PostgreSQL 15 (the "Explicit
Locking" chapter, the ALTER TABLE reference and, where the documentation is
silent, the server's own choice). What needs the catalog to know (the table
an index belongs to, a default partition, a column's current type) is left
to the ``note``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ...errors import InvalidArgumentError

ACCESS_SHARE = "ACCESS SHARE"
ROW_SHARE = "ROW SHARE"
ROW_EXCLUSIVE = "ROW EXCLUSIVE"
SHARE_UPDATE_EXCLUSIVE = "SHARE UPDATE EXCLUSIVE"
SHARE = "SHARE"
SHARE_ROW_EXCLUSIVE = "SHARE ROW EXCLUSIVE"
EXCLUSIVE = "EXCLUSIVE"
ACCESS_EXCLUSIVE = "ACCESS EXCLUSIVE"

# Weakest first; the index is the mode's number in PostgreSQL's lockdefs.h minus one.
MODES: tuple[str, ...] = (
    ACCESS_SHARE,
    ROW_SHARE,
    ROW_EXCLUSIVE,
    SHARE_UPDATE_EXCLUSIVE,
    SHARE,
    SHARE_ROW_EXCLUSIVE,
    EXCLUSIVE,
    ACCESS_EXCLUSIVE,
)
_RANK = {mode: rank for rank, mode in enumerate(MODES)}


@dataclass(frozen=True)
class LockTaken:
    """One relation a statement locks, in which mode, and what it does to the table."""

    relation: str  # "schema.table" or "table", as written
    mode: str  # one of MODES
    rewrites: bool = False  # the whole table (and its indexes) is rewritten under the lock
    note: str = ""  # short human reason
    scans: bool = False  # the whole table is read under the lock (validation, index build)


def _rank(mode: str) -> int:
    try:
        return _RANK[mode]
    except KeyError:
        raise InvalidArgumentError(f"not a PostgreSQL table lock mode: {mode!r}") from None


def strongest(modes: Iterable[str]) -> str:
    """The strongest of ``modes``; InvalidArgumentError if empty or one is unknown."""
    ranks = [_rank(mode) for mode in modes]
    if not ranks:
        raise InvalidArgumentError("strongest() of no lock modes")
    return MODES[max(ranks)]


def blocks_reads(mode: str) -> bool:
    """Whether ``mode`` blocks plain SELECTs (only ACCESS EXCLUSIVE does)."""
    return _rank(mode) == _RANK[ACCESS_EXCLUSIVE]


def blocks_writes(mode: str) -> bool:
    """Whether ``mode`` blocks INSERT/UPDATE/DELETE (SHARE and stronger)."""
    return _rank(mode) >= _RANK[SHARE]


# --- collecting locks -------------------------------------------------------------


class _Locks:
    """Locks per relation, in first-seen order, merged to the strongest mode."""

    def __init__(self) -> None:
        self._order: list[str] = []
        self._mode: dict[str, str] = {}
        self._rewrites: dict[str, bool] = {}
        self._scans: dict[str, bool] = {}
        self._notes: dict[str, list[str]] = {}

    def add(
        self,
        relation: str,
        mode: str,
        *,
        rewrites: bool = False,
        scans: bool = False,
        note: str = "",
    ) -> None:
        if not relation:
            return
        if relation not in self._mode:
            self._order.append(relation)
            self._mode[relation] = mode
            self._rewrites[relation] = False
            self._scans[relation] = False
            self._notes[relation] = []
        else:
            self._mode[relation] = strongest((self._mode[relation], mode))
        self._rewrites[relation] |= rewrites
        self._scans[relation] |= scans
        if note and note not in self._notes[relation]:
            self._notes[relation].append(note)

    def result(self) -> tuple[LockTaken, ...]:
        return tuple(
            LockTaken(
                relation=rel,
                mode=self._mode[rel],
                rewrites=self._rewrites[rel],
                note="; ".join(self._notes[rel]),
                scans=self._scans[rel],
            )
            for rel in self._order
        )


def statement_locks(node: Any) -> tuple[LockTaken, ...]:
    """The table-level locks one parsed statement takes; empty when none can be named."""
    handler = _HANDLERS.get(type(node).__name__)
    if handler is None:
        return ()
    locks = _Locks()
    handler(node, locks)
    return locks.result()


# --- helpers ----------------------------------------------------------------------


def _name(value: Any) -> str:
    """An enum member's name (``AT_AddColumn``), or the value as text."""
    return str(getattr(value, "name", value))


def _rv(range_var: Any) -> str:
    """``schema.table`` or ``table`` from a RangeVar."""
    if range_var is None:
        return ""
    return ".".join(p for p in (range_var.schemaname, range_var.relname) if p)


def _dotted(names: Any) -> str:
    """``a.b.c`` from a sequence of String nodes."""
    return ".".join(str(getattr(n, "sval", n)) for n in names or ())


def _is_node(value: Any) -> bool:
    return type(value).__module__ == "pglast.ast"


def _children(node: Any) -> Iterator[Any]:
    for slot in type(node).__slots__:
        value = getattr(node, slot, None)
        if isinstance(value, (tuple, list)):
            yield from (v for v in value if _is_node(v))
        elif _is_node(value):
            yield value


def _walk(node: Any) -> Iterator[Any]:
    """Every pglast node under ``node``, itself included."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, (tuple, list)):
            stack.extend(v for v in current if _is_node(v))
            continue
        if not _is_node(current):
            continue
        yield current
        stack.extend(_children(current))


def _option_names(options: Any) -> set[str]:
    return {str(getattr(o, "defname", "")).lower() for o in options or ()}


# --- DML and queries --------------------------------------------------------------

_DML_TARGET = {"InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"}


def _query(node: Any, locks: _Locks) -> None:
    """DML targets get ROW EXCLUSIVE, SELECT ... FOR UPDATE/SHARE sources ROW SHARE,
    every other relation read ACCESS SHARE (best effort: functions are not followed)."""
    ctes = {str(n.ctename) for n in _walk(node) if type(n).__name__ == "CommonTableExpr"}
    found: list[tuple[str, str]] = []

    def visit(current: Any, mode: str) -> None:
        kind = type(current).__name__
        if kind == "IntoClause":
            return
        if kind == "RangeVar":
            name = _rv(current)
            if current.schemaname or name not in ctes:
                found.append((name, mode))
            return
        if kind in _DML_TARGET and current.relation is not None:
            found.append((_rv(current.relation), ROW_EXCLUSIVE))
            for child in _children(current):
                if child is not current.relation:
                    visit(child, ACCESS_SHARE)
            return
        if kind == "SelectStmt" and current.lockingClause:
            for child in _children(current):
                in_from = any(child is f for f in current.fromClause or ())
                visit(child, ROW_SHARE if in_from else mode)
            return
        for child in _children(current):
            visit(child, mode)

    visit(node, ACCESS_SHARE)
    for name, mode in found:
        locks.add(name, mode)


def _select(node: Any, locks: _Locks) -> None:
    if node.intoClause is not None:
        locks.add(_rv(node.intoClause.rel), ACCESS_EXCLUSIVE, note="new table (SELECT INTO)")
    _query(node, locks)


# --- CREATE / DROP ------------------------------------------------------------------


def _index(node: Any, locks: _Locks) -> None:
    if node.concurrent:
        locks.add(
            _rv(node.relation),
            SHARE_UPDATE_EXCLUSIVE,
            scans=True,
            note="CREATE INDEX CONCURRENTLY scans the table without blocking writes",
        )
    else:
        locks.add(
            _rv(node.relation),
            SHARE,
            scans=True,
            note="CREATE INDEX blocks writes while it builds the index",
        )


def _foreign_key_targets(constraints: Any) -> Iterator[Any]:
    for con in constraints or ():
        if type(con).__name__ == "Constraint" and _name(con.contype) == "CONSTR_FOREIGN":
            yield con


def _create_table(node: Any, locks: _Locks) -> None:
    table = _rv(node.relation)
    locks.add(table, ACCESS_EXCLUSIVE, note="new table")
    if node.partbound is not None:
        for parent in node.inhRelations or ():
            note = "CREATE TABLE ... PARTITION OF locks the parent ACCESS EXCLUSIVE"
            if not node.partbound.is_default:
                note += "; a DEFAULT partition, if any, is locked and scanned too"
            locks.add(_rv(parent), ACCESS_EXCLUSIVE, note=note)
    else:
        for parent in node.inhRelations or ():
            locks.add(_rv(parent), SHARE_UPDATE_EXCLUSIVE, note="INHERITS parent")
    constraints = list(node.constraints or ())
    for element in node.tableElts or ():
        kind = type(element).__name__
        if kind == "ColumnDef":
            constraints.extend(element.constraints or ())
        elif kind == "Constraint":
            constraints.append(element)
        elif kind == "TableLikeClause":
            locks.add(_rv(element.relation), ACCESS_SHARE, note="LIKE source")
    for con in _foreign_key_targets(constraints):
        referenced = _rv(con.pktable)
        if referenced != table:
            locks.add(referenced, SHARE_ROW_EXCLUSIVE, note="referenced by a new foreign key")


def _create_table_as(node: Any, locks: _Locks) -> None:
    what = "new materialized view" if _name(node.objtype) == "OBJECT_MATVIEW" else "new table"
    locks.add(_rv(node.into.rel), ACCESS_EXCLUSIVE, note=what)
    _query(node.query, locks)


def _view(node: Any, locks: _Locks) -> None:
    note = "CREATE OR REPLACE VIEW" if node.replace else "new view"
    locks.add(_rv(node.view), ACCESS_EXCLUSIVE, note=note)
    _query(node.query, locks)


def _create_sequence(node: Any, locks: _Locks) -> None:
    locks.add(_rv(node.sequence), ACCESS_EXCLUSIVE, note="new sequence")


def _alter_sequence(node: Any, locks: _Locks) -> None:
    locks.add(_rv(node.sequence), SHARE_ROW_EXCLUSIVE)


_DROPPED_RELATIONS = {
    "OBJECT_TABLE": "DROP TABLE; tables it references by foreign key are locked too",
    "OBJECT_VIEW": "DROP VIEW",
    "OBJECT_MATVIEW": "DROP MATERIALIZED VIEW",
    "OBJECT_SEQUENCE": "DROP SEQUENCE",
    "OBJECT_FOREIGN_TABLE": "DROP FOREIGN TABLE",
}
# Objects that live on a table: DROP locks the table (the name is the last part).
_DROPPED_ON_TABLE = {
    "OBJECT_TRIGGER": "DROP TRIGGER",
    "OBJECT_POLICY": "DROP POLICY",
    "OBJECT_RULE": "DROP RULE",
}


def _drop(node: Any, locks: _Locks) -> None:
    kind = _name(node.removeType)
    for obj in node.objects or ():
        if kind == "OBJECT_INDEX":
            if node.concurrent:
                locks.add(
                    _dotted(obj),
                    SHARE_UPDATE_EXCLUSIVE,
                    note="DROP INDEX CONCURRENTLY (its table: SHARE UPDATE EXCLUSIVE)",
                )
            else:
                locks.add(
                    _dotted(obj),
                    ACCESS_EXCLUSIVE,
                    note="DROP INDEX also locks its table ACCESS EXCLUSIVE",
                )
        elif kind in _DROPPED_RELATIONS:
            locks.add(_dotted(obj), ACCESS_EXCLUSIVE, note=_DROPPED_RELATIONS[kind])
        elif kind in _DROPPED_ON_TABLE:
            locks.add(_dotted(obj[:-1]), ACCESS_EXCLUSIVE, note=_DROPPED_ON_TABLE[kind])


def _truncate(node: Any, locks: _Locks) -> None:
    note = "TRUNCATE empties the table"
    if _name(node.behavior) == "DROP_CASCADE":
        note += "; CASCADE also truncates referencing tables"
    for relation in node.relations or ():
        locks.add(_rv(relation), ACCESS_EXCLUSIVE, note=note)


def _trigger(node: Any, locks: _Locks) -> None:
    locks.add(_rv(node.relation), SHARE_ROW_EXCLUSIVE, note="CREATE TRIGGER")


def _policy(node: Any, locks: _Locks) -> None:
    verb = "CREATE POLICY" if type(node).__name__ == "CreatePolicyStmt" else "ALTER POLICY"
    locks.add(_rv(node.table), ACCESS_EXCLUSIVE, note=verb)


def _rule(node: Any, locks: _Locks) -> None:
    locks.add(_rv(node.relation), ACCESS_EXCLUSIVE, note="CREATE RULE")


# --- RENAME, SET SCHEMA, COMMENT ----------------------------------------------------

_RELATION_OBJECTS = {
    "OBJECT_TABLE",
    "OBJECT_VIEW",
    "OBJECT_MATVIEW",
    "OBJECT_SEQUENCE",
    "OBJECT_FOREIGN_TABLE",
    "OBJECT_INDEX",
}
_RENAMED_ON_TABLE = {"OBJECT_COLUMN", "OBJECT_TABCONSTRAINT", "OBJECT_TRIGGER", "OBJECT_POLICY"}


def _rename(node: Any, locks: _Locks) -> None:
    kind = _name(node.renameType)
    if kind == "OBJECT_INDEX":
        # ALTER INDEX ... RENAME (PostgreSQL 12+); ALTER TABLE idx RENAME takes more.
        locks.add(_rv(node.relation), SHARE_UPDATE_EXCLUSIVE, note="ALTER INDEX RENAME")
    elif kind in _RELATION_OBJECTS or kind in _RENAMED_ON_TABLE or kind == "OBJECT_RULE":
        locks.add(_rv(node.relation), ACCESS_EXCLUSIVE, note="RENAME")


def _set_schema(node: Any, locks: _Locks) -> None:
    if _name(node.objectType) in _RELATION_OBJECTS:
        locks.add(_rv(node.relation), ACCESS_EXCLUSIVE, note="SET SCHEMA")


def _comment(node: Any, locks: _Locks) -> None:
    kind = _name(node.objtype)
    if kind in _RELATION_OBJECTS:
        locks.add(_dotted(node.object), SHARE_UPDATE_EXCLUSIVE, note="COMMENT ON")
    elif kind == "OBJECT_COLUMN":
        locks.add(_dotted(node.object[:-1]), SHARE_UPDATE_EXCLUSIVE, note="COMMENT ON COLUMN")


# --- maintenance --------------------------------------------------------------------


def _vacuum(node: Any, locks: _Locks) -> None:
    full = node.is_vacuumcmd and _full_enabled(node.options)
    for rel in node.rels or ():
        if full:
            locks.add(
                _rv(rel.relation), ACCESS_EXCLUSIVE, rewrites=True, note="VACUUM FULL rewrites"
            )
        else:
            verb = "VACUUM" if node.is_vacuumcmd else "ANALYZE"
            locks.add(_rv(rel.relation), SHARE_UPDATE_EXCLUSIVE, note=verb)


def _full_enabled(options: Any) -> bool:
    for option in options or ():
        if str(option.defname).lower() == "full":
            arg = getattr(option, "arg", None)
            if arg is None:
                return True
            value = next(
                (getattr(arg, a) for a in ("boolval", "sval", "ival") if hasattr(arg, a)), 1
            )
            return str(value).lower() not in ("false", "off", "0")
    return False


def _copy(node: Any, locks: _Locks) -> None:
    if node.relation is not None:
        locks.add(_rv(node.relation), ROW_EXCLUSIVE if node.is_from else ACCESS_SHARE, note="COPY")
    elif node.query is not None:
        _query(node.query, locks)


def _cluster(node: Any, locks: _Locks) -> None:
    if node.relation is not None:
        locks.add(
            _rv(node.relation), ACCESS_EXCLUSIVE, rewrites=True, note="CLUSTER rewrites the table"
        )


def _reindex(node: Any, locks: _Locks) -> None:
    kind = _name(node.kind)
    if node.relation is None or kind not in ("REINDEX_OBJECT_INDEX", "REINDEX_OBJECT_TABLE"):
        return  # SCHEMA / DATABASE / SYSTEM: no relation named
    relation = _rv(node.relation)
    if "concurrently" in _option_names(node.params):
        locks.add(relation, SHARE_UPDATE_EXCLUSIVE, scans=True, note="REINDEX CONCURRENTLY")
    elif kind == "REINDEX_OBJECT_INDEX":
        locks.add(
            relation,
            ACCESS_EXCLUSIVE,
            scans=True,
            note="REINDEX INDEX (its table: SHARE, blocks writes)",
        )
    else:
        locks.add(
            relation,
            SHARE,
            scans=True,
            note="REINDEX TABLE (its indexes: ACCESS EXCLUSIVE)",
        )


def _refresh(node: Any, locks: _Locks) -> None:
    if node.concurrent:
        locks.add(_rv(node.relation), EXCLUSIVE, note="REFRESH MATERIALIZED VIEW CONCURRENTLY")
    else:
        locks.add(
            _rv(node.relation),
            ACCESS_EXCLUSIVE,
            rewrites=True,
            note="REFRESH MATERIALIZED VIEW rebuilds it",
        )


def _lock(node: Any, locks: _Locks) -> None:
    mode = MODES[int(node.mode) - 1] if 1 <= int(node.mode) <= len(MODES) else ACCESS_EXCLUSIVE
    for relation in node.relations or ():
        locks.add(_rv(relation), mode, note="LOCK TABLE")


# --- ALTER TABLE ----------------------------------------------------------------------

_SUE_SUBCOMMANDS = {
    "AT_SetStatistics": "SET STATISTICS",
    "AT_ClusterOn": "CLUSTER ON",
    "AT_DropCluster": "SET WITHOUT CLUSTER",
    "AT_SetOptions": "ALTER COLUMN SET (...)",
    "AT_ResetOptions": "ALTER COLUMN RESET (...)",
    "AT_DetachPartitionFinalize": "DETACH PARTITION FINALIZE",
}
_TRIGGER_SUBCOMMANDS = {
    "AT_EnableTrig",
    "AT_EnableAlwaysTrig",
    "AT_EnableReplicaTrig",
    "AT_EnableTrigAll",
    "AT_EnableTrigUser",
    "AT_DisableTrig",
    "AT_DisableTrigAll",
    "AT_DisableTrigUser",
}
_REWRITE_SUBCOMMANDS = {
    "AT_SetLogged": "SET LOGGED rewrites the table",
    "AT_SetUnLogged": "SET UNLOGGED rewrites the table",
    "AT_SetAccessMethod": "SET ACCESS METHOD rewrites the table",
    "AT_SetTableSpace": "SET TABLESPACE copies the whole table",
}
_AEL_NOTES = {
    "AT_DropColumn": "DROP COLUMN (no rewrite)",
    "AT_ColumnDefault": "SET/DROP DEFAULT (no rewrite)",
    "AT_DropNotNull": "DROP NOT NULL",
    "AT_DropConstraint": "DROP CONSTRAINT",
    "AT_EnableRowSecurity": "ENABLE ROW LEVEL SECURITY",
    "AT_DisableRowSecurity": "DISABLE ROW LEVEL SECURITY",
    "AT_ForceRowSecurity": "FORCE ROW LEVEL SECURITY",
    "AT_NoForceRowSecurity": "NO FORCE ROW LEVEL SECURITY",
    "AT_ChangeOwner": "OWNER TO",
    "AT_ReplicaIdentity": "REPLICA IDENTITY",
}
# Storage parameters that ALTER TABLE SET/RESET changes under SHARE UPDATE EXCLUSIVE;
# any other one (or a mix) takes ACCESS EXCLUSIVE.
_SUE_RELOPTIONS = {
    "fillfactor",
    "toast_tuple_target",
    "parallel_workers",
    "vacuum_index_cleanup",
    "vacuum_truncate",
    "log_autovacuum_min_duration",
}
_SERIAL_TYPES = {"serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"}
# Functions known not to be volatile: a DEFAULT calling only these needs no rewrite.
_NON_VOLATILE = {
    "now",
    "transaction_timestamp",
    "statement_timestamp",
    "current_setting",
    "current_database",
    "current_schema",
    "lower",
    "upper",
    "btrim",
    "concat",
    "length",
    "md5",
    "make_interval",
    "make_date",
    "make_timestamp",
    "make_timestamptz",
    "to_timestamp",
    "to_date",
    "date_trunc",
    "timezone",
    "jsonb_build_object",
    "jsonb_build_array",
    "json_build_object",
    "json_build_array",
    "array_fill",
    "int4range",
    "int8range",
    "tstzrange",
    "daterange",
}


def _volatile_call(expr: Any) -> str | None:
    """The first function in ``expr`` that is or may be volatile, else None."""
    for current in _walk(expr):
        kind = type(current).__name__
        if kind == "FuncCall":
            name = str(getattr(current.funcname[-1], "sval", "")).lower()
            if name not in _NON_VOLATILE:
                return name
        elif kind in ("SubLink", "NextValueExpr"):
            return "a subquery" if kind == "SubLink" else "nextval"
    return None


def _add_column(coldef: Any, locks: _Locks, table: str) -> None:
    type_names = [str(getattr(n, "sval", "")).lower() for n in coldef.typeName.names or ()]
    rewrite_note = ""
    scan_note = ""
    if type_names and type_names[-1] in _SERIAL_TYPES:
        rewrite_note = "ADD COLUMN of a serial type fills every row from a sequence: rewrites"
    if coldef.identity and coldef.identity != "\x00":
        rewrite_note = "ADD COLUMN ... GENERATED AS IDENTITY rewrites the table"
    for con in coldef.constraints or ():
        contype = _name(con.contype)
        if contype == "CONSTR_DEFAULT" and con.raw_expr is not None:
            func = _volatile_call(con.raw_expr)
            if func:
                rewrite_note = f"ADD COLUMN with a volatile DEFAULT ({func}()) rewrites the table"
        elif contype == "CONSTR_IDENTITY":
            rewrite_note = "ADD COLUMN ... GENERATED AS IDENTITY rewrites the table"
        elif contype == "CONSTR_GENERATED" and getattr(con, "generated_kind", "s") != "v":
            rewrite_note = "ADD COLUMN ... GENERATED ALWAYS AS ... STORED rewrites the table"
        elif contype in ("CONSTR_PRIMARY", "CONSTR_UNIQUE"):
            scan_note = "ADD COLUMN ... PRIMARY KEY/UNIQUE builds an index"
        elif contype == "CONSTR_CHECK":
            scan_note = "ADD COLUMN ... CHECK scans the table"
        elif contype == "CONSTR_FOREIGN":
            locks.add(_rv(con.pktable), SHARE_ROW_EXCLUSIVE, note="referenced by a new foreign key")
    locks.add(
        table,
        ACCESS_EXCLUSIVE,
        rewrites=bool(rewrite_note),
        scans=bool(scan_note),
        note=rewrite_note or scan_note,
    )


def _add_constraint(con: Any, locks: _Locks, table: str) -> None:
    contype = _name(con.contype)
    validated = not con.skip_validation
    if contype == "CONSTR_FOREIGN":
        note = (
            "ADD FOREIGN KEY validates every row"
            if validated
            else "ADD FOREIGN KEY ... NOT VALID (no scan)"
        )
        locks.add(table, SHARE_ROW_EXCLUSIVE, scans=validated, note=note)
        referenced = _rv(con.pktable)
        if referenced != table:
            locks.add(referenced, SHARE_ROW_EXCLUSIVE, note="referenced by a new foreign key")
    elif contype in ("CONSTR_PRIMARY", "CONSTR_UNIQUE", "CONSTR_EXCLUSION"):
        if con.indexname:
            locks.add(table, ACCESS_EXCLUSIVE, note="ADD CONSTRAINT ... USING INDEX")
        else:
            locks.add(
                table,
                ACCESS_EXCLUSIVE,
                scans=True,
                note="ADD PRIMARY KEY/UNIQUE/EXCLUDE builds an index under the lock",
            )
    elif contype in ("CONSTR_CHECK", "CONSTR_NOTNULL"):
        note = (
            "ADD CONSTRAINT validates every row"
            if validated
            else "ADD CONSTRAINT ... NOT VALID (no scan)"
        )
        locks.add(table, ACCESS_EXCLUSIVE, scans=validated, note=note)
    else:
        locks.add(table, ACCESS_EXCLUSIVE)


def _reloptions_mode(options: Any) -> str:
    for option in options or ():
        namespace = str(getattr(option, "defnamespace", "") or "").lower()
        name = str(option.defname).lower()
        if namespace == "toast" or name.startswith("autovacuum_"):
            continue
        if name not in _SUE_RELOPTIONS:
            return ACCESS_EXCLUSIVE
    return SHARE_UPDATE_EXCLUSIVE


def _alter_table(node: Any, locks: _Locks) -> None:
    if _name(node.objtype) == "OBJECT_TYPE":
        return  # ALTER TYPE ... ADD ATTRIBUTE: a composite type, no table
    table = _rv(node.relation)
    for cmd in node.cmds or ():
        _subcommand(_name(cmd.subtype), cmd, locks, table, _name(node.objtype) == "OBJECT_INDEX")


def _subcommand(sub: str, cmd: Any, locks: _Locks, table: str, index: bool) -> None:
    definition: Any = getattr(cmd, "def_", None)
    if sub in _SUE_SUBCOMMANDS:
        locks.add(table, SHARE_UPDATE_EXCLUSIVE, note=_SUE_SUBCOMMANDS[sub])
    elif sub in _TRIGGER_SUBCOMMANDS:
        locks.add(table, SHARE_ROW_EXCLUSIVE, note="ENABLE/DISABLE TRIGGER")
    elif sub in ("AT_SetRelOptions", "AT_ResetRelOptions"):
        locks.add(table, _reloptions_mode(definition), note="SET/RESET storage parameters")
    elif sub == "AT_ValidateConstraint":
        locks.add(
            table,
            SHARE_UPDATE_EXCLUSIVE,
            scans=True,
            note="VALIDATE CONSTRAINT scans without blocking writes",
        )
    elif sub == "AT_AddColumn" and definition is not None:
        _add_column(definition, locks, table)
    elif sub == "AT_AddConstraint" and definition is not None:
        _add_constraint(definition, locks, table)
    elif sub == "AT_AlterColumnType":
        locks.add(
            table,
            ACCESS_EXCLUSIVE,
            rewrites=True,
            note="ALTER COLUMN TYPE may rewrite the table and its indexes",
        )
    elif sub == "AT_SetNotNull":
        locks.add(table, ACCESS_EXCLUSIVE, scans=True, note="SET NOT NULL scans the table")
    elif sub in _REWRITE_SUBCOMMANDS:
        locks.add(table, ACCESS_EXCLUSIVE, rewrites=True, note=_REWRITE_SUBCOMMANDS[sub])
    elif sub == "AT_AttachPartition" and index:
        locks.add(table, SHARE_UPDATE_EXCLUSIVE, note="ALTER INDEX ATTACH PARTITION")
        locks.add(_rv(definition.name), ACCESS_EXCLUSIVE, note="attached index")
    elif sub == "AT_AttachPartition":
        locks.add(
            table,
            SHARE_UPDATE_EXCLUSIVE,
            note="ATTACH PARTITION (a DEFAULT partition, if any: ACCESS EXCLUSIVE)",
        )
        locks.add(
            _rv(definition.name),
            ACCESS_EXCLUSIVE,
            scans=True,
            note="attached partition is scanned unless a CHECK constraint proves its bound",
        )
    elif sub == "AT_DetachPartition":
        if definition.concurrent:
            locks.add(table, SHARE_UPDATE_EXCLUSIVE, note="DETACH PARTITION CONCURRENTLY")
        else:
            locks.add(table, ACCESS_EXCLUSIVE, note="DETACH PARTITION")
        locks.add(_rv(definition.name), ACCESS_EXCLUSIVE, note="detached partition")
    elif sub == "AT_AddInherit":
        locks.add(table, ACCESS_EXCLUSIVE, note="INHERIT")
        locks.add(_rv(definition), SHARE_UPDATE_EXCLUSIVE, note="new INHERIT parent")
    elif sub == "AT_DropInherit":
        locks.add(table, ACCESS_EXCLUSIVE, note="NO INHERIT")
        locks.add(_rv(definition), ACCESS_SHARE, note="former INHERIT parent")
    else:
        # PostgreSQL's default for ALTER TABLE: every other form takes ACCESS EXCLUSIVE.
        locks.add(table, ACCESS_EXCLUSIVE, note=_AEL_NOTES.get(sub, ""))


_HANDLERS: dict[str, Callable[[Any, _Locks], None]] = {
    "SelectStmt": _select,
    "InsertStmt": _query,
    "UpdateStmt": _query,
    "DeleteStmt": _query,
    "MergeStmt": _query,
    "IndexStmt": _index,
    "CreateStmt": _create_table,
    "CreateTableAsStmt": _create_table_as,
    "ViewStmt": _view,
    "CreateSeqStmt": _create_sequence,
    "AlterSeqStmt": _alter_sequence,
    "DropStmt": _drop,
    "TruncateStmt": _truncate,
    "CreateTrigStmt": _trigger,
    "CreatePolicyStmt": _policy,
    "AlterPolicyStmt": _policy,
    "RuleStmt": _rule,
    "RenameStmt": _rename,
    "AlterObjectSchemaStmt": _set_schema,
    "CommentStmt": _comment,
    "VacuumStmt": _vacuum,
    "ClusterStmt": _cluster,
    "CopyStmt": _copy,
    "ReindexStmt": _reindex,
    "RefreshMatViewStmt": _refresh,
    "LockStmt": _lock,
    "AlterTableStmt": _alter_table,
}

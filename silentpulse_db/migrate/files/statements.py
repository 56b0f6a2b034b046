"""Reading a migration's SQL: its statements, whether it can run in a transaction,
and where a server error position falls in the file. Pure: no I/O.

Parsing uses pglast (PostgreSQL's own parser), imported only when a migration
is about to run so that a no-op start-up does not pay for it.

A file's own transaction control (:class:`TransactionControl`): golang-migrate sends
a file as it is, so sets written for it often wrap each file in ``BEGIN;`` ...
``COMMIT;``. Here the runner owns the transaction, which also writes the version
and history rows: a file's BEGIN and COMMIT are dropped (blanked in the text sent,
so that positions and lines stay) and the file runs in that transaction, with the
BEGIN's isolation level. What golang-migrate runs as one transaction is accepted;
what it runs as several, or what would end the runner's transaction, is refused
with the line, before anything runs:

- a statement after the file's COMMIT (a second transaction, even a second BEGIN):
  golang-migrate commits there, releasing the first part's locks, and the rest may
  rely on that commit (a new enum value); here it is split into two migrations;
- ROLLBACK (the version would be recorded for work undone), COMMIT AND CHAIN,
  PREPARE TRANSACTION, COMMIT/ROLLBACK PREPARED, BEGIN READ ONLY (the version row
  is written in the same transaction).

SAVEPOINT, RELEASE and ROLLBACK TO stay: they work inside the runner's transaction.
Statements before the BEGIN join the transaction, as PostgreSQL folds them into it
when golang-migrate sends the file. A DO block whose body commits, or a CALL, alone
in its file runs outside a transaction, as golang-migrate runs it (:func:`analyze`).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any, NamedTuple

from ...errors import MigrationSourceError
from .source import MigrationFile

# Records of a file's analysis, read by the runner: NamedTuples, not frozen dataclasses,
# which cost every process that imports the engine (the CLI's up included) ~0.4 ms a
# class to create (bench/bench_startup_tricks.py).


class Statement(NamedTuple):
    """One statement of a file: its text and where it starts (0-based character offset)."""

    sql: str
    offset: int
    # The table an UPDATE or DELETE writes ("schema.table" or "table"), so that the
    # runner can warn when row-level security hides rows from it; else None.
    writes: str | None = None


class ParsedSQL(NamedTuple):
    """What running a file needs to know about it."""

    statements: tuple[Statement, ...]
    # Statements that PostgreSQL refuses inside a transaction block, e.g. "CREATE INDEX
    # CONCURRENTLY at line 3"; empty when the whole file can run in one transaction.
    non_transactional: tuple[str, ...]
    # The index a CREATE INDEX CONCURRENTLY file builds ("schema.name" or "name"): the
    # runner checks it is valid afterwards and rebuilds it if a failed run left it INVALID.
    concurrent_index: str | None = None
    # What the file's own `SET [LOCAL] lock_timeout` sets (the last one), e.g. "3s": it
    # overrides the runner's limit from that statement on.
    own_lock_timeout: str | None = None
    # Only schema statements: nothing runs a query or procedural code (DO, CALL, DML,
    # CREATE TABLE AS ...) whose RAISE output must name this file and whose duration
    # may call for progress reports. Such files may share a message (together.py).
    schema_only: bool = False
    # The file's own BEGIN / COMMIT, which the runner drops (TransactionControl):
    # the text to send, those statements blanked (offsets and lines kept; None: the
    # file as it is), and the runner's BEGIN with the options of the file's.
    sent: str | None = None
    begin: str = "BEGIN;"

    def text(self, sql: str) -> str:
        """What the runner sends of the file whose text is ``sql``."""
        return sql if self.sent is None else self.sent


def analyze(sql: str, location: str) -> ParsedSQL:
    """Split ``sql`` into statements and classify them.

    A file the parser (PostgreSQL's own, newer than the server) cannot read is
    refused here with the line and column: sent to the server inside the runner's
    message, an unterminated quote would swallow the runner's own statements.
    The file's own BEGIN / COMMIT are dropped, and what would split the migration
    from its version change is refused (TransactionControl). A file with no
    statement (comments only) runs nothing. A DO block whose body commits, or a
    CALL (its procedure may commit), alone in its file runs outside a transaction,
    as golang-migrate runs it.
    """
    from pglast import parser  # deferred: spares a no-op start-up ~25 ms

    try:
        # The JSON form: about 20 times faster than building pglast's Python nodes.
        raw = json.loads(parser.parse_sql_json(sql))["stmts"]
    except parser.ParseError as exc:
        message, position = exc.args[0], exc.args[1] if len(exc.args) > 1 else 0
        line, column = line_and_column(sql, int(position) + 1)  # 0-based characters
        raise MigrationSourceError(
            f"{location}:{line}:{column}: {message}\n{line:>6} | {line_text(sql, line)}"
            f"\n       | {caret(line_text(sql, line), column)}",
            file=location,
        ) from None
    statements: list[Statement] = []
    blocking: list[str] = []
    index: str | None = None
    own_timeout: str | None = None
    runs_code = False
    control = TransactionControl(location)
    commits_at: int | None = None  # the line of a DO block that commits
    blocking_at = last_at = 0  # the lines of the first such statement, and of the last one
    last_kind = ""
    chars = _CharOffsets(sql)
    # Lines are counted as the statements go (they come in order): counting from
    # the top for each one made a file of 89,000 statements take minutes.
    line, counted = 1, 0
    for item in raw:
        ((kind, node),) = item["stmt"].items()
        location_bytes = item.get("stmt_location", 0)
        start = chars.at(location_bytes)
        length = item.get("stmt_len")
        end = chars.at(location_bytes + length) if length else None
        text = sql[start:end]
        line += sql.count("\n", counted, start)
        counted = start
        if kind == "CopyStmt" and node.get("is_from") and not node.get("filename"):
            raise MigrationSourceError(
                f"{location}:{line}: COPY ... FROM STDIN needs data sent after the statement "
                f"(as psql does), which a migration cannot carry: use INSERT, or COPY from a "
                f"file on the server",
                file=location,
            )
        if kind == "DeallocateStmt" and (node.get("isall") or not node.get("name")):
            raise MigrationSourceError(
                f"{location}:{line}: DEALLOCATE ALL would drop the runner's own prepared "
                f"statements on its connection; DEALLOCATE the statement by name",
                file=location,
            )
        if kind == "TransactionStmt":
            if control.statement(node, line, (start, end)):
                continue  # the runner's own BEGIN and COMMIT stand for it
        else:
            control.after_commit(line)
        if kind == "DoStmt" and commits_at is None and do_block_commits(node, text):
            commits_at = line
        reason = _non_transactional_reason(kind, node)
        if reason:
            blocking_at = blocking_at or line
            blocking.append(f"{reason} at line {line}")
            index = _concurrent_index(kind, node, location, line)
        statements.append(Statement(text, start, _dml_target(kind, node)))
        own_timeout = _lock_timeout_set(kind, node) or own_timeout
        runs_code = runs_code or kind in _RUNS_CODE
        last_kind, last_at = kind, line
        if blocking and len(statements) > 1:
            # Outside a transaction, a failure after the first statement leaves a half
            # migration that no rerun can tell apart; golang-migrate cannot run such a
            # file either (PostgreSQL refuses these statements in a multi-statement query).
            raise MigrationSourceError(
                f"{location}:{line}: {blocking[0]} must be the only statement of its file "
                f"(it cannot run in a transaction); move the other statements to a "
                f"migration of their own",
                file=location,
            )
    if blocking:
        control.refuse_inside(blocking_at, blocking[0].rsplit(" at line ", 1)[0])
    blocking += _commits_outside(location, statements, control, commits_at, (last_kind, last_at))
    return ParsedSQL(
        statements=tuple(statements),
        non_transactional=tuple(blocking),
        concurrent_index=index,
        own_lock_timeout=own_timeout,
        schema_only=not runs_code and not blocking,
        sent=control.sent_text(sql),
        begin=control.begin,
    )


def _commits_outside(
    location: str,
    statements: list[Statement],
    control: TransactionControl,
    commits_at: int | None,
    last: tuple[str, int],
) -> list[str]:
    """A DO block whose body commits, or a CALL, alone in its file (no BEGIN of its own):
    it runs outside a transaction, as golang-migrate runs a one-statement file, so that
    it may commit. A DO block that commits beside other statements is refused: PostgreSQL
    refuses its COMMIT in a transaction block, as it does when golang-migrate sends it."""
    alone = len(statements) == 1 and not control.used
    if commits_at is not None:
        if not alone:
            raise MigrationSourceError(
                f"{location}:{commits_at}: this DO block commits (or rolls back) in its "
                f"body, which PostgreSQL allows only outside a transaction block: it must "
                f"be the only statement of its file, with no BEGIN/COMMIT (golang-migrate "
                f"fails on it too: 'invalid transaction termination'). Move it to a "
                f"migration of its own",
                file=location,
            )
        return [f"a DO block that commits at line {commits_at}"]
    if alone and last[0] == "CallStmt":
        return [f"CALL at line {last[1]}"]
    return []


def _lock_timeout_set(kind: str, node: dict[str, Any]) -> str | None:
    if kind != "VariableSetStmt" or node.get("name") != "lock_timeout":
        return None
    if node.get("kind") != "VAR_SET_VALUE":
        return "the server's default"  # RESET / SET ... TO DEFAULT
    values: list[Any] = [next(iter(a.get("A_Const", {}).values()), {}) for a in node["args"]]
    text = " ".join(str(v.get("sval", v.get("ival", "?"))) for v in values if isinstance(v, dict))
    return text or "?"


class _CharOffsets:
    """The parser counts UTF-8 bytes; Python strings count characters. Offsets come in
    order, so each is converted from the previous one: linear in the file."""

    def __init__(self, sql: str) -> None:
        self.data = sql.encode()
        self.ascii = len(self.data) == len(sql)
        self.byte = self.char = 0

    def at(self, byte: int) -> int:
        if self.ascii:
            return byte
        if byte < self.byte:
            self.byte = self.char = 0
        self.char += len(self.data[self.byte : byte].decode())
        self.byte = byte
        return self.char


def caret(text: str, column: int) -> str:
    """A ^ under ``column`` of ``text``, keeping its tabs so that it lines up."""
    return "".join(c if c == "\t" else " " for c in text[: column - 1]) + "^"


def _concurrent_index(kind: str, node: dict[str, Any], location: str, line: int) -> str | None:
    if kind != "IndexStmt" or not node.get("concurrent"):
        return None
    name = node.get("idxname")
    if not name:
        raise MigrationSourceError(
            f"{location}:{line}: CREATE INDEX CONCURRENTLY needs an index name, so that "
            f"the runner can check the build and rebuild an INVALID index a failed run "
            f"left behind",
            file=location,
        )
    schema = node.get("relation", {}).get("schemaname")
    return f"{schema}.{name}" if schema else str(name)


def _dml_target(kind: str, node: dict[str, Any]) -> str | None:
    relation = node.get("relation")
    if kind not in ("UpdateStmt", "DeleteStmt") or not relation:
        return None
    return ".".join(p for p in (relation.get("schemaname"), relation.get("relname")) if p)


def _non_transactional_reason(kind: str, node: dict[str, Any]) -> str | None:
    """Name the construct if PostgreSQL cannot run this statement in a transaction block."""
    if kind == "IndexStmt" and node.get("concurrent"):
        return "CREATE INDEX CONCURRENTLY"
    if kind == "DropStmt" and node.get("concurrent"):
        return "DROP INDEX CONCURRENTLY"
    if kind == "ReindexStmt":
        params = {p.get("DefElem", {}).get("defname") for p in node.get("params", ())}
        if "concurrently" in params:
            return "REINDEX CONCURRENTLY"
        if str(node.get("kind", "")).endswith(("SYSTEM", "DATABASE")):
            return "REINDEX SYSTEM/DATABASE"
    if kind == "AlterTableStmt":
        for cmd in node.get("cmds", ()):
            definition = cmd.get("AlterTableCmd", {}).get("def", {})
            if definition.get("PartitionCmd", {}).get("concurrent"):
                return "DETACH PARTITION CONCURRENTLY"
    if kind == "VacuumStmt" and node.get("is_vacuumcmd"):
        return "VACUUM"
    if kind == "ClusterStmt" and not node.get("relation"):
        return "CLUSTER without a table"
    return _ALWAYS_OUTSIDE.get(kind)


# Statements that run queries or code: their output belongs to their file, and
# they may take long (a backfill, a materialized view's query).
_RUNS_CODE = frozenset(
    {
        "DoStmt",
        "CallStmt",
        "SelectStmt",
        "InsertStmt",
        "UpdateStmt",
        "DeleteStmt",
        "MergeStmt",
        "CopyStmt",
        "ExecuteStmt",
        "ExplainStmt",
        "CreateTableAsStmt",
        "RefreshMatViewStmt",
        "ClusterStmt",
        "VacuumStmt",
        "ReindexStmt",
        "LockStmt",
        "TruncateStmt",  # fires ON TRUNCATE triggers
        "CreateExtensionStmt",  # runs the extension's script
    }
)

_ALWAYS_OUTSIDE = {
    "AlterSystemStmt": "ALTER SYSTEM",
    "CreatedbStmt": "CREATE DATABASE",
    "DropdbStmt": "DROP DATABASE",
    "CreateTableSpaceStmt": "CREATE TABLESPACE",
    "DropTableSpaceStmt": "DROP TABLESPACE",
    "CreateSubscriptionStmt": "CREATE SUBSCRIPTION",
    "AlterSubscriptionStmt": "ALTER SUBSCRIPTION",
    "DropSubscriptionStmt": "DROP SUBSCRIPTION",
}


# The BEGIN options the runner's own BEGIN takes over, as PostgreSQL spells them.
_ISOLATION = "transaction_isolation"
_READ_ONLY = "transaction_read_only"
_DEFERRABLE = "transaction_deferrable"


class TransactionControl:
    """Follows a file's transaction statements in order (see the module's doc)."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.begin_line: int | None = None
        self.commit_line: int | None = None
        # The runner's BEGIN with the file's options: "BEGIN;" or "BEGIN ISOLATION ...;".
        self.begin = "BEGIN;"
        # (start, end) of each statement the runner drops; end None: to the end of the file.
        self.dropped: list[tuple[int, int | None]] = []
        self.lines: list[str] = []  # "BEGIN at line 1", for messages

    @property
    def used(self) -> bool:
        return bool(self.dropped)

    def statement(self, node: dict[str, Any], line: int, span: tuple[int, int | None]) -> bool:
        """Take the file's TransactionStmt at ``line``: True when the runner drops it,
        False when it is sent (a savepoint); MigrationSourceError when refused."""
        kind = str(node.get("kind", "")).removeprefix("TRANS_STMT_")
        self.after_commit(line)
        if kind in ("SAVEPOINT", "RELEASE", "ROLLBACK_TO"):
            return False  # these work inside the runner's transaction
        if kind in ("BEGIN", "START"):
            self._begin(node, line)
        elif kind == "COMMIT" and node.get("chain"):
            self._refuse(
                line,
                "COMMIT AND CHAIN commits and starts a second transaction at once; here a "
                "file is one transaction, committed with its version row: split the file "
                "at this line into two migrations",
            )
        elif kind == "COMMIT":
            self.commit_line = line
        elif kind == "ROLLBACK":
            self._refuse(
                line,
                "ROLLBACK would undo the file's work while its version is recorded as "
                "applied (golang-migrate records it so); remove it: the runner rolls the "
                "file back by itself when a statement fails",
            )
        elif kind == "PREPARE":
            self._refuse(
                line,
                "PREPARE TRANSACTION would hand the file's transaction, with its version "
                "row, to a two-phase commit outside the runner; a migration cannot use it",
            )
        else:  # COMMIT_PREPARED, ROLLBACK_PREPARED
            self._refuse(
                line,
                f"{kind.replace('_', ' ')} cannot run in a transaction block (PostgreSQL "
                f"refuses it there), and finishes another session's prepared transaction: "
                f"do it outside the migrations",
            )
        self.dropped.append(span)
        self.lines.append(f"{kind.replace('START', 'START TRANSACTION')} at line {line}")
        return True

    def after_commit(self, line: int) -> None:
        """MigrationSourceError if a statement at ``line`` follows the file's COMMIT."""
        if self.commit_line is None:
            return
        self._refuse(
            line,
            f"this statement follows the file's COMMIT at line {self.commit_line}. "
            f"golang-migrate commits there and runs the rest as a second transaction (the "
            f"first part's locks released, its changes visible); here a file is one "
            f"transaction, committed with its version row. Split the file: what follows "
            f"line {self.commit_line} goes into a migration of its own",
        )

    def refuse_inside(self, line: int, what: str) -> None:
        """MigrationSourceError if the file's transaction control wraps ``what`` (at
        ``line``), a statement PostgreSQL refuses inside a transaction block."""
        if not self.used:
            return
        first = self.lines[0]
        self._refuse(
            line,
            f"{what} cannot run inside the file's transaction ({first}): PostgreSQL "
            f"refuses it in a transaction block (golang-migrate fails on it too). Remove "
            f"the file's BEGIN and COMMIT: alone in its file, it runs outside a transaction",
        )

    def sent_text(self, sql: str) -> str | None:
        """``sql`` with the dropped statements blanked (newlines kept, so that every
        offset and line stays), or None when nothing was dropped."""
        if not self.dropped:
            return None
        chars = list(sql)
        for start, end in self.dropped:
            for at in range(start, len(sql) if end is None else end):
                if chars[at] not in "\r\n":
                    chars[at] = " "
        return "".join(chars)

    def _begin(self, node: dict[str, Any], line: int) -> None:
        options = _options(node)
        if self.begin_line is not None:
            if options:
                self._refuse(
                    line,
                    f"a BEGIN with options inside the file's transaction (BEGIN at line "
                    f"{self.begin_line}): PostgreSQL ignores the BEGIN and its options; "
                    f"remove it",
                )
            return  # PostgreSQL ignores it with a warning: so does the runner
        if options.get(_READ_ONLY) == 1:
            self._refuse(
                line,
                "BEGIN READ ONLY: the runner writes the version row in the file's "
                "transaction, which READ ONLY forbids; remove READ ONLY",
            )
        self.begin_line = line
        words = []
        if _ISOLATION in options:
            words.append(f"ISOLATION LEVEL {str(options[_ISOLATION]).upper()}")
        if _READ_ONLY in options:
            words.append("READ WRITE")
        if _DEFERRABLE in options:
            words.append("DEFERRABLE" if options[_DEFERRABLE] == 1 else "NOT DEFERRABLE")
        self.begin = f"BEGIN {', '.join(words)};" if words else "BEGIN;"

    def _refuse(self, line: int, why: str) -> None:
        raise MigrationSourceError(f"{self.location}:{line}: {why}", file=self.location)


def _options(node: dict[str, Any]) -> dict[str, object]:
    """A BEGIN's options: {"transaction_isolation": "serializable", ...: 0 or 1}."""
    found: dict[str, object] = {}
    for option in node.get("options", ()):
        element = option.get("DefElem", {})
        constant = element.get("arg", {}).get("A_Const", {})
        if "sval" in constant:
            found[element.get("defname", "")] = constant["sval"].get("sval", "")
        else:
            found[element.get("defname", "")] = constant.get("ival", {}).get("ival", 0)
    return found


def do_block_commits(node: dict[str, Any], text: str) -> bool:
    """Whether a DO block's PL/pgSQL body holds a COMMIT or ROLLBACK (at any depth).
    Another language, or a body the parser cannot read: False (the server decides, and
    refuses a COMMIT in a transaction with a clear error, rolled back)."""
    from pglast import parser  # deferred, as in analyze: only when a file runs

    language = "plpgsql"
    for option in node.get("args", ()):
        element = option.get("DefElem", {})
        if element.get("defname") == "language":
            language = str(element.get("arg", {}).get("String", {}).get("sval", "")).lower()
    if language != "plpgsql":
        return False
    try:
        tree = json.loads(parser.parse_plpgsql_json(text))
    except parser.ParseError:
        return False
    return _holds(tree, ("PLpgSQL_stmt_commit", "PLpgSQL_stmt_rollback"))


def _holds(tree: object, keys: tuple[str, ...]) -> bool:
    if isinstance(tree, dict):
        return any(key in keys or _holds(value, keys) for key, value in tree.items())
    if isinstance(tree, list):
        return any(_holds(item, keys) for item in tree)
    return False


# Replicas starting together in one process (and tests, benches) read the same
# files: each is parsed once per process, by content.
_PARSED: OrderedDict[tuple[str, str], ParsedSQL] = OrderedDict()
_PARSED_MAX = 4096  # a file is a few kB: bounded at a few tens of MB


def analyze_cached(file: MigrationFile) -> ParsedSQL:
    """analyze() of a migration file, once per process for the same content; a file
    still as `create` wrote it is refused."""
    key = (file.location, file.checksum)
    found = _PARSED.get(key)
    if found is None:
        found = analyze(file.sql, file.location)
        if not found.statements and _unfilled_template(file):
            # Any other file of comments only runs as a no-op, as in golang-migrate.
            raise MigrationSourceError(
                f"{file.location}: still the template `create` wrote, with no SQL: write "
                f"the migration's SQL, or delete the pair",
                file=file.location,
            )
        if file.directives.partitions_only and found.concurrent_index is None:
            raise MigrationSourceError(
                f"{file.location}: '-- silentpulse: partitions only' says how to build a "
                f"CREATE INDEX CONCURRENTLY on a partitioned table, and this file's one "
                f"statement is not one: remove the directive",
                file=file.location,
            )
        _PARSED[key] = found
        if len(_PARSED) > _PARSED_MAX:
            _PARSED.popitem(last=False)
    return found


def _unfilled_template(file: MigrationFile) -> bool:
    from .scaffold import unfilled_template  # loaded for comment-only files alone

    return unfilled_template(file.filename, file.sql)


def line_and_column(sql: str, position: int) -> tuple[int, int]:
    """Line and column (both 1-based) of a 1-based character ``position`` in ``sql``.

    The server counts characters, as Python's str does. A CRLF counts as one
    line break, as golang-migrate reports it.
    """
    prefix = sql[: max(position - 1, 0)]
    line = prefix.count("\n") + 1
    column = len(prefix) - (prefix.rfind("\n") + 1) + 1
    return line, column


def line_text(sql: str, line: int) -> str:
    lines = sql.splitlines()
    return lines[line - 1] if 0 < line <= len(lines) else ""

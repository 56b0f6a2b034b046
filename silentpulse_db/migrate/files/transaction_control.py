"""A file's own transaction control: its BEGIN ... COMMIT, and DO blocks that commit.

golang-migrate sends a file as it is, so sets written for it often wrap each file
in ``BEGIN;`` ... ``COMMIT;``. Here the runner owns the transaction, which also
writes the version and history rows: a file's BEGIN and COMMIT are dropped (blanked
in the text sent, so that positions and lines stay) and the file runs in that
transaction, with the BEGIN's isolation level. What golang-migrate runs as one
transaction is accepted; what it runs as several, or what would end the runner's
transaction, is refused with the line, before anything runs:

- a statement after the file's COMMIT (a second transaction, even a second BEGIN):
  golang-migrate commits there, releasing the first part's locks, and the rest may
  rely on that commit (a new enum value); here it is split into two migrations;
- ROLLBACK (the version would be recorded for work undone), COMMIT AND CHAIN,
  PREPARE TRANSACTION, COMMIT/ROLLBACK PREPARED, BEGIN READ ONLY (the version row
  is written in the same transaction).

SAVEPOINT, RELEASE and ROLLBACK TO stay: they work inside the runner's transaction.
Statements before the BEGIN join the transaction, as PostgreSQL folds them into it
when golang-migrate sends the file. Pure: no I/O.
"""

from __future__ import annotations

import json
from typing import Any

from ...errors import MigrationSourceError

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
    from pglast import parser  # loaded with statements.py's parser: only when a file runs

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

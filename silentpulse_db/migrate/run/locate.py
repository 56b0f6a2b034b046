"""Which statement of a transactional migration failed, to name its line.

The server's error position, when there is one, falls in one of the attempt's
messages and maps back to the file (packing.py). An error without a
position is located by replaying the migration statement by statement in a
transaction that is rolled back, unless the attempt ran too long to replay.

Citus forwards a DDL statement's whole simple-query message to its workers, which
refuse a message of several statements (citusdata/citus#6608): such a statement,
sent with others by a run that did not find the extension, runs when replayed alone.
Its replay sends each statement with a companion, and the one Citus forwards is
refused again.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import asyncpg

from ...postgres.connect import rollback
from ..files.statements import Statement
from .packing import Message

# An error without a position is located by replaying the migration when the
# failed attempt took at most this long (seconds).
REPLAY_LIMIT = 5.0
# What can fail at COMMIT: a deferred constraint (integrity, class 23) or a deferred
# constraint trigger raising (P0001).
_AT_COMMIT = re.compile(r"^(23|P0)")
# A Citus worker's refusal of a forwarded message of several statements, and what
# Citus adds to an error a worker raised.
_SEVERAL_COMMANDS = "cannot insert multiple commands into a prepared statement"
_FROM_A_WORKER = "while executing command on "
# Sent after each statement in the replay of such a refusal.
_COMPANION = "\n;SELECT NULL"


def refused_together(exc: BaseException) -> bool:
    """``exc`` is a Citus worker refusing a statement forwarded with the others of its
    message (PL/pgSQL's EXECUTE of several raises the same error, without the context)."""
    return getattr(exc, "message", None) == _SEVERAL_COMMANDS and _FROM_A_WORKER in str(
        getattr(exc, "context", None) or ""
    )


class Where(NamedTuple):
    """Where a migration failed, as error_messages.failed() takes it."""

    offset: int | None  # where the failing statement starts in the file (None: unknown)
    position: int | None = None  # the file offset the server pointed at
    # The first and last statement it may be when neither is known, and whether it
    # may have been the COMMIT.
    span: tuple[int, int, bool] | None = None
    replayed: bool = False  # the span's statements all ran when replayed


async def locate(
    conn: Any,
    sql: str,
    batch: Sequence[Message],
    index: int,
    begin: str,
    exc: asyncpg.PostgresError,
    *,
    last: bool,
    took: float,
) -> Where:
    """Where ``exc``, raised by message ``index`` of ``batch`` (the attempt's messages,
    rolled back; ``last``: that message holds the COMMIT), comes from in ``sql``.
    ``took``: the attempt's seconds; ``begin``: its first statements, for a replay."""
    message = batch[index]
    position = getattr(exc, "position", None)
    at = message.file_offset(int(position)) if position else None
    if at is not None:
        statement = _statement_at(message.statements, at)
        return Where(statement.offset if statement else 0, at)
    if len(message.statements) == 1 and not last:
        return Where(message.statements[0].offset)
    if not message.statements:  # the runner's own (one_by_one's BEGIN or COMMIT)
        return Where(None)
    lines = (message.statements[0].offset, message.statements[-1].offset)
    if took > REPLAY_LIMIT:
        # Replaying a long data migration to find the statement would take as long
        # again, holding its locks: name the lines of the message instead.
        return Where(None, span=(*lines, last))
    together = refused_together(exc)
    offset = await _replay(conn, sql, batch, index, begin, _COMPANION if together else "")
    if together:  # never another session's: named, or the lines with Citus's reason
        return Where(offset) if offset is not None else Where(None, span=(*lines, False))
    if offset is None and not (last and _AT_COMMIT.match(exc.sqlstate or "")):
        # Every statement ran on replay: the error came from another session's doing.
        return Where(None, span=(*lines, False), replayed=True)
    return Where(offset)


async def _replay(
    conn: Any, sql: str, batch: Sequence[Message], index: int, begin: str, companion: str = ""
) -> int | None:
    """Replay the migration statement by statement in a transaction that is rolled back;
    the offset of the statement that fails. None: they all ran, so it failed at COMMIT
    (a deferred constraint). ``companion``: sent after each statement, in its message."""
    try:
        await conn.execute(begin)
        for earlier in batch[:index]:
            await conn.execute(sql[earlier.start : earlier.end])
        for statement in batch[index].statements:
            try:
                await conn.execute(statement.sql + companion)
            except asyncpg.PostgresError:
                return statement.offset
        return None
    finally:
        await rollback(conn)


def _statement_at(statements: Sequence[Statement], offset: int) -> Statement | None:
    found = None
    for statement in statements:
        if statement.offset <= offset:
            found = statement
    return found

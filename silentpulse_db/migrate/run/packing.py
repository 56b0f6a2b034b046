"""How a run's statements are packed into simple-query messages. Pure: no I/O.

A round trip costs about as much as a small DDL statement, so the runner sends
few messages. A transactional migration travels in chunks, with the runner's own
statements wrapped around them (:func:`messages`):

    BEGIN; SET LOCAL lock_timeout = ...; <chunk 1>      (first message)
    <chunk 2> ...                                        (one per CHUNK_STATEMENTS)
    <last chunk>; <version row and history row>; COMMIT  (last message)

A small file travels as ONE message. Chunks are slices of the file cut at
statement boundaries, so a server error position maps back to the file by
subtracting the chunk's start and the prefix's length (:meth:`Message.file_offset`).

Consecutive small migrations that hold only schema statements travel several to
ONE message, each still in its own transaction with its version
(:func:`group_size` says how many, :func:`joined` makes the message; the sending,
and a failure among them: sent_together.py). Sent alone: files that run queries
or code (their RAISE output names them, and they may be long), files that need
several messages, non-transactional files. In a SQL_ASCII database, whose error
positions count bytes, a file with other characters ends its group: it would
shift the positions of the files after it.

On a Citus coordinator each statement travels alone instead (:func:`one_by_one`):
Citus forwards a statement's whole message to its workers, which refuse a message of
several statements (citusdata/citus#6608).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from ..files.statements import ParsedSQL, Statement
from ..plan import Step

# Statements per message: progress is logged between messages, and a message of
# a huge file stays a few hundred kB.
CHUNK_STATEMENTS = 100
# At most this many migrations, and CHUNK_STATEMENTS of their statements, a message:
# the log reports each group as it commits, and a failure redoes little.
GROUP_MIGRATIONS = 50


@dataclass(frozen=True)
class Message:
    """One simple-query message: ``prefix + file[start:end] + suffix``."""

    text: str
    prefix_len: int  # characters before the file's text
    start: int  # offset in the file of the first character sent
    end: int
    statements: tuple[Statement, ...]

    def file_offset(self, position: int) -> int | None:
        """The 0-based file offset of a 1-based server ``position`` in this message,
        or None when it points into the runner's own statements."""
        offset = position - 1 - self.prefix_len
        if 0 <= offset < self.end - self.start:
            return self.start + offset
        return None


def messages(
    sql: str, statements: tuple[Statement, ...], *, begin: str, commit: str, alone: bool = False
) -> list[Message]:
    """The messages that run ``sql`` (split into ``statements``) between ``begin`` and
    ``commit`` (each a string of complete statements ending in ';'); ``alone``: each
    statement in a message of its own (:func:`one_by_one`)."""
    if alone:
        return one_by_one(statements, begin=begin, commit=commit, end=len(sql))
    groups = [
        statements[i : i + CHUNK_STATEMENTS] for i in range(0, len(statements), CHUNK_STATEMENTS)
    ] or [()]
    out: list[Message] = []
    for number, group in enumerate(groups):
        first, last = number == 0, number == len(groups) - 1
        start = 0 if first else group[0].offset
        end = len(sql) if last else groups[number + 1][0].offset
        prefix = f"{begin}\n" if first else ""
        # A newline first: the file may end in a `--` comment or without its ';'.
        suffix = f"\n;\n{commit}" if last else ""
        out.append(Message(prefix + sql[start:end] + suffix, len(prefix), start, end, group))
    return out


def one_by_one(
    statements: tuple[Statement, ...], *, begin: str, commit: str, end: int
) -> list[Message]:
    """The messages that run ``statements`` each alone, between ``begin`` and ``commit``
    in messages of their own (the runner's, on local tables); ``end``: the file's
    length. A statement's message is its own text, so a server position maps back as
    in a chunk."""
    out = [Message(begin, len(begin), 0, 0, ())]
    for statement in statements:
        stop = statement.offset + len(statement.sql)
        out.append(Message(statement.sql, 0, statement.offset, stop, (statement,)))
    out.append(Message(commit, len(commit), end, end, ()))
    return out


def group_size(
    steps: Sequence[Step], parsed: Sequence[ParsedSQL], start: int, *, byte_positions: bool
) -> int:
    """How many steps from ``start`` travel together (1: the step is sent alone).
    ``byte_positions``: the server counts error positions in bytes (SQL_ASCII)."""
    count = statements = 0
    for step, sql in zip(steps[start:], parsed[start:], strict=False):
        statements += len(sql.statements)
        if (
            not sql.schema_only
            or statements > CHUNK_STATEMENTS
            or count == GROUP_MIGRATIONS
            or step.version_after is None  # "no version": not the prepared write
        ):
            break
        count += 1
        if byte_positions and not (step.file.sql.isascii() and step.migration.name.isascii()):
            break
    return max(count, 1)


def joined(parts: Sequence[Message]) -> tuple[str, list[Message]]:
    """One message of ``parts`` (each a whole migration's), and each part with its
    prefix shifted to where it starts in it, so that a server error position maps back
    to its file."""
    texts: list[str] = []
    segments: list[Message] = []
    at = 0
    for part in parts:
        segments.append(dataclasses.replace(part, prefix_len=part.prefix_len + at))
        texts.append(part.text)
        at += len(part.text) + 1  # the newline joining them
    return "\n".join(texts), segments

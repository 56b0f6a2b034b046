"""Small schema migrations sent several to a message.

A round trip and the runner's bookkeeping cost about as much as a small DDL
statement, so consecutive migrations that hold only schema statements travel in
ONE simple-query message, each still in its own transaction with its version:

    BEGIN; SET LOCAL ...; <file 1>; EXECUTE silentpulse_record_version(...); COMMIT;
    BEGIN; SET LOCAL ...; <file 2>; EXECUTE silentpulse_record_version(...); COMMIT;

The version write is a statement prepared once per run. When a migration fails,
the server skips the rest of the message: the ones before it have committed, the
version row says how far it got, and the failed one is explained, or retried
for a lock conflict, exactly as if it had been sent alone (transactional.py).

Sent alone: files that run queries or code (their RAISE output names them, and
they may be long), files that need several messages, non-transactional files.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from ..errors import DatabaseError
from ..postgres.connect import is_connection_lost
from .batches import CHUNK_STATEMENTS, Message
from .failures import interrupted_together
from .plan import Step, version_label
from .sql import ParsedSQL
from .transactional import TransactionalRun
from .version_table import RECORD_STATEMENT, prepare_record_sql, recent_durations

logger = logging.getLogger("silentpulse_db.migrate")

# At most this many migrations, and CHUNK_STATEMENTS of their statements, a message:
# the log reports each group as it commits, and a failure redoes little.
GROUP_MIGRATIONS = 50

# Called with a run's index in its group and its duration, once it has committed.
Applied = Callable[[int, float], None]


def group_size(steps: Sequence[Step], parsed: Sequence[ParsedSQL], start: int) -> int:
    """How many steps from ``start`` travel together (1: the step is sent alone)."""
    count = statements = 0
    for step, sql in zip(steps[start:], parsed[start:], strict=False):
        statements += len(sql.statements)
        if (
            not sql.schema_only
            or statements > CHUNK_STATEMENTS
            or count == GROUP_MIGRATIONS
            or (step.version_after is None)  # "no version": written without the prepared write
        ):
            break
        count += 1
    return max(count, 1)


def label(steps: Sequence[Step]) -> str:
    """How logs name a group: its first and last file."""
    return f"{steps[0].file.location} to {steps[-1].file.filename} (sent together)"


class Together:
    """Sends groups of TransactionalRun over one locked connection, the version write
    prepared on the session by the first (it lives as long as the session)."""

    def __init__(self, conn: Any, schema: str | None) -> None:
        self.conn = conn
        self.schema = schema
        self.prepared = False

    async def apply(
        self, runs: Sequence[TransactionalRun], stays_at: int | None, applied: Applied
    ) -> int:
        """Apply ``runs`` (``stays_at``: the version before the first), calling
        ``applied(index, seconds)`` for each as it is known to have committed, in
        order. Returns how many: all, or after a failure that raises, those up to a
        lock conflict that a retry overcame."""
        parts = [run.message() for run in runs]
        if not self.prepared:
            await self._prepare()
        text, segments = _join([p for p in parts if p is not None])
        if len(segments) != len(runs):
            raise ValueError("group_size() keeps each migration of a group to one message")
        started = time.monotonic()
        try:
            await self.conn.execute(text)
        except BaseException as exc:
            return await self._after_failure(runs, segments, exc, stays_at, started, applied)
        await self._report(0, len(runs), applied)
        return len(runs)

    async def _prepare(self) -> None:
        prepare = prepare_record_sql(self.schema)
        try:
            await self.conn.execute(prepare)
        except asyncpg.DuplicatePreparedStatementError:  # an earlier run on this session
            await self.conn.execute("ROLLBACK")
            await self.conn.execute(f"DEALLOCATE {RECORD_STATEMENT};{prepare}")
        self.prepared = True

    async def _report(self, first: int, end: int, applied: Applied) -> None:
        """``applied`` for runs first..end-1, with the durations their history rows hold
        (the server's clock, from BEGIN to the version write)."""
        if end > first:
            durations = await recent_durations(self.conn, end - first, self.schema)
            for index, seconds in enumerate(durations, first):
                applied(index, 0.0 if seconds is None else seconds)

    async def _after_failure(
        self,
        runs: Sequence[TransactionalRun],
        segments: list[Message],
        exc: BaseException,
        stays_at: int | None,
        started: float,
        applied: Applied,
    ) -> int:
        if is_connection_lost(exc):
            raise interrupted_together(
                [run.step.file for run in runs],
                exc,
                stays_at=version_label(stays_at),
                reaches=version_label(runs[-1].step.version_after),
            ) from None
        if self.conn.is_in_transaction():
            await self.conn.execute("ROLLBACK")
        if not isinstance(exc, asyncpg.PostgresError):  # cancelled
            raise exc
        # Whatever became of the prepared write, the next group makes sure of it.
        self.prepared = False
        done = await self._committed(runs, stays_at)
        await self._report(0, done, applied)  # logged before the failure is explained
        await runs[done].explain(segments[done], exc, time.monotonic() - started)
        await self._report(done, done + 1, applied)  # a retry applied it
        return done + 1

    async def _committed(self, runs: Sequence[TransactionalRun], stays_at: int | None) -> int:
        """How many of ``runs`` committed: the version row says (each commits with it)."""
        table = '"schema_migrations"'
        if self.schema:
            table = '"' + self.schema.replace('"', '""') + '".' + table
        version = await self.conn.fetchval(f"SELECT version FROM {table} LIMIT 1")
        steps = [run.step for run in runs]
        versions = [step.version_after for step in steps]
        if version in versions:
            return versions.index(version) + 1
        if version != stays_at:
            raise DatabaseError(
                f"schema_migrations says version {version} after {label(steps)} failed, "
                f"which none of them records: another session changed it while this one "
                f"held the migration lock"
            )
        return 0


def _join(parts: Sequence[Message]) -> tuple[str, list[Message]]:
    """One message of ``parts``; each part's prefix shifted to where it starts in it, so
    that a server error position maps back to its file."""
    texts: list[str] = []
    segments: list[Message] = []
    at = 0
    for part in parts:
        segments.append(dataclasses.replace(part, prefix_len=part.prefix_len + at))
        texts.append(part.text)
        at += len(part.text) + 1  # the newline joining them
    return "\n".join(texts), segments

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
from collections.abc import Sequence
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
GROUP_MIGRATIONS = 20


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

    async def apply(self, runs: Sequence[TransactionalRun], stays_at: int | None) -> list[float]:
        """Apply ``runs`` (``stays_at``: the version before the first) and return the
        durations of those applied, in order: all of them, or up to a failure that
        raises; a conflict that a retry overcame returns the ones up to it."""
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
            done = await self._after_failure(runs, segments, exc, stays_at, started)
        else:
            done = len(runs)
        durations = await recent_durations(self.conn, done, self.schema)
        return [0.0 if d is None else d for d in durations]

    async def _prepare(self) -> None:
        exists = await self.conn.fetchval(
            "SELECT count(*) > 0 FROM pg_prepared_statements WHERE name = $1", RECORD_STATEMENT
        )
        drop = f"DEALLOCATE {RECORD_STATEMENT};" if exists else ""
        await self.conn.execute(drop + prepare_record_sql(self.schema))
        self.prepared = True

    async def _after_failure(
        self,
        runs: Sequence[TransactionalRun],
        segments: list[Message],
        exc: BaseException,
        stays_at: int | None,
        started: float,
    ) -> int:
        """How many of ``runs`` are applied after ``exc``: raises unless a retry of the
        failed one (a lock conflict) applied it."""
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
        await runs[done].explain(segments[done], exc, time.monotonic() - started)
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

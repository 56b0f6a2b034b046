"""Small schema migrations sent several to a message: the sending, and a failure among them.

A round trip and the runner's bookkeeping cost about as much as a small DDL
statement, so consecutive migrations that hold only schema statements travel in
ONE simple-query message, each still in its own transaction with its version
(which ones: packing.group_size):

    BEGIN; SET LOCAL ...; <file 1>; EXECUTE silentpulse_record_version(...); COMMIT;
    BEGIN; SET LOCAL ...; <file 2>; EXECUTE silentpulse_record_version(...); COMMIT;

The version write is a statement prepared once per run. When a migration fails,
the server skips the rest of the message: the ones before it have committed, the
version row says how far it got, and the failed one is reported, or retried for
a lock conflict, as if it had been sent alone (TransactionalRun.handle_failure).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import asyncpg

from ...errors import DatabaseError
from ...postgres.connect import is_connection_lost
from ..plan import Step, version_label
from ..version_table import RECORD_STATEMENT, VersionStore
from .error_messages import interrupted_together
from .in_transaction import TransactionalRun
from .packing import Message, joined

# Called with a run's index in its group and its duration, once it has committed.
Applied = Callable[[int, float], None]


def label(steps: Sequence[Step]) -> str:
    """How logs name a group: its first and last file."""
    return f"{steps[0].file.location} to {steps[-1].file.filename} (sent together)"


class Together:
    """Sends groups of TransactionalRun over one locked connection, the version write
    prepared on the session by the first (it lives as long as the session)."""

    def __init__(self, store: VersionStore) -> None:
        self.conn = store.conn
        self.store = store
        self.prepared = False

    async def apply(
        self, runs: Sequence[TransactionalRun], before: int | None, applied: Applied
    ) -> int:
        """Apply ``runs`` (``before``: the version before the first), calling
        ``applied(index, seconds)`` for each once it is known to have committed, in
        order. Returns how many: all, or, after a failure that does not raise (a lock
        conflict a retry overcame, a lost prepared write), those up to it."""
        if not self.prepared:
            await self._prepare()
        text, segments = joined([run.message() for run in runs])
        started = time.monotonic()
        try:
            await self.conn.execute(text)
        except BaseException as exc:
            return await self._after_failure(runs, segments, exc, before, started, applied)
        await self._report(0, len(runs), applied)
        return len(runs)

    async def _prepare(self) -> None:
        prepare = self.store.prepare_sql()
        try:
            await self.conn.execute(prepare)
        except asyncpg.DuplicatePreparedStatementError:  # an earlier run on this session
            await self.conn.execute("ROLLBACK")
            await self.conn.execute(f"DEALLOCATE {RECORD_STATEMENT};{prepare}")
        self.prepared = True

    async def _report(self, first: int, end: int, applied: Applied) -> float:
        """``applied`` for runs first..end-1, with the durations their history rows hold
        (the server's clock); returns their sum."""
        if end <= first:
            return 0.0
        durations = [row.duration for row in reversed(await self.store.recent(end - first))]
        for index in range(first, end):
            # Each run committed with its row; a missing one would be a bug, not a reason
            # to run a migration again.
            seconds = durations[index - first] if index - first < len(durations) else None
            applied(index, seconds or 0.0)
        return sum(d or 0.0 for d in durations)

    async def _after_failure(
        self,
        runs: Sequence[TransactionalRun],
        segments: list[Message],
        exc: BaseException,
        before: int | None,
        started: float,
        applied: Applied,
    ) -> int:
        if is_connection_lost(exc):
            raise interrupted_together(
                [run.step.file for run in runs],
                exc,
                stays_at=runs[0].stays_at,
                reaches=f"version {version_label(runs[-1].step.version_after)}",
            ) from None
        if self.conn.is_in_transaction():
            await self.conn.execute("ROLLBACK")
        if not isinstance(exc, asyncpg.PostgresError):  # cancelled
            raise exc
        lost_write = _lost_write(exc)
        if lost_write:  # the statements asyncpg prepared went with it
            await self.conn.reload_schema_state()
        done = await self._committed(runs, before)
        # Logged before the failure is reported or retried.
        committed_for = await self._report(0, done, applied)
        if lost_write:
            # A file dropped the runner's prepared write (DEALLOCATE ALL in dynamic SQL):
            # nothing need be wrong with the one it failed in, which goes again alone
            # (the write spelt out), and the next group has it prepared anew.
            await self._prepare()
            await runs[done].run()
        else:
            took = max(time.monotonic() - started - committed_for, 0.0)
            await runs[done].handle_failure(segments[done], exc, took)
        await self._report(done, done + 1, applied)  # it was applied after all
        return done + 1

    async def _committed(self, runs: Sequence[TransactionalRun], before: int | None) -> int:
        """How many of ``runs`` committed: the version row says (each commits with it)."""
        version = (await self.store.version()).version
        steps = [run.step for run in runs]
        versions = [step.version_after for step in steps]
        if version in versions:
            return versions.index(version) + 1
        if version != before:
            raise DatabaseError(
                f"{self.store.table.name} says version {version} after {label(steps)} failed, "
                f"which none of them records: another session changed it while this one "
                f"held the migration lock"
            )
        return 0


def _lost_write(exc: BaseException) -> bool:
    return isinstance(exc, asyncpg.InvalidSQLStatementNameError) and RECORD_STATEMENT in str(
        getattr(exc, "message", "")
    )

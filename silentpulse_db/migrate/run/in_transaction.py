"""One transactional migration: its messages, sent in one transaction with its version.

The file's statements travel in one simple-query message (a few for a long
file, see packing.py) between the runner's ``BEGIN; SET LOCAL
lock_timeout`` and its version row, history row and ``COMMIT``. A failed attempt
is rolled back; a lost table-lock conflict is retried (lock_retries.py), any
other failure names the statement that failed (locate.py) in a typed error
(error_messages.py).

Where the citus extension is installed (the session's probe says), each statement
is a message of its own, still in the one transaction (packing.one_by_one): Citus
forwards a DDL statement's whole message to its workers, and they refuse a message
of several (citusdata/citus#6608). A statement then costs a round trip; plain
PostgreSQL keeps its one message.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import Any

import asyncpg

from ...defaults import ENGINE_SESSION_SETTINGS, PROGRESS_EVERY
from ...postgres.connect import is_connection_lost, rollback
from ...settings import milliseconds
from ..files.directives import statement_limit
from ..files.source import MigrationSource
from ..files.statements import ParsedSQL
from ..plan import Step, version_label
from ..version_table import HistoryRecord, VersionStore
from .error_messages import failed, interrupted
from .locate import locate
from .lock_retries import LockConflict, LockRetries, lock_conflict
from .packing import Message, messages

# The library's own statement_timeout (none), for a file that sets no other.
_NO_LIMIT = f" SET LOCAL statement_timeout = '{ENGINE_SESSION_SETTINGS['statement_timeout']}';"

logger = logging.getLogger("silentpulse_db.migrate")


class TransactionalRun:
    """Runs one step whose file can run in a transaction (see the module's doc)."""

    def __init__(
        self,
        conn: Any,
        source: MigrationSource,
        step: Step,
        parsed: ParsedSQL,
        *,
        lock_timeout: float | None,
        retry_for: float,
        record: HistoryRecord,
        stays_at: str,
        store: VersionStore,
        statement_timeout: float | None = None,
        one_by_one: bool = False,
    ) -> None:
        self.conn = conn
        self.one_by_one = one_by_one  # each statement a message (Citus)
        self.source = source
        self.step = step
        self.parsed = parsed
        self.lock_timeout = lock_timeout
        # The run's limit on each statement (the DSN's); the file's directive wins.
        self.statement_timeout = statement_timeout
        self.record = record
        self.stays_at = stays_at
        self.store = store  # the set's version table, written in the step's transaction
        self.retry_for = retry_for

    async def run(
        self, *, lost: LockConflict | None = None, since: float | None = None, retry: bool = True
    ) -> None:
        """Run the step: an attempt sends its messages in order (a failure rolls back and
        raises what it means); one that lost a table lock is retried (lock_retries.py),
        each retry an attempt with ``retry=False``. ``lost``: a first attempt made in a
        shared message lost a conflict at ``since`` (monotonic)."""
        started = time.monotonic() if since is None else since
        if lost is None:
            batch = self._messages()
            progress = _Progress(self.step.file.location, len(self.parsed.statements))
            try:
                for index, message in enumerate(batch):
                    try:
                        await self.conn.execute(message.text)
                    except BaseException as exc:
                        last = index == len(batch) - 1
                        took = time.monotonic() - progress.started
                        await self._after_failure(batch, index, exc, last=last, took=took)
                        raise  # _after_failure raises; this keeps the type checker informed
                    progress.step(len(message.statements))
                return
            except LockConflict as conflict:
                if not retry:
                    raise  # an attempt the retries made: they pause and try again
                lost = conflict
        await self._retries().retry(partial(self.run, retry=False), lost, started)

    def _retries(self) -> LockRetries:
        """The retries of a step that lost a table lock (made then: most never do)."""
        wait = lock_wait_words(self.parsed, self.lock_timeout)
        return LockRetries(
            self.step.file, retry_for=self.retry_for, wait=wait, stays_at=self.stays_at
        )

    def message(self) -> Message:
        """The whole attempt as one message, to send together with others' (the version
        write prepared); for a file of at most CHUNK_STATEMENTS statements."""
        (only,) = self._messages(prepared=True)
        return only

    async def handle_failure(self, sent: Message, exc: BaseException, took: float) -> None:
        """run()'s failure path for an attempt made in a shared message (``sent``, this
        step's part, rolled back; ``took`` seconds): raises what ``exc`` means, or
        retries a lost lock conflict as its attempt 1 until a retry applies the step."""
        try:
            await self._after_failure([sent], 0, exc, last=True, took=took)
        except LockConflict as conflict:
            await self.run(lost=conflict, since=time.monotonic() - took)

    def _begin(self) -> str:
        timeout = self.lock_timeout
        # None: the session's own lock_timeout (the library's: wait forever).
        limit = "" if timeout is None else f" SET LOCAL lock_timeout = {milliseconds(timeout)};"
        # Its own, the run's or the library's: never a statement_timeout an earlier file SET.
        own = statement_limit(self.step.file.directives, local=True, default=self.statement_timeout)
        # parsed.begin: "BEGIN;", or with the options of the file's own BEGIN, which is dropped.
        return f"{self.parsed.begin}{limit}{own or _NO_LIMIT}"

    def _messages(self, *, prepared: bool = False) -> list[Message]:
        """The attempt's messages; ``prepared``: the version write as an EXECUTE of the
        statement VersionStore.prepare_sql() made (for a real version)."""
        step = self.step
        write = self.store.record_sql(step.version_after, self.record, prepared=prepared)
        commit = write + "\nCOMMIT;"
        sql = self.parsed.text(step.file.sql)  # the file's own BEGIN / COMMIT blanked
        return messages(
            sql, self.parsed.statements, begin=self._begin(), commit=commit, alone=self.one_by_one
        )

    async def _after_failure(
        self, batch: list[Message], index: int, exc: BaseException, *, last: bool, took: float
    ) -> None:
        """Roll back, then raise what the failure means. ``took``: the attempt's seconds."""
        file = self.step.file
        if is_connection_lost(exc):
            # A server-sent error (terminated backend) means the message did not
            # complete; a connection that just vanished during the COMMIT's message
            # leaves the outcome unknown.
            unknown = last and not isinstance(exc, asyncpg.PostgresError)
            raise interrupted(
                file,
                exc,
                dirty_version=None,
                stays_at=self.stays_at,
                commit_unknown=version_label(self.step.version_after) if unknown else None,
            ) from None
        if not isinstance(exc, asyncpg.PostgresError):  # cancelled, interrupted
            try:
                await rollback(self.conn)
            except Exception as error:
                logger.debug("rollback after %r failed: %s", exc, error)
            raise exc
        await rollback(self.conn)
        if isinstance(exc, asyncpg.LockNotAvailableError | asyncpg.DeadlockDetectedError):
            deadlock = isinstance(exc, asyncpg.DeadlockDetectedError)
            raise await lock_conflict(self.conn, file, self.store, deadlock=deadlock) from None
        where = await locate(
            self.conn,
            self.parsed.text(file.sql),
            batch,
            index,
            self._begin(),
            exc,
            last=last,
            took=took,
        )
        raise failed(
            self.source,
            file,
            exc,
            offset=where.offset,
            position=where.position,
            dirty_version=None,
            span=where.span,
            replayed=where.replayed,
            stays_at=self.stays_at,
            run_timeout=self.statement_timeout,
        )


def lock_wait_words(parsed: ParsedSQL, lock_timeout: float | None) -> str:
    """How long a statement may wait for a lock, in words, for logs and errors."""
    if parsed.own_lock_timeout is not None:
        return f"{parsed.own_lock_timeout} (set by the file itself)"
    if lock_timeout is None:
        return "the session's lock_timeout"
    return f"{lock_timeout:g}s"


class _Progress:
    """Logs how far a long migration has got, at most every PROGRESS_EVERY seconds."""

    def __init__(self, location: str, total: int) -> None:
        self.location = location
        self.total = total
        self.done = 0
        self.started = self.last = time.monotonic()

    def step(self, count: int) -> None:
        self.done += count
        if self.done >= self.total and self.done <= count:
            return  # a one-message migration: nothing to report
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY:
            self.last = now
            logger.info(
                "%s: %d of %d statements in %.0f s",
                self.location,
                self.done,
                self.total,
                now - self.started,
            )

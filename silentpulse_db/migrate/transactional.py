"""One transactional migration: its messages, its table-lock retries, its errors.

The file's statements travel in one simple-query message (a few for a long
file, see batches.py) between the runner's ``BEGIN; SET LOCAL lock_timeout``
and its version row, history row and ``COMMIT``. Each statement waits at most
the lock timeout for a table lock, so that the queries queued behind it are
never held up longer; an attempt that times out is rolled back and retried
with backoff for ``retry_for`` seconds, naming who holds the lock. An error
without a position is located by replaying the migration, statement by
statement, in a transaction that is rolled back.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from typing import Any

import asyncpg
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_before_delay,
    wait_exponential,
    wait_random,
)

from ..defaults import DDL_RETRY_FIRST, DDL_RETRY_MAX, PROGRESS_EVERY
from ..errors import MigrationFailedError, TableLockHolder
from ..postgres.blockers import table_lock_holders
from ..postgres.connect import is_connection_lost
from .batches import Message, messages
from .failures import failed, interrupted, locked_out
from .plan import Step, version_label
from .source import MigrationSource
from .sql import ParsedSQL, Statement
from .version_table import HistoryRecord, pin_schema, record_sql, version_sql

logger = logging.getLogger("silentpulse_db.migrate")

# An error without a position is located by replaying the migration when the
# failed attempt took at most this long (seconds).
REPLAY_LIMIT = 5.0
# What can fail at COMMIT: a deferred constraint (integrity, class 23) or a deferred
# constraint trigger raising (P0001).
_AT_COMMIT = re.compile(r"^(23|P0)")


class _LockWait(Exception):
    """One attempt lost a lock conflict (a lock timeout or a deadlock), rolled back;
    retried."""

    def __init__(self, blockers: list[TableLockHolder], *, deadlock: bool = False) -> None:
        super().__init__("deadlock" if deadlock else "lock timeout")
        self.blockers = blockers
        self.deadlock = deadlock


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
        schema: str | None = None,
    ) -> None:
        self.conn = conn
        self.source = source
        self.step = step
        self.parsed = parsed
        self.lock_timeout = lock_timeout
        self.retry_for = retry_for
        self.record = record
        self.stays_at = stays_at
        self.schema = schema  # of the version tables (pin_schema)
        # How long a statement may wait for a lock, in words, for logs and errors.
        if parsed.own_lock_timeout is not None:
            self.wait = f"{parsed.own_lock_timeout} (set by the file itself)"
        elif lock_timeout is None:
            self.wait = "the session's lock_timeout"
        else:
            self.wait = f"{lock_timeout:g}s"

    def _failed(
        self,
        exc: Any,
        offset: int | None,
        position: int | None,
        *,
        span: tuple[int, int, bool] | None = None,
        replayed: bool = False,
    ) -> MigrationFailedError:
        return failed(
            self.source,
            self.step.file,
            exc,
            offset=offset,
            position=position,
            dirty_version=None,
            span=span,
            replayed=replayed,
            stays_at=self.stays_at,
        )

    async def run(self, *, lost: _LockWait | None = None, since: float | None = None) -> None:
        """Run the step, retrying it while a table lock stays out of reach. ``lost``: a
        first attempt already made (in a shared message) lost a conflict, ``since`` then
        (monotonic): the pause, the warning and the count go on from it."""
        started = time.monotonic() if since is None else since
        first: _LockWait | None = lost
        if first is None:
            try:  # the usual case, without the retry machinery (~70 us a migration)
                await self._once()
                return
            except _LockWait as failure:
                first = failure
        attempts = 1
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_LockWait),
            wait=wait_exponential(multiplier=DDL_RETRY_FIRST, max=DDL_RETRY_MAX)
            + wait_random(0, DDL_RETRY_FIRST),  # jitter: replicas do not retry in step
            # No new attempt once its pause would end past retry_for.
            stop=stop_before_delay(max(self.retry_for - (time.monotonic() - started), 0)),
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    if first is not None:
                        # The attempt that already failed: tenacity pauses before the next.
                        error, first = first, None
                        raise error
                    attempts += 1
                    await self._once()
        except _LockWait as exc:
            raise locked_out(
                self.step.file,
                attempts=attempts,
                waited=time.monotonic() - started,
                wait=self.wait,
                blockers=exc.blockers,
                stays_at=self.stays_at,
            ) from None

    def _log_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        blockers = error.blockers if isinstance(error, _LockWait) else []
        deadlock = isinstance(error, _LockWait) and error.deadlock
        logger.warning(
            "%s: %s (attempt %d), rolled back; held by: %s; retrying in %.1fs",
            self.step.file.location,
            "a deadlock with another session (the server chose this migration to cancel)"
            if deadlock
            else f"a table lock stayed out of reach for {self.wait}",
            state.attempt_number,
            "; ".join(map(str, blockers)) or "(released meanwhile)",
            state.upcoming_sleep,
        )

    def _begin(self) -> str:
        timeout = self.lock_timeout
        # None: the session's own lock_timeout (the server's default: wait forever).
        limit = "" if timeout is None else f" SET LOCAL lock_timeout = '{round(timeout * 1000)}ms';"
        return f"BEGIN;{limit}"

    def _messages(self, *, prepared: bool = False) -> list[Message]:
        """The attempt's messages; ``prepared``: the version write as an EXECUTE of the
        statement prepare_record_sql() made (for a real version)."""
        step = self.step
        if prepared and step.version_after is not None:
            write = record_sql(step.version_after, self.record)
        else:
            write = version_sql(step.version_after, self.record)
        commit = pin_schema(self.schema) + write + "\nCOMMIT;"
        return messages(step.file.sql, self.parsed.statements, begin=self._begin(), commit=commit)

    def message(self) -> Message:
        """The whole attempt as one message, to send together with others' (the version
        write prepared); for a file of at most CHUNK_STATEMENTS statements."""
        (only,) = self._messages(prepared=True)
        return only

    async def handle_failure(self, sent: Message, exc: BaseException, took: float) -> None:
        """What run() does after its attempt fails, for an attempt made in a shared
        message: ``sent`` is this step's part of it (rolled back), ``took`` the attempt's
        seconds. Raises what ``exc`` means, or retries a lost lock conflict, as its
        attempt 1, and returns once a retry applied the step."""
        try:
            await self._after_failure([sent], 0, self._begin(), exc, last=True, took=took)
        except _LockWait as conflict:
            await self.run(lost=conflict, since=time.monotonic() - took)

    async def _once(self) -> None:
        """One attempt: the messages in order; any failure rolls back and raises."""
        step, parsed = self.step, self.parsed
        begin = self._begin()
        batch = self._messages()
        progress = _Progress(step.file.location, len(parsed.statements))
        for index, message in enumerate(batch):
            try:
                await self.conn.execute(message.text)
            except BaseException as exc:
                last = index == len(batch) - 1
                took = time.monotonic() - progress.started
                await self._after_failure(batch, index, begin, exc, last, took)
                raise  # _after_failure raises; this keeps the type checker informed
            progress.step(len(message.statements))

    async def _after_failure(
        self,
        batch: list[Message],
        index: int,
        begin: str,
        exc: BaseException,
        last: bool,
        took: float,
    ) -> None:
        """Roll back, then raise what the failure means. ``took``: the attempt's seconds."""
        step = self.step
        if is_connection_lost(exc):
            # A server-sent error (terminated backend) means the message did not
            # complete; a connection that just vanished during the COMMIT's message
            # leaves the outcome unknown.
            unknown = last and not isinstance(exc, asyncpg.PostgresError)
            raise interrupted(
                step.file,
                exc,
                dirty_version=None,
                stays_at=self.stays_at,
                commit_unknown=version_label(step.version_after) if unknown else None,
            ) from None
        if not isinstance(exc, asyncpg.PostgresError):  # cancelled, interrupted
            try:
                await self._rollback()
            except Exception as error:
                logger.debug("rollback after %r failed: %s", exc, error)
            raise exc
        await self._rollback()
        if isinstance(exc, asyncpg.LockNotAvailableError):
            raise _LockWait(await self._blockers()) from None
        if isinstance(exc, asyncpg.DeadlockDetectedError):
            raise _LockWait(await self._blockers(), deadlock=True) from None
        message = batch[index]
        position = getattr(exc, "position", None)
        at = message.file_offset(int(position)) if position else None
        if at is not None:
            statement = _statement_at(message.statements, at)
            raise self._failed(exc, statement.offset if statement else 0, at)
        if len(message.statements) == 1 and not last:
            raise self._failed(exc, message.statements[0].offset, None)
        lines = (message.statements[0].offset, message.statements[-1].offset)
        if took > REPLAY_LIMIT:
            # Replaying a long data migration to find the statement would take as long
            # again, holding its locks: name the lines of the message instead.
            raise self._failed(exc, None, None, span=(*lines, last))
        offset = await self._locate(batch, index, begin)
        if offset is None and not (last and _AT_COMMIT.match(exc.sqlstate or "")):
            # Every statement ran on replay: the error came from another session's doing.
            raise self._failed(exc, None, None, span=(*lines, False), replayed=True)
        raise self._failed(exc, offset, None)

    async def _locate(self, batch: list[Message], index: int, begin: str) -> int | None:
        """Which statement failed, for an error without a position: replay the migration
        statement by statement in a transaction that is rolled back. None: the statements
        all ran, so it failed at COMMIT (a deferred constraint)."""
        sql = self.step.file.sql
        try:
            await self.conn.execute(begin)
            for earlier in batch[:index]:
                await self.conn.execute(sql[earlier.start : earlier.end])
            for statement in batch[index].statements:
                try:
                    await self.conn.execute(statement.sql)
                except asyncpg.PostgresError:
                    return statement.offset
            return None
        finally:
            await self._rollback()

    async def _rollback(self) -> None:
        if not self.conn.is_in_transaction():
            return  # a failed COMMIT has ended the transaction already
        try:
            await self.conn.execute("ROLLBACK")
        except Exception as exc:  # a lost connection is rolled back by the server
            if not is_connection_lost(exc):
                raise

    async def _blockers(self) -> list[TableLockHolder]:
        """Who holds a lock that conflicts with what the file's statements need."""
        from pglast import parser  # deferred, as in sql.py

        from .locks import statement_locks, strongest

        wanted: dict[str, list[str]] = {}
        try:
            nodes = parser.parse_sql(self.step.file.sql)
        except parser.ParseError:
            nodes = ()
        for raw in nodes:
            for lock in statement_locks(raw.stmt):
                wanted.setdefault(lock.relation, []).append(lock.mode)
        need = {relation: strongest(modes) for relation, modes in wanted.items()}
        return await table_lock_holders(self.conn, need)


def _statement_at(statements: Sequence[Statement], offset: int) -> Statement | None:
    found = None
    for statement in statements:
        if statement.offset <= offset:
            found = statement
    return found


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

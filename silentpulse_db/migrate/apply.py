"""Running a plan on a connection that holds the migration lock.

A file that can run in a transaction runs in ONE transaction together with its
version change and history row, sent as one simple-query message (a few for a
long file, see batches.py): if it fails, the database keeps its previous
version, clean (golang-migrate would leave it dirty). Each statement waits at
most ``ddl_lock_timeout`` for a table lock, so that the queries queued behind
it are never held up longer; a migration that times out is rolled back and
retried with backoff for ``ddl_retry_for`` seconds, naming who holds the lock.

A file holding a statement PostgreSQL refuses in a transaction (CREATE INDEX
CONCURRENTLY, VACUUM, ...) holds only that statement and follows
golang-migrate's protocol: version marked dirty, the statement, version marked
clean. A concurrent index is checked valid before the version is clean, and an
INVALID one left by a failed run is dropped and built again.

Failures become MigrationFailedError (naming file, line and what the database
was left at), TableLockTimeoutError or MigrationInterruptedError.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from ..defaults import (
    DDL_LOCK_TIMEOUT,
    DDL_RETRY_FIRST,
    DDL_RETRY_FOR,
    DDL_RETRY_MAX,
    PROGRESS_EVERY,
)
from ..errors import MigrationFailedError, TableLockHolder
from ..postgres.blockers import table_lock_holders
from ..postgres.connect import is_connection_lost
from ..results import AppliedMigration, VersionState
from ..schema.tenancy import rls_filters
from .batches import Message, messages
from .failures import failed, interrupted, locked_out
from .plan import NIL_VERSION, Plan, Step, version_label
from .source import MigrationFile, MigrationSource
from .sql import ParsedSQL, Statement, analyze, line_and_column
from .version_table import HistoryRecord, set_version, version_sql, write_version

logger = logging.getLogger("silentpulse_db.migrate")


class _LockWait(Exception):
    """One attempt gave up waiting for a table lock (rolled back); retried."""

    def __init__(self, blockers: list[TableLockHolder]) -> None:
        super().__init__("lock timeout")
        self.blockers = blockers


class Applier:
    """Applies plans and special files over one locked connection."""

    def __init__(
        self,
        conn: Any,
        source: MigrationSource,
        *,
        ddl_lock_timeout: float | None = DDL_LOCK_TIMEOUT,
        ddl_retry_for: float = DDL_RETRY_FOR,
    ) -> None:
        self.conn = conn
        self.source = source
        self.ddl_lock_timeout = ddl_lock_timeout
        self.ddl_retry_for = ddl_retry_for
        self._rls_checked: set[str] = set()

    async def apply(
        self, plan: Plan, parsed: Mapping[str, ParsedSQL] | None = None
    ) -> list[AppliedMigration]:
        """Run every step of ``plan`` in order (or record its forced version)."""
        if plan.force is not None:
            await self._force(plan.force)
            return []
        # Read every file of the plan before running any: a file that cannot
        # run (no statement, explicit COMMIT) stops the plan with nothing applied.
        # ``parsed``: files already read before the lock was taken (parse_steps).
        known = parse_steps(plan.steps, parsed or {})
        statements = [known[step.file.location] for step in plan.steps]
        # What a migration says with RAISE WARNING (rows it could not fix, a
        # constraint left NOT VALID) reaches the operator's log, naming the file.
        running: list[str] = []

        def on_message(_conn: Any, message: Any) -> None:
            where = running[-1] if running else "migration"
            if getattr(message, "severity", "") == "WARNING":
                logger.warning("%s: %s", where, message.message)
            else:
                logger.info("%s: %s", where, getattr(message, "message", message))

        self.conn.add_log_listener(on_message)
        try:
            applied = []
            for step, sql in zip(plan.steps, statements, strict=True):
                running.append(step.file.location)
                applied.append(await self._apply_step(step, sql))
            return applied
        finally:
            self.conn.remove_log_listener(on_message)

    async def run_file(self, file: MigrationFile) -> None:
        """Run a whole special file (prerequisites, baseline) as one simple query."""
        try:
            await self.conn.execute(file.sql)
        except asyncpg.PostgresError as exc:
            if is_connection_lost(exc):
                raise interrupted(file, exc, dirty_version=None) from None
            position = getattr(exc, "position", None)
            raise self._failed(file, exc, 0, int(position) - 1 if position else None) from None

    async def _force(self, version: int) -> None:
        recorded = None if version == NIL_VERSION else version
        migration = self.source.get(version)
        async with self.conn.transaction():
            await write_version(
                self.conn,
                recorded,
                False,
                HistoryRecord(version, migration.name if migration else "-", "force"),
            )
        logger.info("forced version %s", version_label(recorded))

    async def _apply_step(self, step: Step, parsed: ParsedSQL) -> AppliedMigration:
        started = time.perf_counter()
        if parsed.non_transactional:
            logger.info(
                "%s runs outside a transaction (%s): golang-migrate's dirty protocol applies",
                step.file.location,
                "; ".join(parsed.non_transactional),
            )
            await self._run_dirty_protocol(step, parsed)
        else:
            await self._run_in_transaction(step, parsed)
        result = AppliedMigration(
            version=step.migration.version,
            name=step.migration.name,
            direction=step.direction,
            duration=time.perf_counter() - started,
            transactional=not parsed.non_transactional,
        )
        logger.info("applied %s", result)
        return result

    def _failed(
        self,
        file: MigrationFile,
        exc: Any,
        offset: int | None,
        position: int | None,
        dirty_version: int | None = None,
    ) -> MigrationFailedError:
        return failed(
            self.source,
            file,
            exc,
            offset=offset,
            position=position,
            dirty_version=dirty_version,
        )

    def _stays_at(self, step: Step) -> str:
        """The version the database keeps if ``step``'s transaction does not commit."""
        version = step.migration.version
        before = self.source.previous_version(version) if step.direction == "up" else version
        return f"version {version_label(before)}"

    def _record(self, step: Step, duration: float | None = None) -> HistoryRecord:
        return HistoryRecord(
            step.migration.version,
            step.migration.name,
            step.direction,
            step.file.checksum,
            duration,
            breaking=step.direction == "up" and step.migration.up.directives.breaking,
        )

    # --- a transactional migration ---------------------------------------------------

    async def _run_in_transaction(self, step: Step, parsed: ParsedSQL) -> None:
        """Run the step, retrying it while a table lock stays out of reach."""
        timeout = step.file.directives.lock_timeout
        timeout = self.ddl_lock_timeout if timeout is None else timeout
        for statement in parsed.statements:
            if statement.writes is not None:
                await self._warn_if_rls_filters(step.file, statement)
        started = time.monotonic()
        try:  # the usual case, without the retry machinery (~70 us a migration)
            await self._transaction_once(step, parsed, timeout)
            return
        except _LockWait as first:
            if self.ddl_retry_for <= 0:
                raise locked_out(
                    step.file,
                    attempts=1,
                    waited=time.monotonic() - started,
                    lock_timeout=timeout,
                    blockers=first.blockers,
                    stays_at=self._stays_at(step),
                ) from None
            logger.warning(
                "%s: a table lock stayed out of reach for %ss (attempt 1), rolled back; "
                "held by: %s; retrying",
                step.file.location,
                "?" if timeout is None else f"{timeout:g}",
                "; ".join(map(str, first.blockers)) or "(released meanwhile)",
            )

        def log_retry(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            blockers = error.blockers if isinstance(error, _LockWait) else []
            logger.warning(
                "%s: a table lock stayed out of reach for %ss (attempt %d), rolled back; "
                "held by: %s; retrying in %.1fs",
                step.file.location,
                "?" if timeout is None else f"{timeout:g}",
                state.attempt_number + 1,
                "; ".join(map(str, blockers)) or "(released meanwhile)",
                state.upcoming_sleep,
            )

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_LockWait),
            wait=wait_exponential(multiplier=DDL_RETRY_FIRST, max=DDL_RETRY_MAX)
            + wait_random(0, DDL_RETRY_FIRST),  # jitter: replicas do not retry in step
            stop=stop_after_delay(max(self.ddl_retry_for - (time.monotonic() - started), 0)),
            before_sleep=log_retry,
            reraise=True,
        )
        attempts = 1
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    await self._transaction_once(step, parsed, timeout)
        except _LockWait as exc:
            raise locked_out(
                step.file,
                attempts=attempts,
                waited=time.monotonic() - started,
                lock_timeout=timeout,
                blockers=exc.blockers,
                stays_at=self._stays_at(step),
            ) from None

    async def _transaction_once(self, step: Step, parsed: ParsedSQL, timeout: float | None) -> None:
        # None: the session's own lock_timeout (the server's default: wait forever).
        limit = "" if timeout is None else f" SET LOCAL lock_timeout = '{round(timeout * 1000)}ms';"
        begin = f"BEGIN;{limit}"
        commit = version_sql(step.version_after, self._record(step)) + "\nCOMMIT;"
        batch = messages(step.file.sql, parsed.statements, begin=begin, commit=commit)
        progress = _Progress(step.file.location, len(parsed.statements))
        for index, message in enumerate(batch):
            try:
                await self.conn.execute(message.text)
            except BaseException as exc:
                last = index == len(batch) - 1
                await self._after_failure(step, parsed, batch, index, begin, exc, last)
                raise  # _after_failure raises; this keeps the type checker informed
            progress.step(len(message.statements))

    async def _after_failure(
        self,
        step: Step,
        parsed: ParsedSQL,
        batch: list[Message],
        index: int,
        begin: str,
        exc: BaseException,
        last: bool,
    ) -> None:
        """Roll back, then raise what the failure means."""
        if is_connection_lost(exc):
            # A server-sent error (terminated backend) means the message did not
            # complete; a connection that just vanished during the COMMIT's message
            # leaves the outcome unknown.
            unknown = last and not isinstance(exc, asyncpg.PostgresError)
            raise interrupted(
                step.file,
                exc,
                dirty_version=None,
                stays_at=self._stays_at(step),
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
            raise _LockWait(await self._blockers(parsed)) from None
        message = batch[index]
        position = getattr(exc, "position", None)
        at = message.file_offset(int(position)) if position else None
        if at is not None:
            statement = _statement_at(message.statements, at)
            raise self._failed(step.file, exc, statement.offset if statement else 0, at)
        offset = await self._locate(step, batch, index, begin)
        raise self._failed(step.file, exc, offset, None)

    async def _locate(self, step: Step, batch: list[Message], index: int, begin: str) -> int | None:
        """Which statement failed, for an error without a position: replay the migration
        statement by statement in a transaction that is rolled back. None: the statements
        all ran, so it failed at COMMIT (a deferred constraint)."""
        sql = step.file.sql
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
        try:
            await self.conn.execute("ROLLBACK")
        except Exception as exc:  # a lost connection is rolled back by the server
            if not is_connection_lost(exc):
                raise

    async def _blockers(self, parsed: ParsedSQL) -> list[TableLockHolder]:
        """Who holds a lock that conflicts with what the file's statements need."""
        from pglast import parser  # deferred, as in sql.py

        from .locks import statement_locks, strongest

        wanted: dict[str, list[str]] = {}
        for statement in parsed.statements:
            try:
                nodes = parser.parse_sql(statement.sql)
            except parser.ParseError:
                continue
            for raw in nodes:
                for lock in statement_locks(raw.stmt):
                    wanted.setdefault(lock.relation, []).append(lock.mode)
        need = {relation: strongest(modes) for relation, modes in wanted.items()}
        return await table_lock_holders(self.conn, need)

    # --- outside a transaction -------------------------------------------------------

    async def _run_dirty_protocol(self, step: Step, parsed: ParsedSQL) -> None:
        dirty = NIL_VERSION if step.version_after is None else step.version_after
        await set_version(self.conn, dirty, True)
        started = time.perf_counter()
        index = parsed.concurrent_index
        if index is not None:
            await self._drop_if_invalid(step.file, index, dirty)
        for statement in parsed.statements:
            await self._execute_alone(step.file, statement, dirty)
        if index is not None:
            await self._require_valid(step.file, index, dirty)
        duration = time.perf_counter() - started
        async with self.conn.transaction():
            await write_version(self.conn, step.version_after, False, self._record(step, duration))

    async def _execute_alone(self, file: MigrationFile, statement: Statement, dirty: int) -> None:
        """One statement outside a transaction: no short lock_timeout here, since these
        statements (concurrent index builds, VACUUM) take locks that do not block the
        application's reads and writes, and must wait for older transactions."""
        try:
            await self.conn.execute(statement.sql)
        except asyncpg.PostgresError as exc:
            if is_connection_lost(exc):
                raise interrupted(file, exc, dirty_version=dirty) from None
            position = getattr(exc, "position", None)
            at = statement.offset + int(position) - 1 if position else None
            raise self._failed(file, exc, statement.offset, at, dirty) from None
        except Exception as exc:
            if is_connection_lost(exc):
                raise interrupted(file, exc, dirty_version=dirty) from None
            raise

    async def _drop_if_invalid(self, file: MigrationFile, index: str, dirty: int) -> None:
        """A failed concurrent build leaves an INVALID index behind: drop it and build anew."""
        invalid = await self.conn.fetchval(_INVALID_INDEX, index)
        if invalid is None:
            return
        logger.warning(
            "%s: index %s is INVALID (a failed earlier build): dropping it concurrently "
            "to build it again",
            file.location,
            invalid,
        )
        await self._execute_alone(
            file, Statement(f"DROP INDEX CONCURRENTLY IF EXISTS {invalid}", 0), dirty
        )

    async def _require_valid(self, file: MigrationFile, index: str, dirty: int) -> None:
        valid = await self.conn.fetchval(_INDEX_VALID, index)
        if valid:
            return
        state = "does not exist" if valid is None else "is INVALID"
        raise MigrationFailedError(
            f"migration failed: {file.location}: the statement succeeded but index {index} "
            f"{state} (IF NOT EXISTS met an INVALID index?). The database is left dirty at "
            f"version {version_label(dirty)}; run again: the runner drops an INVALID index "
            f"and builds it anew.",
            file=file.location,
            dirty=True,
        )

    async def _warn_if_rls_filters(self, file: MigrationFile, statement: Statement) -> None:
        """Warn when an UPDATE/DELETE runs as a role that row-level security filters.

        With FORCE ROW LEVEL SECURITY even the table's owner sees only the rows
        its policies let through (none without app.current_tenant), so a
        backfill "succeeds" having changed nothing.
        """
        if statement.writes in self._rls_checked:
            return  # once per table per migration: a file may hold thousands of UPDATEs
        self._rls_checked.add(statement.writes or "")
        filtered = await rls_filters(self.conn, statement.writes or "")
        if filtered is None:
            return
        line, _ = line_and_column(file.sql, statement.offset + 1)
        logger.warning(
            "%s line %d: %s on %s runs as role %r, which row-level security filters "
            "(no BYPASSRLS, table %s): it only reaches the rows its policies let it see, "
            "none when app.current_tenant is unset. Run data migrations as a role with "
            "BYPASSRLS (docs/operations.md).",
            file.location,
            line,
            statement.sql.split(None, 1)[0].upper(),
            statement.writes,
            filtered.role,
            "forces RLS" if filtered.forced else "has RLS enabled",
        )


_INVALID_INDEX = """
    SELECT i.indexrelid::regclass::text FROM pg_index AS i
    WHERE i.indexrelid = to_regclass($1) AND NOT i.indisvalid
"""
_INDEX_VALID = "SELECT i.indisvalid FROM pg_index AS i WHERE i.indexrelid = to_regclass($1)"


async def reruns_dirty(conn: Any, source: MigrationSource, state: VersionState) -> bool:
    """Whether a dirty version is a concurrent index build that did not complete (its
    index is missing or INVALID), which running the file again heals. Anything else
    dirty stays for the operator (`force`)."""
    if not state.dirty or state.version is None:
        return False
    migration = source.get(state.version)
    if migration is None:
        return False
    index = _analyze(migration.up).concurrent_index
    return index is not None and not await conn.fetchval(_INDEX_VALID, index)


def _statement_at(statements: Sequence[Statement], offset: int) -> Statement | None:
    found = None
    for statement in statements:
        if statement.offset <= offset:
            found = statement
    return found


def parse_steps(
    steps: Sequence[Step], known: Mapping[str, ParsedSQL] | None = None
) -> dict[str, ParsedSQL]:
    """Every step's file split into statements (and refused if it cannot run), by location.

    Called before the migration lock is taken, so that reading a large file
    does not hold up other runners; files in ``known`` are not read again.
    """
    parsed = dict(known or {})
    for step in steps:
        if step.file.location not in parsed:
            parsed[step.file.location] = _analyze(step.file)
    return parsed


# Replicas starting together in one process (and tests, benches) read the same
# files: each is parsed once per process, by content.
_PARSED: OrderedDict[tuple[str, str], ParsedSQL] = OrderedDict()
_PARSED_MAX = 4096  # a file is a few kB: bounded at a few tens of MB


def _analyze(file: MigrationFile) -> ParsedSQL:
    key = (file.location, file.checksum)
    found = _PARSED.get(key)
    if found is None:
        found = _PARSED[key] = analyze(file.sql, file.location)
        if len(_PARSED) > _PARSED_MAX:
            _PARSED.popitem(last=False)
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

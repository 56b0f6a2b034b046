"""Running a plan on a connection that holds the migration lock.

A file that can run in a transaction runs in ONE transaction together with its
version change and history row: if it fails, the database keeps its previous
version, clean (golang-migrate would leave it dirty). A file holding
statements PostgreSQL refuses in a transaction (CREATE INDEX CONCURRENTLY,
VACUUM, ALTER SYSTEM, ...) follows golang-migrate's protocol: version marked
dirty, statements run one by one, version marked clean.

Failures become MigrationFailedError (naming file, line and what the database
was left at) or MigrationInterruptedError (the connection went away).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from ..defaults import PROGRESS_EVERY
from ..errors import MigrationFailedError, MigrationInterruptedError
from ..postgres.connect import describe, is_connection_lost
from ..results import AppliedMigration, VersionState
from ..schema.tenancy import rls_filters
from .plan import CLI, NIL_VERSION, Plan, Step, dirty_message, version_label
from .source import MigrationFile, MigrationSource
from .sql import ParsedSQL, Statement, analyze, line_and_column, line_text
from .version_table import HistoryRecord, set_version, write_version

logger = logging.getLogger("silentpulse_db.migrate")


class Applier:
    """Applies plans and special files over one locked connection."""

    def __init__(self, conn: Any, source: MigrationSource) -> None:
        self.conn = conn
        self.source = source
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
        await self._execute(file, Statement(file.sql, 0), dirty_version=None)

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
        if parsed.non_transactional:
            logger.info(
                "%s runs outside a transaction (%s): golang-migrate's dirty protocol applies",
                step.file.location,
                "; ".join(parsed.non_transactional),
            )
            duration = await self._run_dirty_protocol(step, parsed)
        else:
            duration = await self._run_in_transaction(step, parsed)
        result = AppliedMigration(
            version=step.migration.version,
            name=step.migration.name,
            direction=step.direction,
            duration=duration,
            transactional=not parsed.non_transactional,
        )
        logger.info("applied %s", result)
        return result

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

    def _stays_at(self, step: Step) -> str:
        """The version the database keeps if ``step``'s transaction does not commit."""
        version = step.migration.version
        before = self.source.previous_version(version) if step.direction == "up" else version
        return f"version {version_label(before)}"

    def _record(self, step: Step, duration: float) -> HistoryRecord:
        return HistoryRecord(
            step.migration.version,
            step.migration.name,
            step.direction,
            step.file.checksum,
            duration,
        )

    async def _run_in_transaction(self, step: Step, parsed: ParsedSQL) -> float:
        # The transaction is driven by hand, not `async with`: when the
        # connection is gone, the rollback on the way out fails too, and its
        # "Transaction.__aexit__ ... connection is closed" must not replace the cause.
        stays_at = self._stays_at(step)
        transaction = self.conn.transaction()
        started = time.perf_counter()
        try:
            await transaction.start()
            progress = _Progress(step.file.location, len(parsed.statements))
            for statement in parsed.statements:
                await self._execute(step.file, statement, dirty_version=None, stays_at=stays_at)
                progress.step()
            duration = time.perf_counter() - started
            await write_version(self.conn, step.version_after, False, self._record(step, duration))
        except BaseException as exc:
            await _rollback_quietly(transaction)
            if is_connection_lost(exc):
                raise _interrupted(step.file, exc, dirty_version=None, stays_at=stays_at) from None
            raise
        try:
            await transaction.commit()
        except Exception as exc:
            if is_connection_lost(exc):
                # Lost during COMMIT: the server may or may not have committed.
                raise MigrationInterruptedError(
                    f"connection lost while committing {step.file.location} ({describe(exc)}): "
                    f"whether it committed is unknown. Run `{CLI} version`: "
                    f"{step.version_after} means it did; then run again.",
                    file=step.file.location,
                ) from None
            raise
        return duration

    async def _run_dirty_protocol(self, step: Step, parsed: ParsedSQL) -> float:
        dirty = NIL_VERSION if step.version_after is None else step.version_after
        await set_version(self.conn, dirty, True)
        started = time.perf_counter()
        progress = _Progress(step.file.location, len(parsed.statements))
        for statement in parsed.statements:
            await self._execute(step.file, statement, dirty_version=dirty)
            progress.step()
        duration = time.perf_counter() - started
        async with self.conn.transaction():
            await write_version(self.conn, step.version_after, False, self._record(step, duration))
        return duration

    async def _execute(
        self,
        file: MigrationFile,
        statement: Statement,
        *,
        dirty_version: int | None,
        stays_at: str | None = None,
    ) -> None:
        """Run one statement (simple protocol); turn a failure into an error naming its line.

        ``dirty_version``: the version left dirty if this fails (dirty protocol), else None.
        """
        try:
            if statement.writes is not None:
                await self._warn_if_rls_filters(file, statement)
            await self.conn.execute(statement.sql)
        except asyncpg.PostgresError as exc:
            if is_connection_lost(exc):
                raise _interrupted(
                    file, exc, dirty_version=dirty_version, stays_at=stays_at
                ) from None
            raise _failed(self.source, file, exc, statement, dirty_version=dirty_version) from None
        except Exception as exc:
            if is_connection_lost(exc):
                raise _interrupted(
                    file, exc, dirty_version=dirty_version, stays_at=stays_at
                ) from None
            raise


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
_PARSED_MAX = 256


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

    def step(self) -> None:
        self.done += 1
        if self.done % 100:
            return  # the clock is read once every 100 statements
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


async def _rollback_quietly(transaction: Any) -> None:
    """Roll back if the connection still can; a lost connection is rolled back server-side."""
    try:
        await transaction.rollback()
    except Exception as exc:
        if not is_connection_lost(exc):
            raise


# --- what a failure means for the operator -------------------------------------------


def _failed(
    source: MigrationSource,
    file: MigrationFile,
    exc: asyncpg.PostgresError,
    statement: Statement,
    *,
    dirty_version: int | None,
) -> MigrationFailedError:
    sqlstate = getattr(exc, "sqlstate", None)
    message = getattr(exc, "message", None) or str(exc)
    position = getattr(exc, "position", None)
    if position:
        # The server counts characters from 1 within the statement it was sent.
        line, column = line_and_column(file.sql, statement.offset + int(position))
        where = f" line {line}, column {column}"
    else:
        # No position (many DDL errors): name the statement that failed.
        line, column = line_and_column(file.sql, statement.offset + 1)
        where = f" line {line} (the statement starting there)"
    excerpt = f"\n{line:>6} | {line_text(file.sql, line)}"
    if position:
        excerpt += f"\n       | {' ' * (column - 1)}^"
    details = [
        f"{attr}: {value}"
        for attr in ("detail", "hint", "context")
        if (value := getattr(exc, attr, None))
    ]
    if dirty_version is not None:
        dirty = VersionState(None if dirty_version == NIL_VERSION else dirty_version, True)
        outcome = "The database is left dirty: " + dirty_message(source, dirty)
    else:
        outcome = (
            "Its transaction was rolled back: nothing of it was applied and the version "
            "is unchanged, clean."
        )
    text = (
        f"migration failed: {file.location}{where}: {message} (SQLSTATE {sqlstate})"
        f"{excerpt}" + "".join(f"\n  {d}" for d in details) + f"\n{outcome}"
    )
    return MigrationFailedError(
        text,
        file=file.location,
        line=line,
        column=column if position else None,
        sqlstate=sqlstate,
        server_message=message,
        dirty=dirty_version is not None,
    )


def _interrupted(
    file: MigrationFile,
    exc: BaseException,
    *,
    dirty_version: int | None,
    stays_at: str | None = None,
) -> MigrationInterruptedError:
    reason = describe(exc)
    if dirty_version is not None:
        outcome = (
            f"The database is left dirty at version {version_label(dirty_version)} (the "
            f"statements ran one by one); see `{CLI} version` and force the version the "
            "schema matches."
        )
    else:
        stays = f", and the database stays at {stays_at}, clean" if stays_at else ""
        outcome = (
            f"The server rolled back its transaction: nothing of it was applied{stays}. "
            "Run again: it continues from there."
        )
    return MigrationInterruptedError(
        f"connection lost while applying {file.location} ({reason}). {outcome}",
        file=file.location,
        dirty=dirty_version is not None,
    )

"""Running a plan on a connection that holds the migration lock.

A file that can run in a transaction runs in ONE transaction together with its
version change and history row (in_transaction.py: one message, table-lock
timeouts and retries). If it fails, the database keeps its previous version,
clean (golang-migrate would leave it dirty). A file holding a statement
PostgreSQL refuses in a transaction holds only that statement and follows
golang-migrate's dirty protocol (outside_transaction.py; index_healing.py heals concurrent
indexes).

Failures become MigrationFailedError (naming file, line and what the database
was left at), TableLockTimeoutError or MigrationInterruptedError.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ...defaults import MIGRATION_LOCK_TIMEOUT
from ...results.migrations import AppliedMigration
from ...settings import DEFAULT_DDL, DDLLimits
from ..files.source import MigrationFile, MigrationSource
from ..files.statements import ParsedSQL, Statement, analyze_cached
from ..plan import NIL_VERSION, Plan, Step, version_label
from ..version_table import CORE, HistoryRecord, VersionStore, VersionTable
from .in_transaction import TransactionalRun
from .index_healing import refuse_force
from .outside_transaction import OutsideTransaction
from .packing import group_size
from .sent_together import Together, label

if TYPE_CHECKING:
    from .filtered_writes import FilteredWrites

logger = logging.getLogger("silentpulse_db.migrate")


class Applier:
    """Applies plans and special files over one locked connection."""

    def __init__(
        self,
        conn: Any,
        source: MigrationSource,
        *,
        ddl: DDLLimits = DEFAULT_DDL,
        statement_timeout: float | None = None,
        table: VersionTable = CORE,
        build_wait: float = MIGRATION_LOCK_TIMEOUT,
        one_by_one: bool = False,
    ) -> None:
        self.conn = conn
        # Each statement of a transactional migration a message of its own, and no
        # migrations sent together: the citus extension is installed (in_transaction.py).
        self.one_by_one = one_by_one
        # How long a concurrent build or drop waits for another backend still at it.
        self.build_wait = build_wait
        self.source = source
        # Each migration's wait for a table lock, and how long a lost wait is retried.
        self.ddl = ddl
        # Each migration statement's limit (the DSN's x-statement-timeout), unless its
        # file sets one; None: none.
        self.statement_timeout = statement_timeout
        # The set's version table; its schema None: current_schema() when a plan starts.
        # Its writes outside a migration's transaction wait for a lock as long as a build.
        self.store = VersionStore(conn, table, wait=build_wait)
        self.filtered_writes: FilteredWrites | None = None  # made for the first file that writes
        self.together: Together | None = None  # made for the first group sent together

    async def apply(
        self, plan: Plan, parsed: Mapping[str, ParsedSQL] | None = None
    ) -> list[AppliedMigration]:
        """Run every step of ``plan`` in order (or record its forced version)."""
        if plan.force is not None:
            await force_version(self.store, self.source, plan.force)
            return []
        # Read every file of the plan before running any: a file that cannot
        # run (a COMMIT halfway, `create`'s template unfilled) stops the plan with
        # nothing applied. ``parsed``: files already read before the lock (parse_steps).
        known = parse_steps(plan.steps, parsed or {})
        statements = [known[step.file.location] for step in plan.steps]
        for step, sql in zip(plan.steps, statements, strict=True):
            if not sql.statements:  # at debug: a set may hold dozens, as golang-migrate's do
                logger.debug("%s holds no statement: a migration that runs nothing", step.file)
        if self.store.table.schema is None and plan.steps:
            schema = await self.conn.fetchval("SELECT current_schema()")
            table = self.store.table._replace(schema=schema)
            self.store = VersionStore(self.conn, table, wait=self.build_wait)
        notices = _Notices()
        self.conn.add_log_listener(notices)
        # A SQL_ASCII database counts error positions in bytes (packing.group_size).
        byte_positions = self.conn.get_settings().server_encoding == "SQL_ASCII"
        try:
            applied: list[AppliedMigration] = []
            steps, before = plan.steps, plan.state.version  # what a failure leaves
            while len(applied) < len(steps):
                start = len(applied)
                size = (
                    1
                    if self.one_by_one
                    else group_size(steps, statements, start, byte_positions=byte_positions)
                )
                group = steps[start : start + size]
                notices.running = label(group) if size > 1 else group[0].file.location
                if size == 1:  # on its own: in its transaction, or outside any
                    step, sql, started = group[0], statements[start], time.perf_counter()
                    if sql.non_transactional:
                        await self._outside(step, sql)
                    else:
                        await self._warn_filtered_writes(step, sql)
                        await self._transactional(step, sql, before).run()
                    took = time.perf_counter() - started
                    transactional = not sql.non_transactional
                    applied.append(applied_migration(step, took, transactional=transactional))
                else:
                    parsed_group = statements[start : start + size]
                    await self._apply_together(group, parsed_group, before, applied)
                before = steps[len(applied) - 1].version_after
            return applied
        finally:
            self.conn.remove_log_listener(notices)

    async def _apply_together(
        self,
        steps: Sequence[Step],
        parsed: Sequence[ParsedSQL],
        before: int | None,
        applied: list[AppliedMigration],
    ) -> None:
        """Send ``steps`` in one message (sent_together.py); each appends to ``applied`` as it is
        known to have committed."""
        runs, stays_at = [], before
        for step, sql in zip(steps, parsed, strict=True):
            runs.append(self._transactional(step, sql, stays_at))
            stays_at = step.version_after

        def committed(index: int, took: float) -> None:
            applied.append(applied_migration(steps[index], took, transactional=True))

        self.together = self.together or Together(self.store)
        await self.together.apply(runs, before, committed)

    async def run_file(self, file: MigrationFile) -> None:
        """Run a whole special file (prerequisites, baseline) as one simple query."""
        await OutsideTransaction(self.conn, self.source).execute_alone(
            file, Statement(file.sql, 0), None
        )

    async def _outside(self, step: Step, parsed: ParsedSQL) -> None:
        """Run a file that cannot run in a transaction (outside_transaction.py)."""
        outside = OutsideTransaction(
            self.conn,
            self.source,
            self.store,
            statement_timeout=self.statement_timeout,
            build_wait=self.build_wait,
            ddl=self.ddl,
        )
        await outside.run(step, parsed, history_record)

    async def _warn_filtered_writes(self, step: Step, parsed: ParsedSQL) -> None:
        """Warn of each write that row-level security would filter (filtered_writes.py)."""
        writes = [statement for statement in parsed.statements if statement.writes is not None]
        if not writes:
            return
        if self.filtered_writes is None:
            from .filtered_writes import FilteredWrites  # only a file that writes rows

            self.filtered_writes = FilteredWrites(self.conn)
        for statement in writes:
            await self.filtered_writes.warn(step.file, statement)

    def _transactional(self, step: Step, parsed: ParsedSQL, before: int | None) -> TransactionalRun:
        timeout = step.file.directives.lock_timeout
        return TransactionalRun(
            self.conn,
            self.source,
            step,
            parsed,
            lock_timeout=self.ddl.table_lock_timeout if timeout is None else timeout,
            retry_for=self.ddl.retry_for,
            record=history_record(step),
            stays_at=f"version {version_label(before)}",
            store=self.store,
            statement_timeout=self.statement_timeout,
            one_by_one=self.one_by_one,
        )


async def force_version(store: VersionStore, source: MigrationSource, version: int) -> None:
    """Record ``version`` clean without running anything (NIL_VERSION: no version),
    unless the catalog contradicts it (index_healing.refuse_force)."""
    recorded = None if version == NIL_VERSION else version
    await refuse_force(store.conn, source, version)
    migration = source.get(version)
    await store.write(
        recorded, False, HistoryRecord(version, migration.name if migration else "-", "force")
    )
    logger.info("forced version %s", version_label(recorded))


class _Notices:
    """A log listener: what a migration says with RAISE WARNING (rows it could not fix, a
    constraint left NOT VALID) reaches the operator's log, naming the file."""

    def __init__(self) -> None:
        self.running = "migration"  # the file (or group of files) now running

    def __call__(self, _conn: Any, message: Any) -> None:
        text = str(getattr(message, "message", message))
        if getattr(message, "severity", "") == "WARNING":
            logger.warning("%s: %s", self.running, text)
        elif text.endswith(", skipping"):
            # DROP ... IF EXISTS / CREATE ... IF NOT EXISTS with nothing to do: expected.
            logger.debug("%s: %s", self.running, text)
        else:
            logger.info("%s: %s", self.running, text)


def applied_migration(step: Step, took: float, *, transactional: bool) -> AppliedMigration:
    """What the result says of a step that ran (and the log line saying so)."""
    result = AppliedMigration(
        version=step.migration.version,
        name=step.migration.name,
        direction=step.direction,
        duration=took,
        transactional=transactional,
    )
    logger.info("applied %s", result)
    return result


def history_record(step: Step, duration: float | None = None) -> HistoryRecord:
    """The history row of a step that took ``duration`` seconds."""
    return HistoryRecord(
        step.migration.version,
        step.migration.name,
        step.direction,
        step.file.checksum,
        duration,
        breaking=step.direction == "up" and step.file.directives.breaking,
    )


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
            parsed[step.file.location] = analyze_cached(step.file)
    return parsed

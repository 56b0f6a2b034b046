"""Migrations that cannot run in a transaction, and the special files.

A file holding CREATE INDEX CONCURRENTLY, VACUUM, ... holds only that statement
(statements.py refuses more) and follows golang-migrate's protocol: version
marked dirty, the statement, version marked clean. A concurrent index build is
healed and checked by index_healing.py; one on a partitioned table, which PostgreSQL
refuses, runs partition by partition (partitioned_index.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import asyncpg

from ...defaults import ENGINE_SESSION_SETTINGS, MIGRATION_LOCK_TIMEOUT
from ...errors import MigrationFailedError
from ...postgres.connect import is_connection_lost, set_config_sql
from ...settings import DEFAULT_DDL, DDLLimits
from ..files.directives import statement_limit
from ..files.source import MigrationFile, MigrationSource
from ..files.statements import ParsedSQL, Statement
from ..plan import NIL_VERSION, Step
from ..version_table import HistoryRecord, VersionStore
from .error_messages import failed, interrupted
from .index_healing import before, require_valid
from .partitioned_index import PartitionedBuild, partitioned_target

logger = logging.getLogger("silentpulse_db.migrate")

# What a session goes back to after a file's own limit: the library's.
_ENGINE_LIMIT = {"statement_timeout": ENGINE_SESSION_SETTINGS["statement_timeout"]}

# What the history records for a step that took ``duration`` seconds.
Recorder = Callable[[Step, float], HistoryRecord]


class OutsideTransaction:
    """Runs statements alone on the locked connection."""

    def __init__(
        self,
        conn: Any,
        source: MigrationSource,
        store: VersionStore | None = None,
        *,
        statement_timeout: float | None = None,
        build_wait: float = MIGRATION_LOCK_TIMEOUT,
        ddl: DDLLimits = DEFAULT_DDL,
    ) -> None:
        self.conn = conn
        self.source = source
        # The set's version table (the core's for a special file, which writes none).
        self.store = store or VersionStore(conn)
        # The run's limit on each migration statement (the DSN's); a file's directive wins.
        self.statement_timeout = statement_timeout
        # How long to wait for another backend still building or dropping the index a
        # file builds or drops (the run's lock wait).
        self.build_wait = build_wait
        # A partitioned build's steps that block writes (partitioned_index.py): how long
        # each waits for its lock, and for how long they are tried again.
        self.ddl = ddl
        self.step: Step | None = None  # the step running, for its failure's message

    async def run(self, step: Step, parsed: ParsedSQL, record: Recorder) -> None:
        """golang-migrate's protocol: dirty, the statement, clean (healing an index)."""
        # At debug: a fresh database runs ten such files (000006-000015), and the same
        # line ten times at every first start told an operator nothing new.
        logger.debug(
            "%s runs outside a transaction (%s): golang-migrate's dirty protocol applies",
            step.file.location,
            "; ".join(parsed.non_transactional),
        )
        dirty = NIL_VERSION if step.version_after is None else step.version_after
        self.step = step
        started = time.perf_counter()
        # A concurrent build or drop: waits for a backend still at it; None when what the
        # file does is already done (it is not run again), else what to run first.
        partitioned = await partitioned_target(self.conn, parsed)
        if partitioned is None and step.file.directives.partitions_only:
            raise MigrationFailedError(
                f"migration failed: {step.file.location}: '-- silentpulse: partitions only' "
                f"and {parsed.concurrent_index}'s table is not a partitioned table. Nothing "
                f"was run; remove the directive.",
                file=step.file.location,
            )
        first = await before(self.conn, step.file, parsed, wait=self.build_wait)
        await self.store.write(dirty, True)
        index = parsed.concurrent_index
        for statement in first or ():
            await self.execute_alone(step.file, statement, dirty)
        limit = statement_limit(step.file.directives, local=False, default=self.statement_timeout)
        # A file before this one may have SET the session's statement_timeout: this one
        # runs with its own, the run's, or the library's (none), never a neighbour's.
        await self.conn.execute(limit or set_config_sql(_ENGINE_LIMIT))
        try:
            if partitioned is not None and first is not None:
                await PartitionedBuild(self, partitioned, parsed.statements[0], dirty).run()
            else:
                for statement in parsed.statements if first is not None else ():
                    await self.execute_alone(step.file, statement, dirty)
        finally:
            if limit and not self.conn.is_closed():  # back to the library's own value
                await self.conn.execute(set_config_sql(_ENGINE_LIMIT))
        if index is not None:
            await require_valid(self.conn, step.file, index, dirty)
        duration = time.perf_counter() - started
        await self.store.write(step.version_after, False, record(step, duration))

    async def execute_alone(
        self, file: MigrationFile, statement: Statement, dirty: int | None
    ) -> None:
        """One statement outside a transaction (or a special file in one simple query):
        no short lock_timeout here, since these statements (concurrent index builds,
        VACUUM) take locks that do not block the application's reads and writes, and
        must wait for older transactions. ``dirty``: the version left dirty on failure."""
        try:
            await self.conn.execute(statement.sql)
        except asyncpg.PostgresError as exc:
            if is_connection_lost(exc):
                raise interrupted(
                    file, exc, dirty_version=dirty, step=self.step, source=self.source
                ) from None
            position = getattr(exc, "position", None)
            at = statement.offset + int(position) - 1 if position else None
            raise failed(
                self.source,
                file,
                exc,
                offset=statement.offset,
                position=at,
                dirty_version=dirty,
                run_timeout=self.statement_timeout,
                step=self.step,
            ) from None
        except Exception as exc:
            if is_connection_lost(exc):
                raise interrupted(
                    file, exc, dirty_version=dirty, step=self.step, source=self.source
                ) from None
            raise

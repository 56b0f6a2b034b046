"""Migrations that cannot run in a transaction, and the special files.

A file holding CREATE INDEX CONCURRENTLY, VACUUM, ... holds only that statement
(sql.py refuses more) and follows golang-migrate's protocol: version marked
dirty, the statement, version marked clean. A concurrent index is checked
valid before the version is clean; an INVALID one a failed run left behind is
dropped (concurrently) and built again, and a dirty version that is such an
unfinished build is run again by a plain ``up``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import asyncpg

from ..errors import MigrationFailedError
from ..postgres.connect import is_connection_lost
from ..results import VersionState
from .failures import failed, interrupted
from .plan import NIL_VERSION, Step, version_label
from .source import MigrationFile, MigrationSource
from .sql import ParsedSQL, Statement, analyze_cached
from .version_table import HistoryRecord, set_version, write_version

logger = logging.getLogger("silentpulse_db.migrate")

# What the history records for a step that took ``duration`` seconds.
Recorder = Callable[[Step, float], HistoryRecord]


class OutsideTransaction:
    """Runs statements alone on the locked connection."""

    def __init__(self, conn: Any, source: MigrationSource, schema: str | None = None) -> None:
        self.conn = conn
        self.source = source
        self.schema = schema  # of the version tables (pin_schema)

    async def run(self, step: Step, parsed: ParsedSQL, record: Recorder) -> None:
        """golang-migrate's protocol: dirty, the statement, clean (healing an index)."""
        dirty = NIL_VERSION if step.version_after is None else step.version_after
        await set_version(self.conn, dirty, True, schema=self.schema)
        started = time.perf_counter()
        index = parsed.concurrent_index
        if index is not None:
            await self._drop_if_invalid(step.file, index, dirty)
        for statement in parsed.statements:
            await self.execute_alone(step.file, statement, dirty)
        if index is not None:
            await self._require_valid(step.file, index, dirty)
        duration = time.perf_counter() - started
        async with self.conn.transaction():
            await write_version(
                self.conn, step.version_after, False, record(step, duration), schema=self.schema
            )

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
                raise interrupted(file, exc, dirty_version=dirty) from None
            position = getattr(exc, "position", None)
            at = statement.offset + int(position) - 1 if position else None
            raise failed(
                self.source, file, exc, offset=statement.offset, position=at, dirty_version=dirty
            ) from None
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
        await self.execute_alone(
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
    index = analyze_cached(migration.up).concurrent_index
    return index is not None and not await conn.fetchval(_INDEX_VALID, index)

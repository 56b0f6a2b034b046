"""A migration session: one connection, what start-up must know before locking, the lock."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import asyncpg

from ..defaults import CONNECT_ATTEMPTS, CONNECT_WAIT, ENGINE_SESSION_SETTINGS
from ..postgres.connect import close_quietly, connect, on_own_backend, settle
from ..postgres.pooler import SHARED_BACKEND_ERRORS
from ..postgres.translate import typed_errors
from ..results.migrations import VersionState
from .migration_lock.keys import LockKeys, lock_keys_for
from .migration_lock.waiting import MigrationLock
from .plan import HistoryEntry
from .version_table import (
    CORE,
    HISTORY_TABLE,
    VERSION_TABLE,
    VersionTable,
    ensure_tables,
    read_state,
    read_version,
    state_and_history,
    state_from_rows,
    tables_exist,
    version_table_exists,
)


def create_tables(table: VersionTable) -> str:
    """What ensuring the tables is called in a permission error."""
    return f"create the version tables ({table.name}, {HISTORY_TABLE})"


class Session(NamedTuple):
    """A connection, the migration lock's keys, and whether the version tables exist."""

    # A NamedTuple, not a dataclass: cheaper to create at start-up (plan.py says why).

    conn: Any
    keys: LockKeys
    tables_exist: bool
    # Whether the probe found the work after applying due (None: not asked).
    after_due: bool | None = None
    # The version and history, read together with the probe (``with_state``), if they exist.
    state: tuple[VersionState, dict[int, HistoryEntry]] | None = None
    # The set's version table, in current_schema() on connecting (a migration may move
    # the session's search_path; the runner's version writes stay there).
    table: VersionTable = CORE
    # Seconds spent connecting, the waits for a server that was not up yet included, and
    # when the connection was made (time.perf_counter()).
    connecting: float = 0.0
    connected: float = 0.0
    # Through a connection pooler in session mode: lock holders' pids and addresses
    # are the pooler's server connections.
    pooled: bool = False
    # Whether the version table exists, with or without our history beside it: a
    # database only golang-migrate has run has a version and no history.
    versioned: bool = False

    def lock(self, timeout: float) -> MigrationLock:
        return MigrationLock(self.conn, self.keys, timeout=timeout, pooled=self.pooled)


# What a migration session needs: one backend for the whole connection.
MIGRATIONS_NEED_A_SESSION = (
    "migrations hold a session-level advisory lock (shared with golang-migrate) and "
    "run statements that must follow each other on one backend; in this mode the "
    "lock is taken on one server connection and stays held there after the run"
)


@contextlib.asynccontextmanager
async def open_session(
    dsn: str,
    *,
    attempts: int = CONNECT_ATTEMPTS,
    wait: float = CONNECT_WAIT,
    after_probe: str | None = None,
    with_state: bool = False,
    table: str = VERSION_TABLE,
) -> AsyncIterator[Session]:
    """Connect (with retries) and probe schema, database and the version tables in one query.

    ``table``: the set's version table (its lock keys follow golang-migrate's formula
    for it).

    ``after_probe``: a boolean SQL expression asked in the same query (the run's
    AfterApply: start-up's partition check), so that a no-op start-up pays no round trip for it.
    ``with_state``: read the version and history in that query too (start-up: a
    migrated database is answered in one round trip); on a database without the
    tables that query fails once and the plain probe follows.
    """
    before = time.perf_counter()
    conn = await connect(dsn, attempts=attempts, wait=wait, session_settings=None)
    connected = time.perf_counter()
    try:
        probe_sql = (
            # The library's own session settings, in this round trip rather than one
            # more (connect() would): docs/operations.md, 'Role-level limits'.
            f"SELECT {on_own_backend(conn, ENGINE_SESSION_SETTINGS)}, "
            "current_schema() AS schema, current_database() AS db, "
            f"{tables_exist(table)} AS ready, {version_table_exists(table)} AS versioned, "
            f"{after_probe or 'NULL::boolean'} AS after_due"
        )
        try:
            probe, state = await _probe(conn, probe_sql, table if with_state else None)
        except SHARED_BACKEND_ERRORS:
            probe = None  # another client's statement on this new backend: settle() says
        pooled = await settle(
            conn, dsn, ENGINE_SESSION_SETTINGS, need=MIGRATIONS_NEED_A_SESSION, row=probe
        )
        if probe is None:  # a pooler that keeps a session, yet its backend was shared
            probe, state = await _probe(conn, probe_sql, table if with_state else None)
        keys = lock_keys_for(probe["db"], probe["schema"], table)
        yield Session(
            conn,
            keys,
            probe["ready"],
            probe["after_due"],
            state,
            VersionTable(table, probe["schema"]),
            connecting=connected - before,
            connected=connected,
            pooled=pooled,
            versioned=probe["versioned"],
        )
    finally:
        await close_quietly(conn)


async def read_only_state(session: Session) -> tuple[VersionState, dict[int, HistoryEntry]]:
    """The version and history for a reader (version, status, drift), creating nothing:
    golang-migrate's version table alone is enough (no history: every row unknown)."""
    if session.tables_exist:
        return await read_state(session.conn, session.table)
    if session.versioned:
        return await read_version(session.conn, session.table), {}
    return VersionState(None, False), {}


async def _probe(
    conn: Any, probe_sql: str, with_state: str | None
) -> tuple[Any, tuple[VersionState, dict[int, HistoryEntry]] | None]:
    """The probe's row, and the version and history of table ``with_state`` if asked
    and there."""
    if with_state is not None:
        try:
            rows = await conn.fetch(
                f"SELECT p.*, st.* FROM ({probe_sql}) AS p "
                f"CROSS JOIN ({state_and_history(with_state)}) AS st"
            )
            return rows[0], state_from_rows(rows)
        except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError):
            pass  # never migrated (or history from before the breaking mark)
    return await conn.fetchrow(probe_sql), None


@contextlib.asynccontextmanager
async def locked_session(
    dsn: str,
    *,
    attempts: int = CONNECT_ATTEMPTS,
    wait: float = CONNECT_WAIT,
    lock_timeout: float,
    ensure: bool = True,
    table: str = VERSION_TABLE,
) -> AsyncIterator[Session]:
    """A session holding the migration lock, the version tables created if missing."""
    async with (
        open_session(dsn, attempts=attempts, wait=wait, table=table) as session,
        session.lock(lock_timeout),
    ):
        if ensure:
            with typed_errors(dsn, create_tables(session.table)):
                await ensure_tables(session.conn, session.table)
        yield session

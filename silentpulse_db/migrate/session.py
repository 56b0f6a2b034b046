"""A migration session: one connection, what start-up must know before locking, the lock."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import asyncpg

from ..defaults import CONNECT_ATTEMPTS, CONNECT_WAIT, ENGINE_SESSION_SETTINGS
from ..postgres.connect import close_quietly, connect_settled
from ..postgres.pooler import Pooling
from ..postgres.translate import typed_errors
from .migration_lock import LockKeys, MigrationLock, lock_keys_for
from .version_table import (
    CORE,
    HISTORY_TABLE,
    THIS_RELEASE,
    VERSION_TABLE,
    Found,
    State,
    VersionStore,
    VersionTable,
    found_columns,
    found_in,
)


def create_tables(table: VersionTable) -> str:
    """What ensuring the tables is called in a permission error."""
    return f"create the version tables ({table.name}, {HISTORY_TABLE})"


class Session(NamedTuple):
    """A connection, the migration lock's keys, and what of the version tables exists."""

    # A NamedTuple, not a dataclass: cheaper to create at start-up (plan.py says why).

    conn: Any
    keys: LockKeys
    # The version table, the history, and the history's layout, as the probe found them.
    found: Found
    # Whether the probe found the work after applying due (None: not asked).
    after_due: bool | None = None
    # The version and history, read together with the probe (``with_state``), if they
    # exist in this release's layout.
    state: State | None = None
    # The set's version table, in current_schema() on connecting (a migration may move
    # the session's search_path; the runner's version writes stay there).
    table: VersionTable = CORE
    # Seconds spent connecting (the waits for a server that was not up yet, settling the
    # session and the probe included), and when that was done (time.perf_counter()).
    connecting: float = 0.0
    connected: float = 0.0
    # Through a connection pooler in session mode: lock holders' pids and addresses
    # are the pooler's server connections.
    pooled: bool = False
    # The citus extension is installed (a Citus coordinator): the runner sends a
    # migration's statements one by one (run/in_transaction.py says why).
    citus: bool = False

    @property
    def tables_exist(self) -> bool:
        """Both tables exist: this engine has run here."""
        return self.found.migrated

    @property
    def versioned(self) -> bool:
        """The version table exists, with or without our history beside it: a database
        only golang-migrate has run has a version and no history."""
        return self.found.versioned

    @property
    def store(self) -> VersionStore:
        """The set's version table and history on this connection, read as found."""
        return VersionStore(self.conn, self.table, self.found)

    def lock(self, timeout: float) -> MigrationLock:
        return MigrationLock(self.conn, self.keys, timeout=timeout, pooled=self.pooled)


# Whether the citus extension is installed in this database: its metadata tables are in
# pg_catalog from CREATE EXTENSION on. Asked in the probe, a cache lookup as its other
# to_regclass items are (an EXISTS on pg_extension cost ~7x as much to plan), rather than
# when there is work: plain PostgreSQL pays no round trip for it.
_CITUS = "to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL"

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
    tables, or with an older release's history, that query fails once and the plain
    probe follows.
    """
    state: State | None = None

    async def probe(conn: Any, settling: str) -> Any:
        """The session's first query: connect_settled's items (the library's own session
        settings, in this round trip rather than one more: docs/operations.md,
        'Role-level limits') and the probe's."""
        nonlocal state
        probe_sql = (
            f"SELECT {settling}, current_schema() AS schema, current_database() AS db, "
            f"{after_probe or 'NULL::boolean'} AS after_due, {_CITUS} AS citus"
        )
        row, state = await _probe(conn, probe_sql, table, with_state)
        return row

    before = time.perf_counter()
    conn, pooling, row = await connect_settled(
        dsn,
        ENGINE_SESSION_SETTINGS,
        need=MIGRATIONS_NEED_A_SESSION,
        attempts=attempts,
        wait=wait,
        first=probe,
    )
    connected = time.perf_counter()
    try:
        yield Session(
            conn,
            lock_keys_for(row["db"], row["schema"], table),
            found_in(row),
            row["after_due"],
            state,
            VersionTable(table, row["schema"]),
            connecting=connected - before,
            connected=connected,
            pooled=pooling is not Pooling.DIRECT,
            citus=row["citus"],
        )
    finally:
        await close_quietly(conn)


async def read_only_state(session: Session) -> State:
    """The version and history for a reader (version, status, drift), creating nothing
    (VersionStore.state)."""
    return await session.store.state()


async def _probe(
    conn: Any, probe_sql: str, table: str, with_state: bool
) -> tuple[Any, State | None]:
    """The probe's row (with what of ``table`` and the history is there), and their
    version and history if ``with_state`` and there in this release's layout."""
    if with_state:
        try:
            columns = found_columns(table, layout=False)  # a state read proves the layout
            state, row = await VersionStore(conn, VersionTable(table)).state_beside(
                f"{probe_sql}, {columns}"
            )
            return row, state
        except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError):
            pass  # never migrated, or an older release's history (the lock's ensure says)
    return await conn.fetchrow(f"{probe_sql}, {found_columns(table)}"), None


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
                await session.store.ensure()
            session = session._replace(found=THIS_RELEASE)
        yield session

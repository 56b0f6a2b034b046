"""A migration session: one connection, what start-up must know before locking, and the
migration lock it holds (golang-migrate's driver opens, locks and unlocks in one place too).

The lock's keys are golang-migrate's, for the database and schema: it locks
``crc32(schema \\0 table \\0 database_name) * 1486364155 mod 2**32`` with
``pg_advisory_lock``. Its CLI uses the URL path (``/db``) as the database name and an
embedded driver uses ``CURRENT_DATABASE()`` (``db``), so we take both keys, always the
URL-path key first, and no golang-migrate peer of either kind can run beside us.

We wait with ``pg_try_advisory_lock`` in a loop rather than a blocking
``pg_advisory_lock``: a backend blocked on the lock holds a snapshot, and that would
make the lock holder's ``CREATE INDEX CONCURRENTLY`` wait for it. A waiter LISTENs on a
channel that our holders NOTIFY when they release the lock, so it tries again at once
instead of at its next poll; the poll stays, for holders that do not notify
(golang-migrate).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import zlib
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import asyncpg

from ..defaults import (
    ENGINE_SESSION_SETTINGS,
    LOCK_POLL_FIRST,
    LOCK_POLL_MAX,
    MIGRATION_LOCK_TIMEOUT,
)
from ..errors import LockHolder, LockTimeoutError
from ..postgres.advisory import advisory_lock_holders
from ..postgres.connect import close_quietly, connect_settled
from ..postgres.pooler import Pooling
from ..postgres.translate import typed_errors
from ..settings import DEFAULT_CONNECT, ConnectRetry
from ..timeouts import event_set_within
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

logger = logging.getLogger("silentpulse_db.migrate")


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
    # How long a statement on the version tables waits for another session's lock on
    # them (VersionStore's ``wait``): the migration lock's wait.
    wait: float = MIGRATION_LOCK_TIMEOUT

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
        return VersionStore(self.conn, self.table, self.found, wait=self.wait)

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
    connect: ConnectRetry = DEFAULT_CONNECT,
    *,
    after_probe: str | None = None,
    with_state: bool = False,
    table: str = VERSION_TABLE,
    lock_wait: float = MIGRATION_LOCK_TIMEOUT,
) -> AsyncIterator[Session]:
    """Connect (retrying as ``connect`` says) and probe schema, database and the version
    tables in one query.

    ``table``: the set's version table (its lock keys follow golang-migrate's formula
    for it). ``lock_wait``: how long a statement on the version tables, this probe's
    included, waits for another session's lock on them (Session.wait).

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
        row, state = await _probe(conn, probe_sql, VersionTable(table), with_state, lock_wait)
        return row

    before = time.perf_counter()
    conn, pooling, row = await connect_settled(
        dsn,
        ENGINE_SESSION_SETTINGS,
        need=MIGRATIONS_NEED_A_SESSION,
        retry=connect,
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
            wait=lock_wait,
        )
    finally:
        await close_quietly(conn)


async def read_only_state(session: Session) -> State:
    """The version and history for a reader (version, status, baseline), creating nothing
    (VersionStore.state)."""
    return await session.store.state()


async def _probe(
    conn: Any, probe_sql: str, table: VersionTable, with_state: bool, wait: float
) -> tuple[Any, State | None]:
    """The probe's row (with what of ``table`` and the history is there), and their
    version and history if ``with_state`` and there in this release's layout."""
    if with_state:
        try:
            columns = found_columns(table.name, layout=False)  # a state read proves the layout
            store = VersionStore(conn, table, wait=wait)
            state, row = await store.state_beside(f"{probe_sql}, {columns}")
            return row, state
        except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError):
            pass  # never migrated, or an older release's history (the lock's ensure says)
    return await conn.fetchrow(f"{probe_sql}, {found_columns(table.name)}"), None


@contextlib.asynccontextmanager
async def locked_session(
    dsn: str,
    connect: ConnectRetry = DEFAULT_CONNECT,
    *,
    migration_lock_timeout: float,
    ensure: bool = True,
    table: str = VERSION_TABLE,
) -> AsyncIterator[Session]:
    """A session holding the migration lock, the version tables created if missing."""
    async with (
        open_session(dsn, connect, table=table, lock_wait=migration_lock_timeout) as session,
        session.lock(migration_lock_timeout),
    ):
        if ensure:
            with typed_errors(dsn, create_tables(session.table)):
                await session.store.ensure()
            session = session._replace(found=THIS_RELEASE)
        yield session


# --- the migration lock ---------------------------------------------------------------

ADVISORY_LOCK_SALT = 1486364155


def golang_migrate_lock_key(database_name: str, schema: str, table: str = VERSION_TABLE) -> int:
    """The key golang-migrate's GenerateAdvisoryLockId computes."""
    joined = "\x00".join((schema, table, database_name)).encode()
    return (zlib.crc32(joined) * ADVISORY_LOCK_SALT) % 2**32


class LockKeys(NamedTuple):
    url_path: int  # the CLI's key: database name with its leading slash
    current_database: int  # an embedded driver's key: CURRENT_DATABASE()

    @property
    def ordered(self) -> tuple[int, ...]:
        # Same order everywhere, so two of our runners never deadlock.
        return tuple(dict.fromkeys((self.url_path, self.current_database)))


def lock_keys_for(database: str, schema: str, table: str = VERSION_TABLE) -> LockKeys:
    """Both golang-migrate keys for ``database`` (its name without a slash), ``schema``
    and the version ``table``."""
    return LockKeys(
        url_path=golang_migrate_lock_key("/" + database, schema, table),
        current_database=golang_migrate_lock_key(database, schema, table),
    )


class MigrationLock:
    """Holds both golang-migrate keys on one session connection.

    ``async with lock:`` waits for it. The engine waits step by step instead, asking
    between two tries whether another replica has done its work meanwhile::

        while not await lock.try_take():
            await lock.pause()          # LockTimeoutError past the timeout
            ...                         # nothing left? lock.release(), leave
        await lock.stop_waiting()

    then :meth:`release` when done.
    """

    def __init__(self, conn: Any, keys: LockKeys, *, timeout: float, pooled: bool = False) -> None:
        self._conn = conn
        self._keys = keys
        self._timeout = timeout
        self._pooled = pooled  # our session goes through a pooler (session mode)
        self._held: list[int] = []
        # One channel per lock (database and schema): NOTIFY reaches this database only.
        self._channel = f"silentpulse_migration_lock_{keys.url_path}"
        self._released = asyncio.Event()
        self._deadline: float | None = None  # set once it has to wait
        self._delay = LOCK_POLL_FIRST

    async def __aenter__(self) -> MigrationLock:
        try:
            while not await self.try_take():
                await self.pause()
        finally:
            await self.stop_waiting()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.release()

    async def try_take(self) -> bool:
        """Try the keys not held yet, in order; True once both are ours."""
        for key in self._keys.ordered[len(self._held) :]:
            if not await self._conn.fetchval("SELECT pg_try_advisory_lock($1::bigint)", key):
                return False
            self._held.append(key)
        return True

    async def pause(self) -> None:
        """Before the next try. The first time: LISTEN for the holder's release and come
        back at once (a release between our try and our LISTEN told no one). Then: until
        a release is heard or the poll's delay passes; past the timeout, release what we
        hold and raise LockTimeoutError naming the holders."""
        if self._deadline is None:
            self._deadline = time.monotonic() + self._timeout
            logger.info("waiting for the migration lock (key %d)", self._waiting_for())
            await self._conn.add_listener(self._channel, self._on_release)
            return
        if time.monotonic() >= self._deadline:
            holders = await lock_holders(self._conn, self._keys, self._pooled)
            await self.release()
            raise LockTimeoutError(
                _timeout_message(self._timeout, holders, self._pooled), holders=holders
            )
        await self._pause(min(self._delay, max(self._deadline - time.monotonic(), 0)))
        self._delay = min(self._delay * 1.5, LOCK_POLL_MAX)

    async def stop_waiting(self) -> None:
        """Done waiting (the lock taken, or given up): UNLISTEN if it listened."""
        if self._deadline is None:
            return
        if not self._conn.is_closed():
            await self._conn.remove_listener(self._channel, self._on_release)
        if len(self._held) == len(self._keys.ordered):
            logger.info("migration lock acquired")

    def _waiting_for(self) -> int:
        return self._keys.ordered[len(self._held)]

    def _on_release(self, *_args: object) -> None:
        self._released.set()

    async def _pause(self, seconds: float) -> None:
        """Until the holder says it released the lock, or ``seconds`` (with jitter, so
        that many replicas do not poll in lock-step) as a fallback."""
        await event_set_within(self._released, seconds * random.uniform(0.5, 1.0))
        self._released.clear()

    async def release(self, *, notify: bool = True) -> None:
        """Unlock, and tell the waiters (one message: the NOTIFY goes out as the unlock's
        implicit transaction commits)."""
        held, self._held = self._held, []
        if not held or self._conn.is_closed():
            return  # session locks end with the session
        # Keys are integers we computed: safe to inline, and one simple-protocol
        # round trip is cheaper than a prepared statement per key.
        unlock = ", ".join(f"pg_advisory_unlock({int(key)}::bigint)" for key in reversed(held))
        tell = f"; NOTIFY {self._channel}" if notify else ""
        try:
            await self._conn.execute(f"SELECT {unlock}{tell}")
        except Exception as exc:  # a lost connection releases the locks server-side
            logger.debug("could not release the migration lock: %s", exc)


async def lock_holders(conn: Any, keys: LockKeys, pooled: bool = False) -> list[LockHolder]:
    """Backends other than ours holding either migration key (``pooled``: our session
    goes through a pooler, whose holders are marked)."""
    return await advisory_lock_holders(conn, keys.ordered, pooled=pooled)


def _timeout_message(timeout: float, holders: list[LockHolder], pooled: bool) -> str:
    if not holders:
        who = "the holder has gone away since; try again"
    else:
        who = "held by " + "; ".join(str(h) for h in holders)
    if pooled:
        who += (
            ". This session goes through a connection pooler: a pid above is a "
            "PostgreSQL backend, and a holder through a pooler is one of its server "
            "connections, not the process (PgBouncer's SHOW CLIENTS / SHOW SERVERS on "
            "its admin console pair them)"
        )
    what = (
        ". Another migration run (or golang-migrate's CLI) holds it while it works: wait for "
        "it, or give it longer (--migration-lock-timeout). Any role may take an advisory "
        "lock: a session that is no runner holding it (its role and application above) is "
        "in the way, and ending it (SELECT pg_terminate_backend(pid)) frees the lock"
        if holders
        else ""
    )
    return f"timed out after {timeout:g}s waiting for the migration lock: {who}{what}"

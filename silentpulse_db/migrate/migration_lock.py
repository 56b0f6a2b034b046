"""The migration lock, shared with golang-migrate: its keys, and waiting for them.

The keys are golang-migrate's, for the database and schema: it locks
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
import logging
import random
import time
import zlib
from typing import Any, NamedTuple

from ..defaults import LOCK_POLL_FIRST, LOCK_POLL_MAX
from ..errors import LockHolder, LockTimeoutError
from ..postgres.advisory import advisory_lock_holders
from ..timeouts import event_set_within
from .version_table import VERSION_TABLE

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


logger = logging.getLogger("silentpulse_db.migrate")


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
    return f"timed out after {timeout:g}s waiting for the migration lock: {who}"

"""The migration lock: golang-migrate's advisory lock keys, taken by polling.

golang-migrate locks ``crc32(schema \\0 table \\0 database_name) * 1486364155 mod 2**32``
with ``pg_advisory_lock``. Its CLI uses the URL path (``/db``) as the database
name and an embedded driver uses ``CURRENT_DATABASE()`` (``db``), so we take
both keys, always URL-path key first, and no golang-migrate peer of either
kind can run beside us.

We wait with ``pg_try_advisory_lock`` in a loop rather than a blocking
``pg_advisory_lock``: a backend blocked on the lock holds a snapshot, and
that would make the lock holder's ``CREATE INDEX CONCURRENTLY`` wait for it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .errors import LockHolder, LockTimeoutError

logger = logging.getLogger("silentpulse_db.lock")

ADVISORY_LOCK_SALT = 1486364155
VERSION_TABLE = "schema_migrations"
MAX_POLL_INTERVAL = 0.25  # seconds between two tries at most, while waiting


def golang_migrate_lock_key(database_name: str, schema: str, table: str = VERSION_TABLE) -> int:
    """The key golang-migrate's GenerateAdvisoryLockId computes."""
    joined = "\x00".join((schema, table, database_name)).encode()
    return (zlib.crc32(joined) * ADVISORY_LOCK_SALT) % 2**32


@dataclass(frozen=True)
class LockKeys:
    url_path: int  # the CLI's key: database name with its leading slash
    current_database: int  # an embedded driver's key: CURRENT_DATABASE()

    @property
    def ordered(self) -> tuple[int, ...]:
        # Same order everywhere, so two of our runners never deadlock.
        return tuple(dict.fromkeys((self.url_path, self.current_database)))


def lock_keys_for(database: str, schema: str) -> LockKeys:
    """Both golang-migrate keys for ``database`` (its name without a slash) and ``schema``."""
    return LockKeys(
        url_path=golang_migrate_lock_key("/" + database, schema),
        current_database=golang_migrate_lock_key(database, schema),
    )


async def lock_keys(conn: Any) -> LockKeys:
    row = await conn.fetchrow("SELECT current_schema() AS schema, current_database() AS db")
    return lock_keys_for(row["db"], row["schema"])


class MigrationLock:
    """Holds both golang-migrate keys on one session connection.

    ``stop_waiting``, if given, is asked between polls; when it answers True the
    lock stops waiting without taking the keys (``acquired`` stays False): a
    replica whose work another one has just done need not queue for nothing.
    """

    def __init__(
        self,
        conn: Any,
        keys: LockKeys,
        *,
        timeout: float,
        stop_waiting: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self._conn = conn
        self._keys = keys
        self._timeout = timeout
        self._stop_waiting = stop_waiting
        self._held: list[int] = []
        self.acquired = False

    async def __aenter__(self) -> MigrationLock:
        await self.acquire()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.release()

    async def acquire(self) -> None:
        deadline = time.monotonic() + self._timeout
        delay = 0.02
        waited = False
        for key in self._keys.ordered:
            while not await self._conn.fetchval("SELECT pg_try_advisory_lock($1::bigint)", key):
                if not waited:
                    logger.info("waiting for the migration lock (key %d)", key)
                    waited = True
                if self._stop_waiting is not None and await self._stop_waiting():
                    logger.info("stopped waiting for the migration lock: nothing left to do")
                    await self.release()
                    return
                if time.monotonic() >= deadline:
                    holders = await lock_holders(self._conn, self._keys)
                    await self.release()
                    raise LockTimeoutError(
                        _timeout_message(self._timeout, holders), holders=holders
                    )
                # Jitter keeps many replicas from polling in lock-step.
                await asyncio.sleep(
                    min(delay, max(deadline - time.monotonic(), 0)) * random.uniform(0.5, 1.0)
                )
                delay = min(delay * 1.5, MAX_POLL_INTERVAL)
            self._held.append(key)
        self.acquired = True
        if waited:
            logger.info("migration lock acquired")

    async def release(self) -> None:
        held, self._held = self._held, []
        if not held or self._conn.is_closed():
            return  # session locks end with the session
        # Keys are integers we computed: safe to inline, and one simple-protocol
        # round trip is cheaper than a prepared statement per key.
        unlock = ", ".join(f"pg_advisory_unlock({int(key)}::bigint)" for key in reversed(held))
        try:
            await self._conn.execute(f"SELECT {unlock}")
        except Exception as exc:  # a lost connection releases the locks server-side
            logger.debug("could not release the migration lock: %s", exc)


async def lock_holders(conn: Any, keys: LockKeys) -> list[LockHolder]:
    """Backends other than ours holding either key, from pg_locks and pg_stat_activity."""
    rows = await conn.fetch(
        """
        SELECT l.pid, coalesce(a.application_name, '') AS application_name,
               l.objid::bigint AS key, a.state, host(a.client_addr) AS client_addr
        FROM pg_locks l
        LEFT JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objsubid = 1
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND l.objid::bigint = ANY($1::bigint[]) AND l.pid <> pg_backend_pid()
        ORDER BY l.pid
        """,
        list(keys.ordered),
    )
    return [
        LockHolder(
            pid=r["pid"],
            application_name=r["application_name"],
            key=r["key"],
            state=r["state"],
            client_addr=r["client_addr"],
        )
        for r in rows
    ]


def _timeout_message(timeout: float, holders: list[LockHolder]) -> str:
    if not holders:
        who = "the holder has gone away since; try again"
    else:
        who = "held by " + ", ".join(
            f"pid {h.pid} (application_name {h.application_name or '<none>'!r}"
            f"{', client ' + h.client_addr if h.client_addr else ''}, key {h.key})"
            for h in holders
        )
    return f"timed out after {timeout:g}s waiting for the migration lock: {who}"

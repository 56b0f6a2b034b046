"""A migration session: one connection, holding the migration lock, tables ensured."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from .connect import connect
from .lock import LockKeys, MigrationLock, lock_keys_for
from .version_table import HISTORY_TABLE, VERSION_TABLE, ensure_tables

logger = logging.getLogger("silentpulse_db.session")


@dataclass(frozen=True)
class Session:
    """A connection with what start-up needs to know before locking."""

    conn: Any
    keys: LockKeys
    tables_exist: bool


async def open_session(dsn: str, *, attempts: int = 30, wait: float = 2.0) -> Session:
    """Connect (with retries) and probe schema, database and the version tables in one query."""
    conn = await connect(
        dsn,
        attempts=attempts,
        wait=wait,
        # If this process dies mid-migration (SIGKILL, lost pod), the server
        # notices the closed socket within seconds, rolls back and frees the
        # lock, instead of finishing a long statement for nobody. (PG 14+)
        server_settings={"client_connection_check_interval": "2s"},
    )
    try:
        probe = await conn.fetchrow(
            "SELECT current_schema() AS schema, current_database() AS db, "
            "to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL AS ready",
            VERSION_TABLE,
            HISTORY_TABLE,
        )
    except BaseException:
        await close_quietly(conn)
        raise
    return Session(conn, lock_keys_for(probe["db"], probe["schema"]), probe["ready"])


@contextlib.asynccontextmanager
async def locked_connection(
    dsn: str,
    *,
    attempts: int = 30,
    wait: float = 2.0,
    lock_timeout: float = 60.0,
    ensure: bool = True,
) -> AsyncIterator[Any]:
    """Connect (with retries), take both migration lock keys, create the tables if missing."""
    session = await open_session(dsn, attempts=attempts, wait=wait)
    try:
        async with MigrationLock(session.conn, session.keys, timeout=lock_timeout):
            if ensure and not session.tables_exist:
                await ensure_tables(session.conn)
            yield session.conn
    finally:
        await close_quietly(session.conn)


async def close_quietly(conn: Any) -> None:
    if not conn.is_closed():
        try:
            await conn.close(timeout=5)
        except Exception:  # the server may be gone: drop the socket without a goodbye
            conn.terminate()

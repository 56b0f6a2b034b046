"""A migration session: one connection, holding the migration lock, tables ensured."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from .connect import connect
from .lock import MigrationLock, lock_keys
from .version_table import ensure_tables

logger = logging.getLogger("silentpulse_db.session")


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
    conn = await connect(dsn, attempts=attempts, wait=wait)
    try:
        if conn.get_server_version().major >= 14:
            # If this process dies mid-migration (SIGKILL, lost pod), the server
            # notices the closed socket within seconds, rolls back and frees the
            # lock, instead of finishing a long statement for nobody.
            await conn.execute("SET client_connection_check_interval = '2s'")
        async with MigrationLock(conn, await lock_keys(conn), timeout=lock_timeout):
            if ensure:
                await ensure_tables(conn)
            yield conn
    finally:
        if not conn.is_closed():
            try:
                await conn.close(timeout=5)
            except Exception:  # the server may be gone: drop the socket without a goodbye
                conn.terminate()

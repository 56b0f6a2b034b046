"""What the listener's first connection makes sure of before it delivers anything."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..errors import RequiredVersionError, RowSecurityError
from ..migrate.version_table import VERSION_TABLE
from ..postgres.roles import session_role
from .log import HAS_LOG, LOG_TABLE, LOG_VERSION

logger = logging.getLogger("silentpulse_db.listener")


async def require_every_row(conn: Any) -> None:
    """A role that row-level security limits would read no tenant's changes, and say
    nothing: refused."""
    role = await session_role(conn)
    if not role.bypasses_rls:
        raise RowSecurityError(
            f"role {role.name!r} cannot listen for alerts: row-level security limits what "
            f"it reads (no BYPASSRLS), so it would deliver nothing and say nothing. Connect "
            f"as the deployment's jobs role, the role with BYPASSRLS (docs/operations.md).",
            role=role.name,
        )


async def wait_for_the_log(conn: Any, attempts: int, wait: float) -> None:
    """A database without the log yet (the API not deployed yet) is waited for, as a
    migration's ``requires`` waits: ``attempts`` times ``wait`` seconds apart."""
    for number in range(1, attempts + 1):
        # The catalog, not schema_migrations: the listener's role need not read it.
        if await conn.fetchval(HAS_LOG):
            return
        message = (
            f"the alert listener reads the alert change log, which core migration "
            f"{LOG_VERSION:06d} creates, and this database has no {LOG_TABLE} yet: it "
            f"starts once the core migrations are applied (the API's run_migrations, or "
            f"`silentpulse-db up`)"
        )
        if number >= attempts:
            raise RequiredVersionError(
                message,
                file="listen_alerts",
                table=VERSION_TABLE,
                version=LOG_VERSION,
                found=f"no {LOG_TABLE}",
            )
        logger.warning(
            "%s; trying again in %.1fs (attempt %d of %d)", message, wait, number, attempts
        )
        await asyncio.sleep(wait)

"""`make demo`: a throwaway PostgreSQL, prerequisites, migrations, `status`, and stop.

Shows on a fresh machine, with no server running, what a service's start-up
does to its database. Run with ``python -m silentpulse_db.demo``.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from . import apply_prerequisites, run_migrations
from .cli import format_status
from .migrator import Migrator
from .session import locked_connection
from .source import load_source
from .testing.server import PostgresServer


async def _demo(dsn: str) -> None:
    prerequisites = await apply_prerequisites(dsn)
    print(f"prerequisites: extensions {', '.join(prerequisites.installed)}")
    for name in prerequisites.unavailable_optional:
        print(f"prerequisites: optional extension {name!r} not available here (skipped)")
    result = await run_migrations(dsn)
    for applied in result.applied:
        print(f"applied {applied}")
    async with locked_connection(dsn) as conn:
        migrator = Migrator(conn, load_source())
        print()
        print(format_status(await migrator.status()))
        print(f"current version: {await migrator.state()}")


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with PostgresServer() as server:
        print(f"throwaway PostgreSQL on port {server.port}")
        asyncio.run(_demo(server.dsn))
    print("server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

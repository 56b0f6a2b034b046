"""pytest plugin (auto-loaded through the ``pytest11`` entry point).

Fixtures, for this project's tests and the services' own:

- ``silentpulse_postgres`` (session): a :class:`PostgresServer` — a throwaway
  PostgreSQL started on first use and stopped at the end of the session, or the
  server named by ``SILENTPULSE_TEST_DSN``.
- ``silentpulse_database``: DSN of a fresh, empty database, dropped after the test.
- ``silentpulse_migrated_database``: DSN of a fresh database with the prerequisites and every
  packaged migration applied. The migrations run once per session into a
  template database; each test gets a ``CREATE DATABASE ... TEMPLATE`` copy.

Nothing starts unless a test asks for one of these.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from .server import PostgresServer, create_database, drop_database, run_sync

TEMPLATE_PREFIX = "silentpulse_template"


def _unique(prefix: str) -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return f"{prefix}_{worker}{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def silentpulse_postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture
def silentpulse_database(silentpulse_postgres: PostgresServer) -> Iterator[str]:
    name = _unique("test")
    dsn = create_database(silentpulse_postgres.dsn, name)
    try:
        yield dsn
    finally:
        drop_database(silentpulse_postgres.dsn, name)


@pytest.fixture(scope="session")
def silentpulse_migrated_template(silentpulse_postgres: PostgresServer) -> Iterator[str]:
    """Name of a database holding the fully migrated schema, built once per session."""
    from ..migrate.commands import apply_prerequisites, run_migrations

    name = _unique(TEMPLATE_PREFIX)
    dsn = create_database(silentpulse_postgres.dsn, name)

    async def migrate() -> None:
        await apply_prerequisites(dsn)
        await run_migrations(dsn)

    try:
        run_sync(migrate())
        yield name
    finally:
        drop_database(silentpulse_postgres.dsn, name)


@pytest.fixture
def silentpulse_migrated_database(
    silentpulse_postgres: PostgresServer, silentpulse_migrated_template: str
) -> Iterator[str]:
    name = _unique("migrated")
    dsn = create_database(silentpulse_postgres.dsn, name, template=silentpulse_migrated_template)
    try:
        yield dsn
    finally:
        drop_database(silentpulse_postgres.dsn, name)

"""pytest plugin (auto-loaded through the ``pytest11`` entry point).

Fixtures, for this project's tests and the services' own:

- ``postgres_server`` (session): a :class:`PostgresServer` — a throwaway
  PostgreSQL started on first use and stopped at the end of the session, or the
  server named by ``SILENTPULSE_TEST_DSN``.
- ``database_dsn``: DSN of a fresh, empty database, dropped after the test.
- ``migrated_dsn``: DSN of a fresh database with the prerequisites and every
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
def postgres_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture
def database_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    name = _unique("test")
    dsn = create_database(postgres_server.dsn, name)
    try:
        yield dsn
    finally:
        drop_database(postgres_server.dsn, name)


@pytest.fixture(scope="session")
def migrated_template(postgres_server: PostgresServer) -> Iterator[str]:
    """Name of a database holding the fully migrated schema, built once per session."""
    from .. import apply_prerequisites, run_migrations

    name = _unique(TEMPLATE_PREFIX)
    dsn = create_database(postgres_server.dsn, name)

    async def migrate() -> None:
        await apply_prerequisites(dsn)
        await run_migrations(dsn)

    try:
        run_sync(migrate())
        yield name
    finally:
        drop_database(postgres_server.dsn, name)


@pytest.fixture
def migrated_dsn(postgres_server: PostgresServer, migrated_template: str) -> Iterator[str]:
    name = _unique("migrated")
    dsn = create_database(postgres_server.dsn, name, template=migrated_template)
    try:
        yield dsn
    finally:
        drop_database(postgres_server.dsn, name)

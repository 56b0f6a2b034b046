"""Through PgBouncer (issue 21, first part): nothing the library sends at start-up may be
outside what PgBouncer passes by default, and migrations work in session pooling.

Debian's pgbouncer runs in front of the throwaway server; .ci/run installs it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit

import asyncpg
import pytest

from silentpulse_db import run_migrations
from silentpulse_db.migrate import apply_prerequisites, load_source, version
from silentpulse_db.settings import ConnectRetry
from silentpulse_db.testing import PostgresServer

from bouncer import needs_pgbouncer, running_bouncer
from helpers import fetch, fetchval, login_role

pytestmark = needs_pgbouncer


@pytest.fixture
def bouncer(silentpulse_postgres: PostgresServer, silentpulse_database: str) -> Iterator[str]:
    """``silentpulse_database`` through PgBouncer, as the superuser."""
    server = silentpulse_postgres
    database = silentpulse_database.rsplit("/", 1)[1]
    with running_bouncer(server, database, server.user, server.password) as dsn:
        yield dsn


async def test_migrations_through_session_pooling(bouncer: str) -> None:
    """Every connection failed before it started: the library sent
    client_connection_check_interval as a startup parameter, which PgBouncer refuses."""
    assert (await version(bouncer, connect=ConnectRetry(attempts=1))).version is None
    await apply_prerequisites(bouncer, connect=ConnectRetry(attempts=1))
    # Five replicas at once, each through the bouncer: each version applied once.
    results = await asyncio.gather(
        *(run_migrations(bouncer, connect=ConnectRetry(attempts=1)) for _ in range(5))
    )
    latest = load_source().latest
    assert {r.version_after for r in results} == {latest}
    assert sorted(len(r.applied) for r in results) == [0, 0, 0, 0, latest]
    rows = await fetch(
        bouncer,
        "SELECT version, count(*) AS n FROM schema_migrations_history "
        "WHERE direction = 'up' GROUP BY version HAVING count(*) > 1",
    )
    assert rows == []


async def test_the_dead_client_check_is_set_after_connecting(
    bouncer: str, silentpulse_database: str
) -> None:
    """What the engine needs it sets after connecting (the probe's round trip): through
    the bouncer, the migrating session has it; nothing went in the startup packet."""
    from silentpulse_db.migrate.session import open_session

    async with open_session(bouncer, ConnectRetry(attempts=1)) as session:
        assert await session.conn.fetchval("SHOW client_connection_check_interval") == "2s"
    conn = await asyncpg.connect(bouncer)  # a plain client: what PgBouncer passes by default
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


async def test_migrations_through_the_bouncer_as_an_owner_that_is_no_superuser(
    silentpulse_postgres: PostgresServer, silentpulse_database: str
) -> None:
    """The deployment's owner role (docs/operations.md: CREATE on the schema, nothing
    more), the extensions made beforehand by a superuser, migrating through PgBouncer."""
    await apply_prerequisites(silentpulse_database)
    grants = "GRANT CREATE, USAGE ON SCHEMA public TO {role};"
    async with login_role(silentpulse_database, grants, prefix="owner") as (role, dsn):
        password = unquote(urlsplit(dsn).password or "")
        database = silentpulse_database.rsplit("/", 1)[1]
        with running_bouncer(silentpulse_postgres, database, role, password) as through:
            result = await run_migrations(through, connect=ConnectRetry(attempts=1))
            assert result.version_after == load_source().latest
            assert (
                await fetchval(
                    through, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                )
                is False
            )
            assert (await run_migrations(through, connect=ConnectRetry(attempts=1))).applied == ()

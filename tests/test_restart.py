"""A database that cannot serve, seen through tenant_transaction (issue 27, 1): a restart
under traffic, a server down before the pool connects, a connection lost mid-block or
while COMMIT is in flight, no connection slot left. Only typed errors, saying whether a
retry can help; the caller's own errors pass unchanged; the pool recovers on its own.

The restarts use a server of this module's own (the session's serves other tests)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any, NamedTuple
from urllib.parse import quote, urlsplit

import asyncpg
import pytest
from schema.seed import seed_tenant

from silentpulse_db import (
    DatabaseConnectionError,
    InvalidArgumentError,
    SilentPulseDBError,
    create_pool,
    run_migrations,
    tenant_transaction,
)
from silentpulse_db.errors import CommitOutcomeUnknownError, DatabaseUnavailableError
from silentpulse_db.migrate import apply_prerequisites
from silentpulse_db.testing import PostgresServer
from silentpulse_db.testing.plugin import APP_GRANTS
from silentpulse_db.testing.server import run_sync

from helpers import login_role, wait_for

# Generous: a bound on waiting for a condition, not a measure of anything.
PATIENCE = 120.0
TASKS = 4


class OwnServer(NamedTuple):
    server: PostgresServer
    app_dsn: str  # the migrated database as an app role (no SUPERUSER, no BYPASSRLS)
    password: str  # the app role's, which no error may show
    tenants: tuple[uuid.UUID, ...]


@pytest.fixture(scope="module")
def own() -> Iterator[OwnServer]:
    """A throwaway server of this module's, migrated, with an app role and two tenants."""
    server = PostgresServer()
    if server.external:
        pytest.skip("restarts a server of its own; SILENTPULSE_TEST_DSN names a shared one")
    with server:
        run_sync(_prepare(server.dsn))
        password = uuid.uuid4().hex
        app_dsn = _as(server.dsn, "restart_app", password)
        tenants = run_sync(_seed(server.dsn, password))
        yield OwnServer(server, app_dsn, password, tenants)


async def _prepare(dsn: str) -> None:
    await apply_prerequisites(dsn)
    await run_migrations(dsn)


async def _seed(dsn: str, password: str) -> tuple[uuid.UUID, ...]:
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f"CREATE ROLE restart_app LOGIN PASSWORD '{password}'")
        await admin.execute(APP_GRANTS.format(role="restart_app"))
        return tuple([(await seed_tenant(admin, h))["tenants"] for h in ("alpha", "bravo")])
    finally:
        await admin.close()


def _as(dsn: str, role: str, password: str) -> str:
    parts = urlsplit(dsn)
    return parts._replace(netloc=f"{role}:{quote(password)}@{parts.hostname}:{parts.port}").geturl()


def _pg_ctl(server: PostgresServer, *args: str) -> None:
    """pg_ctl on the server, as its OS user (server.py's way), logging where start does."""
    server._pg_ctl(*args, "-w", "-t", "60", "-l", str(server.datadir.parent / "server.log"))


def _typed_and_clean(failures: list[BaseException], password: str) -> None:
    """Every failure is a DatabaseUnavailableError, retryable unless its COMMIT was in
    flight, and shows no password."""
    untyped = [f"{type(f).__name__}: {f}" for f in failures if not isinstance(f, Exception)]
    untyped += [
        f"{type(f).__module__}.{type(f).__name__}: {f}"
        for f in failures
        if not isinstance(f, DatabaseUnavailableError)
    ]
    assert untyped == []
    for failure in failures:
        assert isinstance(failure, SilentPulseDBError)
        assert failure.retryable is not isinstance(failure, CommitOutcomeUnknownError)
        assert password not in str(failure)


@pytest.mark.slow
async def test_a_restart_under_traffic_raises_only_typed_retryable_errors(own: OwnServer) -> None:
    """Before: ConnectionRefusedError, CannotConnectNowError, ConnectionResetError,
    InterfaceError and InternalClientError ("cannot switch to state 15") came out."""
    pool = await create_pool(own.app_dsn, min_size=TASKS, max_size=TASKS)
    failures: list[BaseException] = []
    served = [0, 0]  # transactions that committed: in all, after the restart returned
    restarted = False
    stop = asyncio.Event()

    async def traffic(tenant: uuid.UUID) -> None:
        while not stop.is_set():
            try:
                async with tenant_transaction(pool, tenant) as conn:
                    seen = await conn.fetchval("SELECT count(DISTINCT tenant_id) FROM alerts")
            except Exception as exc:
                failures.append(exc)
            else:
                assert seen == 1  # row-level security as ever
                served[0] += 1
                served[1] += restarted
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(traffic(own.tenants[i % 2])) for i in range(TASKS)]
    try:
        await wait_for(_reached(served, 0, 10 * TASKS), timeout=PATIENCE)
        await asyncio.to_thread(_pg_ctl, own.server, "restart", "-m", "fast")
        restarted = True
        # Back to serving through the same pool: its dropped connections were replaced.
        await wait_for(_reached(served, 1, 10 * TASKS), timeout=PATIENCE)
        stop.set()
        await asyncio.gather(*tasks)
        # None of the pool's connections was lost to it: all of them at once, again.
        await asyncio.wait_for(_all_at_once(pool, own.tenants[0]), timeout=PATIENCE)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await pool.close()
    # The restart terminated the pool's connections mid-use: there were failures.
    assert failures
    _typed_and_clean(failures, own.password)


async def _all_at_once(pool: Any, tenant: uuid.UUID) -> None:
    """``TASKS`` tenant transactions open together: the pool's every connection serves."""
    entered: list[int] = []
    everyone = asyncio.Event()

    async def hold() -> None:
        async with tenant_transaction(pool, tenant) as conn:
            entered.append(await conn.fetchval("SELECT pg_backend_pid()"))
            if len(entered) == TASKS:
                everyone.set()
            await everyone.wait()

    await asyncio.gather(*(hold() for _ in range(TASKS)))
    assert len(set(entered)) == TASKS


def _reached(counts: list[int], index: int, at_least: int) -> Any:
    async def predicate() -> bool:
        return counts[index] >= at_least

    return predicate


@pytest.mark.slow
async def test_a_server_down_before_acquiring_is_unavailable_until_it_is_back(
    own: OwnServer,
) -> None:
    """Before: ConnectionRefusedError out of tenant_transaction, and out of create_pool a
    DatabaseConnectionError saying the connection was lost."""
    pool = await create_pool(own.app_dsn, min_size=1, max_size=2)
    try:
        await asyncio.to_thread(_pg_ctl, own.server, "stop", "-m", "fast")
        try:
            with pytest.raises(DatabaseUnavailableError) as info:
                async with tenant_transaction(pool, own.tenants[0]):
                    raise AssertionError("the block must not run")
            assert info.value.retryable and info.value.transient
            assert "could not get a connection from the pool" in str(info.value)
            assert own.password not in str(info.value)
            # A service starting while the database is down: create_pool says the same.
            with pytest.raises(DatabaseUnavailableError) as made:
                await create_pool(own.app_dsn, min_size=1, max_size=1)
            assert made.value.retryable and own.password not in str(made.value)
        finally:
            await asyncio.to_thread(_pg_ctl, own.server, "start")

        async def serves() -> bool:  # what a handler retrying on the error does
            try:
                async with tenant_transaction(pool, own.tenants[0]) as conn:
                    return bool(await conn.fetchval("SELECT count(*) FROM alerts") == 1)
            except DatabaseUnavailableError:
                return False

        await wait_for(serves, timeout=PATIENCE)
    finally:
        await pool.close()


async def test_a_connection_lost_mid_block_is_typed_and_the_callers_own_errors_are_not(
    silentpulse_app_database: str, silentpulse_migrated_database: str
) -> None:
    """Before: asyncpg's InterfaceError ("cannot call Transaction.__aexit__(): the
    underlying connection is closed") came out of the block."""
    admin = await asyncpg.connect(silentpulse_migrated_database)
    tenant = (await seed_tenant(admin, "alpha"))["tenants"]
    pool = await create_pool(silentpulse_app_database, min_size=1, max_size=1)
    try:
        with pytest.raises(DatabaseUnavailableError) as info:
            async with tenant_transaction(pool, tenant) as conn:
                lost = conn.get_server_pid()
                await admin.execute("SELECT pg_terminate_backend($1)", lost)
                await conn.fetchval("SELECT count(*) FROM alerts")
        assert info.value.retryable and "run the tenant's transaction" in str(info.value)
        # The pool's one connection was dropped and replaced: the next block is served.
        async with tenant_transaction(pool, tenant) as conn:
            assert conn.get_server_pid() != lost
            assert await conn.fetchval("SELECT count(*) FROM alerts") == 1
        # The caller's own statements and exceptions pass as they are.
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            async with tenant_transaction(pool, tenant) as conn:
                await conn.execute(
                    "INSERT INTO tenants (id, name, handle) VALUES ($1, 'X', 'x')", uuid.uuid4()
                )
        own_error = ConnectionRefusedError("the caller's HTTP call in the block")
        with pytest.raises(ConnectionRefusedError) as refused:
            async with tenant_transaction(pool, tenant):
                raise own_error
        assert refused.value is own_error
        async with tenant_transaction(pool, tenant) as conn:  # and nothing was dropped
            assert await conn.fetchval("SELECT count(*) FROM alerts") == 1
    finally:
        await pool.close()
        await admin.close()


# A COMMIT that stays in flight until the test ends it: a deferred trigger that sleeps,
# on a temporary table (written even by a READ ONLY transaction).
SLOW_COMMIT = """
CREATE TEMP TABLE slow_commit (id int);
CREATE FUNCTION pg_temp.slow_commit() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN PERFORM pg_sleep(300); RETURN NULL; END $$;
CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON slow_commit
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION pg_temp.slow_commit();
"""


@pytest.mark.parametrize("readonly", [False, True])
async def test_a_connection_lost_while_commit_is_in_flight(
    silentpulse_app_database: str, silentpulse_migrated_database: str, readonly: bool
) -> None:
    """The outcome of a COMMIT lost in flight is unknown: not retryable, unless the
    transaction was read only. Before: asyncpg's ConnectionDoesNotExistError."""
    admin = await asyncpg.connect(silentpulse_migrated_database)
    tenant = (await seed_tenant(admin, "alpha"))["tenants"]
    conn = await asyncpg.connect(silentpulse_app_database)
    try:
        await conn.execute(SLOW_COMMIT)
        pid = conn.get_server_pid()

        async def commit_slowly() -> None:
            async with tenant_transaction(conn, tenant, readonly=readonly):
                await conn.execute("INSERT INTO slow_commit VALUES (1)")

        committing = asyncio.create_task(commit_slowly())

        async def in_commit() -> bool:
            return bool(
                await admin.fetchval(
                    "SELECT query ILIKE 'COMMIT%' AND wait_event = 'PgSleep' "
                    "FROM pg_stat_activity WHERE pid = $1",
                    pid,
                )
            )

        await wait_for(in_commit, timeout=PATIENCE)
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(DatabaseUnavailableError) as info:
            await committing
        assert "commit the tenant's transaction" in str(info.value) or "COMMIT" in str(info.value)
        if readonly:
            assert not isinstance(info.value, CommitOutcomeUnknownError)
            assert info.value.retryable
        else:
            assert isinstance(info.value, CommitOutcomeUnknownError)
            assert not info.value.retryable and info.value.transient
        assert conn.is_closed()
    finally:
        conn.terminate()
        await admin.close()


@pytest.fixture
async def limited_role(silentpulse_migrated_database: str) -> AsyncIterator[str]:
    """An app role that may hold one connection at a time (CONNECTION LIMIT 1)."""
    grants = APP_GRANTS + " ALTER ROLE {role} CONNECTION LIMIT 1;"
    async with login_role(silentpulse_migrated_database, grants, prefix="one") as (_, dsn):
        yield dsn


async def test_no_connection_slot_left_is_unavailable(
    limited_role: str, silentpulse_migrated_database: str
) -> None:
    """Before: asyncpg's TooManyConnectionsError out of tenant_transaction."""
    admin = await asyncpg.connect(silentpulse_migrated_database)
    tenant = (await seed_tenant(admin, "alpha"))["tenants"]
    await admin.close()
    pool = await create_pool(limited_role, min_size=1, max_size=2)
    try:
        async with tenant_transaction(pool, tenant):
            with pytest.raises(DatabaseUnavailableError) as info:
                async with tenant_transaction(pool, tenant):
                    raise AssertionError("the block must not run")
        assert info.value.sqlstate == "53300" and info.value.retryable
        assert isinstance(info.value, DatabaseConnectionError)  # what callers caught so far
    finally:
        await pool.close()


async def test_a_closed_pool_is_refused(silentpulse_app_database: str) -> None:
    """Before: asyncpg's InterfaceError ("pool is closing")."""
    pool = await create_pool(silentpulse_app_database, min_size=1, max_size=1)
    await pool.close()
    with pytest.raises(InvalidArgumentError, match="closed or closing") as info:
        async with tenant_transaction(pool, uuid.uuid4()):
            raise AssertionError("the block must not run")
    assert not info.value.retryable

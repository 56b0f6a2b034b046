"""Behind PgBouncer in transaction and statement pooling (issue 21): migrations and the
listener need a session and refuse at once, with a typed error saying what to change and
no advisory lock left held; the application's pool works without asyncpg's statement
cache. In session pooling, lock holders are said to come through the pooler, and a killed
runner still frees the lock within seconds.

Debian's pgbouncer runs in front of the throwaway server; .ci/run installs it."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path

import asyncpg
import pytest
from listener.listening import collecting, delivered, new_alert
from schema.seed import seed_tenant

from silentpulse_db import (
    AlertEvent,
    LockTimeoutError,
    PoolingModeError,
    create_pool,
    enforce_retention,
    listen_alerts,
    maintain_partitions,
    run_migrations,
)
from silentpulse_db.defaults import ENGINE_SESSION_SETTINGS
from silentpulse_db.postgres.pooler import Pooling, pooling_of
from silentpulse_db.settings import ConnectRetry
from silentpulse_db.testing import PostgresServer

from bouncer import needs_pgbouncer, running_bouncer
from helpers import (
    cli,
    fetchval,
    hold_migration_lock,
    simple_set,
    sleeping_backend,
    version_rows,
    wait_for,
    write_migrations,
)

pytestmark = needs_pgbouncer

RUNNER = Path(__file__).parents[1] / "migrate" / "runner_process.py"
ADVISORY_LOCKS = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"


def bouncing(
    server: PostgresServer, database_dsn: str, mode: str, *, size: int = 50
) -> Iterator[tuple[Pooling, str]]:
    database = database_dsn.rsplit("/", 1)[1]
    with running_bouncer(
        server, database, server.user, server.password, pool_mode=mode, pool_size=size
    ) as dsn:
        yield Pooling(mode), dsn


@pytest.fixture(params=["session", "transaction", "statement"])
def bouncer(
    request: pytest.FixtureRequest, silentpulse_postgres: PostgresServer, silentpulse_database: str
) -> Iterator[tuple[Pooling, str]]:
    yield from bouncing(silentpulse_postgres, silentpulse_database, request.param)


@pytest.fixture(params=[("transaction", 50), ("transaction", 1), ("statement", 50)])
def sharing(
    request: pytest.FixtureRequest, silentpulse_postgres: PostgresServer, silentpulse_database: str
) -> Iterator[tuple[Pooling, str]]:
    """A pooler that shares server connections between clients (one server connection
    at most, too: the check must not wait for itself)."""
    mode, size = request.param
    yield from bouncing(silentpulse_postgres, silentpulse_database, mode, size=size)


async def test_the_pooling_mode_is_told_apart(
    bouncer: tuple[Pooling, str], silentpulse_database: str
) -> None:
    mode, dsn = bouncer
    for target, expected in ((silentpulse_database, Pooling.DIRECT), (dsn, mode)):
        conn = await asyncpg.connect(target)  # with asyncpg's statement cache, as callers
        try:
            opener = partial(asyncpg.connect, target, statement_cache_size=0)
            assert await pooling_of(conn, opener) is expected
        finally:
            conn.terminate()


async def test_five_replicas_through_a_session_pool_smaller_than_them(
    silentpulse_postgres: PostgresServer, silentpulse_database: str, tmp_path: Path
) -> None:
    """The mode check needs one server connection more per replica: with two for five
    replicas it gets none for a while, and goes on (a transaction pooler frees its
    servers at each transaction's end) instead of waiting for one with the others."""
    source = write_migrations(tmp_path, simple_set(3))
    for _mode, dsn in bouncing(silentpulse_postgres, silentpulse_database, "session", size=2):
        results = await asyncio.gather(
            *(
                run_migrations(
                    dsn, source=source, connect=ConnectRetry(attempts=1), migration_lock_timeout=60
                )
                for _ in range(5)
            )
        )
        assert sorted(len(r.applied) for r in results) == [0, 0, 0, 0, 3]
    assert await version_rows(silentpulse_database) == [(3, False)]


async def test_migrations_refuse_a_pooler_that_shares_server_connections(
    sharing: tuple[Pooling, str], silentpulse_database: str
) -> None:
    """Five replicas at once: each refuses with PoolingModeError, nothing is applied and
    no advisory lock is left held on the server (they stayed held for an hour before)."""
    mode, dsn = sharing
    started = time.monotonic()
    outcomes = await asyncio.gather(
        *(run_migrations(dsn, connect=ConnectRetry(attempts=1)) for _ in range(5)),
        return_exceptions=True,
    )
    elapsed = time.monotonic() - started
    for outcome in outcomes:
        assert isinstance(outcome, PoolingModeError), outcome
        assert outcome.mode == mode.value
        text = str(outcome)
        assert f"{mode.value} pooling mode" in text and "pool_mode = session" in text
        assert "advisory lock" in text
    print(f"five replicas refused in {elapsed:.2f}s through {mode.value} pooling")
    assert await fetchval(silentpulse_database, ADVISORY_LOCKS) == 0
    assert await fetchval(silentpulse_database, "SELECT to_regclass('schema_migrations')") is None
    # The next run, direct, is not held up by anything left behind.
    result = await run_migrations(
        silentpulse_database, connect=ConnectRetry(attempts=1), migration_lock_timeout=5
    )
    assert result.applied


async def test_nothing_is_left_set_on_the_poolers_server_connections(
    silentpulse_postgres: PostgresServer, silentpulse_database: str
) -> None:
    """The library's session settings go only on a session it keeps: set behind a
    transaction pooler, they stayed on a server connection that then served other
    clients (the application's, losing their own limits). One server connection, so the
    next client surely gets the one the library used."""
    await run_migrations(silentpulse_database, connect=ConnectRetry(attempts=1))
    for _mode, dsn in bouncing(silentpulse_postgres, silentpulse_database, "transaction", size=1):
        with pytest.raises(PoolingModeError):
            await run_migrations(dsn, connect=ConnectRetry(attempts=1))
        with pytest.raises(PoolingModeError):
            await maintain_partitions(dsn, connect=ConnectRetry(attempts=1))
        with pytest.raises(PoolingModeError):
            await enforce_retention(dsn, connect=ConnectRetry(attempts=1), dry_run=True)
        client = await asyncpg.connect(dsn, statement_cache_size=0)
        try:
            for name in ENGINE_SESSION_SETTINGS:
                shown = await client.fetchval(f"SELECT current_setting('{name}')")
                default = await client.fetchval(
                    "SELECT reset_val FROM pg_settings WHERE name = $1", name
                )
                assert (name, shown) == (name, _unit(default, name)), "left set"
        finally:
            await client.close()


def _unit(value: str, name: str) -> str:
    """pg_settings' reset_val is in the setting's base unit: 0 reads 0 either way. A
    setting without a unit (synchronous_commit: off on the throwaway server, on in the
    library's sessions) reads as it is."""
    if not value.isdigit():
        return value
    assert value == "0", f"{name}: the throwaway server's default is not 0 ({value})"
    return "0"


async def test_the_cli_refuses_with_a_usage_exit(sharing: tuple[Pooling, str]) -> None:
    mode, dsn = sharing
    for command in (["up"], ["version"], ["status"]):
        done = await asyncio.to_thread(cli, *command, dsn=dsn)
        assert done.returncode == 2, (command, done.stderr)
        assert f"{mode.value} pooling mode" in done.stderr
        assert "Traceback" not in done.stderr


async def test_the_listener_refuses_a_pooler_that_shares_server_connections(
    sharing: tuple[Pooling, str],
) -> None:
    """Behind a transaction pooler it delivered 1 notification of 4, and said nothing."""
    _mode, dsn = sharing
    events = listen_alerts(dsn)
    with pytest.raises(PoolingModeError, match="LISTEN"):
        await asyncio.wait_for(anext(events), timeout=30)


async def test_the_listener_works_through_session_pooling(
    silentpulse_postgres: PostgresServer, silentpulse_migrated_database: str
) -> None:
    database = silentpulse_migrated_database
    conn = await asyncpg.connect(database)
    try:
        ids = await seed_tenant(conn, "pooled")
        for _mode, dsn in bouncing(silentpulse_postgres, database, "session"):
            async with collecting(dsn) as events:
                # Ready: what is committed from now on is delivered.
                alert = await new_alert(conn, ids)
                await delivered(events, alert)
            assert [(e.alert_id, e.source) for e in events] == [(alert, "notify")]
    finally:
        await conn.close()


async def _has(events: Sequence[AlertEvent], alert: uuid.UUID) -> bool:
    return any(e.alert_id == alert for e in events)


async def test_the_application_pool_through_a_transaction_pooler(
    silentpulse_postgres: PostgresServer,
    silentpulse_database: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """create_pool turns asyncpg's statement cache off behind a transaction pooler: many
    concurrent queries, several statements each, without a collision of prepared names.
    The same load with the cache kept (as before) fails: the check can fail."""
    for _mode, dsn in bouncing(silentpulse_postgres, silentpulse_database, "transaction", size=2):
        caplog.set_level(logging.INFO, logger="silentpulse_db.pool")
        pool = await create_pool(dsn, bypass_rls=True, min_size=2, max_size=10)
        try:
            await asyncio.gather(*(_queries(pool, n) for n in range(40)))
        finally:
            await pool.close()
        assert "statement cache is off" in caplog.text

        cached = await create_pool(
            dsn, bypass_rls=True, min_size=2, max_size=10, statement_cache_size=100
        )
        try:
            outcomes = await asyncio.gather(
                *(_queries(cached, n) for n in range(40)), return_exceptions=True
            )
        finally:
            cached.terminate()
        assert any(isinstance(o, asyncpg.PostgresError) for o in outcomes)


async def test_the_application_pool_refuses_statement_pooling(
    silentpulse_postgres: PostgresServer, silentpulse_database: str
) -> None:
    """tenant_transaction runs transactions, which statement pooling refuses (each failed
    with asyncpg's ConnectionDoesNotExistError, not a typed error)."""
    for _mode, dsn in bouncing(silentpulse_postgres, silentpulse_database, "statement"):
        with pytest.raises(PoolingModeError, match="tenant_transaction") as info:
            await create_pool(dsn, bypass_rls=True, min_size=1, max_size=2)
        assert info.value.mode == "statement" and "each statement may run" in str(info.value)


async def test_the_application_pool_keeps_its_cache_through_session_pooling(
    silentpulse_postgres: PostgresServer,
    silentpulse_database: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for _mode, dsn in bouncing(silentpulse_postgres, silentpulse_database, "session"):
        caplog.set_level(logging.INFO, logger="silentpulse_db.pool")
        pool = await create_pool(dsn, bypass_rls=True, min_size=1, max_size=4)
        try:
            await asyncio.gather(*(_queries(pool, n) for n in range(8)))
        finally:
            await pool.close()
        assert "statement cache is off" not in caplog.text


async def _queries(pool: asyncpg.Pool, n: int) -> None:
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT $1::int + 1", n) == n + 1
        assert await conn.fetchval("SELECT $1::text || 'x'", str(n)) == f"{n}x"
        assert await conn.fetchval("SELECT $1::int * 2", n) == n * 2


async def test_a_lock_holder_through_the_pooler_is_said_to_be(
    silentpulse_postgres: PostgresServer, silentpulse_database: str, tmp_path: Path
) -> None:
    """The holder's pid and address are the pooler's server connection: the message
    says so instead of naming them as the holding process."""
    source = write_migrations(tmp_path, simple_set(1))
    for _mode, dsn in bouncing(silentpulse_postgres, silentpulse_database, "session"):
        holder = await hold_migration_lock(dsn)
        try:
            with pytest.raises(LockTimeoutError) as info:
                await run_migrations(
                    dsn, source=source, connect=ConnectRetry(attempts=1), migration_lock_timeout=1
                )
        finally:
            await holder.close()
        assert "through the connection pooler at 127.0.0.1 this session uses" in str(info.value)
        assert "SHOW CLIENTS" in str(info.value)
        assert all(h.through_pooler for h in info.value.holders)


@pytest.mark.slow
async def test_a_runner_killed_through_session_pooling_frees_the_lock(
    silentpulse_postgres: PostgresServer, silentpulse_database: str, tmp_path: Path
) -> None:
    """PgBouncer ignores settings sent at start-up: the dead-client check, set after
    connecting, still ends the killed runner's statement (it committed 27 s after the
    kill before), so the lock is free long before the 60 s sleep would end."""
    migrations = simple_set(1)
    migrations[2] = (
        "slow",
        "CREATE TABLE slow (id int);\nSELECT pg_sleep(60);\n",
        "DROP TABLE slow;\n",
    )
    source = write_migrations(tmp_path, migrations)
    for _mode, dsn in bouncing(silentpulse_postgres, silentpulse_database, "session"):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(RUNNER),
            str(source),
            env={**os.environ, "DATABASE_URL": dsn},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await wait_for(lambda: _sleeping(silentpulse_database), timeout=30)
            os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
        killed = time.monotonic()
        await wait_for(lambda: _no_advisory_lock(silentpulse_database), timeout=30)
        print(f"lock free {time.monotonic() - killed:.1f}s after the kill, through the bouncer")
        assert await version_rows(silentpulse_database) == [(1, False)]


async def _sleeping(dsn: str) -> bool:
    return await sleeping_backend(dsn) is not None


async def _no_advisory_lock(dsn: str) -> bool:
    return bool(await fetchval(dsn, ADVISORY_LOCKS) == 0)

"""The library on a Citus cluster (issue 31, 3): the tenant scope reaches the shards, and
the partition jobs make months of a distributed partitioned table.

The packaged schema does not distribute yet (its keys are not tenant-first: see
test_distribution.py), so each test distributes a small table of its own, with the
packaged schema's row-level security: a policy on ``app.current_tenant`` as 000001's.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from urllib.parse import unquote, urlsplit

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from silentpulse_db import (
    RowSecurityError,
    create_pool,
    maintain_partitions,
    run_migrations,
    set_tenant,
    tenant_transaction,
)
from silentpulse_db import sqlalchemy as scoped
from silentpulse_db.defaults import PARTITIONS_AHEAD
from silentpulse_db.migrate import apply_prerequisites
from silentpulse_db.schema.partitions import (
    PartitionsAtStartup,
    add_months,
    month_of,
    partition_name,
)

from helpers import CITUS_SHARDS, execute, fetch, fetchval, login_role

# The schema as released (000023): the later migrations are not needed here.
RELEASED = 23
TENANT = "app.current_tenant"
POLICY = (
    "USING (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::uuid) "
    "WITH CHECK (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::uuid)"
)
SET_SHARDS = f"SET citus.shard_count = {CITUS_SHARDS}"
NOTES = (
    SET_SHARDS,
    "CREATE TABLE notes (tenant_id uuid NOT NULL, id bigint NOT NULL, body text, "
    "PRIMARY KEY (tenant_id, id))",
    "ALTER TABLE notes ENABLE ROW LEVEL SECURITY",
    "ALTER TABLE notes FORCE ROW LEVEL SECURITY",
    f"CREATE POLICY tenant_isolation_notes ON notes {POLICY}",
    "SELECT create_distributed_table('notes', 'tenant_id')",
)
# A partitioned table as the packaged ones are (a default partition, row-level security,
# a key to a reference table), distributed.
READINGS = (
    SET_SHARDS,
    "CREATE TABLE accounts (id uuid PRIMARY KEY)",
    "SELECT create_reference_table('accounts')",
    "CREATE TABLE readings (tenant_id uuid NOT NULL REFERENCES accounts, id bigint NOT NULL, "
    "taken_at timestamptz NOT NULL, PRIMARY KEY (tenant_id, id, taken_at)) "
    "PARTITION BY RANGE (taken_at)",
    "CREATE TABLE readings_default PARTITION OF readings DEFAULT",
    "ALTER TABLE readings ENABLE ROW LEVEL SECURITY",
    "ALTER TABLE readings FORCE ROW LEVEL SECURITY",
    f"CREATE POLICY tenant_isolation_readings ON readings {POLICY}",
    "SELECT silentpulse_secure_partition('readings_default')",
    "SELECT create_distributed_table('readings', 'tenant_id')",
)
ROWS = 20  # per tenant (all on its shard)


async def run_each(dsn: str, statements: tuple[str, ...]) -> None:
    """One message per statement: Citus refuses some commands sent together (citus#6608)."""
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def app_role(dsn: str, grants: str) -> AsyncIterator[str]:
    """A non-superuser LOGIN role with ``grants`` ({role}); its DSN on the coordinator.
    The coordinator logs in to the workers as this role: pg_dist_authinfo gives it the
    password (the cluster's password file holds the superuser's alone)."""
    async with login_role(dsn, grants, prefix="citus_app") as (role, role_dsn):
        password = unquote(urlsplit(role_dsn).password or "")
        await execute(
            dsn,
            f"INSERT INTO pg_dist_authinfo (nodeid, rolename, authinfo) "
            f"VALUES (0, '{role}', 'password={password}')",
        )
        yield role_dsn


async def on_two_workers(dsn: str) -> tuple[uuid.UUID, uuid.UUID]:
    """Two tenants whose rows of notes live on different workers."""
    where = (
        "SELECT nodeport FROM citus_shards "
        "WHERE shardid = get_shard_id_for_distribution_column('notes', $1::uuid)"
    )
    first = uuid.uuid4()
    port = await fetchval(dsn, where, first)
    while True:  # a shard of the other worker: half the tenants
        other = uuid.uuid4()
        if await fetchval(dsn, where, other) != port:
            return first, other


async def shards_seen(conn: asyncpg.Connection) -> dict[uuid.UUID, int]:
    """Each tenant's rows of notes as this connection sees them (a query on every shard)."""
    rows = await conn.fetch("SELECT tenant_id, count(*) AS n FROM notes GROUP BY 1")
    return {r["tenant_id"]: r["n"] for r in rows}


async def test_the_tenant_scope_reaches_the_shards_and_ends_with_the_transaction(
    silentpulse_citus_database: str,
) -> None:
    dsn = silentpulse_citus_database
    await run_each(dsn, NOTES)
    alpha, bravo = await on_two_workers(dsn)
    async with app_role(dsn, "GRANT SELECT, INSERT, DELETE ON notes TO {role};") as app:
        # One connection, reused: what one request leaves, the next one gets.
        pool = await create_pool(app, min_size=1, max_size=1)
        try:
            for tenant, first in ((alpha, 0), (bravo, 1000)):
                async with tenant_transaction(pool, tenant) as conn:
                    await conn.executemany(
                        "INSERT INTO notes (tenant_id, id) VALUES ($1, $2)",
                        [(tenant, first + i) for i in range(ROWS)],
                    )
                    assert await shards_seen(conn) == {tenant: ROWS}
            async with tenant_transaction(pool, alpha) as conn:
                assert await shards_seen(conn) == {alpha: ROWS}
                # One shard (the router's path): bravo's rows are not alpha's to see.
                assert (
                    await conn.fetchval("SELECT count(*) FROM notes WHERE tenant_id = $1", bravo)
                    == 0
                )
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
                    await conn.execute("INSERT INTO notes (tenant_id, id) VALUES ($1, 1)", bravo)
            # Committed or rolled back: the pooled connection, and the connections Citus
            # keeps to the workers for it, carry no tenant into what comes next.
            async with pool.acquire() as conn:
                assert await conn.fetchval(f"SELECT current_setting('{TENANT}', true)") == ""
                assert await shards_seen(conn) == {}
                async with conn.transaction():
                    assert await shards_seen(conn) == {}
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute("INSERT INTO notes (tenant_id, id) VALUES ($1, 99)", alpha)
            with pytest.raises(RuntimeError):
                async with tenant_transaction(pool, alpha) as conn:
                    await conn.execute("DELETE FROM notes")
                    raise RuntimeError("the handler failed")
            async with tenant_transaction(pool, alpha) as conn:
                assert await shards_seen(conn) == {alpha: ROWS}  # the DELETE rolled back
            async with pool.acquire() as conn:
                assert await shards_seen(conn) == {}
                # set_tenant mid-transaction: it reaches the workers the transaction has
                # already opened connections to (the first read went to every shard).
                async with conn.transaction():
                    assert await shards_seen(conn) == {}
                    await set_tenant(conn, bravo)
                    assert await shards_seen(conn) == {bravo: ROWS}
                assert await shards_seen(conn) == {}
                # What the library did before: set_config() stays on the coordinator.
                async with conn.transaction():
                    await conn.execute(f"SELECT set_config('{TENANT}', $1, true)", str(alpha))
                    assert await shards_seen(conn) == {}
        finally:
            await pool.close()


async def test_sqlalchemy_sessions_scope_the_tenant_on_the_shards_too(
    silentpulse_citus_database: str,
) -> None:
    dsn = silentpulse_citus_database
    await run_each(dsn, NOTES)
    alpha, bravo = uuid.uuid4(), uuid.uuid4()
    await execute(
        dsn,
        f"INSERT INTO notes VALUES ('{alpha}', 1, 'a'), ('{bravo}', 2, 'b'), ('{bravo}', 3, 'b')",
    )
    async with app_role(dsn, "GRANT SELECT, INSERT ON notes TO {role};") as app:
        url = app.replace("postgresql://", "postgresql+asyncpg://", 1)
        engine = create_async_engine(url, pool_size=1, max_overflow=0)
        count = text("SELECT count(*) FROM notes")
        try:
            async with AsyncSession(engine) as session:
                async with scoped.tenant_transaction(session, bravo):
                    assert await session.scalar(count) == 2
                    await session.execute(
                        text("INSERT INTO notes (tenant_id, id) VALUES (:t, 4)"), {"t": bravo}
                    )
                async with session.begin():
                    assert await session.scalar(count) == 0  # no tenant carried on
                    await scoped.set_tenant(session, alpha)
                    assert await session.scalar(count) == 1
                async with scoped.tenant_transaction(session, bravo):
                    assert await session.scalar(count) == 3
        finally:
            await engine.dispose()


async def test_a_role_default_tenant_is_refused_on_citus_too(
    silentpulse_citus_database: str,
) -> None:
    """A default (every session starting with a tenant) that SET LOCAL would only shadow
    inside tenant_transaction: create_pool refuses it, as on plain PostgreSQL."""
    dsn = silentpulse_citus_database
    async with app_role(dsn, "") as app:
        role = urlsplit(app).username
        await execute(dsn, f"ALTER ROLE {role} SET app.current_tenant = '{uuid.uuid4()}'")
        with pytest.raises(RowSecurityError, match=f"ALTER ROLE {role} RESET {TENANT}"):
            await create_pool(app, min_size=1, max_size=1)
        await execute(dsn, f"ALTER ROLE {role} RESET {TENANT}")
        pool = await create_pool(app, min_size=1, max_size=1)
        await pool.close()


async def partitions_of(dsn: str, table: str) -> dict[str, bool]:
    """``table``'s partitions, each with whether Citus distributes it."""
    rows = await fetch(
        dsn,
        "SELECT c.relname, EXISTS (SELECT 1 FROM pg_dist_partition d WHERE d.logicalrelid = c.oid) "
        "AS distributed FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = $1::regclass ORDER BY 1",
        table,
    )
    return {r["relname"]: r["distributed"] for r in rows}


async def test_the_partition_jobs_make_months_of_a_distributed_partitioned_table(
    silentpulse_citus_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    dsn = silentpulse_citus_database
    await apply_prerequisites(dsn)
    await run_migrations(dsn, target=RELEASED)  # the partition function, and its tables
    await run_each(dsn, READINGS)
    current = month_of(datetime.now(timezone.utc))
    ahead = [add_months(current, i) for i in range(PARTITIONS_AHEAD + 1)]

    # The start-up hook: this month's and the next ones, never fatal (a failure is a
    # warning), so the warning is what would show it failed.
    caplog.set_level(logging.WARNING, logger="silentpulse_db.partitions")
    caplog.clear()
    conn = await asyncpg.connect(dsn)
    try:
        await PartitionsAtStartup(PARTITIONS_AHEAD)(conn, dsn, due=True)
    finally:
        await conn.close()
    assert [r.getMessage() for r in caplog.records] == []
    made = await partitions_of(dsn, "readings")
    assert {partition_name("readings", m) for m in ahead} <= set(made)
    assert all(made.values()), made  # distributed like their table

    # The daily job: rows dated in a month not made yet sit in the default partition;
    # it makes their month and moves them there (the CREATE, move and ATTACH).
    stray = add_months(current, PARTITIONS_AHEAD + 2)
    tenant = uuid.uuid4()
    await execute(
        dsn,
        f"INSERT INTO accounts VALUES ('{tenant}'); "
        f"INSERT INTO readings SELECT '{tenant}', g, '{stray:%Y-%m}-15'::timestamptz "
        f"FROM generate_series(1, {ROWS}) g",
    )
    report = await maintain_partitions(dsn)
    name = partition_name("readings", stray)
    assert [(c.partition, c.moved_rows) for c in report.created if c.table == "readings"] == [
        (name, ROWS)
    ]
    assert report.skipped == ()
    made = await partitions_of(dsn, "readings")
    assert made[name] and all(made.values()), made
    assert await fetchval(dsn, f"SELECT count(*) FROM ONLY {name}") == ROWS
    assert await fetchval(dsn, "SELECT count(*) FROM ONLY readings_default") == 0
    # Secured as the packaged schema's months are: RLS enabled, forced, the policy copied.
    secured = await fetchval(
        dsn,
        "SELECT relrowsecurity AND relforcerowsecurity AND EXISTS (SELECT 1 FROM pg_policy "
        "WHERE polrelid = c.oid) FROM pg_class c WHERE oid = $1::regclass",
        name,
    )
    assert secured

"""The distributed schema under a workload of four tenants as the application role (no
superuser, no BYPASSRLS), issue 31: row-level security isolates them on the shards, and
the routing docs/scaling.md describes holds, asserted with EXPLAIN: a query that names
``tenant_id = $1`` goes to one shard (Citus's "Task Count: 1"), one that relies on
row-level security alone goes to all of them."""

from __future__ import annotations

import re
import uuid
from typing import Any

import asyncpg
import pytest

from silentpulse_db import create_pool, tenant_transaction
from silentpulse_db.migrate import distribute

from .test_distribute import demo
from helpers import fetchval

ROWS = 10


async def explain(conn: Any, sql: str, *args: object) -> str:
    rows = await conn.fetch(f"EXPLAIN (COSTS OFF) {sql}", *args)
    return "\n".join(r[0] for r in rows)


def tasks(plan: str) -> int:
    found = re.search(r"Task Count: (\d+)", plan)
    assert found, plan
    return int(found[1])


async def test_four_tenants_each_see_their_own_and_a_tenant_query_reaches_one_shard(
    silentpulse_citus_distributed_database: str,
) -> None:
    dsn = silentpulse_citus_distributed_database
    placed = await distribute(dsn)  # distributed already: nothing to do, the count it has
    assert placed.steps == ()
    shards = placed.shard_count
    async with demo.app_role(dsn) as app:
        tenants = await demo.run_workload(app, rows=ROWS)
        assert len(tenants) == 4
        # Each sees its own rows and no other's, by row-level security on the shards
        # (users: a reference table, its policy on every node's copy).
        own = {"users": 1, "assets": ROWS, "alerts": ROWS, "audit_logs": ROWS}
        assert await demo.seen_by_each(app, tenants) == {h: own for h in tenants}
        for table, n in own.items():
            assert await fetchval(dsn, f"SELECT count(*) FROM {table}") == 4 * n

        homes = {home.handle: home for home in await demo.homes(dsn, tenants)}
        assert all(home.nodes == 1 for home in homes.values())  # colocated
        alpha, bravo = tenants["alpha"], tenants["bravo"]
        pool = await create_pool(app, min_size=1, max_size=1)
        try:
            async with tenant_transaction(pool, alpha) as conn:
                await assert_isolated(conn, alpha, bravo)
                # Routing: tenant_id = $1 prunes to the tenant's shard, on its node.
                one = await explain(conn, "SELECT * FROM alerts WHERE tenant_id = $1", alpha)
                assert tasks(one) == 1, one
                port = homes["alpha"].node.rsplit(":", 1)[1]
                assert f"port={port}" in one, one
                joined = await explain(
                    conn,
                    "SELECT x.id, a.hostname FROM alerts x JOIN assets a "
                    "ON a.tenant_id = x.tenant_id AND a.id = x.asset_id WHERE x.tenant_id = $1",
                    alpha,
                )
                assert tasks(joined) == 1, joined  # colocated: the join stays on the shard
                # Row-level security alone: the policy's tenant is read on each shard, so
                # the planner cannot prune: every shard is asked.
                every = await explain(conn, "SELECT * FROM alerts")
                assert tasks(every) == shards, every
                assert await conn.fetchval("SELECT count(*) FROM alerts") == ROWS
            async with pool.acquire() as conn:  # no tenant: nothing, on any shard
                assert await conn.fetchval("SELECT count(*) FROM alerts") == 0
        finally:
            await pool.close()


async def assert_isolated(conn: Any, tenant: uuid.UUID, other: uuid.UUID) -> None:
    """Inside ``tenant``'s transaction: ``other``'s rows are not there to read or to add to."""
    assert await conn.fetchval("SELECT count(*) FROM alerts WHERE tenant_id = $1", other) == 0
    assert await conn.fetchval("SELECT count(*) FROM users WHERE tenant_id = $1", other) == 0
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM alerts x JOIN assets a "
            "ON a.tenant_id = x.tenant_id AND a.id = x.asset_id WHERE x.tenant_id = $1",
            tenant,
        )
        == ROWS
    )
    # A join of two distributed tables must be on tenant_id too (colocated): on the other
    # key alone, Citus would have to move rows between nodes, and refuses.
    with pytest.raises(asyncpg.PostgresError, match="requires repartitioning"):
        await in_savepoint(conn, "SELECT count(*) FROM alerts x JOIN assets a ON a.id = x.asset_id")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        await in_savepoint(
            conn,
            "INSERT INTO assets (tenant_id, id, external_id) VALUES ($1, $2, 'x')",
            other,
            uuid.uuid4(),
        )
    # An INSERT ... SELECT that leaves gen_random_uuid() (volatile) to the server is pulled
    # to the coordinator and written with COPY, which row-level security refuses
    # (docs/scaling.md): the ids come from the client instead (tools/citus_demo.py).
    with pytest.raises(asyncpg.FeatureNotSupportedError, match="row-level security"):
        await in_savepoint(
            conn,
            "INSERT INTO audit_logs (tenant_id, action, entity_type, entity_id) "
            "SELECT a.tenant_id, 'update', 'asset', a.id FROM assets a WHERE a.tenant_id = $1",
            tenant,
        )


async def in_savepoint(conn: Any, sql: str, *args: object) -> None:
    """``sql`` in a savepoint rolled back if it fails: the block stays usable."""
    savepoint = conn.transaction()
    await savepoint.start()
    try:
        await conn.execute(sql, *args)
    except BaseException:
        await savepoint.rollback()
        raise
    await savepoint.commit()

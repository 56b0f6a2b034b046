"""A query that reaches one shard against one that reaches them all, on the distributed
schema (issue 31).

A throwaway Citus cluster (a coordinator and two workers on this machine) migrated and
distributed with `silentpulse-db distribute`; TENANTS tenants with ROWS alerts and assets
each, written as the application role (tools/citus_demo.py's workload). Then, as that
role, one transaction each time (`tenant_transaction` and one query):

- "one shard": the query names the tenant, `WHERE tenant_id = $1`: Citus routes it to
  the tenant's shard (EXPLAIN: Task Count: 1);
- "every shard": the same query relying on row-level security alone: the tenant is read
  on the shards, so Citus cannot prune and asks all 32 (Task Count: 32), each shard
  filtering by the policy.

Two queries of each kind: a count of the tenant's alerts, and a lookup of one asset by
its key. QUERIES transactions per run, the runs alternated over ROUNDS rounds, the ratio
the median of the rounds' own. Skips (exit 0) where Citus is not installed.
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import uuid
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

from silentpulse_db import create_pool, run_migrations, tenant_transaction
from silentpulse_db.migrate import apply_prerequisites, distribute

from common import ROOT, alternate_samples, machine, paired_ratio, run, write_section

TENANTS = 8
ROWS = 50
QUERIES = 50
ROUNDS = 11

PAIRS = {
    "count of a tenant's alerts": (
        "SELECT count(*) FROM alerts WHERE tenant_id = $1",
        "SELECT count(*) FROM alerts",
    ),
    "one asset by its key": (
        "SELECT hostname FROM assets WHERE tenant_id = $1 AND id = $2",
        "SELECT hostname FROM assets WHERE id = $2",
    ),
}


def load_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("citus_demo", ROOT / "tools" / "citus_demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def transactions(
    pool: Any, tenant: uuid.UUID, asset: uuid.UUID, sql: str
) -> Callable[[], Awaitable[None]]:
    """QUERIES transactions of ``sql`` for ``tenant`` (its parameters: tenant, asset)."""
    args: tuple[object, ...] = (tenant, asset) if "$2" in sql else (tenant,)
    if "$1" not in sql:  # row-level security alone: the tenant only in the scope
        args = args[1:]
        sql = sql.replace("$2", "$1")

    async def many() -> None:
        for _ in range(QUERIES):
            async with tenant_transaction(pool, tenant) as conn:
                await conn.fetchval(sql, *args)

    return many


async def plans(pool: Any, tenant: uuid.UUID, asset: uuid.UUID) -> dict[str, str]:
    """Each query's EXPLAIN, as the application role in ``tenant``'s transaction."""
    found = {}
    async with tenant_transaction(pool, tenant) as conn:
        for name, (one, every) in PAIRS.items():
            for kind, sql in (("one shard", one), ("every shard", every)):
                args: tuple[object, ...] = (tenant, asset) if "$2" in sql else (tenant,)
                if "$1" not in sql:
                    args, sql = args[1:], sql.replace("$2", "$1")
                rows = await conn.fetch(f"EXPLAIN (COSTS OFF) {sql}", *args)
                found[f"{name}, {kind}"] = "\n".join(r[0] for r in rows)
    return found


async def measure(dsn: str, demo: ModuleType) -> tuple[dict[str, list[float]], dict[str, str], int]:
    await apply_prerequisites(dsn)
    await run_migrations(dsn)
    shards = (await distribute(dsn)).shard_count
    async with demo.app_role(dsn, prefix="bench_citus_app") as app:
        tenants = await demo.run_workload(app, [f"t{i}" for i in range(TENANTS)], ROWS)
        tenant = next(iter(tenants.values()))
        pool = await create_pool(app, min_size=1, max_size=1)
        try:
            async with tenant_transaction(pool, tenant) as conn:
                asset = await conn.fetchval(
                    "SELECT id FROM assets WHERE tenant_id = $1 LIMIT 1", tenant
                )
            candidates = {}
            for name, (one, every) in PAIRS.items():
                candidates[f"{name}|one"] = transactions(pool, tenant, asset, one)
                candidates[f"{name}|every"] = transactions(pool, tenant, asset, every)
            await alternate_samples(2, **candidates)  # warm: connections to every worker
            samples = await alternate_samples(ROUNDS, **candidates)
            explained = await plans(pool, tenant, asset)
        finally:
            await pool.close()
    return samples, explained, shards


def excerpt(plan: str) -> str:
    """The lines that show the routing: the task count and where the first task ran."""
    keep = [line for line in plan.splitlines() if "Task Count" in line or "Node:" in line]
    return "; ".join(line.strip() for line in keep[:2])


async def main() -> None:
    from silentpulse_db.testing.citus import CitusCluster, citus_missing

    reason = citus_missing()
    if reason:
        print(f"bench_citus_routing skipped: {reason}")
        return
    demo = load_demo()
    with CitusCluster() as cluster:
        dsn = cluster.create_database("bench_citus")
        samples, explained, shards = await measure(dsn, demo)
    rows = []
    for name in PAIRS:
        one = statistics.median(samples[f"{name}|one"]) / QUERIES * 1000
        every = statistics.median(samples[f"{name}|every"]) / QUERIES * 1000
        ratio = paired_ratio(samples, f"{name}|every", f"{name}|one")
        rows.append(f"| {name} | {one:.2f} ms | {every:.2f} ms | **{ratio:.1f}** |")
    plans_md = "\n".join(f"- {name}: `{excerpt(plan)}`" for name, plan in explained.items())
    write_section(
        "citus-routing",
        f"""## On Citus: a query that reaches one shard against one that reaches all (issue 31)

A throwaway Citus 12.1 cluster on this machine (a coordinator and two workers), the
schema migrated and distributed with `silentpulse-db distribute` ({shards} shards a
table), {TENANTS} tenants of {ROWS} assets and alerts each written as the application
role. One transaction as that role: `tenant_transaction` and one query, on the
coordinator. "one shard": the query names `tenant_id = $1`; "every shard": the same
query with the tenant left to row-level security, which Citus cannot prune by. Medians
per transaction over {QUERIES} transactions a run, {ROUNDS} alternating rounds, the
ratio the median of the rounds' own. {machine()}. Reproduce: `.venv/bin/python
bench/bench_citus_routing.py`.

| query | one shard | every shard | every / one |
|---|---|---|---|
{chr(10).join(rows)}

The plans (EXPLAIN as the application role, in the tenant's transaction):

{plans_md}
""",
    )


if __name__ == "__main__":
    run(main())

"""The alert stream on Citus against plain PostgreSQL, in one run: what the log costs an
alert write, and how long a change takes to reach a listener (docs/notifications.md,
"On Citus").

Two servers of this machine: a throwaway PostgreSQL 15, and a Citus cluster (a
coordinator and two workers, the test harness's) with tenants a reference table and
alerts, its referenced tables and the log distributed by tenant_id
(prepare_alert_stream_for_citus). Each migrated to the latest version.

- **Write**: an INSERT of one alert (its own transaction, autocommit: a service's alert)
  and of 1,000 alerts of one tenant, with the log's triggers on and off (ALTER TABLE ...
  DISABLE TRIGGER, propagated to the shards on Citus), alternating, medians: the log's
  cost is the ratio on each server; Citus's own cost, the ratio of the two servers.
- **Delivery**: a listener with a consumer name; an alert written every 0.05-0.7 s (a
  random phase against the poll), the time from the INSERT's return to the event's
  arrival, median and 90th percentile. Plain PostgreSQL: woken by NOTIFY; Citus: the
  log read every poll_interval (0.5 s, the default; and 0.1 s).
- **Catch-up**: a named consumer stopped while BACKLOG changes of each of two tenants
  were written (on Citus, one tenant on each worker), then started again: changes
  delivered per second until it has them all (full reads of 1,000).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import uuid
from typing import Any

import asyncpg

from silentpulse_db import listen_alerts, run_migrations
from silentpulse_db.migrate import apply_prerequisites
from silentpulse_db.postgres import databases
from silentpulse_db.schema.citus_alerts import prepare_alert_stream_for_citus
from silentpulse_db.testing.alerts import listening
from silentpulse_db.testing.citus import CitusCluster, citus_missing
from silentpulse_db.testing.server import PostgresServer

from common import machine, paired_ratio, write_section

ROUNDS = 15
SINGLES = 40  # one-alert INSERTs per round and variant
BULK = 1000
DELIVERIES = 40
BACKLOG = 10_000  # changes per tenant a stopped consumer finds when it starts again
CATCH_UPS = 3
REFERENCED = ["assets", "asset_groups", "integration_points", "flows", "flow_pulses"]
SEED = (
    "INSERT INTO tenants (id, name, handle) VALUES ($1, $2, $2)",
    "INSERT INTO assets (id, tenant_id, external_id, hostname, vendor) "
    "VALUES ($1, $1, 'cmdb', 'host', 'acme')",
    "INSERT INTO asset_groups (id, tenant_id, name, filters) VALUES ($1, $1, 'all', '{}')",
    "INSERT INTO integration_points (id, tenant_id, name, type, connection_config) "
    "VALUES ($1, $1, 'k', 'kafka', '\\x01')",
    "INSERT INTO flows (id, tenant_id, name, asset_group_id) VALUES ($1, $1, 'main', $1)",
    "INSERT INTO flow_pulses (id, tenant_id, flow_id, integration_point_id, position, "
    "scheduler_interval, time_window) VALUES ($1, $1, $1, $1, 0, '1 min', '5 min')",
)
INSERT = (
    "INSERT INTO alerts (tenant_id, flow_pulse_id, asset_id, alert_type, severity, started_at) "
    "SELECT $1, $1, $1, 'silence', 'high', now() FROM generate_series(1, $2)"
)
INSERT_ONE = (
    "INSERT INTO alerts (tenant_id, flow_pulse_id, asset_id, alert_type, severity, started_at) "
    "VALUES ($1, $1, $1, 'silence', 'high', now()) RETURNING id"
)
TOGGLE = """
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT t.tgrelid::regclass AS tbl, t.tgname FROM pg_trigger t
             WHERE t.tgfoid = 'silentpulse_alert_notify_statement()'::regprocedure
               AND NOT t.tgisinternal ORDER BY 1, 2
    LOOP
        EXECUTE format('ALTER TABLE %s {} TRIGGER %I', r.tbl, r.tgname);
    END LOOP;
END $$;
"""


async def migrated(dsn: str) -> None:
    await apply_prerequisites(dsn)
    await run_migrations(dsn)


async def seed(conn: asyncpg.Connection, tenant: uuid.UUID) -> None:
    for i, sql in enumerate(SEED):
        await conn.execute(sql, tenant, *([f"b{tenant.hex[:12]}"] if i == 0 else []))


async def distribute(conn: asyncpg.Connection) -> None:
    await conn.execute("SET citus.enable_local_reference_table_foreign_keys = off")
    await conn.execute("SELECT create_reference_table('tenants')")
    for table in REFERENCED:
        await conn.execute(f"SELECT create_distributed_table('{table}', 'tenant_id')")
    await prepare_alert_stream_for_citus(conn, colocate_with="assets")


async def write_cost(conn: asyncpg.Connection, tenant: uuid.UUID) -> dict[str, list[float]]:
    """Per round: each variant's median one-alert INSERT and its 1,000-row INSERT."""
    samples: dict[str, list[float]] = {}
    for _ in range(ROUNDS):
        for variant in ("log", "none"):
            await conn.execute(TOGGLE.format("ENABLE" if variant == "log" else "DISABLE"))
            singles = []
            for _ in range(SINGLES):
                began = time.perf_counter()
                await conn.fetchval(INSERT_ONE, tenant)
                singles.append(time.perf_counter() - began)
            samples.setdefault(f"one {variant}", []).append(statistics.median(singles))
            began = time.perf_counter()
            await conn.execute(INSERT, tenant, BULK)
            samples.setdefault(f"bulk {variant}", []).append(time.perf_counter() - began)
    await conn.execute(TOGGLE.format("ENABLE"))
    return samples


async def delivery(dsn: str, tenant: uuid.UUID, **options: Any) -> list[float]:
    """Seconds from each INSERT's return to its event's arrival."""
    conn = await asyncpg.connect(dsn)
    listener = listen_alerts(dsn, consumer=f"bench-{uuid.uuid4().hex[:6]}", **options)
    arrived: dict[uuid.UUID, float] = {}

    async def consume() -> None:
        async for event in listener:
            arrived[event.alert_id] = time.perf_counter()

    task = asyncio.create_task(consume())
    try:
        await listener.ready()
        latencies = []
        for _ in range(DELIVERIES):
            await asyncio.sleep(random.uniform(0.05, 0.7))
            alert = await conn.fetchval(INSERT_ONE, tenant)
            written = time.perf_counter()
            while alert not in arrived:
                await asyncio.sleep(0.002)
            latencies.append(arrived[alert] - written)
        return latencies
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await conn.close()


async def two_tenants(conn: asyncpg.Connection, citus: bool) -> list[uuid.UUID]:
    """Two tenants, seeded; on Citus, one on each worker."""
    found: dict[int, uuid.UUID] = {}
    while len(found) < 2:
        tenant = uuid.uuid4()
        group = (
            await conn.fetchval(
                "SELECT p.groupid FROM pg_dist_placement p WHERE p.shardid = "
                "get_shard_id_for_distribution_column('alerts', $1::uuid)",
                tenant,
            )
            if citus
            else len(found)
        )
        found.setdefault(group, tenant)
    for tenant in found.values():
        await seed(conn, tenant)
    return list(found.values())


async def catch_up(dsn: str, tenants: list[uuid.UUID]) -> float:
    """Changes per second that a consumer stopped while BACKLOG changes of each tenant
    were written delivers once started again."""
    name = f"behind-{uuid.uuid4().hex[:6]}"
    async with listening(dsn, consumer=name):
        pass  # its position: now
    conn = await asyncpg.connect(dsn)
    try:
        for tenant in tenants:
            for _ in range(BACKLOG // BULK):
                await conn.execute(INSERT, tenant, BULK)
    finally:
        await conn.close()
    total = BACKLOG * len(tenants)
    began = time.perf_counter()
    async with listening(dsn, consumer=name, ready=False) as alerts:
        while len(alerts.events) < total:
            await asyncio.sleep(0.01)
    return total / (time.perf_counter() - began)


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


async def measure(plain_dsn: str, citus_dsn: str) -> str:
    await asyncio.gather(migrated(plain_dsn), migrated(citus_dsn))
    plain, citus = await asyncpg.connect(plain_dsn), await asyncpg.connect(citus_dsn)
    try:
        tenant = uuid.uuid4()
        await seed(plain, tenant)
        await distribute(citus)
        await seed(citus, tenant)
        await citus.execute("SET citus.enable_unsafe_triggers = on")
        costs = {"PostgreSQL": await write_cost(plain, tenant)}
        costs["Citus"] = await write_cost(citus, tenant)
        pairs = [await two_tenants(plain, False), await two_tenants(citus, True)]
    finally:
        await plain.close()
        await citus.close()
    delays = {
        "PostgreSQL (NOTIFY)": await delivery(plain_dsn, tenant),
        "Citus, poll_interval 0.5 s (default)": await delivery(citus_dsn, tenant),
        "Citus, poll_interval 0.1 s": await delivery(citus_dsn, tenant, poll_interval=0.1),
    }
    rates: dict[str, list[float]] = {"PostgreSQL": [], "Citus": []}
    for _ in range(CATCH_UPS):
        rates["PostgreSQL"].append(await catch_up(plain_dsn, pairs[0]))
        rates["Citus"].append(await catch_up(citus_dsn, pairs[1]))
    return render(costs, delays, rates)


def render(
    costs: dict[str, dict[str, list[float]]],
    delays: dict[str, list[float]],
    rates: dict[str, list[float]],
) -> str:
    lines = [
        "## Alert stream on Citus: write cost and delivery",
        "",
        f"{ROUNDS} alternating rounds, medians; {machine()}. Reproduce: "
        "`python bench/bench_citus_alerts.py` (a throwaway PostgreSQL 15 and a Citus 12.1 "
        "cluster, coordinator + 2 workers, on this machine).",
        "",
        "| server | INSERT of 1 alert, log on | log off | log's ratio | INSERT of 1,000, "
        "log on | log off | log's ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for server, s in costs.items():
        lines.append(
            f"| {server} | {statistics.median(s['one log']) * 1000:.2f} ms "
            f"| {statistics.median(s['one none']) * 1000:.2f} ms "
            f"| **{paired_ratio(s, 'one log', 'one none'):.3f}** "
            f"| {statistics.median(s['bulk log']) * 1000:.1f} ms "
            f"| {statistics.median(s['bulk none']) * 1000:.1f} ms "
            f"| **{paired_ratio(s, 'bulk log', 'bulk none'):.3f}** |"
        )
    plain, citus = costs["PostgreSQL"], costs["Citus"]
    one = statistics.median(citus["one log"]) / statistics.median(plain["one log"])
    bulk = statistics.median(citus["bulk log"]) / statistics.median(plain["bulk log"])
    lines += [
        "",
        f"Citus against PostgreSQL, log on: {one:.2f} x for one alert, {bulk:.2f} x for "
        "1,000 (the distributed INSERT itself: the coordinator plans and routes it to a "
        "worker).",
        "",
        f"Delivery, {DELIVERIES} alerts each, from the INSERT's return to the event:",
        "",
        "| listener | median | 90th percentile |",
        "|---|---|---|",
    ]
    for name, values in delays.items():
        lines.append(
            f"| {name} | {statistics.median(values) * 1000:.0f} ms | {p90(values) * 1000:.0f} ms |"
        )
    lines += [
        "",
        f"Catch-up: a consumer back after {2 * BACKLOG:,} changes (two tenants; on Citus one "
        f"on each worker), {CATCH_UPS} alternating rounds, medians:",
        "",
        "| server | changes delivered per second |",
        "|---|---|",
        *(f"| {server} | {statistics.median(r):,.0f} |" for server, r in rates.items()),
    ]
    return "\n".join(lines)


async def main() -> None:
    reason = citus_missing()
    if reason:
        raise SystemExit(f"bench_citus_alerts: {reason}")
    with PostgresServer() as server, CitusCluster() as cluster:
        plain_dsn = await databases.create_database(server.dsn, databases.unique_name("bench"))
        citus_dsn = await asyncio.to_thread(cluster.create_database, "bench_citus")
        write_section("citus-alerts", await measure(plain_dsn, citus_dsn))


if __name__ == "__main__":
    asyncio.run(main())

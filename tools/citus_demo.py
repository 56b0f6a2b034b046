"""`make citus-demo`: the schema distributed by tenant on a Citus cluster (issue 31).

Migrates, distributes (``silentpulse-db prerequisites``, ``up``, ``distribute``, through
the real CLI), runs a short workload of four tenants as an application role (no
superuser, no BYPASSRLS: row-level security applies, on the shards too), and prints the
shard and the node each tenant's rows live on, with what each tenant sees.

    python tools/citus_demo.py                              # a throwaway cluster:
                                                            # a coordinator, 2 workers
    CITUS_DEMO_DATABASE_URL=... python tools/citus_demo.py  # that coordinator's database:
                                                            # it CHANGES it (migrated,
                                                            # distributed, 4 tenants added)

(Not DATABASE_URL: a shell that has it set for a development database would migrate
that one.) A database that is not a Citus coordinator is refused before anything runs.

Where Citus is not installed it says why (the test harness's reason) and exits 0: a
skip, not a failure. tests/citus/test_distribute.py and bench/bench_citus_routing.py
use its workload.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: the working tree's package
    sys.path.insert(0, str(ROOT))

from silentpulse_db import create_pool, tenant_transaction  # noqa: E402

HANDLES = ("alpha", "bravo", "charlie", "delta")
ROWS = 20  # assets, alerts and audit rows a tenant
# The runbook's application grants (docs/operations.md; the test plugin's APP_GRANTS).
APP_GRANTS = (
    "GRANT USAGE ON SCHEMA public TO {role}; "
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}; "
    "GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role};"
)
# The tables whose rows the workload writes, and the demo counts.
WRITTEN = ("users", "assets", "alerts", "audit_logs")


@contextlib.asynccontextmanager
async def app_role(admin_dsn: str, prefix: str = "citus_demo_app") -> AsyncIterator[str]:
    """A LOGIN role without SUPERUSER or BYPASSRLS, with the application's grants; its
    DSN on the coordinator. The coordinator logs in to the workers as that role: its
    password goes in pg_dist_authinfo (node 0: every node), as Citus documents for
    password authentication between nodes. Dropped afterwards."""
    role = f"{prefix}_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(18)
    conn = await asyncpg.connect(admin_dsn)
    try:
        # CREATE ROLE reaches the workers: Citus propagates it.
        await conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        await conn.execute(APP_GRANTS.format(role=role))
        await conn.execute(
            "INSERT INTO pg_dist_authinfo (nodeid, rolename, authinfo) VALUES (0, $1, $2)",
            role,
            f"password={password}",
        )
    finally:
        await conn.close()
    parts = urlsplit(admin_dsn)
    netloc = f"{role}:{quote(password)}@{parts.hostname}:{parts.port}"
    try:
        yield parts._replace(netloc=netloc).geturl()
    finally:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute("DELETE FROM pg_dist_authinfo WHERE rolename = $1", role)
            await conn.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")
        finally:
            await conn.close()


async def seed_tenant(conn: Any, tenant: uuid.UUID, handle: str, rows: int = ROWS) -> None:
    """In ``conn``'s tenant_transaction(tenant): the tenant's own row (onboarding, as
    docs/tenancy.md says), a user, a flow of one pulse, ``rows`` assets, an alert and an
    audit row for each. Every statement names tenant_id: each goes to the tenant's shard."""
    await conn.execute(
        "INSERT INTO tenants (id, name, handle) VALUES ($1, $2, $3)", tenant, handle.title(), handle
    )
    user = await conn.fetchval(
        "INSERT INTO users (tenant_id, email, password_hash, role) "
        "VALUES ($1, $2, 'demo', 'admin') RETURNING id",
        tenant,
        f"admin+{tenant.hex[:8]}@{handle}.example",
    )
    group = await conn.fetchval(
        "INSERT INTO asset_groups (tenant_id, name) VALUES ($1, 'all') RETURNING id", tenant
    )
    point = await conn.fetchval(
        "INSERT INTO integration_points (tenant_id, name, type, connection_config) "
        "VALUES ($1, 'syslog', 'syslog', '\\x00') RETURNING id",
        tenant,
    )
    flow = await conn.fetchval(
        "INSERT INTO flows (tenant_id, name, asset_group_id) VALUES ($1, 'main', $2) RETURNING id",
        tenant,
        group,
    )
    pulse = await conn.fetchval(
        "INSERT INTO flow_pulses (tenant_id, flow_id, integration_point_id, position, "
        "scheduler_interval, time_window) VALUES ($1, $2, $3, 0, '1 min', '5 min') RETURNING id",
        tenant,
        flow,
        point,
    )
    # Ids from the client: an INSERT ... SELECT that leaves gen_random_uuid() (volatile)
    # to the server is pulled to the coordinator and written with COPY, which row-level
    # security refuses (docs/scaling.md).
    assets = [uuid.uuid4() for _ in range(rows)]
    await conn.executemany(
        "INSERT INTO assets (tenant_id, id, external_id, hostname) VALUES ($1, $2, $3, $4)",
        [(tenant, a, f"{handle}-{i}", f"{handle}-{i}.example") for i, a in enumerate(assets)],
    )
    await conn.executemany(
        "INSERT INTO alerts (tenant_id, id, flow_pulse_id, asset_id, alert_type, severity, "
        "started_at) VALUES ($1, $2, $3, $4, 'silence', 'high', now())",
        [(tenant, uuid.uuid4(), pulse, a) for a in assets],
    )
    await conn.executemany(
        "INSERT INTO audit_logs (tenant_id, id, user_id, action, entity_type, entity_id) "
        "VALUES ($1, $2, $3, 'create', 'asset', $4)",
        [(tenant, uuid.uuid4(), user, a) for a in assets],
    )


async def run_workload(
    app_dsn: str, handles: Sequence[str] = HANDLES, rows: int = ROWS
) -> dict[str, uuid.UUID]:
    """Each tenant's rows written as the application role, one tenant_transaction each;
    returns the tenants by handle."""
    tenants = {handle: uuid.uuid4() for handle in handles}
    pool = await create_pool(app_dsn, min_size=1, max_size=2)
    try:
        for handle, tenant in tenants.items():
            async with tenant_transaction(pool, tenant) as conn:
                await seed_tenant(conn, tenant, handle, rows)
    finally:
        await pool.close()
    return tenants


async def seen_by_each(app_dsn: str, tenants: Mapping[str, uuid.UUID]) -> dict[str, dict[str, int]]:
    """What each tenant sees of every table WRITTEN (row-level security alone: no
    tenant_id in the query, so each query goes to every shard), as the application role."""
    seen: dict[str, dict[str, int]] = {}
    pool = await create_pool(app_dsn, min_size=1, max_size=1)
    try:
        for handle, tenant in tenants.items():
            async with tenant_transaction(pool, tenant) as conn:
                seen[handle] = {
                    table: await conn.fetchval(f"SELECT count(*) FROM {table}") for table in WRITTEN
                }
    finally:
        await pool.close()
    return seen


@dataclass(frozen=True)
class Home:
    """Where a tenant's rows live: the shard of ``table`` for it, and that shard's node."""

    handle: str
    tenant: uuid.UUID
    table: str
    shard: str  # the shard's table name on its node
    node: str  # host:port
    role: str  # coordinator, or worker N
    rows: dict[str, int]  # per table WRITTEN, counted on the coordinator (every tenant's)
    nodes: int  # the nodes its shards of every distributed table WRITTEN are on (1: colocated)


_HOME = """
SELECT s.shard_name::text AS shard, s.nodename || ':' || s.nodeport AS node,
       CASE WHEN n.groupid = 0 THEN 'coordinator' ELSE 'worker ' || n.groupid END AS role
  FROM citus_shards s JOIN pg_dist_node n ON n.nodename = s.nodename AND n.nodeport = s.nodeport
 WHERE s.shardid = get_shard_id_for_distribution_column($1::regclass, $2::uuid)
 ORDER BY n.groupid LIMIT 1
"""


# The nodes holding a tenant's shards of the hash-distributed tables among $1.
_NODES = """
SELECT count(DISTINCT s.nodename || ':' || s.nodeport)
  FROM pg_dist_partition p
  JOIN citus_shards s ON s.shardid = get_shard_id_for_distribution_column(p.logicalrelid, $2::uuid)
 WHERE p.logicalrelid::text = ANY ($1::text[]) AND p.partmethod = 'h'
"""


async def homes(
    admin_dsn: str, tenants: Mapping[str, uuid.UUID], table: str = "alerts"
) -> list[Home]:
    """Each tenant's shard of ``table`` and its node, and its rows (read as ``admin_dsn``'s
    role, which sees every tenant: the counts are the shards', not a tenant's view)."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        found = []
        for handle, tenant in tenants.items():
            row = await conn.fetchrow(_HOME, table, tenant)
            rows = {
                name: await conn.fetchval(
                    f"SELECT count(*) FROM {name} WHERE tenant_id = $1", tenant
                )
                for name in WRITTEN
            }
            nodes = await conn.fetchval(_NODES, [*WRITTEN], tenant)
            home = Home(handle, tenant, table, row["shard"], row["node"], row["role"], rows, nodes)
            found.append(home)
        return found
    finally:
        await conn.close()


def render(found: Sequence[Home], seen: Mapping[str, Mapping[str, int]]) -> str:
    """A Markdown table: each tenant's shard and node, its rows, and what it sees."""
    head = ", ".join(WRITTEN)
    table = found[0].table if found else "alerts"
    lines = [
        f"| tenant | its shard of {table} | node | its rows ({head}) | it sees, as the app "
        f"role, with no tenant_id in the query | nodes of its shards |",
        "|---|---|---|---|---|---|",
    ]
    for home in found:
        rows = ", ".join(str(home.rows[t]) for t in WRITTEN)
        sees = ", ".join(str(seen[home.handle][t]) for t in WRITTEN)
        lines.append(
            f"| {home.handle} | `{home.shard}` | {home.node} ({home.role}) | {rows} | {sees} "
            f"| {home.nodes} |"
        )
    everyone = ", ".join(str(sum(h.rows[t] for h in found)) for t in WRITTEN)
    lines += [
        "",
        f"All tenants' rows ({head}): {everyone}. users is a reference table (a copy on every "
        f"node); the others are distributed by tenant_id and colocated: a tenant's shards of "
        f"every one of them are on one node.",
    ]
    return "\n".join(lines)


async def show(admin_dsn: str) -> str:
    async with app_role(admin_dsn) as app:
        tenants = await run_workload(app)
        seen = await seen_by_each(app, tenants)
    return render(await homes(admin_dsn, tenants), seen)


def _cli(dsn: str, *args: str) -> None:
    from silentpulse_db.migrate.cli import main as cli

    print(f"\n$ silentpulse-db {' '.join(args)}", flush=True)
    os.environ["DATABASE_URL"] = dsn  # the runbook's way: not on the command line
    status = cli(list(args))
    sys.stdout.flush()
    if status != 0:
        raise SystemExit(f"`silentpulse-db {' '.join(args)}` failed (exit {status})")


def demo(dsn: str) -> None:
    for step in (("prerequisites",), ("up",), ("distribute",), ("distribute",)):
        _cli(dsn, *step)
    print(f"\n$ a workload of {len(HANDLES)} tenants as the application role", flush=True)
    print(asyncio.run(show(dsn)))


async def _refused(dsn: str) -> str | None:
    """Why ``dsn`` cannot take the demo (not a Citus coordinator with nodes), or None."""
    from silentpulse_db.errors import CitusRequiredError
    from silentpulse_db.postgres.dsn import redact
    from silentpulse_db.schema.distribution import coordinator_nodes

    conn = await asyncpg.connect(dsn)
    try:
        await coordinator_nodes(conn, redact(dsn, dsn))
    except CitusRequiredError as exc:
        return str(exc)
    finally:
        await conn.close()
    return None


def main() -> int:
    given = os.environ.get(DSN_ENV)
    if given:
        refused = asyncio.run(_refused(given))
        if refused:
            print(f"citus-demo: {refused}", file=sys.stderr)
            return 2
        demo(given)
        return 0
    from silentpulse_db.testing.citus import CitusCluster, citus_missing

    reason = citus_missing()
    if reason:
        print(f"citus-demo skipped: {reason}", file=sys.stderr)
        return 0
    with CitusCluster() as cluster:
        dsn = cluster.create_database("citus_demo")
        nodes = ", ".join(f"{HOST}:{node.port}" for node in cluster.nodes)
        print(f"throwaway Citus cluster: coordinator and {len(cluster.workers)} workers ({nodes})")
        demo(dsn)
    print("\ncluster stopped")
    return 0


HOST = "127.0.0.1"
DSN_ENV = "CITUS_DEMO_DATABASE_URL"

if __name__ == "__main__":
    sys.exit(main())

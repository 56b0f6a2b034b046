"""`silentpulse-db distribute` on a real cluster (issue 31, 2): the migrated schema placed
as planned (reference tables, every other tenant table distributed by tenant_id and
colocated, the bookkeeping left on the coordinator); a dry run that changes nothing; a
second run that does nothing; a run killed mid-way that the next one finishes; plain
PostgreSQL, a worker, an old schema and a role that does not own the tables refused.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from silentpulse_db import (
    CitusRequiredError,
    SchemaVersionError,
    maintain_partitions,
    run_migrations,
    tenant_transaction,
)
from silentpulse_db.defaults import PARTITIONS_AHEAD
from silentpulse_db.migrate import apply_prerequisites, distribute, down
from silentpulse_db.results.placement import COORDINATOR, DISTRIBUTED, REFERENCE
from silentpulse_db.schema.distribution import TENANT_FIRST_VERSION
from silentpulse_db.testing.citus import CitusCluster

from helpers import CITUS_SHARDS, execute, fetch, fetchval

ROOT = Path(__file__).resolve().parents[2]
# What the packaged schema's catalog makes of each table (distribute reads it, not a list).
REFERENCE_TABLES = {"tenants", "users", "api_keys", "mitre_techniques", "connector_defs"}
PLATFORM_WIDE = {"users", "api_keys"}  # tenant tables with a key unique across tenants
ON_THE_COORDINATOR = {
    "schema_migrations",
    "schema_migrations_history",
    "alert_listener_positions",
    "alert_changes_pruned",
}
PARTITIONED = {"alerts", "audit_logs", "asset_observations"}
# The dry run's test distributes to Citus's default shard count (32: its plan says so),
# the others to helpers.CITUS_SHARDS.


def load_demo() -> ModuleType:
    """tools/citus_demo.py: its workload (one tenant's rows across the schema)."""
    spec = importlib.util.spec_from_file_location("citus_demo", ROOT / "tools" / "citus_demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


demo = load_demo()


async def migrate(dsn: str, target: int | None = None) -> None:
    await apply_prerequisites(dsn)
    await run_migrations(dsn, target=target)


async def seed(dsn: str, handles: tuple[str, ...], rows: int = 5) -> dict[str, uuid.UUID]:
    """Tenants' rows written as ``dsn``'s role (the superuser: before distribute, as a
    database that grew on one server has them)."""
    tenants = {handle: uuid.uuid4() for handle in handles}
    conn = await asyncpg.connect(dsn)
    try:
        for handle, tenant in tenants.items():
            async with tenant_transaction(conn, tenant):
                await demo.seed_tenant(conn, tenant, handle, rows)
    finally:
        await conn.close()
    return tenants


TENANT_TABLES = """
SELECT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
 WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
   AND NOT c.relispartition AND a.attname = 'tenant_id' AND NOT a.attisdropped
"""
ALL_TABLES = """
SELECT c.relname FROM pg_class c
 WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
"""
# Every table and partition: its Citus placement, distribution column, colocation group.
PLACEMENTS = """
SELECT c.relname, p.partmethod::text AS method, p.repmodel::text AS replication,
       p.colocationid AS colocation,
       CASE WHEN p.partmethod = 'h' THEN column_to_column_name(p.logicalrelid, p.partkey) END
         AS column
  FROM pg_class c LEFT JOIN pg_dist_partition p ON p.logicalrelid = c.oid
 WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
"""


async def names(dsn: str, sql: str) -> set[str]:
    return {r[0] for r in await fetch(dsn, sql)}


async def placements(dsn: str) -> dict[str, Any]:
    return {r["relname"]: r for r in await fetch(dsn, PLACEMENTS)}


async def snapshot(dsn: str) -> list[Any]:
    """What distribute may change: placements, shards, triggers, policies, local storage."""
    queries = (
        PLACEMENTS,
        "SELECT count(*) FROM pg_dist_shard",
        "SELECT tgrelid::regclass::text, tgname FROM pg_trigger ORDER BY 1, 2",
        "SELECT polrelid::regclass::text, polname FROM pg_policy ORDER BY 1, 2",
        "SELECT relname, pg_relation_size(oid) FROM pg_class "
        "WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' ORDER BY 1",
    )
    return [sorted(map(tuple, await fetch(dsn, sql))) for sql in queries]


async def counts(dsn: str) -> dict[str, int]:
    return {t: await fetchval(dsn, f"SELECT count(*) FROM {t}") for t in demo.WRITTEN}


async def local_bytes(dsn: str) -> int:
    """The coordinator's own storage of every Citus table and partition."""
    return int(
        await fetchval(
            dsn,
            "SELECT coalesce(sum(pg_relation_size(logicalrelid)), 0) FROM pg_dist_partition",
        )
    )


def cli(*args: str, dsn: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": dsn}
    return subprocess.run(
        [sys.executable, "-m", "silentpulse_db", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


async def assert_placed_as_planned(dsn: str) -> None:
    placed = await placements(dsn)
    tenant_tables = await names(dsn, TENANT_TABLES)
    tables = await names(dsn, ALL_TABLES)
    assert tables >= ON_THE_COORDINATOR and tables >= REFERENCE_TABLES
    distributed = tenant_tables - PLATFORM_WIDE
    for name in REFERENCE_TABLES:
        assert (placed[name]["method"], placed[name]["replication"]) == ("n", "t"), name
    for name in ON_THE_COORDINATOR:
        assert placed[name]["method"] is None, name
    # Every other table is a tenant table, distributed by tenant_id in one group; so is
    # every partition (Citus distributes a partitioned table's partitions with it).
    assert tables - REFERENCE_TABLES - ON_THE_COORDINATOR == distributed
    by_tenant = {n: r for n, r in placed.items() if r["method"] == "h"}
    assert distributed <= set(by_tenant)
    parents = await fetch(
        dsn,
        "SELECT DISTINCT i.inhparent::regclass::text FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE c.relname = ANY ($1::text[])",
        sorted(set(by_tenant) - distributed),
    )
    assert {r[0] for r in parents} == PARTITIONED
    assert {r["column"] for r in by_tenant.values()} == {"tenant_id"}
    assert len({r["colocation"] for r in by_tenant.values()}) == 1


async def test_the_dry_run_changes_nothing_and_distribute_places_every_table_once(
    silentpulse_citus_migrated_database: str,
) -> None:
    dsn = silentpulse_citus_migrated_database
    await seed(dsn, ("alpha", "bravo"))  # rows to copy: the coordinator's own copy freed after
    rows = await counts(dsn)
    before = await snapshot(dsn)

    plan = await distribute(dsn, dry_run=True)
    assert await snapshot(dsn) == before
    assert plan.dry_run and plan.changed and plan.version >= TENANT_FIRST_VERSION
    assert set(plan.placed(REFERENCE)) == REFERENCE_TABLES
    assert set(plan.placed(COORDINATOR)) >= ON_THE_COORDINATOR
    assert set(plan.placed(DISTRIBUTED)) == await names(dsn, TENANT_TABLES) - PLATFORM_WIDE
    assert all(step.duration is None for step in plan.steps)
    why = {t.table: t.reason for t in plan.tables}
    assert "users_email_key (lower(email))" in why["users"] and "docs/tenancy.md" in why["users"]
    assert "api_keys_key_hash_key (key_hash)" in why["api_keys"]
    # Reference tables first, then each distributed table after those it references.
    actions = [(s.action, s.table) for s in plan.steps]
    order = [table for _, table in actions]
    assert [a for a, _ in actions[: len(REFERENCE_TABLES)]] == ["reference"] * 5
    assert order.index("tenants") < order.index("users") < order.index("api_keys")
    assert order.index("assets") < order.index("alerts") and order.index("flows") < order.index(
        "flow_pulses"
    )
    assert {t for a, t in actions if a == "free local copy"} >= {"tenants", "assets", "alerts"}
    settings = {s.name: s.value for s in plan.settings}
    assert settings == {
        "citus.enable_local_reference_table_foreign_keys": "off",
        "shard_count": "32",
        "citus.enable_unsafe_triggers": "on",
    }
    shown = cli("distribute", "--dry-run", dsn=dsn)
    assert shown.returncode == 0, shown.stderr
    assert "dry run: nothing changed" in shown.stdout
    assert "SELECT create_reference_table('public.tenants');" in shown.stdout
    assert await snapshot(dsn) == before

    report = await distribute(dsn)
    assert not report.dry_run
    assert [(s.action, s.table) for s in report.steps] == actions
    assert all(step.duration is not None for step in report.steps)
    await assert_placed_as_planned(dsn)
    assert await counts(dsn) == rows
    assert await local_bytes(dsn) == 0  # freed

    again = await distribute(dsn)
    assert again.steps == () and not again.changed
    shown = cli("distribute", dsn=dsn)
    assert shown.returncode == 0, shown.stderr
    assert "nothing to do" in shown.stdout

    # The partition job on the distributed schema: the new months are distributed too.
    months = await maintain_partitions(dsn, ahead=PARTITIONS_AHEAD + 1)
    assert months.skipped == ()
    assert {c.table for c in months.created} == PARTITIONED
    placed = await placements(dsn)
    assert all(placed[c.partition]["method"] == "h" for c in months.created)
    assert (await distribute(dsn)).steps == ()

    # A tenant table added later (the next release's, a service's): with its key to
    # tenants, a reference table, Citus makes it a Citus local table; distribute places it.
    await execute(
        dsn,
        "CREATE TABLE notes (tenant_id uuid NOT NULL REFERENCES tenants ON DELETE CASCADE, "
        "id uuid NOT NULL, body text, PRIMARY KEY (tenant_id, id))",
    )
    later = await distribute(dsn)
    assert [(s.action, s.table) for s in later.steps] == [("distribute", "notes")]
    placed = await placements(dsn)
    assert placed["notes"]["colocation"] == placed["assets"]["colocation"]
    await assert_placed_as_planned(dsn)


async def test_plain_postgresql_and_a_worker_are_refused(
    silentpulse_migrated_database: str,
    silentpulse_citus: CitusCluster,
    silentpulse_citus_database: str,
) -> None:
    with pytest.raises(CitusRequiredError, match="distribute runs on a Citus coordinator") as e:
        await distribute(silentpulse_migrated_database, dry_run=True)
    assert "citus extension" in str(e.value)
    shown = cli("distribute", dsn=silentpulse_migrated_database)
    assert shown.returncode == 2, shown.stderr  # a configuration error
    assert "silentpulse-db distribute: error:" in shown.stderr
    assert (
        await fetchval(
            silentpulse_migrated_database,
            "SELECT count(*) FROM pg_extension WHERE extname = 'citus'",
        )
        == 0
    )

    name = urlsplit(silentpulse_citus_database).path.lstrip("/")
    worker = silentpulse_citus.workers[0].admin_dsn(name)
    with pytest.raises(CitusRequiredError, match="is a Citus worker") as e:
        await distribute(worker)
    assert e.value.found == "a Citus worker"


async def test_a_schema_before_the_tenant_first_keys_is_refused(
    silentpulse_citus_database: str,
) -> None:
    dsn = silentpulse_citus_database
    with pytest.raises(SchemaVersionError, match="was never migrated") as e:
        await distribute(dsn)
    assert (e.value.required, e.value.found) == (TENANT_FIRST_VERSION, None)
    await migrate(dsn, target=23)
    with pytest.raises(SchemaVersionError, match=f"needs version {TENANT_FIRST_VERSION}") as e:
        await distribute(dsn, dry_run=True)
    assert (e.value.required, e.value.found) == (TENANT_FIRST_VERSION, 23)
    assert "silentpulse-db up" in str(e.value)
    assert await fetchval(dsn, "SELECT count(*) FROM pg_dist_partition") == 0


async def test_after_distribute_the_alert_stream_delivers_what_the_workers_commit(
    silentpulse_citus_migrated_database: str,
) -> None:
    """distribute places alerts and its log with prepare_alert_stream_for_citus: a
    tenant's alerts, written on its worker after distribute, reach a listener on the
    coordinator (no NOTIFY from a worker: the listener polls), and a tenant written
    across both workers in one transaction commits."""
    from silentpulse_db.testing.alerts import listening

    dsn = silentpulse_citus_migrated_database
    await seed(dsn, ("before",))
    await distribute(dsn, shard_count=CITUS_SHARDS)
    async with listening(dsn, poll_interval=0.2, initial_backoff=0.1) as alerts:
        tenants = await seed(dsn, ("alpha", "beta"))  # one transaction each
        rows = await fetch(
            dsn,
            "SELECT id, tenant_id FROM alerts WHERE tenant_id = ANY($1::uuid[])",
            list(tenants.values()),
        )
        assert len(rows) == 2 * 5
        for row in rows:
            await alerts.wait_for(row["id"])
    assert {e.alert_id for e in alerts.events} == {row["id"] for row in rows}
    # What prepare_alert_stream_for_citus changed on purpose is no drift; the rest is.
    from silentpulse_db.migrate import drift

    report = await drift(dsn)
    assert report.matches, [str(d) for d in report.differences]
    assert {e.rule for e in report.excused if "alert_changes" in e.key}, report.excused


async def test_a_schema_distributed_at_59_takes_the_later_migrations(
    silentpulse_citus_database: str,
) -> None:
    """A deployment distributed before 000060-000062 upgrades in place: the shared
    reference tables get their row-level security and policies on every node (Citus
    forwards them to the reference tables' shards), asset_group_mitre's reference
    becomes NO ACTION and is validated, and the listeners' table its holder columns."""
    dsn = silentpulse_citus_database
    await migrate(dsn, target=59)
    tenants = await seed(dsn, ("before",))
    await distribute(dsn, shard_count=CITUS_SHARDS)
    result = await run_migrations(dsn)
    assert [a.version for a in result.applied] == [60, 61, 62]
    assert await fetchval(
        dsn, "SELECT relrowsecurity FROM pg_class WHERE oid = 'mitre_techniques'::regclass"
    )
    on_workers = await fetch(
        dsn,
        "SELECT DISTINCT result FROM run_command_on_placements('mitre_techniques', "
        "$$SELECT relrowsecurity::text FROM pg_class WHERE oid = '%s'::regclass$$)",
    )
    assert [r[0] for r in on_workers] == ["true"]
    validated = "SELECT convalidated FROM pg_constraint WHERE conname = $1"
    assert await fetchval(dsn, validated, "asset_group_mitre_mitre_technique_id_fkey")
    assert await fetchval(
        dsn, "SELECT count(*) FROM alerts WHERE tenant_id = $1", tenants["before"]
    )
    # And each down undoes it there.
    assert (await down(dsn, 3)).version_after == 59
    assert not await fetchval(
        dsn, "SELECT relrowsecurity FROM pg_class WHERE oid = 'mitre_techniques'::regclass"
    )

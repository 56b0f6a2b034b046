"""The packaged schema on a Citus coordinator (issue 31): the migrations apply unchanged,
and tools/citus_probe.py's outcomes, table by table, on the schema as released up to
000023 are what the issue found. The tenant-first keys that follow change them: what
distributes after those is their own test's to say, and docs/scaling.md's table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from silentpulse_db import run_migrations
from silentpulse_db.migrate import apply_prerequisites, load_source

from helpers import fetch, fetchval

ROOT = Path(__file__).resolve().parents[2]
# The last migration of the schema these outcomes are of: main's, before issue 31's keys.
RELEASED = 23

PK = (
    "Distributed relations cannot have UNIQUE, EXCLUDE, or PRIMARY KEY constraints that do "
    "not include the partition column"
)
SET_NULL = (
    "SET NULL or SET DEFAULT is not supported in ON DELETE operation when distribution key "
    "is included in the foreign key constraint"
)
TRIGGERS = "because it has triggers"
LOCAL_TABLES_CONVERTED = (
    "When adding a foreign key from a local table to a reference table, Citus applies a "
    "conversion to all the local tables in the foreign key graph"
)

# Each table's own blocker at RELEASED (tried alone where a table it references failed first).
DISTRIBUTES = {"ai_configs"}
FAIL_ON_TRIGGERS = {"alerts", "alert_changes"}
FAIL_ON_SET_NULL = {
    "anomaly_events",
    "audit_tasks",
    "compliance_breaches",
    "exclusion_windows",
    "threshold_suggestions",
}
FAIL_ON_KEYS = {
    "api_keys",
    "asset_group_mitre",
    "asset_groups",
    "asset_observation_daily",
    "asset_observation_hourly",
    "asset_observations",
    "asset_profiles",
    "assets",
    "audit_logs",
    "availability_snapshots",
    "exclusion_logs",
    "feed_profiles",
    "flow_pulses",
    "flows",
    "integration_points",
    "notification_channels",
    "notification_rules",
    "report_definitions",
    "report_executions",
    "users",
}
# Refused on their own keys in foreign-key order; the rest of FAIL_ON_KEYS and
# FAIL_ON_SET_NULL are refused there first because a table they reference was.
KEYS_FIRST = {
    "asset_groups",
    "assets",
    "integration_points",
    "notification_channels",
    "report_definitions",
    "users",
}
BLOCKED_BY_A_REFERENCED_TABLE = (FAIL_ON_SET_NULL | FAIL_ON_KEYS) - KEYS_FIRST


def load_probe() -> ModuleType:
    spec = importlib.util.spec_from_file_location("citus_probe", ROOT / "tools" / "citus_probe.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


async def migrate(dsn: str, target: int) -> None:
    await apply_prerequisites(dsn)
    await run_migrations(dsn, target=target)


async def test_the_packaged_migrations_apply_on_the_coordinator(
    silentpulse_citus_database: str,
) -> None:
    await apply_prerequisites(silentpulse_citus_database)
    result = await run_migrations(silentpulse_citus_database)
    assert result.version_after == load_source().latest
    version = await fetchval(silentpulse_citus_database, "SELECT version FROM schema_migrations")
    assert version == load_source().latest
    # Plain PostgreSQL tables on the coordinator: nothing is distributed by migrating.
    assert await fetchval(silentpulse_citus_database, "SELECT count(*) FROM pg_dist_partition") == 0


async def test_the_probe_finds_what_distributes_as_released(
    silentpulse_citus_database: str,
) -> None:
    probe = load_probe()
    await migrate(silentpulse_citus_database, RELEASED)
    outcomes = await probe.probe(silentpulse_citus_database)
    print(probe.render(outcomes))  # the table docs/scaling.md shows (pytest -s)

    tenants = [o for o in outcomes if o.table == "tenants"]
    assert [(o.outcome, o.setting) for o in tenants] == [
        ("failed", ""),
        ("reference", "citus.enable_local_reference_table_foreign_keys = off"),
    ]
    assert LOCAL_TABLES_CONVERTED in tenants[0].detail

    in_order = {o.table: o for o in outcomes if o.table != "tenants" and not o.setting}
    alone = {o.table: o for o in outcomes if o.setting == probe.ALONE}
    tenant_tables = await fetch(
        silentpulse_citus_database,
        "SELECT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid "
        "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') "
        "AND NOT c.relispartition AND a.attname = 'tenant_id' AND NOT a.attisdropped",
    )
    assert set(in_order) == {r["relname"] for r in tenant_tables}  # a new one: say its outcome

    blocked = {t for t, o in in_order.items() if probe.BLOCKED in o.error}
    assert blocked == BLOCKED_BY_A_REFERENCED_TABLE
    assert set(alone) == blocked
    own = {**in_order, **alone}
    assert {t for t, o in own.items() if o.outcome == "distributed"} == DISTRIBUTES
    failed = {t: o for t, o in own.items() if o.outcome == "failed"}
    assert {t for t, o in failed.items() if TRIGGERS in o.error} == FAIL_ON_TRIGGERS
    assert {t for t, o in failed.items() if o.detail.startswith(SET_NULL)} == FAIL_ON_SET_NULL
    assert {t for t, o in failed.items() if o.detail.startswith(PK)} == FAIL_ON_KEYS
    assert set(own) == DISTRIBUTES | FAIL_ON_TRIGGERS | FAIL_ON_SET_NULL | FAIL_ON_KEYS

    distributed = await fetch(
        silentpulse_citus_database,
        "SELECT logicalrelid::text AS name, partmethod::text FROM pg_dist_partition ORDER BY 1",
    )
    assert [(r["name"], r["partmethod"]) for r in distributed] == [
        ("ai_configs", "h"),
        ("tenants", "n"),
    ]

"""The packaged schema on a real server: tables, tenant isolation, constraints, the alert
trigger, and a clean down to nothing and up again."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any
from urllib.parse import quote, urlsplit

import asyncpg
import pytest

from silentpulse_db import run_migrations
from silentpulse_db.migrate import apply_prerequisites, down, load_source
from silentpulse_db.migrate.proofs.snapshot import snapshot

from .seed import GLOBAL_TABLES, NOW, TENANT_TABLES, seed_tenant
from helpers import execute, fetch, fetchval, version_rows

KEY_COLUMNS = {
    "tenants": {"id", "name", "handle", "settings", "created_at"},
    "assets": {
        "id",
        "tenant_id",
        "external_id",
        "hostname",
        "ip",
        "os",
        "vendor",
        "product",
        "region",
        "rating",
        "metadata",
    },
    "asset_groups": {"id", "tenant_id", "name", "filters"},
    "integration_points": {"id", "tenant_id", "type", "connection_config"},
    "flows": {"id", "tenant_id", "asset_group_id", "enabled"},
    "flow_pulses": {
        "id",
        "flow_id",
        "integration_point_id",
        "position",
        "scheduler_interval",
        "time_window",
    },
    "alerts": {
        "id",
        "tenant_id",
        "flow_pulse_id",
        "asset_id",
        "alert_type",
        "severity",
        "status",
        "started_at",
        "resolved_at",
        "mitre_techniques",
    },
    "users": {"id", "tenant_id", "email", "password_hash", "role"},
    "notification_channels": {"id", "tenant_id", "type", "config", "enabled"},
    "notification_rules": {"id", "tenant_id", "conditions", "notification_channel_id"},
    "report_definitions": {
        "id",
        "tenant_id",
        "type",
        "filters",
        "period",
        "schedule_cron",
        "format",
        "recipients",
    },
    "report_executions": {
        "id",
        "report_definition_id",
        "status",
        "generated_at",
        "file_path",
        "error",
    },
    "api_keys": {"id", "tenant_id", "key_hash", "scopes", "user_id", "expires_at"},
    "audit_tasks": {
        "id",
        "tenant_id",
        "auditor_user_id",
        "scope_filters",
        "period_start",
        "period_end",
        "access_expires_at",
        "status",
        "created_by",
    },
    "audit_logs": {
        "id",
        "tenant_id",
        "user_id",
        "action",
        "entity_type",
        "entity_id",
        "changes",
        "created_at",
        "request_id",
        "client_addr",
        "user_agent",
        "actor_type",
    },
    "ai_configs": {
        "tenant_id",
        "provider",
        "model",
        "api_key_enc",
        "encryption_version",
        "max_tokens",
        "enabled",
    },
    "exclusion_windows": {
        "id",
        "tenant_id",
        "asset_group_id",
        "start_time",
        "end_time",
        "recurrence_type",
        "recurrence_end",
        "created_by",
    },
    "exclusion_logs": {
        "id",
        "tenant_id",
        "exclusion_window_id",
        "asset_id",
        "flow_pulse_id",
        "suppressed_at",
        "reason",
    },
    "availability_snapshots": {
        "id",
        "tenant_id",
        "asset_group_id",
        "availability_percent",
        "kpi_target_percent",
        "compliant",
    },
    "compliance_breaches": {
        "id",
        "tenant_id",
        "asset_group_id",
        "snapshot_id",
        "status",
        "acknowledged_by",
        "resolved_by",
    },
    "connector_defs": {"type", "version", "source", "manifest", "synced_at"},
    "mitre_techniques": {"id", "technique_id", "name", "tactic", "description"},
    "asset_group_mitre": {"asset_group_id", "mitre_technique_id"},
    "asset_observations": {
        "id",
        "tenant_id",
        "asset_id",
        "flow_pulse_id",
        "observed_at",
        "metadata",
    },
    "asset_observation_hourly": {
        "tenant_id",
        "asset_id",
        "flow_pulse_id",
        "hour",
        "observation_count",
        "avg_interval_ms",
    },
    "asset_observation_daily": {
        "tenant_id",
        "asset_id",
        "flow_pulse_id",
        "date",
        "uptime_pct",
        "gaps_count",
        "longest_gap_ms",
    },
    "feed_profiles": {"id", "tenant_id", "flow_pulse_id", "status", "config", "baseline"},
    "asset_profiles": {"id", "tenant_id", "asset_id", "flow_pulse_id", "status"},
    "threshold_suggestions": {
        "id",
        "tenant_id",
        "flow_pulse_id",
        "asset_id",
        "suggestion_type",
        "priority",
        "status",
        "responded_by",
    },
    "anomaly_events": {
        "id",
        "tenant_id",
        "flow_pulse_id",
        "asset_id",
        "anomaly_type",
        "severity",
        "related_alert_id",
        "status",
    },
}


async def test_fresh_database_reaches_latest_with_every_table(
    silentpulse_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    prerequisites = await apply_prerequisites(silentpulse_database)
    assert {"uuid-ossp", "pgcrypto"} <= set(prerequisites.installed)
    if "age" not in prerequisites.installed:
        assert prerequisites.unavailable_optional == ("age",)
        assert any('"age"' in n for n in prerequisites.notices)
    with caplog.at_level(logging.INFO, logger="silentpulse_db"):
        result = await run_migrations(silentpulse_database)
    # "trigger ... does not exist, skipping" from an IF EXISTS is not news on a fresh
    # database (issue 20, 6): debug, not the service's start-up log.
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert not [m for m in said if m.endswith(", skipping")], said
    assert (result.version_before, result.version_after) == (None, load_source().latest)
    rows = await fetch(
        silentpulse_database,
        "SELECT table_name, array_agg(column_name::text) AS columns FROM information_schema.columns "
        "WHERE table_schema = 'public' GROUP BY table_name",
    )
    columns = {r["table_name"]: set(r["columns"]) for r in rows}
    for table, expected in KEY_COLUMNS.items():
        assert table in columns, f"missing table {table}"
        assert expected <= columns[table], f"{table} lacks {expected - columns[table]}"
    assert set(KEY_COLUMNS) == set(TENANT_TABLES) | set(GLOBAL_TABLES)
    # Credential columns hold envelopes.
    types = {
        (r["table_name"], r["column_name"]): r["data_type"]
        for r in await fetch(
            silentpulse_database,
            "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = 'public'",
        )
    }
    for column in [
        ("integration_points", "connection_config"),
        ("notification_channels", "config"),
        ("ai_configs", "api_key_enc"),
    ]:
        assert types[column] == "bytea"
    # Partitioned by month, with a default partition.
    parts = {
        r["relname"]
        for r in await fetch(
            silentpulse_database,
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid",
        )
    }
    month = NOW.strftime("%Y_%m")
    for table in ("alerts", "audit_logs", "asset_observations"):
        assert f"{table}_p{month}" in parts and f"{table}_default" in parts


async def test_every_foreign_key_is_indexed(silentpulse_migrated_database: str) -> None:
    unindexed = await fetch(
        silentpulse_migrated_database,
        """
        SELECT c.conrelid::regclass::text AS tbl, c.conname
        FROM pg_constraint c
        JOIN pg_class r ON r.oid = c.conrelid
        WHERE c.contype = 'f' AND NOT r.relispartition
          AND NOT EXISTS (
            -- An index whose leading column is the reference itself serves the lookup
            -- a delete of the referenced row makes (tenant_id = $1 AND x_id = $2,
            -- x_id a UUID); or one on exactly the key's columns.
            SELECT 1 FROM pg_index i
            WHERE i.indrelid = c.conrelid
              AND ((i.indkey::int2[])[0] = c.conkey[array_length(c.conkey, 1)]
                   OR ((i.indkey::int2[])[0:array_length(c.conkey, 1) - 1] @> c.conkey
                       AND c.conkey @> (i.indkey::int2[])[0:array_length(c.conkey, 1) - 1])))
        """,
    )
    assert [(r["tbl"], r["conname"]) for r in unindexed] == []


@pytest.fixture
async def app_role(silentpulse_postgres: Any, silentpulse_migrated_database: str) -> Any:
    """An ordinary login role (not owner, not superuser) with the application's grants."""
    name = f"app_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    await execute(
        silentpulse_migrated_database,
        f"CREATE ROLE {name} LOGIN PASSWORD '{password}'; "
        f"GRANT USAGE ON SCHEMA public TO {name}; "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {name};",
    )
    parts = urlsplit(silentpulse_migrated_database)
    dsn = parts._replace(netloc=f"{name}:{quote(password)}@{parts.hostname}:{parts.port}").geturl()
    try:
        yield dsn
    finally:
        await execute(silentpulse_migrated_database, f"DROP OWNED BY {name}; DROP ROLE {name};")


async def test_tenant_isolation_for_an_application_role(
    silentpulse_migrated_database: str, app_role: str
) -> None:
    admin = await asyncpg.connect(silentpulse_migrated_database)
    try:
        a = await seed_tenant(admin, "alpha")
        b = await seed_tenant(admin, "bravo")
    finally:
        await admin.close()
    app = await asyncpg.connect(app_role)
    try:
        assert not await app.fetchval(
            "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
        )
        for table in TENANT_TABLES:
            # No tenant set: nothing visible.
            assert await app.fetchval(f"SELECT count(*) FROM {table}") == 0, table
            async with app.transaction():
                await app.execute(
                    "SELECT set_config('app.current_tenant', $1, true)", str(a["tenants"])
                )
                tenants = {
                    r["tenant_id"] for r in await app.fetch(f"SELECT tenant_id FROM {table}")
                }
                assert tenants == {a["tenants"]}, table
                # B's rows can be neither changed nor deleted...
                assert (
                    await app.execute(
                        f"UPDATE {table} SET tenant_id = tenant_id WHERE tenant_id = $1",
                        b["tenants"],
                    )
                    == "UPDATE 0"
                )
                assert (
                    await app.execute(f"DELETE FROM {table} WHERE tenant_id = $1", b["tenants"])
                    == "DELETE 0"
                )
                # ...nor written: a copy of A's row claiming tenant B is refused.
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
                    async with app.transaction():
                        await app.execute(
                            f"INSERT INTO {table} SELECT * FROM jsonb_populate_record(NULL::{table}, "
                            f"(SELECT to_jsonb(x) || jsonb_build_object('tenant_id', $1::uuid) "
                            f"|| CASE WHEN to_jsonb(x) ? 'id' THEN jsonb_build_object('id', gen_random_uuid()) ELSE '{{}}' END "
                            f"FROM {table} x LIMIT 1))",
                            b["tenants"],
                        )
                # ...nor moved there.
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    async with app.transaction():
                        await app.execute(f"UPDATE {table} SET tenant_id = $1", b["tenants"])
        async with app.transaction():
            await app.execute(
                "SELECT set_config('app.current_tenant', $1, true)", str(b["tenants"])
            )
            assert [r["handle"] for r in await app.fetch("SELECT handle FROM tenants")] == ["bravo"]
    finally:
        await app.close()
    # Superuser (a cross-tenant job) sees both tenants' rows.
    assert (
        await fetchval(
            silentpulse_migrated_database, "SELECT count(DISTINCT tenant_id) FROM alerts"
        )
        == 2
    )


@pytest.mark.parametrize(
    ("sql", "constraint"),
    [
        ("UPDATE alerts SET status = 'snoozed'", "alerts_status_check"),
        ("UPDATE alerts SET severity = 'urgent'", "alerts_severity_check"),
        ("UPDATE alerts SET alert_type = 'noise'", "alerts_alert_type_check"),
        ("UPDATE users SET role = 'root'", "users_role_check"),
        ("UPDATE integration_points SET type = 'ftp'", "integration_points_type_check"),
        ("UPDATE notification_channels SET type = 'pager'", "notification_channels_type_check"),
        ("UPDATE report_executions SET status = 'lost'", "report_executions_status_check"),
        ("UPDATE ai_configs SET provider = 'acme'", "ai_configs_provider_check"),
        ("UPDATE anomaly_events SET severity = 'high'", "anomaly_events_severity_check"),
        ("UPDATE audit_logs SET actor_type = 'robot'", "audit_logs_actor_type_check"),
    ],
)
async def test_constraints_reject_bad_values(
    silentpulse_migrated_database: str, sql: str, constraint: str
) -> None:
    conn = await asyncpg.connect(silentpulse_migrated_database)
    try:
        await seed_tenant(conn, "charlie")
        with pytest.raises(asyncpg.CheckViolationError, match=constraint):
            await conn.execute(sql)
    finally:
        await conn.close()


class _Rollback(Exception):
    pass


async def test_alert_trigger_notifies_insert_and_status_change(
    silentpulse_migrated_database: str,
) -> None:
    conn = await asyncpg.connect(silentpulse_migrated_database)
    listener = await asyncpg.connect(silentpulse_migrated_database)
    received: asyncio.Queue[str] = asyncio.Queue()
    try:
        await listener.add_listener(
            "silentpulse_alerts", lambda *args: received.put_nowait(args[3])
        )
        ids = await seed_tenant(conn, "delta")
        first = json.loads(await asyncio.wait_for(received.get(), 5))
        assert (first["op"], first["count"]) == ("INSERT", 1)
        ((alert_id, status, changed_at),) = first["alerts"]
        assert (alert_id, status) == (str(ids["alerts"]), "open")
        assert "tenant_id" not in json.dumps(first)  # the payload carries ids only
        await conn.execute("UPDATE alerts SET severity = 'low'")  # not a status change: silent
        await conn.execute("UPDATE alerts SET status = 'acknowledged'")
        second = json.loads(await asyncio.wait_for(received.get(), 5))
        assert second["op"] == "UPDATE" and second["alerts"][0][1] == "acknowledged"
        assert second["alerts"][0][2] > changed_at
        assert received.empty()
        # A rolled-back change notifies nobody.
        with pytest.raises(_Rollback):
            async with conn.transaction():
                await conn.execute("UPDATE alerts SET status = 'resolved'")
                raise _Rollback
        await asyncio.sleep(0.3)
        assert received.empty()
        await conn.execute("UPDATE alerts SET status = 'resolved'")
        third = json.loads(await asyncio.wait_for(received.get(), 5))
        assert third["alerts"][0][1] == "resolved"
        assert len(json.dumps(third)) < 8000
    finally:
        await listener.close()
        await conn.close()


async def test_down_to_zero_leaves_nothing_and_up_again(silentpulse_migrated_database: str) -> None:
    conn = await asyncpg.connect(silentpulse_migrated_database)
    try:
        before = await snapshot(conn)
        assert before.count("relation") > 30
        await down(silentpulse_migrated_database, "all")
        after = await snapshot(conn)
    finally:
        await conn.close()
    assert await version_rows(silentpulse_migrated_database) == []
    leftovers = {k: v for k, v in after.objects.items() if v and k not in ("extension", "schema")}
    assert leftovers == {}
    relations = {
        r["relname"]
        for r in await fetch(
            silentpulse_migrated_database,
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'S', 'f', 'm')",
        )
    }
    # Only the bookkeeping: golang-migrate's table, and our history (with its identity sequence).
    assert relations == {
        "schema_migrations",
        "schema_migrations_history",
        "schema_migrations_history_id_seq",
    }
    result = await run_migrations(silentpulse_migrated_database)
    assert [a.version for a in result.applied] == list(load_source().versions)


async def test_partition_maintenance_is_idempotent_utc_and_search_path_proof(
    silentpulse_migrated_database: str,
) -> None:
    conn = await asyncpg.connect(
        silentpulse_migrated_database, server_settings={"TimeZone": "America/Los_Angeles"}
    )
    try:
        assert await conn.fetchval("SELECT silentpulse_ensure_monthly_partitions('alerts', 3)") == 0
        await conn.execute("SET search_path = pg_catalog")
        created = await conn.fetchval(
            "SELECT public.silentpulse_ensure_monthly_partitions('public.alerts', 5)"
        )
        assert created == 2
        await conn.execute("SET search_path = public; SET TimeZone = 'UTC'")
        bounds = {
            r["relname"]: r["bound"]
            for r in await conn.fetch(
                "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound FROM pg_inherits i "
                "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'alerts'::regclass"
            )
        }
    finally:
        await conn.close()
    assert len(bounds) == 1 + 6  # default + this month and the next five
    month = f"alerts_p{NOW:%Y_%m}"
    assert bounds[month].startswith(f"FOR VALUES FROM ('{NOW:%Y-%m}-01 00:00:00+00')")

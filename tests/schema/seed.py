"""One row in every table of the schema for a tenant: the fixture data of the schema tests."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

NOW = datetime.now(timezone.utc)

# Tenant-scoped tables in insertion order (parents first).
TENANT_TABLES = [
    "users",
    "assets",
    "asset_groups",
    "integration_points",
    "flows",
    "flow_pulses",
    "alerts",
    "notification_channels",
    "notification_rules",
    "report_definitions",
    "report_executions",
    "api_keys",
    "audit_tasks",
    "audit_logs",
    "ai_configs",
    "exclusion_windows",
    "exclusion_logs",
    "availability_snapshots",
    "compliance_breaches",
    "asset_group_mitre",
    "asset_observations",
    "asset_observation_hourly",
    "asset_observation_daily",
    "feed_profiles",
    "asset_profiles",
    "threshold_suggestions",
    "anomaly_events",
]
GLOBAL_TABLES = ["tenants", "connector_defs", "mitre_techniques"]


async def seed_tenant(conn: Any, handle: str) -> dict[str, uuid.UUID]:
    """Insert a tenant and one row in each tenant-scoped table; return the ids by table."""
    ids: dict[str, uuid.UUID] = {}
    t = ids["tenants"] = uuid.uuid4()

    async def insert(table: str, **values: Any) -> uuid.UUID:
        values.setdefault("id", uuid.uuid4())
        values.setdefault("tenant_id", t)
        columns = ", ".join(values)
        params = ", ".join(f"${i}" for i in range(1, len(values) + 1))
        await conn.execute(f"INSERT INTO {table} ({columns}) VALUES ({params})", *values.values())
        ids[table] = values.get("id", t)
        return ids[table]

    await conn.execute(
        "INSERT INTO tenants (id, name, handle) VALUES ($1, $2, $3)", t, handle.title(), handle
    )
    user = await insert("users", email=f"admin@{handle}.example", password_hash="x", role="admin")
    asset = await insert(
        "assets", external_id=f"cmdb-{handle}", hostname=f"host-{handle}", vendor="acme"
    )
    group = await insert("asset_groups", name="all", filters='{"vendor": "acme"}')
    point = await insert(
        "integration_points", name="kafka", type="kafka", connection_config=b"\x01env"
    )
    flow = await insert("flows", name="main", asset_group_id=group)
    pulse = await insert(
        "flow_pulses",
        flow_id=flow,
        integration_point_id=point,
        position=0,
        scheduler_interval=timedelta(minutes=1),
        time_window=timedelta(minutes=5),
    )
    await insert(
        "alerts",
        flow_pulse_id=pulse,
        asset_id=asset,
        alert_type="silence",
        severity="high",
        status="open",
        started_at=NOW,
    )
    channel = await insert("notification_channels", name="hook", type="webhook", config=b"\x01env")
    await insert("notification_rules", name="all", notification_channel_id=channel)
    report = await insert(
        "report_definitions", name="r", type="asset_coverage", period="last_7d", format="pdf"
    )
    await insert("report_executions", report_definition_id=report, status="pending")
    await insert("api_keys", name="ci", key_hash=f"hash-{handle}", user_id=user)
    await insert(
        "audit_tasks",
        name="q4",
        auditor_user_id=user,
        period_start=NOW - timedelta(days=90),
        period_end=NOW,
        access_expires_at=NOW + timedelta(days=7),
        created_by=user,
    )
    await insert("audit_logs", user_id=user, action="create", entity_type="asset", entity_id=asset)
    ids["ai_configs"] = t
    await conn.execute(
        "INSERT INTO ai_configs (tenant_id, provider, model, api_key_enc) VALUES ($1, 'openai', 'gpt', $2)",
        t,
        b"\x02env",
    )
    window = await insert(
        "exclusion_windows",
        name="maint",
        start_time=NOW,
        end_time=NOW + timedelta(hours=1),
        created_by=user,
    )
    await insert(
        "exclusion_logs",
        exclusion_window_id=window,
        asset_id=asset,
        flow_pulse_id=pulse,
        reason="maint",
    )
    snapshot = await insert(
        "availability_snapshots",
        asset_group_id=group,
        period_start=NOW - timedelta(days=1),
        period_end=NOW,
        total_assets=10,
        available_assets=9,
        availability_percent=90,
        kpi_target_percent=95,
        compliant=False,
    )
    await insert(
        "compliance_breaches",
        asset_group_id=group,
        snapshot_id=snapshot,
        availability_percent=90,
        kpi_target_percent=95,
        started_at=NOW,
    )
    technique = await conn.fetchval(
        "INSERT INTO mitre_techniques (technique_id, name, tactic) VALUES ($1, 'Dump', 'credential-access') "
        "ON CONFLICT (technique_id) DO UPDATE SET name = EXCLUDED.name RETURNING id",
        "T1003.001",
    )
    ids["asset_group_mitre"] = group
    await conn.execute(
        "INSERT INTO asset_group_mitre (tenant_id, asset_group_id, mitre_technique_id) VALUES ($1, $2, $3)",
        t,
        group,
        technique,
    )
    await insert("asset_observations", asset_id=asset, flow_pulse_id=pulse, observed_at=NOW)
    await insert(
        "asset_observation_hourly",
        asset_id=asset,
        flow_pulse_id=pulse,
        hour=NOW.replace(minute=0, second=0, microsecond=0),
    )
    await insert("asset_observation_daily", asset_id=asset, flow_pulse_id=pulse, date=NOW.date())
    await insert("feed_profiles", flow_pulse_id=pulse)
    await insert("asset_profiles", asset_id=asset, flow_pulse_id=pulse)
    await insert(
        "threshold_suggestions", flow_pulse_id=pulse, suggestion_type="volume", priority="low"
    )
    await insert("anomaly_events", flow_pulse_id=pulse, anomaly_type="burst", severity="info")
    return ids

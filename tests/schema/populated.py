"""A database at a given version with rows in several tenants and months: the data the
tests of issue 31 (keys that lead with tenant_id) migrate under."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg

from silentpulse_db.migrate import apply_prerequisites, up

from .seed import seed_tenant

TENANTS = ("tenant-a", "tenant-b", "tenant-c")
# Days from now of the extra rows of each partitioned table: this month's partition, the
# next ones, and the default partition (a month before the migrations' first, and a
# year back).
OFFSETS = (-400, -40, 0, 33, 64)
PARTITIONED = {
    "alerts": "started_at",
    "audit_logs": "created_at",
    "asset_observations": "observed_at",
}

# Every table and partition that holds tenant rows.
RELATIONS = """
    SELECT c.oid::regclass::text AS relation FROM pg_class c
    WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'
      AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id')
    ORDER BY 1
"""


async def populate(dsn: str, version: int, rows_per_month: int = 20) -> dict[str, dict[str, Any]]:
    """Migrate the empty database ``dsn`` to ``version`` and fill it: each tenant of
    TENANTS gets seed_tenant's row in every table, and ``rows_per_month`` rows of each
    partitioned table at each of OFFSETS. Returns seed_tenant's ids by tenant."""
    await apply_prerequisites(dsn)
    await up(dsn, target=version)
    conn = await asyncpg.connect(dsn)
    try:
        tenants = {handle: await seed_tenant(conn, handle) for handle in TENANTS}
        now = datetime.now(timezone.utc)
        for ids in tenants.values():
            for days in OFFSETS:
                at = now + timedelta(days=days)
                await conn.execute(
                    "INSERT INTO alerts (tenant_id, flow_pulse_id, asset_id, alert_type, severity,"
                    " started_at, status) SELECT $1, $2, $3, 'silence', 'low', $4, 'resolved'"
                    " FROM generate_series(1, $5)",
                    ids["tenants"],
                    ids["flow_pulses"],
                    ids["assets"],
                    at,
                    rows_per_month,
                )
                await conn.execute(
                    "INSERT INTO audit_logs (tenant_id, user_id, action, entity_type, created_at)"
                    " SELECT $1, $2, 'update', 'asset', $3 FROM generate_series(1, $4)",
                    ids["tenants"],
                    ids["users"],
                    at,
                    rows_per_month,
                )
                await conn.execute(
                    "INSERT INTO asset_observations (tenant_id, asset_id, flow_pulse_id, observed_at)"
                    " SELECT $1, $2, $3, $4 FROM generate_series(1, $5)",
                    ids["tenants"],
                    ids["assets"],
                    ids["flow_pulses"],
                    at,
                    rows_per_month,
                )
    finally:
        await conn.close()
    return tenants


async def counts(conn: asyncpg.Connection) -> dict[str, int]:
    """Rows of each table and partition that holds tenant rows (as a superuser: all)."""
    found = {}
    for row in await conn.fetch(RELATIONS):
        found[row["relation"]] = await conn.fetchval(f"SELECT count(*) FROM ONLY {row['relation']}")
    return found

"""Migration 000023 as a tenant's application role: a month the jobs role makes gets the
app role's grants (from the owner's default privileges), and with them the app role reads
and writes that month directly, after the runbook's blanket GRANT ON ALL TABLES too, one
tenant at a time: the grants open the month, row-level security still closes it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import asyncpg
import pytest
from listener.listening import new_alert

from silentpulse_db import maintain_partitions, run_migrations
from silentpulse_db.migrate import apply_prerequisites
from silentpulse_db.settings import ConnectRetry

from .seed import seed_tenant
from helpers import execute, login_role


async def _count_as(app_dsn: str, table: str, tenant: object | None) -> int:
    conn = await asyncpg.connect(app_dsn)
    try:
        async with conn.transaction():
            if tenant is not None:
                await conn.execute("SELECT set_config('app.current_tenant', $1, true)", str(tenant))
            count: int = await conn.fetchval(f"SELECT count(*) FROM {table}")
            return count
    finally:
        await conn.close()


async def test_a_month_the_jobs_role_makes_opens_to_the_app_role_one_tenant_at_a_time(
    silentpulse_database: str,
) -> None:
    dsn = silentpulse_database
    await apply_prerequisites(dsn)
    async with (
        login_role(dsn, "GRANT USAGE ON SCHEMA public TO {role};", prefix="app") as (app, app_dsn),
        login_role(
            dsn,
            "GRANT CREATE, USAGE ON SCHEMA public TO {role}; "
            "ALTER DEFAULT PRIVILEGES FOR ROLE {role} IN SCHEMA public "
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app};",
            prefix="owner",
        ) as (owner, owner_dsn),
        login_role(
            dsn, f"ALTER ROLE {{role}} BYPASSRLS; GRANT {owner} TO {{role}};", prefix="jobs"
        ) as (_jobs, jobs_dsn),
    ):
        await run_migrations(owner_dsn, connect=ConnectRetry(attempts=1))
        # The runbook's blanket grant, run again as operators do.
        await execute(
            owner_dsn,
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {app}",
        )
        later = datetime.now(timezone.utc).replace(day=15) + timedelta(days=800)
        await maintain_partitions(jobs_dsn, now=later, ahead=0, connect=ConnectRetry(attempts=1))
        month = f"alerts_p{later:%Y_%m}"

        conn = await asyncpg.connect(dsn)
        try:
            a, b = await seed_tenant(conn, "grant_a"), await seed_tenant(conn, "grant_b")
            for ids, n in ((a, 2), (b, 3)):
                for _ in range(n):
                    await new_alert(conn, ids, started_at=later)
        finally:
            await conn.close()

        assert await _count_as(app_dsn, month, a["tenants"]) == 2
        assert await _count_as(app_dsn, month, b["tenants"]) == 3
        assert await _count_as(app_dsn, month, None) == 0  # no tenant: nothing
        # Tenant A cannot write a row of tenant B into the month directly.
        writer = await asyncpg.connect(app_dsn)
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with writer.transaction():
                    await writer.execute(
                        "SELECT set_config('app.current_tenant', $1, true)", str(a["tenants"])
                    )
                    await writer.execute(
                        f"UPDATE {month} SET tenant_id = $1 WHERE tenant_id = $2",
                        b["tenants"],
                        a["tenants"],
                    )
        finally:
            await writer.close()

"""Issue 31, item 1: the nullable references that ON DELETE SET NULL (column) nulled are
NO ACTION from 000049 (Citus refuses SET NULL on a key that holds the distribution
column), and the deletes keep their meaning: silentpulse_release_references() nulls
them first, as the application's role inside tenant_transaction and in the documented
purge as the jobs role; the row goes, the rows that named it stay, with NULL."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from silentpulse_db import tenant_transaction

from .seed import seed_tenant

DOCS = Path(__file__).parents[2] / "docs" / "tenancy.md"
# What ON DELETE SET NULL (column) nulled until 000049: (table, column, target).
RELEASED = [
    ("anomaly_events", "acknowledged_by", "users"),
    ("audit_tasks", "created_by", "users"),
    ("compliance_breaches", "acknowledged_by", "users"),
    ("compliance_breaches", "resolved_by", "users"),
    ("exclusion_windows", "created_by", "users"),
    ("threshold_suggestions", "responded_by", "users"),
    ("compliance_breaches", "snapshot_id", "availability_snapshots"),
]


@pytest.fixture
async def admin(silentpulse_migrated_database: str) -> AsyncIterator[Any]:
    conn = await asyncpg.connect(silentpulse_migrated_database)
    try:
        yield conn
    finally:
        await conn.close()


async def named_everywhere(admin: Any, ids: dict[str, uuid.UUID], target: str) -> uuid.UUID:
    """A new row of ``target`` in ``ids``' tenant that every released column names."""
    new = uuid.uuid4()
    if target == "users":
        await admin.execute(
            "INSERT INTO users (id, tenant_id, email, password_hash, role) "
            "VALUES ($1, $2, $3, 'x', 'viewer')",
            new,
            ids["tenants"],
            f"{new}@example.com",
        )
    else:
        await admin.execute(
            "INSERT INTO availability_snapshots (id, tenant_id, asset_group_id, period_start, "
            "period_end, total_assets, available_assets, availability_percent, kpi_target_percent, "
            "compliant) VALUES ($1, $2, $3, now(), now(), 1, 1, 100, 95, true)",
            new,
            ids["tenants"],
            ids["asset_groups"],
        )
    for table, column, whose in RELEASED:
        if whose == target:
            await admin.execute(f"UPDATE {table} SET {column} = $1 WHERE id = $2", new, ids[table])
    return new


async def naming(admin: Any, ids: dict[str, uuid.UUID], target: str) -> dict[str, Any]:
    """What each released column of ``ids``' rows holds."""
    return {
        f"{table}.{column}": await admin.fetchval(
            f"SELECT {column} FROM {table} WHERE id = $1", ids[table]
        )
        for table, column, whose in RELEASED
        if whose == target
    }


@pytest.mark.parametrize("target", ["users", "availability_snapshots"])
async def test_a_delete_releases_first_as_the_application(
    admin: Any, silentpulse_app_database: str, target: str
) -> None:
    a = await seed_tenant(admin, "tenant-a")
    b = await seed_tenant(admin, "tenant-b")
    doomed = await named_everywhere(admin, a, target)
    kept = await named_everywhere(admin, b, target)
    app = await asyncpg.connect(silentpulse_app_database)
    try:
        # A delete that does not release first is refused: NO ACTION, not SET NULL.
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            async with tenant_transaction(app, a["tenants"]):
                await app.execute(f"DELETE FROM {target} WHERE id = $1", doomed)
        # Tenant A's role cannot release tenant B's rows: row-level security.
        async with tenant_transaction(app, a["tenants"]):
            assert (
                await app.fetchval(
                    "SELECT silentpulse_release_references($1, $2, $3)",
                    target,
                    b["tenants"],
                    [kept],
                )
                == 0
            )
        async with tenant_transaction(app, a["tenants"]):
            released = await app.fetchval(
                "SELECT silentpulse_release_references($1, $2, $3)", target, a["tenants"], [doomed]
            )
            assert await app.execute(f"DELETE FROM {target} WHERE id = $1", doomed) == "DELETE 1"
        with pytest.raises(asyncpg.InvalidParameterValueError, match="only users and availability"):
            async with tenant_transaction(app, a["tenants"]):
                await app.fetchval(
                    "SELECT silentpulse_release_references('assets', $1, $2)",
                    a["tenants"],
                    [a["assets"]],
                )
    finally:
        await app.close()
    columns = await naming(admin, a, target)
    assert released == len(columns) and set(columns.values()) == {None}
    # The rows that named it are still there; tenant B's still name B's row.
    for table, _, whose in RELEASED:
        if whose == target:
            assert (
                await admin.fetchval(f"SELECT count(*) FROM {table} WHERE id = $1", a[table]) == 1
            )
    assert set((await naming(admin, b, target)).values()) == {kept}


def documented_purge() -> str:
    """The purge of soft-deleted users in docs/tenancy.md, as written there."""
    text = DOCS.read_text()
    section = text[text.index("## The purge of soft-deleted rows") :]
    blocks = re.findall(r"```sql\n(.*?)```", section, re.S)
    (purge,) = [b for b in blocks if "silentpulse_release_references('users'" in b]
    return str(purge)


async def test_the_documented_purge_of_users_keeps_its_meaning(
    admin: Any, silentpulse_jobs_database: str
) -> None:
    a = await seed_tenant(admin, "tenant-a")
    b = await seed_tenant(admin, "tenant-b")
    doomed = await named_everywhere(admin, a, "users")
    also_doomed = await named_everywhere(admin, b, "users")
    recent = uuid.uuid4()
    await admin.execute(
        "INSERT INTO users (id, tenant_id, email, password_hash, role) VALUES ($1, $2, 'r@a.example', 'x', 'viewer')",
        recent,
        a["tenants"],
    )
    await admin.execute(
        "UPDATE users SET deleted_at = now() - interval '100 days' WHERE id = ANY ($1)",
        [doomed, also_doomed, a["users"]],  # a["users"] is named by an audit row: it stays
    )
    await admin.execute(
        "UPDATE users SET deleted_at = now() - interval '10 days' WHERE id = $1", recent
    )
    jobs = await asyncpg.connect(silentpulse_jobs_database)
    try:
        await jobs.execute(documented_purge())
    finally:
        await jobs.close()
    left = {r["id"] for r in await admin.fetch("SELECT id FROM users")}
    assert doomed not in left and also_doomed not in left
    assert {a["users"], b["users"], recent} <= left
    for ids in (a, b):
        assert set((await naming(admin, ids, "users")).values()) == {None}


async def test_deleting_a_tenant_or_an_asset_group_needs_no_release(admin: Any) -> None:
    """NO ACTION is checked at the end of the statement, after the cascade took the rows
    that name the user or the snapshot."""
    a = await seed_tenant(admin, "tenant-a")
    b = await seed_tenant(admin, "tenant-b")
    await named_everywhere(admin, a, "users")
    # An asset group of b with a snapshot and a breach that names it (no flows: those
    # would take alerts along, which history keeps from being deleted).
    group = await admin.fetchval(
        "INSERT INTO asset_groups (tenant_id, name) VALUES ($1, 'spare') RETURNING id", b["tenants"]
    )
    snapshot = await admin.fetchval(
        "INSERT INTO availability_snapshots (tenant_id, asset_group_id, period_start, period_end, "
        "total_assets, available_assets, availability_percent, kpi_target_percent, compliant) "
        "VALUES ($1, $2, now(), now(), 1, 0, 0, 95, false) RETURNING id",
        b["tenants"],
        group,
    )
    await admin.execute(
        "INSERT INTO compliance_breaches (tenant_id, asset_group_id, snapshot_id, "
        "availability_percent, kpi_target_percent, started_at) VALUES ($1, $2, $3, 0, 95, now())",
        b["tenants"],
        group,
        snapshot,
    )
    assert await admin.execute("DELETE FROM asset_groups WHERE id = $1", group) == "DELETE 1"
    assert (
        await admin.fetchval(
            "SELECT count(*) FROM compliance_breaches WHERE snapshot_id = $1", snapshot
        )
        == 0
    )
    assert await admin.execute("DELETE FROM tenants WHERE id = $1", a["tenants"]) == "DELETE 1"
    assert (
        await admin.fetchval("SELECT count(*) FROM users WHERE tenant_id = $1", a["tenants"]) == 0
    )


async def test_the_released_keys_are_no_action_and_valid(admin: Any) -> None:
    rows = await admin.fetch(
        "SELECT conname, confdeltype::text AS on_delete, convalidated FROM pg_constraint "
        "WHERE contype = 'f' AND conname = ANY ($1) ORDER BY 1",
        [f"{table}_{column}_tenant_fkey" for table, column, _ in RELEASED],
    )
    assert len(rows) == len(RELEASED)
    assert {(r["on_delete"], r["convalidated"]) for r in rows} == {("a", True)}
    # No key between tenant tables sets NULL or a default on delete any more.
    assert (
        await admin.fetchval(
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND confdeltype IN ('n', 'd')"
        )
        == 0
    )

"""Partitions as a tenant's application role and as an operator years after deploy
(issue 8, parts 2 and 3): row-level security on every partition, the partition
job with the clock moved ahead and stray rows in the default partition, retention.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from schema.seed import seed_tenant
from silentpulse_db import (
    PermissionDeniedError,
    ReversibilityError,
    check,
    enforce_retention,
    maintain_partitions,
    run_migrations,
    status,
)
from silentpulse_db.schema.partitions import add_months, ensure_partitions, month_of
from silentpulse_db.schema.tenancy import rls_gaps

from helpers import execute, fetchval, login_role

PARTITIONED = ("alerts", "audit_logs", "asset_observations")
BLANKET_GRANT = (
    "GRANT USAGE ON SCHEMA public TO {role}; "
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role};"
)
NOW = datetime.now(timezone.utc)
THIS_MONTH = month_of(NOW)


def at(month: date, day: int = 15) -> datetime:
    return datetime(month.year, month.month, day, 12, tzinfo=timezone.utc)


@pytest.fixture
async def admin(silentpulse_migrated_database: str) -> AsyncIterator[Any]:
    conn = await asyncpg.connect(silentpulse_migrated_database)
    try:
        yield conn
    finally:
        await conn.close()


async def add_alert(
    conn: Any, ids: dict[str, uuid.UUID], started: datetime, status: str = "open"
) -> None:
    resolved = started + timedelta(hours=1) if status == "resolved" else None
    await conn.execute(
        "INSERT INTO alerts (tenant_id, flow_pulse_id, asset_id, alert_type, severity, status, "
        "started_at, resolved_at) VALUES ($1, $2, $3, 'silence', 'high', $4, $5, $6)",
        ids["tenants"],
        ids["flow_pulses"],
        ids["assets"],
        status,
        started,
        resolved,
    )


async def add_audit(conn: Any, ids: dict[str, uuid.UUID], created: datetime) -> None:
    await conn.execute(
        "INSERT INTO audit_logs (tenant_id, action, entity_type, created_at) "
        "VALUES ($1, 'update', 'asset', $2)",
        ids["tenants"],
        created,
    )


async def partitions_of(conn: Any, parent: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = $1::regclass ORDER BY 1",
        parent,
    )
    return [r["relname"] for r in rows]


# --- part 2: row-level security on every partition ----------------------------------


async def test_no_partition_shows_or_takes_another_tenants_rows(
    silentpulse_migrated_database: str, admin: Any
) -> None:
    a = await seed_tenant(admin, "tenant-a")
    b = await seed_tenant(admin, "tenant-b")
    far = at(date(2035, 1, 1))  # no partition: lands in alerts_default / audit_logs_default
    for ids in (a, b):
        await add_alert(admin, ids, far)
        await add_audit(admin, ids, far)
    # A partition created later, by the partition job, is guarded too (granted
    # like the others by the blanket grant that follows it).
    await ensure_partitions(admin, ahead=1, now=at(add_months(THIS_MONTH, 6)))
    async with login_role(silentpulse_migrated_database, BLANKET_GRANT, prefix="app") as (_, dsn):
        app = await asyncpg.connect(dsn)
        try:
            await app.execute(f"SET app.current_tenant = '{a['tenants']}'")
            for parent in PARTITIONED:
                for partition in await partitions_of(admin, parent):
                    tenants = {
                        r["tenant_id"]
                        for r in await app.fetch(f"SELECT DISTINCT tenant_id FROM {partition}")
                    }
                    assert tenants <= {a["tenants"]}, partition
            assert await app.fetchval("SELECT count(*) FROM alerts_default") == 1
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
                await app.execute(
                    "INSERT INTO audit_logs_default (tenant_id, action, entity_type, created_at) "
                    "VALUES ($1, 'create', 'x', $2)",
                    b["tenants"],
                    far,
                )
            assert await app.fetchval("UPDATE alerts_default SET severity = 'low'") is None
            assert (
                await fetchval(
                    silentpulse_migrated_database,
                    "SELECT count(*) FROM alerts_default WHERE severity = 'low'",
                )
                == 1
            )
        finally:
            await app.close()


async def test_the_audit_finds_unguarded_relations_and_the_job_secures_partitions(
    silentpulse_migrated_database: str, admin: Any
) -> None:
    assert await rls_gaps(admin) == []
    month = add_months(THIS_MONTH, 30)
    by_hand = f"alerts_p{month:%Y_%m}"
    await admin.execute(
        f"CREATE TABLE {by_hand} PARTITION OF alerts FOR VALUES FROM ('{at(month, 1)}') "
        f"TO ('{at(add_months(month, 1), 1)}')"
    )
    await admin.execute("CREATE TABLE notes (tenant_id uuid, body text)")
    async with login_role(silentpulse_migrated_database, BLANKET_GRANT, prefix="app") as (app, _):
        gaps = await rls_gaps(admin)
        assert [g.split()[0] for g in gaps] == [by_hand, "notes"]
        assert all(app in g for g in gaps)
        report = await status(silentpulse_migrated_database)
        assert len(report.unguarded) == 2
        job = await ensure_partitions(admin)
        assert job.secured == (by_hand,)
        assert [g.split()[0] for g in await rls_gaps(admin)] == ["notes"]


async def test_check_fails_on_a_migration_that_leaves_tenant_rows_unguarded(
    silentpulse_database: str, tmp_path: Path
) -> None:
    source = tmp_path / "migrations"
    source.mkdir()
    (source / "000001_add_notes.up.sql").write_text("CREATE TABLE notes (tenant_id uuid);\n")
    (source / "000001_add_notes.down.sql").write_text("DROP TABLE notes;\n")
    with pytest.raises(ReversibilityError, match=r"notes holds tenant_id rows without row-level"):
        await check(silentpulse_database, source=source)


# --- part 3: partitions for years ---------------------------------------------------------


@pytest.mark.parametrize("months_ahead", [4, 12, 40])
async def test_the_job_with_the_clock_moved_ahead(admin: Any, months_ahead: int) -> None:
    later = add_months(THIS_MONTH, months_ahead)
    ids = await seed_tenant(admin, "tenant-a")
    # Rows written while nobody ran the job: two for a month that will get its
    # partition now, one far in the future that must not block anything.
    stray = add_months(later, 2)
    for day in (3, 20):
        await add_audit(admin, ids, at(stray, day))
    await add_audit(admin, ids, at(date(2040, 6, 1)))
    assert await admin.fetchval("SELECT count(*) FROM audit_logs_default") == 3

    report = await ensure_partitions(admin, ahead=3, now=at(later))
    names = {c.partition for c in report.created}
    for month in (add_months(later, i) for i in range(4)):
        assert f"audit_logs_p{month:%Y_%m}" in names
        for parent in PARTITIONED:
            assert f"{parent}_p{month:%Y_%m}" in await partitions_of(admin, parent)
    moved = {c.partition: c.moved_rows for c in report.created if c.moved_rows}
    assert moved == {f"audit_logs_p{stray:%Y_%m}": 2}
    assert await admin.fetchval("SELECT count(*) FROM audit_logs_default") == 1
    assert report.skipped == ()

    again = await ensure_partitions(admin, ahead=3, now=at(later))
    assert again.created == () and again.secured == ()
    assert await rls_gaps(admin) == []


async def test_the_daily_job_empties_the_default_partition(
    silentpulse_migrated_database: str, admin: Any
) -> None:
    ids = await seed_tenant(admin, "tenant-a")
    await add_alert(admin, ids, at(date(2040, 6, 1)))
    await add_alert(admin, ids, at(date(2041, 2, 1)))
    report = await maintain_partitions(silentpulse_migrated_database)
    assert {c.partition for c in report.created} >= {"alerts_p2040_06", "alerts_p2041_02"}
    assert await admin.fetchval("SELECT count(*) FROM alerts_default") == 0
    coverage = {c.table: c for c in (await status(silentpulse_migrated_database)).partitions}
    assert coverage["alerts"].default_rows == 0 and coverage["alerts"].months_ahead >= 3


async def test_an_owner_without_bypassrls_moves_rows_it_cannot_see(
    silentpulse_migrated_database: str, admin: Any
) -> None:
    ids = await seed_tenant(admin, "tenant-a")
    month = add_months(THIS_MONTH, 9)
    await add_audit(admin, ids, at(month))
    setup = (
        "GRANT CREATE ON SCHEMA public TO {role}; "
        "DO $$ DECLARE r text; BEGIN FOR r IN SELECT relname FROM pg_class "
        "WHERE relname ~ '^(alerts|audit_logs|asset_observations)($|_)' "
        "AND relkind IN ('r', 'p') LOOP "
        "EXECUTE format('ALTER TABLE %I OWNER TO {role}', r); END LOOP; END $$;"
    )
    async with login_role(silentpulse_migrated_database, setup, prefix="owner") as (_, dsn):
        owner = await asyncpg.connect(dsn)
        try:
            assert await owner.fetchval("SELECT count(*) FROM audit_logs") == 0  # forced RLS
            report = await ensure_partitions(owner, ahead=0, now=at(month))
        finally:
            await owner.close()
        # (asserted inside: the role's tables go with it at the end of the block)
        assert report.skipped == ()
        assert [(c.partition, c.moved_rows) for c in report.created if c.moved_rows] == [
            (f"audit_logs_p{month:%Y_%m}", 1)
        ]
        assert await admin.fetchval("SELECT count(*) FROM audit_logs_default") == 0
        assert await admin.fetchval(
            "SELECT relforcerowsecurity FROM pg_class WHERE relname = 'audit_logs_default'"
        )


async def test_start_up_creates_the_month_that_time_brought_into_the_window(
    silentpulse_migrated_database: str, admin: Any
) -> None:
    # A month after the deploy, the fourth month ahead has no partition yet.
    next_month = f"asset_observations_p{add_months(THIS_MONTH, 3):%Y_%m}"
    await admin.execute(f"DROP TABLE {next_month}")
    await run_migrations(silentpulse_migrated_database)
    assert next_month in await partitions_of(admin, "asset_observations")
    assert await rls_gaps(admin) == []


# --- part 3: retention ------------------------------------------------------------------------


async def test_retention(silentpulse_migrated_database: str, admin: Any) -> None:
    ids = await seed_tenant(admin, "tenant-a")
    old = add_months(THIS_MONTH, -30)  # older than every rule
    await ensure_partitions(admin, ahead=1, now=at(old))
    closed, still_open = old, add_months(old, 1)
    await add_alert(admin, ids, at(closed), status="resolved")
    await add_alert(admin, ids, at(still_open), status="acknowledged")
    await add_audit(admin, ids, at(old))

    dry = await enforce_retention(silentpulse_migrated_database, dry_run=True)
    verdicts = {a.partition: a.dropped for a in dry.actions}
    assert verdicts[f"alerts_p{closed:%Y_%m}"] is True
    assert verdicts[f"alerts_p{still_open:%Y_%m}"] is False
    assert verdicts[f"audit_logs_p{old:%Y_%m}"] is True
    assert f"asset_observations_p{old:%Y_%m}" in verdicts
    assert not any("default" in name for name in verdicts)
    (refused,) = dry.refused
    assert "1 open or acknowledged alert(s)" in str(refused)
    assert f"alerts_p{closed:%Y_%m}" in await partitions_of(admin, "alerts")  # dry run

    done = await enforce_retention(silentpulse_migrated_database)
    assert {a.partition for a in done.actions} == set(verdicts)
    alerts = await partitions_of(admin, "alerts")
    assert f"alerts_p{closed:%Y_%m}" not in alerts and f"alerts_p{still_open:%Y_%m}" in alerts
    assert f"audit_logs_p{old:%Y_%m}" not in await partitions_of(admin, "audit_logs")
    assert f"alerts_p{THIS_MONTH:%Y_%m}" in alerts


async def test_retention_refuses_a_role_that_rls_filters(
    silentpulse_migrated_database: str,
) -> None:
    setup = "ALTER TABLE alerts OWNER TO {role};"
    async with login_role(silentpulse_migrated_database, setup, prefix="owner") as (role, dsn):
        with pytest.raises(PermissionDeniedError, match="BYPASSRLS") as info:
            await enforce_retention(dsn, dry_run=True)
        assert info.value.role == role
    await execute(silentpulse_migrated_database, "SELECT 1")


async def test_partitions_made_by_the_jobs_role_belong_to_the_owner(
    silentpulse_migrated_database: str, admin: Any
) -> None:
    """The roles of docs/operations.md: a jobs role (BYPASSRLS, member of the owner's)
    creates partitions; the owner's next migration must still alter the parent."""
    dsn = silentpulse_migrated_database
    own = (
        "GRANT CREATE ON SCHEMA public TO {role}; "
        "DO $$ DECLARE r text; BEGIN FOR r IN SELECT relname FROM pg_class "
        "WHERE relname ~ '^(alerts|audit_logs|asset_observations)($|_)' "
        "AND relkind IN ('r', 'p') LOOP "
        "EXECUTE format('ALTER TABLE %I OWNER TO {role}', r); END LOOP; END $$;"
    )
    async with login_role(dsn, own, prefix="owner") as (owner, owner_dsn):
        member = f"ALTER ROLE {{role}} BYPASSRLS; GRANT {owner} TO {{role}};"
        async with login_role(dsn, member, prefix="jobs") as (_, jobs_dsn):
            month = add_months(THIS_MONTH, 7)
            report = await maintain_partitions(jobs_dsn, ahead=0, now=at(month))
            assert report.skipped == ()
            made = f"audit_logs_p{month:%Y_%m}"
            assert made in {c.partition for c in report.created}
            assert (
                await admin.fetchval(
                    "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = $1", made
                )
                == owner
            )
            conn = await asyncpg.connect(owner_dsn)
            try:  # the owner's next migration
                await conn.execute("ALTER TABLE audit_logs ADD COLUMN extra int")
            finally:
                await conn.close()
            assert await rls_gaps(admin) == []

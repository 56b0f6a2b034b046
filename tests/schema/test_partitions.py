"""Partitions as a tenant's application role and as an operator years after deploy
(issue 8, parts 2 and 3): row-level security on every partition, the partition
job with the clock moved ahead and stray rows in the default partition, retention.
Rows a tenant can write (issue 27, items 4 and 5): dates no partition can hold, and
dates years ahead, stay in the default partition with a warning.
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
    ConfigurationError,
    PermissionDeniedError,
    ReversibilityError,
    enforce_retention,
    maintain_partitions,
    run_migrations,
    tenant_transaction,
)
from silentpulse_db.defaults import PARTITIONS_MAX_AHEAD
from silentpulse_db.migrate import check, status
from silentpulse_db.schema.partitions import add_months, ensure_partitions, month_of
from silentpulse_db.schema.tenancy import rls_gaps

from helpers import cli, execute, fetchval, login_role

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


async def add_audit_as_tenant(dsn: str, tenant: uuid.UUID, *created: str) -> None:
    """audit_logs rows written through the app role, as a tenant, one a timestamp given
    as PostgreSQL reads it (year 12000, infinity and BC fit no datetime)."""
    app = await asyncpg.connect(dsn)
    try:
        async with tenant_transaction(app, tenant) as conn:
            await conn.executemany(
                "INSERT INTO audit_logs (tenant_id, action, entity_type, created_at) "
                "VALUES ($1, 'update', 'asset', $2::text::timestamptz)",
                [(tenant, moment) for moment in created],
            )
    finally:
        await app.close()


def ym(month: date) -> str:
    return f"{month.year:04d}-{month.month:02d}"


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
    strays = add_months(THIS_MONTH, 14), add_months(THIS_MONTH, PARTITIONS_MAX_AHEAD)
    for month in strays:
        await add_alert(admin, ids, at(month))
    report = await maintain_partitions(silentpulse_migrated_database)
    assert {c.partition for c in report.created} >= {f"alerts_p{m:%Y_%m}" for m in strays}
    assert report.skipped == ()
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


# --- issue 27, items 4 and 5: rows a tenant can write ------------------------------------


async def test_rows_no_partition_can_hold_stay_in_default_and_the_job_goes_on(
    silentpulse_migrated_database: str, silentpulse_app_database: str, admin: Any
) -> None:
    """Before: a tenant's row of year 12000 (or BC) made `partitions` exit 1 with a raw
    ValueError on every run, one at infinity stopped it with an error, and no table after
    audit_logs got its months; a row of year 1 got audit_logs_p0001_06, reported as
    audit_logs_p1_06."""
    ids = await seed_tenant(admin, "tenant-a")
    # A table after audit_logs (the job goes in name order), with a stray row of its own.
    stray = add_months(THIS_MONTH, 5)
    await admin.execute(
        "CREATE TABLE zz_events (at timestamptz NOT NULL) PARTITION BY RANGE (at); "
        "CREATE TABLE zz_events_default PARTITION OF zz_events DEFAULT"
    )
    await admin.execute("INSERT INTO zz_events VALUES ($1)", at(stray))
    # A month time brought into the window, and one a tenant's row needs.
    window = add_months(THIS_MONTH, 3)
    await admin.execute(f"DROP TABLE audit_logs_p{window:%Y_%m}")
    impossible = ("12000-03-05 12:00+00", "infinity", "-infinity", "0044-03-15 12:00+00 BC")
    await add_audit_as_tenant(
        silentpulse_app_database,
        ids["tenants"],
        *impossible,
        "0001-06-01 12:00+00",
        at(stray).isoformat(),
    )

    done = cli("partitions", dsn=silentpulse_migrated_database)
    assert done.returncode == 1, done.stdout + done.stderr  # something skipped
    assert "Traceback" not in done.stderr and "error:" not in done.stderr, done.stderr
    (note,) = [line for line in done.stdout.splitlines() if line.startswith("skipped:")]
    assert "audit_logs: 4 row(s) stay in audit_logs_default" in note
    assert "-infinity (1), 0044-03 BC (1), 12000-03 (1), infinity (1)" in note
    for made in (
        "audit_logs_p0001_06, 1 row(s) moved",
        f"audit_logs_p{stray:%Y_%m}, 1 row(s) moved",
        f"audit_logs_p{window:%Y_%m}",
        f"zz_events_p{stray:%Y_%m}, 1 row(s) moved",
        f"zz_events_p{window:%Y_%m}",
    ):
        assert f"created {made}" in done.stdout, done.stdout
    assert await admin.fetchval("SELECT count(*) FROM ONLY audit_logs_default") == 4
    assert await admin.fetchval("SELECT count(*) FROM ONLY zz_events_default") == 0

    again = await maintain_partitions(silentpulse_migrated_database)
    assert again.created == () and again.skipped == (note.removeprefix("skipped: "),)
    coverage = {c.table: c for c in (await status(silentpulse_migrated_database)).partitions}
    assert coverage["audit_logs"].default_rows == 4


async def test_the_job_creates_no_month_past_max_ahead(
    silentpulse_migrated_database: str, silentpulse_app_database: str, admin: Any
) -> None:
    """Before: 60 far-future rows from one tenant made the job create 60 partitions,
    which retention never drops."""
    dsn = silentpulse_migrated_database
    ids = await seed_tenant(admin, "tenant-a")
    cap = PARTITIONS_MAX_AHEAD
    near = [add_months(THIS_MONTH, 12), add_months(THIS_MONTH, cap)]
    far = [add_months(THIS_MONTH, cap + i) for i in range(1, 61)]
    await add_audit_as_tenant(
        silentpulse_app_database, ids["tenants"], *(at(m).isoformat() for m in near + far)
    )
    before = len(await partitions_of(admin, "audit_logs"))

    report = await maintain_partitions(dsn)
    made = {c.partition: c.moved_rows for c in report.created if c.table == "audit_logs"}
    assert made == {f"audit_logs_p{m:%Y_%m}": 1 for m in near}
    assert len(await partitions_of(admin, "audit_logs")) == before + 2
    assert await admin.fetchval("SELECT count(*) FROM ONLY audit_logs_default") == 60
    (note,) = report.skipped
    assert note.startswith("audit_logs: 60 row(s) stay in audit_logs_default")
    assert f"more than {cap} month(s) ahead" in note and f"made is {ym(near[-1])}" in note
    assert f"{ym(far[0])} (1), {ym(far[1])} (1)" in note
    assert note.endswith(
        f"and 54 more month(s) up to {ym(far[-1])}; they move once their "
        "month comes in reach, or correct their created_at"
    )

    # A year on, the months that came in reach get their partitions, the rest stay.
    later = add_months(THIS_MONTH, 12)
    report = await maintain_partitions(dsn, now=at(later))
    moved = [c.partition for c in report.created if c.moved_rows]
    assert moved == [f"audit_logs_p{m:%Y_%m}" for m in far[:12]]
    (note,) = report.skipped
    assert note.startswith("audit_logs: 48 row(s) stay in audit_logs_default")
    # max_ahead lifts the cap.
    report = await maintain_partitions(dsn, now=at(later), max_ahead=cap + 60)
    assert [(c.partition, c.moved_rows) for c in report.created] == [
        (f"audit_logs_p{m:%Y_%m}", 1) for m in far[12:]
    ]
    assert report.skipped == ()
    assert await admin.fetchval("SELECT count(*) FROM ONLY audit_logs_default") == 0


async def test_ahead_past_max_ahead_is_refused_before_anything_runs(
    silentpulse_migrated_database: str, admin: Any
) -> None:
    before = await partitions_of(admin, "alerts")
    with pytest.raises(ConfigurationError, match=r"ahead \(25 months.*max_ahead \(24\)"):
        await ensure_partitions(admin, ahead=PARTITIONS_MAX_AHEAD + 1)
    with pytest.raises(ConfigurationError, match="max_ahead"):
        await maintain_partitions(silentpulse_migrated_database, ahead=10**6)
    with pytest.raises(ConfigurationError, match="past year 9999"):
        await ensure_partitions(admin, ahead=2, now=datetime(9999, 11, 1, tzinfo=timezone.utc))
    assert await partitions_of(admin, "alerts") == before
    done = cli("partitions", "--ahead", "30", dsn=silentpulse_migrated_database)
    assert done.returncode == 2 and "max_ahead" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


async def test_a_partition_of_9999_breaks_no_job(
    silentpulse_migrated_database: str, admin: Any
) -> None:
    """Before: the job made audit_logs_p9999_12 for a tenant's row of 9999-12 (its upper
    bound is year 10000); from then on partitions, retention and status all failed with a
    raw OverflowError."""
    dsn = silentpulse_migrated_database
    ids = await seed_tenant(admin, "tenant-a")
    await admin.execute("SELECT silentpulse_create_monthly_partition('audit_logs', '9999-12-01')")
    await add_audit(admin, ids, datetime(9999, 12, 31, 12, tzinfo=timezone.utc))
    report = await maintain_partitions(dsn)
    assert report.skipped == () and "audit_logs_p9999_12" not in str(report)
    verdicts = {
        a.partition: a.dropped for a in (await enforce_retention(dsn, dry_run=True)).actions
    }
    assert "audit_logs_p9999_12" not in verdicts
    coverage = {c.table: c for c in (await status(dsn)).partitions}
    assert coverage["audit_logs"].default_rows == 0
    assert await admin.fetchval("SELECT count(*) FROM audit_logs_p9999_12") == 1


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

"""Drift (issue 22): the live schema against what the files build at its version.

A database migrated by the project reports none; each of the hand changes operators
make during incidents is named, object and difference, with exit 1; what the
lifecycle jobs and the runbook do is excused, each by its rule; a read-only role with
an operator's scratch database is enough."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest

from silentpulse_db import (
    DirtyDatabaseError,
    DriftReport,
    apply_prerequisites,
    drift,
    enforce_retention,
    maintain_partitions,
    run_migrations,
)

from .test_cli import cli
from helpers import execute, fetchval, login_role

MONTH = datetime.now(timezone.utc).strftime("%Y_%m")

# (what an operator did, the SQL, the kind and key drift must name, its change).
HAND_CHANGES = [
    (
        "an index created in a hurry",
        "CREATE INDEX alerts_severity_hurry ON alerts (severity)",
        ("index", "public.alerts_severity_hurry", "unexpected"),
    ),
    (
        "a column widened",
        "ALTER TABLE assets ALTER COLUMN hostname TYPE varchar(1000)",
        ("column", "public.assets.hostname", "changed"),
    ),
    (
        "a policy dropped to debug a tenant's report",
        "DROP POLICY tenant_isolation_assets ON assets",
        ("policy", "public.assets.tenant_isolation_assets", "missing"),
    ),
    (
        "a policy's expression loosened",
        "ALTER POLICY tenant_isolation_users ON users USING (true)",
        ("policy", "public.users.tenant_isolation_users", "changed"),
    ),
    (
        "a policy dropped on one partition only",
        f"DROP POLICY tenant_isolation_alerts ON alerts_p{MONTH}",
        ("policy", f"public.alerts_p{MONTH}.tenant_isolation_alerts", "missing"),
    ),
    (
        "a foreign key re-added NOT VALID",
        "ALTER TABLE users DROP CONSTRAINT users_tenant_id_fkey; "
        "ALTER TABLE users ADD CONSTRAINT users_tenant_id_fkey FOREIGN KEY (tenant_id) "
        "REFERENCES tenants (id) NOT VALID",
        ("constraint", "public.users.users_tenant_id_fkey", "changed"),
    ),
    (
        "an index left INVALID",
        "UPDATE pg_index SET indisvalid = false "
        "WHERE indexrelid = 'public.assets_tenant_region_idx'::regclass",
        ("index", "public.assets_tenant_region_idx", "changed"),
    ),
    (
        "row-level security switched off",
        "ALTER TABLE assets DISABLE ROW LEVEL SECURITY",
        ("relation", "public.assets", "changed"),
    ),
    (
        "the alert trigger disabled",
        "ALTER TABLE alerts DISABLE TRIGGER alerts_notify_insert",
        ("trigger", "public.alerts.alerts_notify_insert", "changed"),
    ),
    (
        "a function patched in place",
        "CREATE OR REPLACE FUNCTION silentpulse_alert_stamp() RETURNS trigger "
        "LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
        ("function", "public.silentpulse_alert_stamp()", "changed"),
    ),
    (
        "a NOT NULL dropped",
        "ALTER TABLE tenants ALTER COLUMN name DROP NOT NULL",
        ("column", "public.tenants.name", "changed"),
    ),
    (
        "everything granted to a reporting role",
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'drift_reporting') "
        "THEN CREATE ROLE drift_reporting; END IF; END $$; "
        "GRANT ALL ON tenants TO drift_reporting",
        ("grant", "public.tenants to drift_reporting: SELECT", "unexpected"),
    ),
    (
        "one partition given to another owner",
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'drift_other') "
        "THEN CREATE ROLE drift_other; END IF; END $$; "
        f"ALTER TABLE alerts_p{MONTH} OWNER TO drift_other",
        ("owner", f"relation public.alerts_p{MONTH}", "changed"),
    ),
    # What a first review of drift found unseen or excused wrongly:
    (
        "a month detached by hand, its row-level security off",
        f"ALTER TABLE alerts DETACH PARTITION alerts_p{MONTH}; "
        f"ALTER TABLE alerts_p{MONTH} DISABLE ROW LEVEL SECURITY",
        ("partition", f"public.alerts_p{MONTH}", "changed"),
    ),
    (
        "this month dropped by hand",
        f"DROP TABLE audit_logs_p{MONTH}",
        ("partition", f"public.audit_logs_p{MONTH}", "missing"),
    ),
    (
        "every table granted to PUBLIC",
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO PUBLIC",
        ("grant", "public.tenants to PUBLIC: SELECT", "unexpected"),
    ),
    (
        "a default privilege for PUBLIC",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO PUBLIC",
        ("default privilege", ": SELECT on tables to PUBLIC", "unexpected"),
    ),
    (
        "the foreign keys' triggers disabled",
        "ALTER TABLE assets DISABLE TRIGGER ALL",
        ("relation", "public.assets", "changed"),
    ),
    (
        "a partitioned table's column retyped",
        "ALTER TABLE alerts ALTER COLUMN severity TYPE varchar(40)",
        ("column", "public.alerts.severity", "changed"),
    ),
]


async def test_a_migrated_database_has_no_drift(silentpulse_migrated_database: str) -> None:
    report = await drift(silentpulse_migrated_database, attempts=1)
    assert report.matches, "\n".join(str(d) for d in report.differences)
    assert report.version is not None and report.objects > 500
    done = await asyncio.to_thread(cli, "drift", dsn=silentpulse_migrated_database)
    assert done.returncode == 0, done.stderr
    assert "no drift" in done.stdout


@pytest.mark.parametrize(("story", "sql", "named"), HAND_CHANGES, ids=[h[0] for h in HAND_CHANGES])
async def test_each_hand_change_is_named(
    silentpulse_migrated_database: str, story: str, sql: str, named: tuple[str, str, str]
) -> None:
    await execute(silentpulse_migrated_database, sql)
    report = await drift(silentpulse_migrated_database, attempts=1)
    found = {(d.kind, d.key, d.change) for d in report.differences}
    kind, key, change = named
    assert any(f[0] == kind and f[1].endswith(key) and f[2] == change for f in found), (
        f"{story}: {sorted(found)}"
    )
    # One change, one difference: not one more for each month's copy of it, nor for
    # each column of a table reported whole.
    assert len(found) <= 2 or kind == "grant", f"{story}: {sorted(found)}"
    done = await asyncio.to_thread(cli, "drift", dsn=silentpulse_migrated_database)
    assert done.returncode == 1, done.stderr
    assert named[1] in done.stdout


async def test_the_fix_brings_the_database_back(silentpulse_migrated_database: str) -> None:
    """Where one statement does, running the report's fixes leaves no drift."""
    dsn = silentpulse_migrated_database
    for story, sql, _named in HAND_CHANGES:
        if "detached" not in story:  # its own test: attached again, it has fixes of its own
            await execute(dsn, sql)
    report = await drift(dsn, attempts=1)
    fixes = [d.fix for d in report.differences if d.fix]
    assert len(fixes) >= 14, [str(d) for d in report.differences]
    assert not any("TO PUBLIC" in fix and "GRANT" in fix for fix in fixes)
    conn = await asyncpg.connect(dsn)
    try:
        for fix in fixes:
            await conn.execute(fix)
    finally:
        await conn.close()
    left = await drift(dsn, attempts=1)
    unfixed = {(d.kind, d.key) for d in left.differences}
    # What had no statement of its own is left.
    assert unfixed <= {(d.kind, d.key) for d in report.differences if not d.fix}, unfixed


async def test_a_month_detached_by_hand_is_attached_again(
    silentpulse_migrated_database: str,
) -> None:
    """The fix attaches it again (with its bound); then, compared as a month, its
    row-level security switched off while detached is the next difference, and fixed."""
    dsn = silentpulse_migrated_database
    await execute(dsn, next(sql for story, sql, _ in HAND_CHANGES if "detached" in story))
    for expected in ("partition", "relation"):
        report = await drift(dsn, attempts=1)
        assert [(d.kind, d.key) for d in report.differences] == [
            (expected, f"public.alerts_p{MONTH}")
        ], [str(d) for d in report.differences]
        fix = report.differences[0].fix
        assert fix is not None
        await execute(dsn, fix)
    assert (await drift(dsn, attempts=1)).matches


async def test_the_lifecycle_jobs_are_no_drift(silentpulse_migrated_database: str) -> None:
    """Months made ahead by the partition job (the clock a year on) and months dropped by
    retention are excused, each by its rule; a month changed by hand is not."""
    dsn = silentpulse_migrated_database
    later = datetime.now(timezone.utc) + timedelta(days=400)
    await maintain_partitions(dsn, now=later, attempts=1)
    await enforce_retention(dsn, attempts=1)  # today: nothing of today's months goes
    report = await drift(dsn, attempts=1)
    assert report.matches, "\n".join(str(d) for d in report.differences)
    rules = {e.rule for e in report.excused}
    assert any("partition job" in rule for rule in rules), rules
    ahead = f"alerts_p{later:%Y_%m}"
    await execute(dsn, f"DROP POLICY tenant_isolation_alerts ON {ahead}")
    report = await drift(dsn, attempts=1)
    assert ("policy", f"public.{ahead}.tenant_isolation_alerts", "missing") in {
        (d.kind, d.key, d.change) for d in report.differences
    }


async def test_the_runbooks_grants_are_no_drift(
    silentpulse_app_database: str, silentpulse_migrated_database: str
) -> None:
    """The app role's grants as operators give them (the blanket GRANT ... ON ALL
    TABLES the test harness runs, as docs/operations.md does for an existing database)
    are excused, each by its rule; one table granted more is drift."""
    del silentpulse_app_database  # the fixture granted the app role on this database
    report = await drift(silentpulse_migrated_database, attempts=1)
    assert report.matches, "\n".join(str(d) for d in report.differences)
    assert any("blanket grant" in e.rule for e in report.excused)


async def test_the_default_privileges_are_no_drift(silentpulse_database: str) -> None:
    """docs/operations.md's first deploy: default privileges for the app role before the
    owner migrates. Its grants, partitions' included, are excused by that rule; one
    revoked on one table is drift, with the GRANT that restores it."""
    dsn = silentpulse_database
    await apply_prerequisites(dsn)
    async with (
        login_role(dsn, "", prefix="app") as (app, _app_dsn),
        login_role(
            dsn,
            "GRANT CREATE, USAGE ON SCHEMA public TO {role}; "
            f"GRANT USAGE ON SCHEMA public TO {app}; "
            "ALTER DEFAULT PRIVILEGES FOR ROLE {role} IN SCHEMA public "
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app}; "
            "ALTER DEFAULT PRIVILEGES FOR ROLE {role} IN SCHEMA public "
            f"GRANT USAGE ON SEQUENCES TO {app};",
            prefix="owner",
        ) as (_owner, owner_dsn),
    ):
        await run_migrations(owner_dsn, attempts=1)
        report = await drift(dsn, attempts=1)
        assert report.matches, "\n".join(str(d) for d in report.differences)
        assert any("default privileges" in e.rule for e in report.excused)
        await execute(owner_dsn, f"REVOKE DELETE ON tenants FROM {app}")
        report = await drift(dsn, attempts=1)
        assert [(d.kind, d.key, d.change, d.fix) for d in report.differences] == [
            (
                "grant",
                f"public.tenants to {app}: DELETE",
                "missing",
                f"GRANT DELETE ON public.tenants TO {app}",
            )
        ]


async def test_read_only_role_with_a_scratch_database(
    silentpulse_migrated_database: str, silentpulse_database: str
) -> None:
    """A role that may only read (no CREATEDB, no write) with an empty database the
    operator provides: the report as for the owner, the scratch database left empty."""
    dsn = silentpulse_migrated_database
    await execute(dsn, "ALTER TABLE assets ALTER COLUMN hostname TYPE varchar(1000)")
    grants = (
        "GRANT USAGE ON SCHEMA public TO {role}; "
        "GRANT SELECT ON schema_migrations, schema_migrations_history TO {role};"
    )
    async with login_role(dsn, grants, prefix="reader") as (_role, reader):
        done = await asyncio.to_thread(
            cli, "drift", "--json", "--scratch-dsn", silentpulse_database, dsn=reader
        )
        assert done.returncode == 1, done.stderr
        document = json.loads(done.stdout)
        assert document["matches"] is False
        assert [(d["kind"], d["key"]) for d in document["differences"]] == [
            ("column", "public.assets.hostname")
        ]
    left = await fetchval(
        silentpulse_database,
        "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace",
    )
    assert left == 0


async def test_a_role_without_createdb_is_told_what_the_administrator_must_do(
    silentpulse_migrated_database: str,
) -> None:
    """As for `check` (exit 3): drift's own 1 means drift found, its errors are 2, and an
    administrator's step is 3 as for every command (issue 27, 13)."""
    grants = (
        "GRANT USAGE ON SCHEMA public TO {role}; "
        "GRANT SELECT ON schema_migrations, schema_migrations_history TO {role};"
    )
    async with login_role(silentpulse_migrated_database, grants, prefix="reader") as (_, dsn):
        done = await asyncio.to_thread(cli, "drift", dsn=dsn)
        checked = await asyncio.to_thread(cli, "check", dsn=dsn)
    assert done.returncode == checked.returncode == 3, done.stderr + checked.stderr
    assert "CREATEDB" in done.stderr, done.stderr


async def test_a_database_never_migrated_is_an_error(silentpulse_database: str) -> None:
    done = await asyncio.to_thread(cli, "drift", dsn=silentpulse_database)
    assert done.returncode == 2, done.stderr
    assert "never migrated" in done.stderr


async def test_a_relation_held_exclusively_is_an_error_not_a_wait(
    silentpulse_migrated_database: str,
) -> None:
    """Reading a partition's bound opens it (ACCESS SHARE): behind a migration's
    exclusive lock drift gives up after its lock_timeout instead of queueing."""
    holder = await asyncpg.connect(silentpulse_migrated_database)
    try:
        await holder.execute("BEGIN; LOCK TABLE alerts IN ACCESS EXCLUSIVE MODE")
        done = await asyncio.to_thread(cli, "drift", dsn=silentpulse_migrated_database)
    finally:
        await holder.close()
    assert done.returncode == 2, done.stderr
    assert "lock" in done.stderr.lower()


async def test_a_dirty_database_is_an_error(silentpulse_migrated_database: str) -> None:
    await execute(silentpulse_migrated_database, "UPDATE schema_migrations SET dirty = true")
    with pytest.raises(DirtyDatabaseError):
        await drift(silentpulse_migrated_database, attempts=1)
    done = await asyncio.to_thread(cli, "drift", dsn=silentpulse_migrated_database)
    assert done.returncode == 2, done.stderr
    assert "dirty" in done.stderr.lower()


def test_the_report_reads_by_object(silentpulse_migrated_database: str) -> None:
    del silentpulse_migrated_database
    from silentpulse_db.migrate.cli import drift_json, format_drift
    from silentpulse_db.results import DriftDifference, DriftExcuse

    report = DriftReport(
        version=21,
        differences=(
            DriftDifference("index", "public.x", "unexpected", None, "CREATE INDEX x", "DROP"),
            DriftDifference("policy", "public.t.p", "changed", "a", "b", None),
        ),
        excused=(DriftExcuse("partition", "public.alerts_p2030_01", "monthly"),),
        objects=3,
        checked_at=datetime(2026, 12, 4, tzinfo=timezone.utc),
    )
    text = format_drift(report)
    assert text.splitlines()[1:3] == [
        "index:",
        "  index public.x: not built by the files (found: CREATE INDEX x)",
    ]
    assert "policy:" in text and "no single statement" in text and "1 x monthly" in text
    document: dict[str, Any] = json.loads(drift_json(report))
    assert document["matches"] is False and document["version"] == 21

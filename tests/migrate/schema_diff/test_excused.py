"""What the lifecycle jobs and the runbook do is excused, each by its rule, and nothing
else: a blanket grant to a role the runbook does not name is drift."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import asyncpg

from silentpulse_db import enforce_retention, maintain_partitions, run_migrations
from silentpulse_db.migrate import apply_prerequisites, drift
from silentpulse_db.settings import ConnectRetry

from .hand_changes import MONTH
from helpers import cli, execute, fetchval, login_role


async def test_the_lifecycle_jobs_are_no_drift(silentpulse_migrated_database: str) -> None:
    """Months made ahead by the partition job (the clock a year on) and months dropped by
    retention are excused, each by its rule; a month changed by hand is not."""
    dsn = silentpulse_migrated_database
    later = datetime.now(timezone.utc) + timedelta(days=400)
    await maintain_partitions(dsn, now=later, connect=ConnectRetry(attempts=1))
    await enforce_retention(
        dsn, connect=ConnectRetry(attempts=1)
    )  # today: nothing of today's months goes
    report = await drift(dsn, connect=ConnectRetry(attempts=1))
    assert report.matches, "\n".join(str(d) for d in report.differences)
    rules = {e.rule for e in report.excused}
    assert any("partition job" in rule for rule in rules), rules
    ahead = f"alerts_p{later:%Y_%m}"
    await execute(dsn, f"DROP POLICY tenant_isolation_alerts ON {ahead}")
    report = await drift(dsn, connect=ConnectRetry(attempts=1))
    assert ("policy", f"public.{ahead}.tenant_isolation_alerts", "missing") in {
        (d.kind, d.key, d.change) for d in report.differences
    }


async def test_the_runbooks_grants_are_no_drift(
    silentpulse_app_database: str, silentpulse_migrated_database: str
) -> None:
    """The app role's grants as operators give them (the blanket GRANT ... ON ALL
    TABLES the test harness runs, as docs/operations.md does for an existing database)
    are excused, each by its rule; one table granted more is drift."""
    app = _role_of(silentpulse_app_database)  # the fixture granted it on this database
    report = await drift(
        silentpulse_migrated_database, app_roles=(app,), connect=ConnectRetry(attempts=1)
    )
    assert report.matches, "\n".join(str(d) for d in report.differences)
    assert any("blanket grant" in e.rule for e in report.excused)
    done = await asyncio.to_thread(
        cli, "drift", "--app-role", app, dsn=silentpulse_migrated_database
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _role_of(dsn: str) -> str:
    role = urlsplit(dsn).username
    assert role is not None
    return role


async def test_a_blanket_grant_to_a_role_the_runbook_does_not_name_is_drift(
    silentpulse_app_database: str, silentpulse_migrated_database: str
) -> None:
    """Issue 29, 1: the runbook's blanket grant, given to a new role, lets that role set
    app.current_tenant itself and read any tenant's users; it is drift, one REVOKE per
    table, while the app role's same grant stays excused."""
    dsn, app = silentpulse_migrated_database, _role_of(silentpulse_app_database)
    victim = uuid.uuid4()
    await execute(
        dsn,
        f"INSERT INTO tenants (id, name, handle) VALUES ('{victim}', 'victim', 'victim'); "
        "INSERT INTO users (tenant_id, email, password_hash, role) "
        f"VALUES ('{victim}', 'ceo@victim.example', 'secret-hash', 'admin')",
    )
    blanket = (
        "GRANT USAGE ON SCHEMA public TO {role}; "
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};"
    )
    async with login_role(dsn, blanket, prefix="intruder") as (intruder, intruder_dsn):
        conn = await asyncpg.connect(intruder_dsn)
        try:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL app.current_tenant = '{victim}'")
                stolen = await conn.fetchrow("SELECT email, password_hash FROM users")
        finally:
            await conn.close()
        assert stolen is not None and stolen["password_hash"] == "secret-hash"
        report = await drift(dsn, app_roles=(app,), connect=ConnectRetry(attempts=1))
        found: dict[tuple[str, str, str], str | None] = {
            (d.kind, d.key, d.change): d.fix for d in report.differences
        }
        key = ("grant", f"public.users to {intruder}: SELECT", "unexpected")
        assert found.get(key) == f"REVOKE SELECT ON public.users FROM {intruder}", sorted(found)
        assert all(intruder in d.key for d in report.differences), sorted(found)
        done = await asyncio.to_thread(cli, "drift", "--app-role", app, dsn=dsn)
        assert done.returncode == 1, done.stderr
        assert f"public.users to {intruder}: SELECT" in done.stdout


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
        await run_migrations(owner_dsn, connect=ConnectRetry(attempts=1))
        report = await drift(dsn, connect=ConnectRetry(attempts=1))
        assert report.matches, "\n".join(str(d) for d in report.differences)
        assert any("default privileges" in e.rule for e in report.excused)
        # No blanket GRANT was run: none of them is put down to one (every table has
        # them, as it would after one, but the default privileges gave them).
        blanket = [e.key for e in report.excused if "blanket" in e.rule]
        assert blanket == [], blanket[:5]
        await execute(owner_dsn, f"REVOKE DELETE ON tenants FROM {app}")
        report = await drift(dsn, connect=ConnectRetry(attempts=1))
        assert [(d.kind, d.key, d.change, d.fix) for d in report.differences] == [
            (
                "grant",
                f"public.tenants to {app}: DELETE",
                "missing",
                f"GRANT DELETE ON public.tenants TO {app}",
            )
        ]


async def test_a_month_made_by_the_jobs_role_gets_the_owners_grants(
    silentpulse_database: str,
) -> None:
    """Issue 29, 9: the owner's default privileges give the app role its grants on what
    the owner creates; a month the partition job makes as the jobs role (a member of the
    owner, docs/operations.md) got none before 000023, and drift names such a month's
    missing grants, with the GRANT. From 000023 on, a month comes out the same whoever
    runs the job, and the app role reads it directly."""
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
        await run_migrations(owner_dsn, target=22, connect=ConnectRetry(attempts=1))
        before = datetime.now(timezone.utc) + timedelta(days=400)
        await maintain_partitions(jobs_dsn, now=before, ahead=0, connect=ConnectRetry(attempts=1))
        report = await drift(dsn, connect=ConnectRetry(attempts=1))
        old = f"public.alerts_p{before:%Y_%m}"
        assert (
            "grant",
            f"{old} to {app}: SELECT",
            "missing",
            f"GRANT SELECT ON {old} TO {app}",
        ) in {(d.kind, d.key, d.change, d.fix) for d in report.differences}

        await run_migrations(owner_dsn, connect=ConnectRetry(attempts=1))
        later = datetime.now(timezone.utc) + timedelta(days=800)
        await maintain_partitions(jobs_dsn, now=later, ahead=0, connect=ConnectRetry(attempts=1))
        acl = (
            "SELECT array_agg(item::text ORDER BY item::text) FROM pg_class, "
            "unnest(relacl) AS item WHERE oid = to_regclass($1)"
        )
        by_owner = await fetchval(dsn, acl, f"alerts_p{MONTH}")  # made by the migrations
        by_jobs = await fetchval(dsn, acl, f"alerts_p{later:%Y_%m}")
        assert by_jobs == by_owner and f"{app}=arwd/{owner}" in by_owner, (by_jobs, by_owner)
        count = f"SELECT count(*) FROM alerts_p{later:%Y_%m}"
        assert await fetchval(app_dsn, count) == 0  # read directly, not "permission denied"
        report = await drift(dsn, connect=ConnectRetry(attempts=1))
        left = {(d.kind, d.key) for d in report.differences}
        month = f"_p{before:%Y_%m} to {app}: "
        assert left and all(kind == "grant" and month in key for kind, key in left), left
        for fix in (d.fix for d in report.differences):
            assert fix is not None
            await execute(dsn, fix)
        assert (await drift(dsn, connect=ConnectRetry(attempts=1))).matches


async def test_a_database_with_data_and_rotated_credentials_is_no_drift(
    silentpulse_migrated_database: str,
) -> None:
    """Two of the six controls of issue 29: rows in every tenant table (the default
    partitions included: a row dated outside any month) and the credentials moved to v2
    then rotated to a new master key. Data is not schema: no drift, none excused for it."""
    from credentials.data import NEW_KEY, OLD_KEY, SALT, populate
    from schema.seed import seed_tenant

    from silentpulse_db.credentials import migrate_credentials
    from silentpulse_db.crypto import Keyring

    dsn = silentpulse_migrated_database
    old, new = Keyring(OLD_KEY, salt=SALT), Keyring(NEW_KEY, salt=SALT)
    conn = await asyncpg.connect(dsn)
    try:
        await populate(conn, old, tenants=3, per_table=5, versions=(1,))
        before = await drift(dsn, connect=ConnectRetry(attempts=1))
        await migrate_credentials(dsn, keyring=old, mode="v2")
        await migrate_credentials(dsn, keyring=new, old_keyring=old, mode="rotate")
        # A row in every tenant table (its credentials not envelopes: after the rotation).
        ids = await seed_tenant(conn, "control")
        await conn.execute(
            "INSERT INTO audit_logs (tenant_id, action, entity_type, created_at) "
            "VALUES ($1, 'create', 'asset', now() + interval '20 years')",
            ids["tenants"],
        )
    finally:
        await conn.close()
    after = await drift(dsn, connect=ConnectRetry(attempts=1))
    for report in (before, after):
        assert report.matches, "\n".join(str(d) for d in report.differences)
    assert [e.rule for e in after.excused] == [e.rule for e in before.excused]


async def test_the_version_tables_guard_trigger_hides_no_other_table(
    silentpulse_migrated_database: str,
) -> None:
    """A set's version table is bookkeeping (golang-migrate's two columns, guarded by
    the runner's trigger), which drift leaves out. The trigger alone is no mark: any role
    with TRIGGER on a table (a blanket GRANT ALL gives it) may attach it, and the table
    must stay in drift, the trigger reported."""
    dsn = silentpulse_migrated_database
    await execute(
        dsn,
        "CREATE TRIGGER hide_me BEFORE TRUNCATE ON tenants FOR EACH STATEMENT "
        "EXECUTE FUNCTION silentpulse_version_table_guard(); "
        "ALTER TABLE tenants ADD COLUMN hidden text",
    )
    report = await drift(dsn, connect=ConnectRetry(attempts=1))
    changes = {(d.kind, d.key, d.change) for d in report.differences}
    assert ("trigger", "public.tenants.hide_me", "unexpected") in changes, changes
    assert ("column", "public.tenants.hidden", "unexpected") in changes, changes

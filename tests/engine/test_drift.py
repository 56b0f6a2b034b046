"""Drift (issue 22): the live schema against what the files build at its version.

A database migrated by the project reports none; each of the hand changes operators
make during incidents is named, object and difference, with exit 1; what the
lifecycle jobs and the runbook do is excused, each by its rule; a read-only role with
an operator's scratch database is enough."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from silentpulse_db import (
    ConfigurationError,
    DirtyDatabaseError,
    DriftReport,
    apply_prerequisites,
    drift,
    enforce_retention,
    maintain_partitions,
    run_migrations,
)

from .test_cli import cli
from helpers import execute, fetchval, login_role, wait_for, write_migrations

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


async def test_a_detached_default_partition_is_drift_and_attached_again(
    silentpulse_migrated_database: str,
) -> None:
    """Issue 29, 2: without its default partition, an insert for a month without a
    partition fails and the default's rows have left the table. One difference, whose
    fix attaches it again."""
    dsn = silentpulse_migrated_database
    await execute(dsn, "ALTER TABLE audit_logs DETACH PARTITION audit_logs_default")
    report = await drift(dsn, attempts=1)
    assert [(d.kind, d.key, d.change) for d in report.differences] == [
        ("relation", "public.audit_logs_default", "changed")
    ], [str(d) for d in report.differences]
    fix = report.differences[0].fix
    assert fix == "ALTER TABLE public.audit_logs ATTACH PARTITION public.audit_logs_default DEFAULT"
    done = await asyncio.to_thread(cli, "drift", dsn=dsn)
    assert done.returncode == 1 and "audit_logs_default" in done.stdout, done.stdout
    await execute(dsn, fix)
    assert (await drift(dsn, attempts=1)).matches


async def test_a_restarted_history_sequence_is_drift_and_set_back(
    silentpulse_migrated_database: str,
) -> None:
    """Issue 29, 3: restarted, the history's sequence hands out ids already recorded (a
    duplicate key for the next history row, before the runner learnt to put it back:
    test_history_sequence.py). Named, with the setval to the highest id recorded; run,
    no drift is left; and the next migration, run without it, puts it back itself."""
    dsn = silentpulse_migrated_database
    await execute(dsn, "ALTER SEQUENCE schema_migrations_history_id_seq RESTART")
    report = await drift(dsn, attempts=1)
    assert [(d.kind, d.key, d.change) for d in report.differences] == [
        ("sequence", "public.schema_migrations_history_id_seq", "changed")
    ], [str(d) for d in report.differences]
    fix = report.differences[0].fix
    assert fix is not None and "setval" in fix and "max(id)" in fix
    await execute(dsn, fix)
    assert (await drift(dsn, attempts=1)).matches
    await execute(dsn, "ALTER SEQUENCE schema_migrations_history_id_seq RESTART")
    done = await asyncio.to_thread(cli, "down", "1", dsn=dsn)
    assert done.returncode == 0, done.stderr
    after = await drift(dsn, attempts=1)  # at the version below, the sequence put back
    assert after.matches, [str(d) for d in after.differences]


async def test_fixes_that_scan_under_a_strong_lock_say_so_and_give_the_not_valid_form(
    silentpulse_migrated_database: str,
) -> None:
    """Issue 29, 8: SET NOT NULL and ADD CONSTRAINT check every row under a lock that
    stops the application; the fix says so and, where PostgreSQL has one, takes the
    NOT VALID + VALIDATE way. Run as printed, it brings the database back."""
    dsn = silentpulse_migrated_database
    await execute(
        dsn,
        "ALTER TABLE tenants ALTER COLUMN name DROP NOT NULL; "
        "ALTER TABLE users DROP CONSTRAINT users_role_check; "
        "ALTER TABLE users DROP CONSTRAINT users_tenant_id_fkey",
    )
    report = await drift(dsn, attempts=1)
    fixes = {d.key: d.fix or "" for d in report.differences}
    assert set(fixes) == {
        "public.tenants.name",
        "public.users.users_role_check",
        "public.users.users_tenant_id_fkey",
    }, [str(d) for d in report.differences]
    for key, fix in fixes.items():
        assert fix.startswith("-- ") and "EXCLUSIVE" in fix, (key, fix)
        assert "NOT VALID;" in fix and "VALIDATE CONSTRAINT" in fix, (key, fix)
    assert "ACCESS EXCLUSIVE" in fixes["public.tenants.name"]
    assert "SET NOT NULL" in fixes["public.tenants.name"]
    assert "SHARE ROW EXCLUSIVE" in fixes["public.users.users_tenant_id_fkey"]
    for fix in fixes.values():
        await execute(dsn, fix)
    assert (await drift(dsn, attempts=1)).matches


def _cli_with(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with ``env`` (DSNs) and nothing of the test's own."""
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "POSTGRES_DSN")}
    return subprocess.run(
        [sys.executable, "-m", "silentpulse_db", *args],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=120,
        check=False,
    )


async def test_json_errors_and_the_scratch_dsn_from_the_environment(
    silentpulse_migrated_database: str, silentpulse_database: str
) -> None:
    """Issue 29, 8: `--json` answers an error with a JSON object (CI reads stdout), its
    password hidden; the scratch database can be given as SCRATCH_DATABASE_URL, so that
    its password is not in the process list."""
    failed = await asyncio.to_thread(
        _cli_with, {"DATABASE_URL": silentpulse_database}, "drift", "--json"
    )
    assert failed.returncode == 2, failed.stderr
    error = json.loads(failed.stdout)["error"]
    assert error["type"] == "ConfigurationError" and error["exit"] == 2
    assert "never migrated" in error["message"]
    assert "never migrated" in failed.stderr
    grants = (
        "GRANT USAGE ON SCHEMA public TO {role}; "
        "GRANT SELECT ON schema_migrations, schema_migrations_history TO {role};"
    )
    async with login_role(silentpulse_migrated_database, grants, prefix="reader") as (_, dsn):
        password = urlsplit(dsn).password
        assert password is not None
        env = {"DATABASE_URL": dsn, "SCRATCH_DATABASE_URL": silentpulse_database}
        done = await asyncio.to_thread(_cli_with, env, "drift", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["matches"] is True
        # A role without CREATEDB and no scratch database: exit 3, as JSON too.
        refused = await asyncio.to_thread(_cli_with, {"DATABASE_URL": dsn}, "drift", "--json")
        assert refused.returncode == 3, refused.stderr
        error = json.loads(refused.stdout)["error"]
        assert error["exit"] == 3 and "CREATEDB" in error["message"]
        assert password not in refused.stdout + refused.stderr


async def test_every_fix_that_exists_is_printed_one_change_one_difference(
    silentpulse_migrated_database: str,
) -> None:
    """Issue 29, 5: a missing month (the partition function), an extra extension, an
    extra schema each get their statement; a retyped column is one difference, not one
    more for the CHECK that names it (its fix takes the CHECK back too)."""
    dsn = silentpulse_migrated_database
    await execute(
        dsn,
        "ALTER TABLE alerts ALTER COLUMN severity TYPE varchar(40); "
        "CREATE SCHEMA hand_made; CREATE EXTENSION IF NOT EXISTS citext; "
        f"DROP TABLE audit_logs_p{MONTH}",
    )
    report = await drift(dsn, attempts=1)
    found = {(d.kind, d.key, d.change): d.fix for d in report.differences}
    assert found == {
        ("column", "public.alerts.severity", "changed"): (
            "ALTER TABLE public.alerts ALTER COLUMN severity TYPE text"
        ),
        ("extension", "citext", "unexpected"): 'DROP EXTENSION "citext"',
        ("schema", "hand_made", "unexpected"): 'DROP SCHEMA "hand_made"',
        ("partition", f"public.audit_logs_p{MONTH}", "missing"): (
            "SELECT silentpulse_create_monthly_partition('public.audit_logs'::regclass, "
            f"DATE '{MONTH.replace('_', '-')}-01')"
        ),
    }, [str(d) for d in report.differences]
    for fix in found.values():
        assert fix is not None
        await execute(dsn, fix)
    assert (await drift(dsn, attempts=1)).matches


# Issue 29, 4: what drift did not compare. (the SQL, the kind and key named, its change)
NOT_COMPARED_BEFORE = [
    ("ALTER TABLE ai_configs SET UNLOGGED", ("relation", "public.ai_configs", "changed")),
    (
        "GRANT SELECT (password_hash) ON users TO {role}",
        ("column grant", "public.users.password_hash to {role}: SELECT", "unexpected"),
    ),
    (
        "GRANT CREATE ON SCHEMA public TO PUBLIC",
        ("schema grant", "public to PUBLIC: CREATE", "unexpected"),
    ),
    (
        "ALTER FUNCTION silentpulse_alert_stamp() OWNER TO {role}",
        ("owner", "function public.silentpulse_alert_stamp()", "changed"),
    ),
    (
        "GRANT EXECUTE ON FUNCTION silentpulse_secure_partition(regclass) TO {role}",
        (
            "function grant",
            "public.silentpulse_secure_partition(part regclass) to {role}: EXECUTE",
            "unexpected",
        ),
    ),
    (
        'ALTER TABLE assets ALTER COLUMN hostname TYPE text COLLATE "C"',
        ("column", "public.assets.hostname", "changed"),
    ),
    ("ALTER TABLE assets SET (fillfactor = 50)", ("relation", "public.assets", "changed")),
    ("ALTER TABLE alerts REPLICA IDENTITY FULL", ("relation", "public.alerts", "changed")),
    ("COMMENT ON TABLE users IS 'hacked'", ("relation", "public.users", "changed")),
    ("COMMENT ON COLUMN users.email IS 'x'", ("column", "public.users.email", "changed")),
]


async def test_what_drift_did_not_compare_is_named_and_fixed(
    silentpulse_migrated_database: str,
) -> None:
    """Each change is one difference, with the statement that takes it back."""
    dsn = silentpulse_migrated_database
    async with login_role(dsn, prefix="other") as (role, _role_dsn):
        for sql, (kind, key, change) in NOT_COMPARED_BEFORE:
            await execute(dsn, sql.format(role=role))
            report = await drift(dsn, attempts=1)
            found = [(d.kind, d.key, d.change) for d in report.differences]
            assert found == [(kind, key.format(role=role), change)], (sql, found)
            fix = report.differences[0].fix
            assert fix is not None, sql
            await execute(dsn, fix)
            assert (await drift(dsn, attempts=1)).matches, sql


# What the last stop's review listed as not compared, or compared without a fix:
# (the SQL, the kind and key named, its change, what the fix says).
NOT_COMPARED_AT_THE_LAST_STOP = [
    (
        "REVOKE ALL ON alerts FROM CURRENT_USER",
        ("owner", "relation public.alerts", "changed"),
        "GRANT ALL ON public.alerts TO",
    ),
    (
        "REVOKE EXECUTE ON FUNCTION silentpulse_alert_stamp() FROM CURRENT_USER",
        ("owner", "function public.silentpulse_alert_stamp()", "changed"),
        "GRANT ALL ON FUNCTION public.silentpulse_alert_stamp() TO",
    ),
    (
        "ALTER TABLE assets ALTER COLUMN hostname SET STORAGE EXTERNAL",
        ("column", "public.assets.hostname", "changed"),
        "SET STORAGE EXTENDED",
    ),
    (
        "ALTER TABLE users ALTER COLUMN email SET STORAGE MAIN, "
        "ALTER COLUMN password_hash SET STATISTICS 1000",
        ("column", "public.users.email", "changed"),
        "SET STORAGE EXTENDED",
    ),
    (
        "ALTER TABLE alerts ALTER COLUMN severity SET STATISTICS 0",
        ("column", "public.alerts.severity", "changed"),
        "SET STATISTICS -1",
    ),
    (
        "ALTER INDEX assets_tenant_region_idx SET (fillfactor = 50)",
        ("index", "public.assets_tenant_region_idx", "changed"),
        "ALTER INDEX public.assets_tenant_region_idx RESET (fillfactor)",
    ),
]


@pytest.mark.parametrize(
    ("sql", "named", "says"),
    NOT_COMPARED_AT_THE_LAST_STOP,
    ids=[c[0].split(" ", 3)[-1][:40] for c in NOT_COMPARED_AT_THE_LAST_STOP],
)
async def test_what_the_last_stop_left_is_named_and_fixed(
    silentpulse_migrated_database: str, sql: str, named: tuple[str, str, str], says: str
) -> None:
    """Issue 29, 4: an owner's privileges revoked from itself, a column's storage and
    statistics, an index's storage options: each named (one change, one difference:
    not again on each month), with the statement that takes it back."""
    dsn = silentpulse_migrated_database
    await execute(dsn, sql)
    report = await drift(dsn, attempts=1)
    found = [(d.kind, d.key, d.change) for d in report.differences]
    if "password_hash" in sql:  # two columns changed: two differences
        assert found == [named, ("column", "public.users.password_hash", "changed")], found
    else:
        assert found == [named], found
    for difference in report.differences:
        assert difference.fix is not None, str(difference)
        await execute(dsn, difference.fix)
    assert says in report.differences[0].fix, report.differences[0].fix  # type: ignore[operator]
    left = await drift(dsn, attempts=1)
    assert left.matches, [str(d) for d in left.differences]


def test_drift_lists_and_takes_no_lock_option() -> None:
    """Issue 29, 4: drift takes neither the migration lock nor a table lock for DDL: its
    help lists no such option, and it refuses one rather than ignore it."""
    shown = subprocess.run(
        [sys.executable, "-m", "silentpulse_db", "drift", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "--scratch-dsn" in shown and "--attempts" in shown
    for option in ("--lock-timeout", "--ddl-lock-timeout", "--ddl-retry-for"):
        assert option not in shown, shown
        refused = subprocess.run(
            [sys.executable, "-m", "silentpulse_db", "drift", option, "5"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert refused.returncode == 2 and "unrecognized arguments" in refused.stderr, (
            refused.stderr
        )
    up = subprocess.run(
        [sys.executable, "-m", "silentpulse_db", "up", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "--lock-timeout" in up and "--ddl-retry-for" in up


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
    app = _role_of(silentpulse_app_database)  # the fixture granted it on this database
    report = await drift(silentpulse_migrated_database, app_roles=(app,), attempts=1)
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
        report = await drift(dsn, app_roles=(app,), attempts=1)
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
        await run_migrations(owner_dsn, target=22, attempts=1)
        before = datetime.now(timezone.utc) + timedelta(days=400)
        await maintain_partitions(jobs_dsn, now=before, ahead=0, attempts=1)
        report = await drift(dsn, attempts=1)
        old = f"public.alerts_p{before:%Y_%m}"
        assert (
            "grant",
            f"{old} to {app}: SELECT",
            "missing",
            f"GRANT SELECT ON {old} TO {app}",
        ) in {(d.kind, d.key, d.change, d.fix) for d in report.differences}

        await run_migrations(owner_dsn, attempts=1)
        later = datetime.now(timezone.utc) + timedelta(days=800)
        await maintain_partitions(jobs_dsn, now=later, ahead=0, attempts=1)
        acl = (
            "SELECT array_agg(item::text ORDER BY item::text) FROM pg_class, "
            "unnest(relacl) AS item WHERE oid = to_regclass($1)"
        )
        by_owner = await fetchval(dsn, acl, f"alerts_p{MONTH}")  # made by the migrations
        by_jobs = await fetchval(dsn, acl, f"alerts_p{later:%Y_%m}")
        assert by_jobs == by_owner and f"{app}=arwd/{owner}" in by_owner, (by_jobs, by_owner)
        count = f"SELECT count(*) FROM alerts_p{later:%Y_%m}"
        assert await fetchval(app_dsn, count) == 0  # read directly, not "permission denied"
        report = await drift(dsn, attempts=1)
        left = {(d.kind, d.key) for d in report.differences}
        month = f"_p{before:%Y_%m} to {app}: "
        assert left and all(kind == "grant" and month in key for kind, key in left), left
        for fix in (d.fix for d in report.differences):
            assert fix is not None
            await execute(dsn, fix)
        assert (await drift(dsn, attempts=1)).matches


async def test_a_service_set_is_built_not_dropped(
    silentpulse_migrated_database: str, tmp_path: Path
) -> None:
    """Issue 29, 6: with the worker's own set applied, plain drift builds it after the core
    (from the files the database stored when it applied them) and finds no drift; a hand
    change in it is named. Given its folder, the same."""
    from .test_service_sets import WORKER, worker_set

    dsn = silentpulse_migrated_database
    worker = worker_set(tmp_path / "worker")
    await run_migrations(dsn, source=worker, table=WORKER, attempts=1)
    report = await drift(dsn, attempts=1)
    assert report.matches, [str(d) for d in report.differences]
    plain = await asyncio.to_thread(cli, "drift", dsn=dsn)
    assert plain.returncode == 0 and "no drift" in plain.stdout, plain.stdout + plain.stderr
    report = await drift(dsn, sets=[(worker, WORKER)], attempts=1)
    assert report.matches, [str(d) for d in report.differences]
    for args in (["--path", str(worker), "--table", WORKER], ["--set", f"{worker}:{WORKER}"]):
        done = await asyncio.to_thread(cli, "drift", *args, dsn=dsn)
        assert done.returncode == 0 and "no drift" in done.stdout, done.stdout + done.stderr
    await execute(dsn, "DROP POLICY tenant_isolation_worker_jobs ON worker_jobs")
    for given in ([], [(worker, WORKER)]):
        report = await drift(dsn, sets=given, attempts=1)
        assert [(d.kind, d.key, d.change) for d in report.differences] == [
            ("policy", "public.worker_jobs.tenant_isolation_worker_jobs", "missing")
        ]


async def test_every_recorded_set_is_built_in_requires_order(
    silentpulse_migrated_database: str, tmp_path: Path
) -> None:
    """Issue 29, 6: two service sets, the second requiring the first (and recorded before
    it by name), applied in steps (a file changed and re-applied after a down included):
    plain drift builds both, each at its version, the required one first."""
    from .test_service_sets import WORKER, worker_set

    dsn = silentpulse_migrated_database
    worker = worker_set(tmp_path / "worker")
    billing = write_migrations(
        tmp_path / "billing",
        {
            1: (
                "create_billing_runs",
                f"-- silentpulse: requires {WORKER} >= 2\n"
                "CREATE TABLE billing_runs (id uuid PRIMARY KEY, state text);\n"
                "CREATE VIEW billing_worker_states AS SELECT state FROM worker_jobs;\n",
                "DROP VIEW billing_worker_states; DROP TABLE billing_runs;\n",
            ),
            2: (
                "add_billing_total",
                "ALTER TABLE billing_runs ADD COLUMN total numeric;\n",
                "ALTER TABLE billing_runs DROP COLUMN total;\n",
            ),
        },
    )
    await run_migrations(dsn, source=worker, table=WORKER, attempts=1)
    await run_migrations(dsn, source=billing, table="billing_schema_migrations", attempts=1)
    # Reverted, its file changed, applied again: the file that ran last is the one built.
    await asyncio.to_thread(
        cli, "down", "1", "--path", str(billing), "--table", "billing_schema_migrations", dsn=dsn
    )
    changed = billing / "000002_add_billing_total.up.sql"
    changed.write_text("ALTER TABLE billing_runs ADD COLUMN total numeric(12, 2);\n")
    await run_migrations(dsn, source=billing, table="billing_schema_migrations", attempts=1)
    report = await drift(dsn, attempts=1)
    assert report.matches, [str(d) for d in report.differences]
    await execute(dsn, "ALTER TABLE billing_runs ALTER COLUMN total TYPE numeric")
    report = await drift(dsn, attempts=1)
    assert [(d.kind, d.key) for d in report.differences] == [
        ("column", "public.billing_runs.total")
    ], [str(d) for d in report.differences]


async def test_a_sets_prerequisites_are_stored_and_built(
    silentpulse_migrated_database: str, tmp_path: Path
) -> None:
    """A service set whose files need an extension its prerequisites.sql creates: built
    from what the database stored, the extension comes first (no failed build, no
    DROP EXTENSION proposed)."""
    from .test_service_sets import WORKER

    dsn = silentpulse_migrated_database
    worker = write_migrations(
        tmp_path / "worker",
        {
            1: (
                "create_worker_tags",
                "CREATE TABLE worker_tags (id int PRIMARY KEY, name citext);\n",
                "DROP TABLE worker_tags;\n",
            )
        },
    )
    (worker / "prerequisites.sql").write_text("CREATE EXTENSION IF NOT EXISTS citext;\n")
    await apply_prerequisites(dsn, source=worker)
    await run_migrations(dsn, source=worker, table=WORKER, attempts=1)
    report = await drift(dsn, attempts=1)
    assert report.matches, [str(d) for d in report.differences]


async def test_a_set_whose_files_the_database_did_not_store_needs_its_folder(
    silentpulse_migrated_database: str, tmp_path: Path
) -> None:
    """A set applied before the runner stored files (or whose files this role may not
    read): drift says which set and how to give it, and proposes dropping nothing."""
    from .test_service_sets import WORKER, worker_set

    dsn = silentpulse_migrated_database
    worker = worker_set(tmp_path / "worker")
    await run_migrations(dsn, source=worker, table=WORKER, attempts=1)
    await execute(dsn, "DELETE FROM schema_migrations_history_files")
    with pytest.raises(ConfigurationError, match=f"--set DIR:{WORKER}") as refused:
        await drift(dsn, attempts=1)
    assert "not stored" in str(refused.value)
    plain = await asyncio.to_thread(cli, "drift", dsn=dsn)
    assert plain.returncode == 2 and WORKER in plain.stderr, plain.stderr
    assert "DROP" not in plain.stdout + plain.stderr
    assert (await drift(dsn, sets=[(worker, WORKER)], attempts=1)).matches


@pytest.mark.skipif(
    shutil.which("migrate") is None and not (Path.home() / "go/bin/migrate").exists(),
    reason="golang-migrate's CLI is not built here (bench/build_golang_migrate.sh)",
)
async def test_a_set_golang_migrate_began_needs_its_folder(
    silentpulse_migrated_database: str, tmp_path: Path
) -> None:
    """Version 1 of the worker's set applied by golang-migrate (nothing stored), version 2
    by the runner (stored): drift does not build version 2 alone (its table would be
    missing: a failed build, or drift); it asks for the folder, and with it matches."""
    from .test_service_sets import WORKER, worker_set

    dsn = silentpulse_migrated_database
    worker = worker_set(tmp_path / "worker")
    binary = shutil.which("migrate") or str(Path.home() / "go/bin/migrate")
    url = f"{dsn}{'&' if '?' in dsn else '?'}sslmode=disable&x-migrations-table={WORKER}"
    done = await asyncio.to_thread(
        subprocess.run,
        [binary, "-database", url, "-path", str(worker), "up", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    await run_migrations(dsn, source=worker, table=WORKER, attempts=1)
    with pytest.raises(ConfigurationError, match=f"--set DIR:{WORKER}") as refused:
        await drift(dsn, attempts=1)
    assert "below 2" in str(refused.value) and "golang-migrate" in str(refused.value)
    assert (await drift(dsn, sets=[(worker, WORKER)], attempts=1)).matches


async def test_a_role_that_may_not_store_the_files_still_migrates(
    silentpulse_migrated_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Storing a set's files is drift's convenience: a role that may not write the stored
    files' table (another role's) applies its migration, with a warning, and drift then
    asks for that set's folder."""
    from .test_service_sets import WORKER, worker_set

    dsn = silentpulse_migrated_database
    worker = worker_set(tmp_path / "worker")
    await run_migrations(dsn, source=worker, table=WORKER, target=1, attempts=1)
    setup = (
        "GRANT USAGE, CREATE ON SCHEMA public TO {role}; "
        "GRANT SELECT ON schema_migrations TO {role}; "
        f"ALTER TABLE {WORKER} OWNER TO {{role}}; ALTER TABLE worker_jobs OWNER TO {{role}}; "
        "ALTER TABLE schema_migrations_history OWNER TO {role}"
    )
    async with login_role(dsn, setup, prefix="worker") as (_role, role_dsn):
        with caplog.at_level(logging.WARNING, logger="silentpulse_db"):
            result = await run_migrations(
                role_dsn, source=worker, table=WORKER, partitions_ahead=None, attempts=1
            )
        assert result.version_after == 2
        assert any("not stored for drift" in r.getMessage() for r in caplog.records)
        with pytest.raises(ConfigurationError, match=f"--set DIR:{WORKER}") as refused:
            await drift(dsn, attempts=1)
        assert "version 2 is not stored" in str(refused.value)
        await execute(dsn, "ALTER TABLE schema_migrations_history OWNER TO CURRENT_USER")


async def test_the_stored_files_belong_to_the_historys_owner(
    silentpulse_migrated_database: str, tmp_path: Path
) -> None:
    """An administrator applying a set's first file by hand (a superuser) leaves the
    stored files' table to the role that owns the history (the one that migrates), not
    a table that role may not write."""
    from .test_service_sets import WORKER, worker_set

    dsn = silentpulse_migrated_database
    async with login_role(dsn, prefix="owner") as (role, _role_dsn):
        await execute(dsn, f"ALTER TABLE schema_migrations_history OWNER TO {role}")
        worker = worker_set(tmp_path / "worker")
        await run_migrations(dsn, source=worker, table=WORKER, attempts=1)
        owner = "SELECT relowner::regrole::text FROM pg_class WHERE relname = $1"
        assert await fetchval(dsn, owner, "schema_migrations_history_files") == role
        await execute(
            dsn,
            "ALTER TABLE schema_migrations_history OWNER TO CURRENT_USER; "
            "ALTER TABLE schema_migrations_history_files OWNER TO CURRENT_USER",
        )


async def test_the_stored_files_are_readable_by_their_owner_only(
    silentpulse_migrated_database: str, silentpulse_database: str, tmp_path: Path
) -> None:
    """A migration file may hold a secret (CREATE ROLE ... PASSWORD): a role given SELECT on
    every table, the stored files' included, reads none of them; as a reader, drift needs
    the set's folder, and with it finds no drift."""
    from .test_service_sets import WORKER, worker_set

    dsn = silentpulse_migrated_database
    worker = worker_set(tmp_path / "worker")
    (worker / "000003_create_worker_key.up.sql").write_text(
        "CREATE FUNCTION worker_api_key() RETURNS text LANGUAGE sql "
        "AS $$ SELECT 'hunter2-secret' $$;\n"
    )
    (worker / "000003_create_worker_key.down.sql").write_text("DROP FUNCTION worker_api_key();\n")
    await run_migrations(dsn, source=worker, table=WORKER, attempts=1)
    assert await fetchval(dsn, "SELECT count(*) FROM schema_migrations_history_files") == 3
    grants = "GRANT USAGE ON SCHEMA public TO {role}; GRANT SELECT ON ALL TABLES IN SCHEMA "
    grants += "public TO {role};"
    async with login_role(dsn, grants, prefix="reader") as (_role, reader):
        stored = "SELECT count(*) FROM schema_migrations_history_files"
        assert await fetchval(reader, stored) == 0
        with pytest.raises(ConfigurationError, match=f"--set DIR:{WORKER}"):
            await drift(reader, scratch_dsn=silentpulse_database, attempts=1)
        report = await drift(
            reader, scratch_dsn=silentpulse_database, sets=[(worker, WORKER)], attempts=1
        )
        # the reader's own blanket grant aside (a role the runbook does not name)
        assert all(d.kind == "grant" for d in report.differences), report.differences
    # The least a reader needs (docs/migrations.md, 'Drift'): no SELECT on the files at all.
    grants = (
        "GRANT USAGE ON SCHEMA public TO {role}; GRANT SELECT ON schema_migrations, "
        f"schema_migrations_history, {WORKER} TO {{role}};"
    )
    async with login_role(dsn, grants, prefix="reader") as (_role, reader):
        with pytest.raises(ConfigurationError, match=f"--set DIR:{WORKER}") as refused:
            await drift(reader, scratch_dsn=silentpulse_database, attempts=1)
        assert "may not read" in str(refused.value)
        report = await drift(
            reader, scratch_dsn=silentpulse_database, sets=[(worker, WORKER)], attempts=1
        )
        # Its SELECT on the set's version table reads as drift (a service's version table
        # is compared as its tables are; schema_migrations is not): left as it is.
        assert [(d.kind, d.key.split(" to ")[0]) for d in report.differences] == [
            ("grant", f"public.{WORKER}")
        ], [str(d) for d in report.differences]
    assert (await drift(dsn, attempts=1)).matches


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


async def test_a_drift_killed_mid_build_does_not_break_the_next(
    silentpulse_migrated_database: str, silentpulse_database: str
) -> None:
    """Issue 29, 7: a drift killed while it builds on the operator's scratch database
    leaves it half built; the next drift empties what that one left (its mark), compares
    as usual, and leaves the scratch database empty."""
    dsn, scratch = silentpulse_migrated_database, silentpulse_database
    name = urlsplit(scratch).path.lstrip("/")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "POSTGRES_DSN")}
    command = [sys.executable, "-m", "silentpulse_db", "drift", "--scratch-dsn", scratch]
    process = subprocess.Popen(
        command,
        env={**env, "DATABASE_URL": dsn},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    blocker = await asyncpg.connect(scratch)
    try:

        async def first_migration_built() -> bool:
            return bool(await blocker.fetchval("SELECT to_regclass('public.tenants') IS NOT NULL"))

        await wait_for(first_migration_built, interval=0.01)
        # The rest of the build (and its cleanup) waits behind this: killed mid-build.
        await blocker.execute("BEGIN; LOCK TABLE tenants IN ACCESS EXCLUSIVE MODE")

        async def build_waiting() -> bool:
            return bool(
                await fetchval(
                    dsn,
                    "SELECT count(*) > 0 FROM pg_stat_activity "
                    "WHERE datname = $1 AND wait_event_type = 'Lock'",
                    name,
                )
            )

        await wait_for(build_waiting)
        process.kill()
        await asyncio.to_thread(process.wait)
    finally:
        await blocker.close()

    async def its_sessions_ended() -> bool:
        query = "SELECT count(*) = 0 FROM pg_stat_activity WHERE datname = $1"
        return bool(await fetchval(dsn, query, name))

    await wait_for(its_sessions_ended)
    tables = "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
    assert await fetchval(scratch, tables) > 0  # half built, left as it was
    for _ in range(2):  # and the next one leaves it empty for the one after
        done = await asyncio.to_thread(cli, "drift", "--scratch-dsn", scratch, dsn=dsn)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "no drift" in done.stdout
        assert await fetchval(scratch, tables) == 0


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

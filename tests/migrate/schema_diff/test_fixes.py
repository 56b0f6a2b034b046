"""The fix drift prints for each kind of difference: one change, one difference, one
statement where one exists, and what it costs in locks."""

from __future__ import annotations

import asyncio

import pytest

from silentpulse_db.migrate import drift
from silentpulse_db.settings import ConnectRetry

from .hand_changes import HAND_CHANGES, MONTH
from helpers import cli, execute, login_role


async def test_a_month_detached_by_hand_is_attached_again(
    silentpulse_migrated_database: str,
) -> None:
    """The fix attaches it again (with its bound); then, compared as a month, its
    row-level security switched off while detached is the next difference, and fixed."""
    dsn = silentpulse_migrated_database
    await execute(dsn, next(sql for story, sql, _ in HAND_CHANGES if "detached" in story))
    for expected in ("partition", "relation"):
        report = await drift(dsn, connect=ConnectRetry(attempts=1))
        assert [(d.kind, d.key) for d in report.differences] == [
            (expected, f"public.alerts_p{MONTH}")
        ], [str(d) for d in report.differences]
        fix = report.differences[0].fix
        assert fix is not None
        await execute(dsn, fix)
    assert (await drift(dsn, connect=ConnectRetry(attempts=1))).matches


async def test_a_detached_default_partition_is_drift_and_attached_again(
    silentpulse_migrated_database: str,
) -> None:
    """Issue 29, 2: without its default partition, an insert for a month without a
    partition fails and the default's rows have left the table. One difference, whose
    fix attaches it again."""
    dsn = silentpulse_migrated_database
    await execute(dsn, "ALTER TABLE audit_logs DETACH PARTITION audit_logs_default")
    report = await drift(dsn, connect=ConnectRetry(attempts=1))
    assert [(d.kind, d.key, d.change) for d in report.differences] == [
        ("relation", "public.audit_logs_default", "changed")
    ], [str(d) for d in report.differences]
    fix = report.differences[0].fix
    assert fix == "ALTER TABLE public.audit_logs ATTACH PARTITION public.audit_logs_default DEFAULT"
    done = await asyncio.to_thread(cli, "drift", dsn=dsn)
    assert done.returncode == 1 and "audit_logs_default" in done.stdout, done.stdout
    await execute(dsn, fix)
    assert (await drift(dsn, connect=ConnectRetry(attempts=1))).matches


async def test_a_restarted_history_sequence_is_drift_and_set_back(
    silentpulse_migrated_database: str,
) -> None:
    """Issue 29, 3: restarted, the history's sequence hands out ids already recorded (a
    duplicate key for the next history row, before the runner learnt to put it back:
    test_history_sequence.py). Named, with the setval to the highest id recorded; run,
    no drift is left; and the next migration, run without it, puts it back itself."""
    dsn = silentpulse_migrated_database
    await execute(dsn, "ALTER SEQUENCE schema_migrations_history_id_seq RESTART")
    report = await drift(dsn, connect=ConnectRetry(attempts=1))
    assert [(d.kind, d.key, d.change) for d in report.differences] == [
        ("sequence", "public.schema_migrations_history_id_seq", "changed")
    ], [str(d) for d in report.differences]
    fix = report.differences[0].fix
    assert fix is not None and "setval" in fix and "max(id)" in fix
    await execute(dsn, fix)
    assert (await drift(dsn, connect=ConnectRetry(attempts=1))).matches
    await execute(dsn, "ALTER SEQUENCE schema_migrations_history_id_seq RESTART")
    done = await asyncio.to_thread(cli, "down", "1", dsn=dsn)
    assert done.returncode == 0, done.stderr
    after = await drift(
        dsn, connect=ConnectRetry(attempts=1)
    )  # at the version below, the sequence put back
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
    report = await drift(dsn, connect=ConnectRetry(attempts=1))
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
    assert (await drift(dsn, connect=ConnectRetry(attempts=1))).matches


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
    report = await drift(dsn, connect=ConnectRetry(attempts=1))
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
    assert (await drift(dsn, connect=ConnectRetry(attempts=1))).matches


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
            report = await drift(dsn, connect=ConnectRetry(attempts=1))
            found = [(d.kind, d.key, d.change) for d in report.differences]
            assert found == [(kind, key.format(role=role), change)], (sql, found)
            fix = report.differences[0].fix
            assert fix is not None, sql
            await execute(dsn, fix)
            assert (await drift(dsn, connect=ConnectRetry(attempts=1))).matches, sql


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
    report = await drift(dsn, connect=ConnectRetry(attempts=1))
    found = [(d.kind, d.key, d.change) for d in report.differences]
    if "password_hash" in sql:  # two columns changed: two differences
        assert found == [named, ("column", "public.users.password_hash", "changed")], found
    else:
        assert found == [named], found
    for difference in report.differences:
        assert difference.fix is not None, str(difference)
        await execute(dsn, difference.fix)
    assert says in report.differences[0].fix, report.differences[0].fix  # type: ignore[operator]
    left = await drift(dsn, connect=ConnectRetry(attempts=1))
    assert left.matches, [str(d) for d in left.differences]

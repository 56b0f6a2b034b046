"""Managed PostgreSQL (issue 21): every step of the runbook as an owner role that is
neither superuser nor CREATEROLE nor CREATEDB nor BYPASSRLS, with CREATE and USAGE on
the schema and the extensions made beforehand by an administrator.

What cannot work as that role (check's scratch database without CREATEDB, extensions
it may not create) says so once, with the exact statement an administrator runs, and
exits 3; the rest works, FORCE ROW LEVEL SECURITY intact afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from credentials.data import NEW_KEY, OLD_KEY, SALT, populate
from credentials.test_migrate_credentials import cli_env, run_cli
from schema.seed import seed_tenant
from schema.test_partitions import add_alert

from silentpulse_db import (
    AdministratorRequiredError,
    ScratchDatabaseError,
    enforce_retention,
    maintain_partitions,
)
from silentpulse_db.credentials import migrate_credentials, verify_credentials
from silentpulse_db.crypto import Keyring
from silentpulse_db.migrate import (
    apply_prerequisites,
    baseline,
    check,
    down,
    force,
    goto,
    load_source,
    up,
)
from silentpulse_db.postgres.databases import user_objects, with_database
from silentpulse_db.schema.partitions import add_months, ensure_partitions, month_of
from silentpulse_db.settings import ConnectRetry

from helpers import cli, execute, fetch, fetchval, login_role, version_rows

# The owner role of a managed server: the attributes spelt out, though they are
# CREATE ROLE's defaults, so that the test says what it is about; and the limits such a
# server often sets per role (the library sets its own: test_role_limits.py).
OWNER = (
    "ALTER ROLE {role} NOSUPERUSER NOCREATEROLE NOCREATEDB NOBYPASSRLS; "
    "ALTER ROLE {role} SET statement_timeout = '5s'; "
    "ALTER ROLE {role} SET idle_in_transaction_session_timeout = '2s'; "
    "GRANT CREATE, USAGE ON SCHEMA public TO {role};"
)
EXTENSIONS = (
    'CREATE EXTENSION IF NOT EXISTS "uuid-ossp";',
    "CREATE EXTENSION IF NOT EXISTS pgcrypto;",
)
LATEST = load_source().latest or 0
OLD = Keyring(OLD_KEY, salt=SALT)
NEW = Keyring(NEW_KEY, salt=SALT)


@pytest.fixture
async def owner(silentpulse_database: str) -> AsyncIterator[tuple[str, str]]:
    """(role, dsn) of the owner role; the extensions made by the superuser beforehand."""
    await execute(silentpulse_database, " ".join(EXTENSIONS))
    async with login_role(silentpulse_database, OWNER, prefix="owner") as found:
        yield found


@pytest.fixture
async def migrated(owner: tuple[str, str]) -> tuple[str, str]:
    """The owner role after `up`: it owns every table of the schema."""
    result = cli("up", dsn=owner[1])
    assert result.returncode == 0, result.stderr
    return owner


def password_of(dsn: str) -> str:
    return urlsplit(dsn).password or ""


def said_once(text: str, needle: str) -> bool:
    return text.count(needle) == 1


async def forced(dsn: str) -> dict[str, bool]:
    """relforcerowsecurity of every table that has row-level security (the bookkeeping's
    and the shared reference tables' are not forced: their owner writes them, every other
    role reads them, 000060)."""
    rows = await fetch(
        dsn,
        "SELECT relname, relforcerowsecurity FROM pg_class "
        "WHERE relrowsecurity AND relnamespace = 'public'::regnamespace "
        "AND relname NOT IN ('schema_migrations', 'schema_migrations_history', "
        "'mitre_techniques', 'connector_defs')",
    )
    return {r["relname"]: r["relforcerowsecurity"] for r in rows}


# --- prerequisites ----------------------------------------------------------------------


async def test_prerequisites_say_what_an_administrator_runs(silentpulse_database: str) -> None:
    async with login_role(silentpulse_database, OWNER, prefix="owner") as (role, dsn):
        with pytest.raises(AdministratorRequiredError) as info:
            await apply_prerequisites(dsn, connect=ConnectRetry(attempts=1))
        assert info.value.statements == EXTENSIONS
        assert info.value.role == role

        done = cli("prerequisites", dsn=dsn)
        assert done.returncode == 3, done.stderr
        for statement in EXTENSIONS:
            assert said_once(done.stderr, statement), done.stderr
        # Trusted extensions: the other way out, for the administrator to choose.
        database = urlsplit(dsn).path.lstrip("/")
        assert f"GRANT CREATE ON DATABASE {database} TO {role};" in done.stderr
        assert "Traceback" not in done.stderr and password_of(dsn) not in done.stderr
        assert await fetchval(dsn, "SELECT count(*) FROM pg_extension") == 1  # plpgsql

        # The administrator runs what it said; then the role's own run succeeds.
        await execute(silentpulse_database, "\n".join(info.value.statements))
        done = cli("prerequisites", dsn=dsn)
        assert done.returncode == 0, done.stderr
        assert "pgcrypto" in done.stdout and "uuid-ossp" in done.stdout


async def test_prerequisites_by_the_role_itself_when_the_extensions_are_trusted(
    silentpulse_database: str,
) -> None:
    """PostgreSQL 13+: pgcrypto and uuid-ossp are trusted; CREATE on the database suffices."""
    database = urlsplit(silentpulse_database).path.lstrip("/")
    setup = OWNER + f' GRANT CREATE ON DATABASE "{database}" TO {{role}};'
    async with login_role(silentpulse_database, setup, prefix="owner") as (role, dsn):
        done = cli("prerequisites", dsn=dsn)
        assert done.returncode == 0, done.stderr
        rows = await fetch(
            dsn, "SELECT extname, pg_get_userbyid(extowner) AS owner FROM pg_extension"
        )
        assert {(r["extname"], r["owner"]) for r in rows} >= {
            ("pgcrypto", role),
            ("uuid-ossp", role),
        }
        assert cli("up", dsn=dsn).returncode == 0


# --- up, down, goto, force ----------------------------------------------------------------


async def test_migration_verbs_as_the_owner(owner: tuple[str, str]) -> None:
    _, dsn = owner
    for args, version in (
        (["up"], LATEST),
        (["down", "2"], LATEST - 2),
        (["goto", "5"], 5),
        (["up", "1"], 6),
        (["force", "6"], 6),  # after a migration left it dirty (below)
        (["goto", str(LATEST)], LATEST),
    ):
        if args[0] == "force":
            await execute(dsn, "UPDATE schema_migrations SET dirty = true")
        done = cli(*args, dsn=dsn)
        assert done.returncode == 0, (args, done.stderr)
        assert await version_rows(dsn) == [(version, False)], args
    # The same through the Python API.
    assert (await down(dsn, 3, connect=ConnectRetry(attempts=1))).version_after == LATEST - 3
    assert (
        await goto(dsn, LATEST - 1, connect=ConnectRetry(attempts=1))
    ).version_after == LATEST - 1
    assert (await up(dsn, connect=ConnectRetry(attempts=1))).version_after == LATEST
    assert (await force(dsn, LATEST, connect=ConnectRetry(attempts=1))).version_after == LATEST
    assert all((await forced(dsn)).values())


# --- partitions and retention ---------------------------------------------------------------


def at(month: Any) -> datetime:
    return datetime(month.year, month.month, 15, 12, tzinfo=timezone.utc)


async def test_partitions_and_retention_as_the_owner(
    silentpulse_database: str, migrated: tuple[str, str]
) -> None:
    """Before: the partition job skipped the rows in default partitions ("run it as a role
    with BYPASSRLS", exit 1) and retention refused ("ALTER ROLE ... BYPASSRLS")."""
    _, dsn = migrated
    this_month = month_of(datetime.now(timezone.utc))
    stray, old = add_months(this_month, 14), add_months(this_month, -30)
    admin = await asyncpg.connect(silentpulse_database)
    try:
        ids = await seed_tenant(admin, "tenant-a")
        await add_alert(admin, ids, at(stray), "open")  # lands in alerts_default
        await ensure_partitions(admin, ahead=1, now=at(old))  # owned by the tables' owner
        await add_alert(admin, ids, at(old), "resolved")
        await add_alert(admin, ids, at(add_months(old, 1)), "acknowledged")

        done = cli("partitions", dsn=dsn)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "skipped" not in done.stdout
        assert await admin.fetchval("SELECT count(*) FROM ONLY alerts_default") == 0
        assert await admin.fetchval(f"SELECT count(*) FROM alerts_p{stray:%Y_%m}") == 1

        done = cli("retention", "--dry-run", dsn=dsn)
        assert done.returncode == 0, done.stderr
        assert f"(dry run) drop alerts_p{old:%Y_%m}:" in done.stdout
        assert f"keep alerts_p{add_months(old, 1):%Y_%m}: still holds 1" in done.stdout
        done = cli("retention", dsn=dsn)
        assert done.returncode == 0, done.stderr
        names = {r["relname"] for r in await admin.fetch("SELECT relname FROM pg_class")}
        assert f"alerts_p{old:%Y_%m}" not in names
        assert f"alerts_p{add_months(old, 1):%Y_%m}" in names
        # The API, too: nothing left to do, nothing skipped.
        assert (await maintain_partitions(dsn, connect=ConnectRetry(attempts=1))).skipped == ()
        assert all(
            not a.dropped
            for a in (await enforce_retention(dsn, connect=ConnectRetry(attempts=1))).actions
        )
    finally:
        await admin.close()
    assert all((await forced(dsn)).values())


# --- check ----------------------------------------------------------------------------------


@pytest.fixture
async def scratch(silentpulse_database: str, owner: tuple[str, str]) -> AsyncIterator[str]:
    """An empty database an administrator made for the owner role: not its own, the
    extensions created in it, CREATE on its schema."""
    role, dsn = owner
    name = f"scratch_{uuid.uuid4().hex[:10]}"
    await execute(silentpulse_database, f'CREATE DATABASE "{name}"')
    admin = with_database(silentpulse_database, name)
    await execute(admin, " ".join(EXTENSIONS) + f" GRANT CREATE, USAGE ON SCHEMA public TO {role};")
    try:
        yield with_database(dsn, name)
    finally:
        await execute(admin, f"DROP OWNED BY {role}")
        await execute(silentpulse_database, f'DROP DATABASE "{name}" WITH (FORCE)')


async def test_check_without_createdb_names_both_ways(migrated: tuple[str, str]) -> None:
    role, dsn = migrated
    statement = f"ALTER ROLE {role} CREATEDB;"
    with pytest.raises(AdministratorRequiredError) as info:
        await check(dsn)
    assert info.value.statements == (statement,)
    done = cli("check", dsn=dsn)
    assert done.returncode == 3, done.stderr
    assert said_once(done.stderr, statement) and said_once(done.stderr, "--scratch-dsn")
    assert "administrator" in done.stderr and password_of(dsn) not in done.stderr


async def test_check_in_a_scratch_database_the_operator_provides(
    migrated: tuple[str, str], scratch: str
) -> None:
    _, dsn = migrated
    done = cli("check", "--scratch-dsn", scratch, dsn=dsn)
    assert done.returncode == 0, done.stderr
    assert f"checked {LATEST} migration(s)" in done.stdout
    conn = await asyncpg.connect(scratch)
    try:
        # Left empty, the administrator's extensions still there.
        assert await user_objects(conn) == []
        extensions = {r["extname"] for r in await conn.fetch("SELECT extname FROM pg_extension")}
        assert {"pgcrypto", "uuid-ossp"} <= extensions
    finally:
        await conn.close()
    report = await check(dsn, scratch_dsn=scratch)  # and again, through the API
    assert len(report.checked) == LATEST


async def test_a_scratch_database_that_is_live_or_not_empty_is_refused(
    migrated: tuple[str, str], scratch: str
) -> None:
    _, dsn = migrated
    done = cli("check", "--scratch-dsn", dsn, dsn=dsn)
    assert done.returncode == 2 and "is the live database itself" in done.stderr, done.stderr
    # The same database by another spelling of the server.
    other = dsn.replace("@127.0.0.1:", "@localhost:") if "@127.0.0.1:" in dsn else dsn
    with pytest.raises(ScratchDatabaseError, match="live database"):
        await check(dsn, scratch_dsn=other)

    await execute(scratch, "CREATE TABLE keep_me (id int); INSERT INTO keep_me VALUES (1);")
    done = cli("check", "--scratch-dsn", scratch, dsn=dsn)
    assert done.returncode == 2 and "not empty (table public.keep_me)" in done.stderr
    assert await fetchval(scratch, "SELECT count(*) FROM keep_me") == 1  # untouched
    assert password_of(scratch) not in done.stderr


# --- baseline ----------------------------------------------------------------------------------


async def unversioned_at_1(dsn: str) -> None:
    """The schema of migration 1 without the version tables: a database from before."""
    assert cli("goto", "1", dsn=dsn).returncode == 0
    await execute(dsn, "DROP TABLE schema_migrations, schema_migrations_history")


async def test_baseline_as_the_owner(migrated: tuple[str, str], scratch: str) -> None:
    role, dsn = migrated
    await unversioned_at_1(dsn)
    done = cli("baseline", dsn=dsn)
    assert done.returncode == 3, done.stderr
    assert said_once(done.stderr, f"ALTER ROLE {role} CREATEDB;")
    assert "--scratch-dsn" in done.stderr and "--no-verify" in done.stderr
    assert await version_rows(dsn) == []

    done = cli("baseline", "--scratch-dsn", scratch, dsn=dsn)
    assert done.returncode == 0, done.stderr
    assert await version_rows(dsn) == [(1, False)]
    conn = await asyncpg.connect(scratch)
    try:
        assert await user_objects(conn) == []
    finally:
        await conn.close()

    await execute(dsn, "DROP TABLE schema_migrations, schema_migrations_history")
    done = cli("baseline", "--no-verify", dsn=dsn)
    assert done.returncode == 0, done.stderr
    assert await version_rows(dsn) == [(1, False)]

    await execute(dsn, "DROP TABLE schema_migrations, schema_migrations_history")
    assert (await baseline(dsn, verify=False, connect=ConnectRetry(attempts=1))).version_after == 1
    assert cli("up", dsn=dsn).returncode == 0


# --- migrate-credentials -------------------------------------------------------------------------


async def test_migrate_credentials_as_the_owner(
    silentpulse_database: str, migrated: tuple[str, str]
) -> None:
    """Before: RowSecurityError ("connect as the jobs role, the role with BYPASSRLS"),
    which a managed server cannot have."""
    role, dsn = migrated
    admin = await asyncpg.connect(silentpulse_database)
    try:
        cells = await populate(admin, OLD, tenants=3, per_table=4)
    finally:
        await admin.close()
    env = cli_env(dsn, ENCRYPTION_KEY=NEW_KEY.hex(), OLD_ENCRYPTION_KEY=OLD_KEY.hex())

    code, out, err = await run_cli("--rotate", "--dry-run", env=env)
    assert code == 0, err
    assert f"as role {role}" in out
    # Not READ ONLY on the owner's path: it says what it held instead.
    assert "READ ONLY" not in out and "the tables held" in out

    code, out, err = await run_cli("--rotate", "--batch-size", "5", env=env)
    assert code == 0, err
    assert f"committed: {len(cells)} value(s) rewritten" in out

    verify_env = {k: v for k, v in env.items() if k != "OLD_ENCRYPTION_KEY"}
    code, out, err = await run_cli("--verify", env=verify_env)
    assert code == 0, out + err
    assert (await verify_credentials(dsn, keyring=NEW)).passed
    again = await migrate_credentials(dsn, keyring=NEW, old_keyring=OLD, mode="rotate")
    assert again.rewritten == 0 and again.rows == len(cells)
    assert all((await forced(dsn)).values())


async def test_the_owner_waits_for_the_tables_as_long_as_told(
    silentpulse_database: str, migrated: tuple[str, str]
) -> None:
    """As the owner the job holds the credential tables while it reads; a session reading
    one stands in the way. --verify waited ROTATION_LOCK_TIMEOUT whatever --lock-timeout
    said (the CLI did not pass it on)."""
    _, dsn = migrated
    env = cli_env(dsn, ENCRYPTION_KEY=NEW_KEY.hex())
    reader = await asyncpg.connect(silentpulse_database)
    try:
        async with reader.transaction():
            await reader.fetchval("SELECT count(*) FROM integration_points")
            for args in (["--verify"], ["--dry-run"]):
                code, out, err = await run_cli(*args, "--lock-timeout", "0.2", env=env)
                assert code == 1, (args, out, err)
                assert "stayed in use for 0.2s" in err and "Nothing was read" in err, err
    finally:
        await reader.close()

"""create_pool and tenant_transaction: the application's side of tenant isolation, tried
as the app role (no BYPASSRLS) after the blanket grants operators run, and refused for
the roles that would read every tenant's rows."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from schema.seed import seed_tenant

from silentpulse_db import (
    ConfigurationError,
    InvalidArgumentError,
    RowSecurityError,
    SilentPulseDBError,
    create_pool,
    tenant_transaction,
)

from helpers import login_role

APP_GRANTS = (
    "GRANT USAGE ON SCHEMA public TO {role}; "
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}; "
    "GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role};"
)


@pytest.fixture
async def tenants(silentpulse_migrated_database: str) -> dict[str, dict[str, uuid.UUID]]:
    admin = await asyncpg.connect(silentpulse_migrated_database)
    try:
        return {h: await seed_tenant(admin, h) for h in ("alpha", "bravo")}
    finally:
        await admin.close()


@pytest.fixture
async def app_dsn(silentpulse_migrated_database: str) -> AsyncIterator[str]:
    async with login_role(silentpulse_migrated_database, APP_GRANTS, prefix="app") as (_, dsn):
        yield dsn


async def test_the_app_role_sees_one_tenant_per_transaction(
    app_dsn: str, tenants: dict[str, dict[str, uuid.UUID]]
) -> None:
    a, b = tenants["alpha"], tenants["bravo"]
    pool = await create_pool(app_dsn, min_size=1, max_size=1)
    try:
        async with tenant_transaction(pool, a["tenants"]) as conn:
            seen = {r["tenant_id"] for r in await conn.fetch("SELECT tenant_id FROM alerts")}
            assert seen == {a["tenants"]}
            # Partitions too: the blanket grant reaches them, row-level security guards them.
            partition = await conn.fetchval(
                "SELECT tableoid::regclass::text FROM alerts WHERE id = $1", a["alerts"]
            )
            rows = await conn.fetch(f"SELECT tenant_id FROM {partition}")
            assert {r["tenant_id"] for r in rows} == {a["tenants"]}
            assert await conn.execute("DELETE FROM alerts WHERE tenant_id = $1", b["tenants"]) == (
                "DELETE 0"
            )
        # The text of a UUID works as well, and the one connection now shows only B.
        async with tenant_transaction(pool, str(b["tenants"])) as conn:
            assert [r["handle"] for r in await conn.fetch("SELECT handle FROM tenants")] == [
                "bravo"
            ]
        # Outside a tenant transaction the same pooled connection carries no tenant.
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT current_setting('app.current_tenant', true)") in (
                None,
                "",
            )
            assert await conn.fetchval("SELECT count(*) FROM alerts") == 0
    finally:
        await pool.close()


async def test_a_failed_tenant_transaction_rolls_back_and_leaves_no_tenant(
    app_dsn: str, tenants: dict[str, dict[str, uuid.UUID]]
) -> None:
    a = tenants["alpha"]
    conn = await asyncpg.connect(app_dsn)
    try:
        with pytest.raises(RuntimeError):
            async with tenant_transaction(conn, a["tenants"]):
                await conn.execute(
                    "UPDATE alerts SET status = 'resolved' WHERE id = $1", a["alerts"]
                )
                raise RuntimeError("the request failed")
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT count(*) FROM alerts") == 0  # no tenant any more
        async with tenant_transaction(conn, a["tenants"], readonly=True):
            status = await conn.fetchval("SELECT status FROM alerts WHERE id = $1", a["alerts"])
        assert status != "resolved"
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "bad",
    ["", "alpha", "1; SET app.current_tenant = 'x'", 42, None, b"\x00" * 16, "x" * 500],
)
async def test_a_tenant_id_that_is_not_a_uuid_is_refused_before_anything_runs(
    app_dsn: str, bad: object
) -> None:
    conn = await asyncpg.connect(app_dsn)
    try:
        with pytest.raises(InvalidArgumentError, match="tenant_id must be a UUID") as info:
            async with tenant_transaction(conn, bad):  # type: ignore[arg-type]
                raise AssertionError("the block must not run")
        assert isinstance(info.value, SilentPulseDBError)
        assert len(str(info.value)) < 200  # the value is shown, cut short
        assert not conn.is_in_transaction()
    finally:
        await conn.close()


async def test_a_tenant_transaction_inside_another_transaction_is_refused(
    app_dsn: str, tenants: dict[str, dict[str, uuid.UUID]]
) -> None:
    conn = await asyncpg.connect(app_dsn)
    try:
        async with conn.transaction():
            with pytest.raises(InvalidArgumentError, match="already in one"):
                async with tenant_transaction(conn, tenants["alpha"]["tenants"]):
                    raise AssertionError("the block must not run")
            assert await conn.fetchval("SELECT count(*) FROM alerts") == 0
    finally:
        await conn.close()


async def test_a_superuser_pool_is_refused_unless_meant(
    silentpulse_migrated_database: str, tenants: dict[str, dict[str, uuid.UUID]]
) -> None:
    with pytest.raises(RowSecurityError, match="is a superuser") as info:
        await create_pool(silentpulse_migrated_database, min_size=1, max_size=1)
    assert info.value.role == await _current_user(silentpulse_migrated_database)
    assert "bypass_rls=True" in str(info.value)
    pool = await create_pool(silentpulse_migrated_database, bypass_rls=True, min_size=1, max_size=1)
    try:
        assert await pool.fetchval("SELECT count(DISTINCT tenant_id) FROM alerts") == 2
    finally:
        await pool.close()


async def test_a_bypassrls_role_is_refused_and_its_password_never_shown(
    silentpulse_migrated_database: str,
) -> None:
    setup = "ALTER ROLE {role} BYPASSRLS; " + APP_GRANTS
    async with login_role(silentpulse_migrated_database, setup, prefix="jobs") as (name, dsn):
        with pytest.raises(RowSecurityError, match="has BYPASSRLS") as info:
            await create_pool(dsn, min_size=1, max_size=1)
        assert info.value.role == name
        password = dsn.split(":")[2].split("@")[0]
        assert password not in str(info.value) and password not in repr(info.value)
        pool = await create_pool(dsn, bypass_rls=True, min_size=1, max_size=1)
        await pool.close()


async def test_a_pool_that_cannot_connect_raises_a_typed_error(
    silentpulse_migrated_database: str,
) -> None:
    wrong = silentpulse_migrated_database.rsplit("/", 1)[0] + "/no_such_database"
    with pytest.raises(SilentPulseDBError, match="no_such_database"):
        await create_pool(wrong, min_size=1, max_size=1)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"min_size": 5, "max_size": 1}, "min_size"),
        ({"max_size": 0}, "max_size"),
        ({"no_such_option": 1}, "no_such_option"),
    ],
)
async def test_bad_pool_options_are_a_configuration_error_naming_them(
    app_dsn: str, options: dict[str, object], named: str
) -> None:
    with pytest.raises(ConfigurationError, match=named) as info:
        await create_pool(app_dsn, **options)  # type: ignore[arg-type]
    password = app_dsn.split(":")[2].split("@")[0]
    assert password not in str(info.value)


async def test_the_dsn_a_service_gives_golang_migrate_is_accepted(app_dsn: str) -> None:
    pool = await create_pool(
        app_dsn + "?x-migrations-table=worker_schema_migrations", max_size=1, min_size=1
    )
    await pool.close()


async def _current_user(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval("SELECT current_user"))
    finally:
        await conn.close()


async def test_the_app_role_writes_alerts_with_their_creation_time_on_partitions_too(
    app_dsn: str, tenants: dict[str, dict[str, uuid.UUID]]
) -> None:
    """Migration 000020 as the application role after the blanket grant: an alert it
    creates, through the parent or straight into a month's partition, gets created_at
    (the listener's catch-up tells an INSERT by it), and another tenant's is refused."""
    a, b = tenants["alpha"], tenants["bravo"]
    insert = (
        "INSERT INTO {table} (tenant_id, flow_pulse_id, asset_id, alert_type, severity, "
        "started_at) VALUES ($1, $2, $3, 'silence', 'high', now()) "
        "RETURNING created_at = status_changed_at"
    )
    conn = await asyncpg.connect(app_dsn)
    try:
        async with tenant_transaction(conn, a["tenants"]):
            # This month's partition (docs/operations.md: <table>_pYYYY_MM, UTC months).
            partition = await conn.fetchval(
                "SELECT 'alerts_p' || to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM')"
            )
            for table in ("alerts", partition):
                same = await conn.fetchval(
                    insert.format(table=table), a["tenants"], a["flow_pulses"], a["assets"]
                )
                assert same is True, table
        for table in ("alerts", partition):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
                async with tenant_transaction(conn, a["tenants"]):
                    await conn.fetchval(
                        insert.format(table=table), b["tenants"], b["flow_pulses"], b["assets"]
                    )
    finally:
        await conn.close()


TENANT = "6f1c2a7e-3b9d-4e5f-8a1b-2c3d4e5f6a7b"


@pytest.mark.parametrize(
    ("query", "server_settings", "named"),
    [
        (f"?app.current_tenant={TENANT}", None, "the DSN's 'app.current_tenant' parameter"),
        (f"?APP.Current_Tenant={TENANT}", None, "the DSN's 'APP.Current_Tenant' parameter"),
        (f"?options=-c%20app.current_tenant%3D{TENANT}", None, "the DSN's 'options' parameter"),
        (f"?options=-capp.current_tenant%3D{TENANT}", None, "the DSN's 'options' parameter"),
        (
            f"?options=-c%20statement_timeout%3D5s%20--app.current-tenant%3D{TENANT}",
            None,
            "the DSN's 'options' parameter",
        ),
        ("", {"app.current_tenant": TENANT}, "server_settings['app.current_tenant']"),
        (
            "",
            {"options": f"-c app.current_tenant={TENANT}"},
            "server_settings['options'] (-c app.current_tenant=...)",
        ),
    ],
)
async def test_a_default_tenant_in_the_dsn_or_server_settings_is_refused_before_connecting(
    app_dsn: str, query: str, server_settings: dict[str, str] | None, named: str
) -> None:
    """Issue 27 (item 7): a pool whose every session starts with a tenant. Refused before
    connecting: the same DSN pointed at a closed port fails the same way."""
    options: dict[str, Any] = (
        {} if server_settings is None else {"server_settings": server_settings}
    )
    closed = app_dsn.rsplit(":", 1)[0] + ":1/nowhere"
    for dsn in (app_dsn, closed):
        with pytest.raises(ConfigurationError) as info:
            await create_pool(dsn + query, min_size=1, max_size=1, **options)
        assert type(info.value) is ConfigurationError, info.value
        message = str(info.value)
        assert named in message and "tenant_transaction" in message
        password = app_dsn.split(":")[2].split("@")[0]
        assert password not in message and TENANT not in message


async def test_other_settings_that_mention_the_tenant_setting_are_accepted(app_dsn: str) -> None:
    pool = await create_pool(
        app_dsn + "?options=-c%20application_name%3Dapp.current_tenant",
        min_size=1,
        max_size=1,
        server_settings={"search_path": "public", "app.current_tenant": ""},
    )
    try:
        assert await pool.fetchval("SELECT current_setting('application_name')") == (
            "app.current_tenant"
        )
    finally:
        await pool.close()


@pytest.mark.parametrize(
    ("default", "reset"),
    [
        ("ALTER ROLE {role} SET", "ALTER ROLE {role} RESET"),
        ("ALTER DATABASE {database} SET", "ALTER DATABASE {database} RESET"),
        (
            "ALTER ROLE {role} IN DATABASE {database} SET",
            "ALTER ROLE {role} IN DATABASE {database} RESET",
        ),
        # Every role on the (throwaway) server, until the test resets it.
        ("ALTER ROLE ALL SET", "ALTER ROLE ALL RESET"),
    ],
)
@pytest.mark.parametrize("bypass_rls", [False, True])
async def test_a_role_or_database_default_tenant_is_refused_naming_the_reset(
    silentpulse_migrated_database: str, default: str, reset: str, bypass_rls: bool
) -> None:
    """The default that migrate-credentials refuses (app.current_tenant set from the
    session's start) is found on the pool's first connection, with what removes it."""
    database = silentpulse_migrated_database.rsplit("/", 1)[1]
    setup = APP_GRANTS + (" ALTER ROLE {role} BYPASSRLS;" if bypass_rls else "")
    async with login_role(silentpulse_migrated_database, setup, prefix="tenant") as (role, dsn):
        statement = default.format(role=role, database=database)
        undo = reset.format(role=role, database=database) + " app.current_tenant"
        admin = await asyncpg.connect(silentpulse_migrated_database)
        try:
            await admin.execute(f"{statement} app.current_tenant = '{TENANT}'")
            with pytest.raises(RowSecurityError) as info:
                await create_pool(dsn, bypass_rls=bypass_rls, min_size=1, max_size=1)
            assert info.value.role == role
            message = str(info.value)
            assert undo in message, message
            password = dsn.split(":")[2].split("@")[0]
            assert password not in message and TENANT not in message
            # Once reset, the same pool is accepted.
            await admin.execute(undo)
            pool = await create_pool(dsn, bypass_rls=bypass_rls, min_size=1, max_size=1)
            await pool.close()
        finally:
            await admin.execute(undo)
            await admin.close()

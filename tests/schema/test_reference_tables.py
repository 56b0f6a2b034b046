"""Migration 000060: the tables shared by every tenant (no tenant_id), mitre_techniques and
connector_defs, as a service's login role that is a member of the application role after
the runbook's grants (docs/operations.md), and after the blanket GRANT ... ON ALL TABLES
operators run too. A tenant's session reads them and changes nothing: deleting a technique
no longer deletes another tenant's asset_group_mitre rows through the cascade. The owner
still loads the reference data, and the API's connector hub sync still writes
connector_defs, outside any tenant's transaction."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import asyncpg
import pytest

from silentpulse_db import run_migrations, tenant_transaction
from silentpulse_db.migrate import apply_prerequisites, goto, up
from silentpulse_db.settings import ConnectRetry

from .populated import populate
from .seed import seed_tenant
from helpers import execute, fetchval, login_role

BLANKET = {
    "default privileges": "",
    "GRANT SELECT, INSERT, UPDATE, DELETE": (
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {app}"
    ),
    "GRANT ALL": "GRANT ALL ON ALL TABLES IN SCHEMA public TO {app}",
}


class Roles(NamedTuple):
    admin: str  # the superuser: sets the tenants' rows up
    owner: str  # migrates, owns the tables, loads the reference data
    service: str  # a login role, member of the app role: what a service connects as
    truncate: bool  # its grants include TRUNCATE (GRANT ALL: drift, no policy covers it)


@pytest.fixture(params=list(BLANKET))
async def roles(request: Any, silentpulse_database: str) -> AsyncIterator[Roles]:
    """The runbook's roles on a database migrated by its owner; ``request.param``: the
    grants on top of its default privileges."""
    dsn = silentpulse_database
    await apply_prerequisites(dsn)
    async with (
        login_role(dsn, "GRANT USAGE ON SCHEMA public TO {role};", prefix="app") as (app, _),
        login_role(dsn, f"GRANT {app} TO {{role}};", prefix="service") as (_, service_dsn),
        login_role(
            dsn,
            "GRANT CREATE, USAGE ON SCHEMA public TO {role}; "
            "ALTER DEFAULT PRIVILEGES FOR ROLE {role} IN SCHEMA public "
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app}; "
            "ALTER DEFAULT PRIVILEGES FOR ROLE {role} IN SCHEMA public "
            f"GRANT USAGE ON SEQUENCES TO {app};",
            prefix="owner",
        ) as (_, owner_dsn),
    ):
        await run_migrations(owner_dsn, connect=ConnectRetry(attempts=1))
        if BLANKET[request.param]:
            await execute(owner_dsn, BLANKET[request.param].format(app=app))
        yield Roles(dsn, owner_dsn, service_dsn, truncate=request.param == "GRANT ALL")


async def _load_reference_data(owner_dsn: str) -> None:
    """What operators do, as the owner: the ATT&CK techniques, upserted."""
    await execute(
        owner_dsn,
        "INSERT INTO mitre_techniques (technique_id, name, tactic) VALUES "
        "('T1059', 'Command and Scripting Interpreter', 'execution'), "
        "('T1003', 'OS Credential Dumping', 'credential-access') "
        "ON CONFLICT (technique_id) DO UPDATE SET name = EXCLUDED.name",
    )


async def _tenants(admin_dsn: str) -> tuple[dict[str, uuid.UUID], dict[str, uuid.UUID]]:
    conn = await asyncpg.connect(admin_dsn)
    try:
        return await seed_tenant(conn, "ref_a"), await seed_tenant(conn, "ref_b")
    finally:
        await conn.close()


async def _map(service_dsn: str, ids: dict[str, uuid.UUID], technique_id: str) -> None:
    """The tenant's own session maps its asset group to a technique (the API's write)."""
    conn = await asyncpg.connect(service_dsn)
    try:
        async with tenant_transaction(conn, ids["tenants"]):
            await conn.execute(
                "INSERT INTO asset_group_mitre (tenant_id, asset_group_id, mitre_technique_id) "
                "SELECT $1, $2, id FROM mitre_techniques WHERE technique_id = $3",
                ids["tenants"],
                ids["asset_groups"],
                technique_id,
            )
    finally:
        await conn.close()


async def _mapped(admin_dsn: str, tenant: uuid.UUID, technique_id: str) -> int:
    count: int = await fetchval(
        admin_dsn,
        "SELECT count(*) FROM asset_group_mitre m JOIN mitre_techniques t "
        f"ON t.id = m.mitre_technique_id WHERE m.tenant_id = '{tenant}' "
        f"AND t.technique_id = '{technique_id}'",
    )
    return count


async def test_a_tenant_cannot_delete_another_tenants_mappings_through_the_cascade(
    roles: Roles,
) -> None:
    """The red team's attack: tenant A's session deletes T1059, which tenant B maps."""
    await _load_reference_data(roles.owner)
    a, b = await _tenants(roles.admin)
    await _map(roles.service, a, "T1059")
    await _map(roles.service, b, "T1059")

    conn = await asyncpg.connect(roles.service)
    try:
        async with tenant_transaction(conn, a["tenants"]):
            # It reads the reference data, as before.
            assert await conn.fetchval("SELECT count(*) FROM mitre_techniques") == 3
            deleted = await conn.execute(
                "DELETE FROM mitre_techniques WHERE technique_id = 'T1059'"
            )
            assert deleted == "DELETE 0"
            updated = await conn.execute("UPDATE mitre_techniques SET name = 'x', tactic = 'x'")
            assert updated == "UPDATE 0"
        refused = [
            "INSERT INTO mitre_techniques (technique_id, name, tactic) VALUES ('T9', 'x', 'x')"
        ]
        if not roles.truncate:
            refused.append("TRUNCATE mitre_techniques CASCADE")
        for statement in refused:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with tenant_transaction(conn, a["tenants"]):
                    await conn.execute(statement)
        # Without a tenant set either.
        assert await conn.execute("DELETE FROM mitre_techniques") == "DELETE 0"
    finally:
        await conn.close()

    assert await _mapped(roles.admin, b["tenants"], "T1059") == 1
    assert await _mapped(roles.admin, a["tenants"], "T1059") == 1
    name = "SELECT name FROM mitre_techniques WHERE technique_id = 'T1059'"
    assert await fetchval(roles.admin, name) == "Command and Scripting Interpreter"

    # A tenant still removes its own mapping.
    conn = await asyncpg.connect(roles.service)
    try:
        async with tenant_transaction(conn, a["tenants"]):
            removed = await conn.execute(
                "DELETE FROM asset_group_mitre WHERE mitre_technique_id = "
                "(SELECT id FROM mitre_techniques WHERE technique_id = 'T1059')"
            )
            assert removed == "DELETE 1"
    finally:
        await conn.close()
    assert await _mapped(roles.admin, b["tenants"], "T1059") == 1


async def test_the_owner_loads_the_reference_data_and_deleting_a_mapped_technique_is_refused(
    roles: Roles,
) -> None:
    await _load_reference_data(roles.owner)
    await _load_reference_data(roles.owner)  # a reload: upserted
    await execute(
        roles.owner, "UPDATE mitre_techniques SET tactic = 'execution' WHERE technique_id = 'T1059'"
    )
    a, b = await _tenants(roles.admin)
    await _map(roles.service, b, "T1059")
    # Not mapped by anyone: it goes.
    await execute(roles.owner, "DELETE FROM mitre_techniques WHERE technique_id = 'T1003'")
    # Mapped by tenant B: refused (NO ACTION), even to the owner, instead of cascading.
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await execute(roles.owner, "DELETE FROM mitre_techniques WHERE technique_id = 'T1059'")
    assert await _mapped(roles.admin, b["tenants"], "T1059") == 1
    assert a  # tenant A maps nothing here


async def test_the_hub_sync_writes_connector_defs_outside_a_tenant_and_no_tenant_does(
    roles: Roles,
) -> None:
    a, _ = await _tenants(roles.admin)
    upsert = (
        "INSERT INTO connector_defs (type, version, source, manifest, synced_at) "
        "VALUES ($1, $2, 'hub', '{}', now()) "
        "ON CONFLICT (type) DO UPDATE SET version = EXCLUDED.version, synced_at = now(), "
        "updated_at = now()"
    )
    conn = await asyncpg.connect(roles.service)
    try:
        # The hub sync, as the app role, in a transaction of its own (no tenant set).
        async with conn.transaction():
            await conn.execute(upsert, "kafka", "1.0")
            await conn.execute(upsert, "splunk", "2.0")
            await conn.execute(upsert, "kafka", "1.1")
            assert await conn.execute("DELETE FROM connector_defs WHERE type = 'splunk'") == (
                "DELETE 1"
            )
        # After a tenant's transaction on the same connection (the pool's case): the
        # tenant is gone with it, the sync writes again.
        async with tenant_transaction(conn, a["tenants"]):
            pass
        async with conn.transaction():
            await conn.execute(upsert, "splunk", "2.1")

        # A tenant's session reads every definition and changes none.
        async with tenant_transaction(conn, a["tenants"]):
            assert await conn.fetchval("SELECT count(*) FROM connector_defs") == 2
            changed = await conn.execute("UPDATE connector_defs SET manifest = '{\"x\": 1}'")
            assert changed == "UPDATE 0"
            assert await conn.execute("DELETE FROM connector_defs") == "DELETE 0"
        for statement in (
            "INSERT INTO connector_defs (type, version, source) VALUES ('evil', '1', 'custom')",
            "INSERT INTO connector_defs (type, version, source) VALUES ('kafka', '9', 'custom') "
            "ON CONFLICT (type) DO UPDATE SET version = '9'",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with tenant_transaction(conn, a["tenants"]):
                    await conn.execute(statement)
        if not roles.truncate:  # the runbook's grants give none
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("TRUNCATE connector_defs")
    finally:
        await conn.close()
    rows = await fetchval(
        roles.admin,
        "SELECT string_agg(type || '=' || version, ',' ORDER BY type) FROM connector_defs",
    )
    assert rows == "kafka=1.1,splunk=2.1"
    # The owner writes it too (a builtin definition shipped with a release).
    await execute(
        roles.owner,
        "INSERT INTO connector_defs (type, version, source) VALUES ('webhook', '1', 'builtin'); "
        "TRUNCATE connector_defs",
    )


async def test_000060_on_a_populated_database_and_back(silentpulse_database: str) -> None:
    """Up on a database with rows in every table, down to 59 (the cascade, no row-level
    security), up again: no row lost or changed, the state exactly each version's."""
    dsn = silentpulse_database
    ids = await populate(dsn, 59, rows_per_month=2)
    state = (
        "SELECT (SELECT relrowsecurity FROM pg_class WHERE oid = 'mitre_techniques'::regclass)"
        "::text || ',' || (SELECT relrowsecurity FROM pg_class WHERE oid = 'connector_defs'"
        "::regclass)::text || ',' || (SELECT confdeltype::text || convalidated::text FROM pg_constraint"
        " WHERE conname = 'asset_group_mitre_mitre_technique_id_fkey')"
    )
    rows = "SELECT count(*) FROM asset_group_mitre"
    before = await fetchval(dsn, rows)
    assert before == len(ids)
    assert await fetchval(dsn, state) == "false,false,ctrue"
    await up(dsn, target=60)
    assert await fetchval(dsn, state) == "true,true,afalse"
    await up(dsn)
    assert await fetchval(dsn, state) == "true,true,atrue"
    await goto(dsn, 59)
    assert await fetchval(dsn, state) == "false,false,ctrue"
    await up(dsn)
    assert await fetchval(dsn, state) == "true,true,atrue"
    assert await fetchval(dsn, rows) == before

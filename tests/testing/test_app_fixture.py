"""The plugin's app-role fixture: the test database as the application sees it."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from silentpulse_db import RowSecurityError, create_pool, tenant_transaction


async def test_the_app_database_is_the_migrated_one_seen_as_an_application_role(
    silentpulse_migrated_database: str, silentpulse_app_database: str
) -> None:
    alpha, bravo = uuid.uuid4(), uuid.uuid4()
    admin = await asyncpg.connect(silentpulse_migrated_database)  # set-up, as the superuser
    try:
        await admin.executemany(
            "INSERT INTO tenants (id, name, handle) VALUES ($1, $2, $2)",
            [(alpha, "alpha"), (bravo, "bravo")],
        )
    finally:
        await admin.close()
    app = await asyncpg.connect(silentpulse_app_database)
    try:
        role = await app.fetchrow(
            "SELECT current_database() AS db, rolsuper, rolbypassrls FROM pg_roles "
            "WHERE rolname = current_user"
        )
        assert role["db"] == silentpulse_migrated_database.rsplit("/", 1)[1]
        assert not role["rolsuper"] and not role["rolbypassrls"]
        assert await app.fetchval("SELECT count(*) FROM tenants") == 0  # no tenant: nothing
        async with tenant_transaction(app, alpha):
            assert await app.fetchval("SELECT handle FROM tenants") == "alpha"
    finally:
        await app.close()
    pool = await create_pool(silentpulse_app_database, min_size=1, max_size=1)  # accepted
    await pool.close()
    try:
        await create_pool(silentpulse_migrated_database, min_size=1, max_size=1)
    except RowSecurityError:
        pass  # the superuser fixture is for set-up, not for the application's pool
    else:
        raise AssertionError("the superuser's pool was accepted")


async def test_the_jobs_database_bypasses_row_level_security_and_is_no_superuser(
    silentpulse_migrated_database: str, silentpulse_jobs_database: str
) -> None:
    """The worker's and the listener's role (issue 27, 11): every tenant's rows, and what
    only a superuser may do refused, so a test catches a missing grant."""
    admin = await asyncpg.connect(silentpulse_migrated_database)
    try:
        await admin.executemany(
            "INSERT INTO tenants (id, name, handle) VALUES ($1, $2, $2)",
            [(uuid.uuid4(), "alpha"), (uuid.uuid4(), "bravo")],
        )
    finally:
        await admin.close()
    jobs = await asyncpg.connect(silentpulse_jobs_database)
    try:
        role = await jobs.fetchrow(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
        )
        assert not role["rolsuper"] and role["rolbypassrls"]
        assert await jobs.fetchval("SELECT count(*) FROM tenants") == 2  # no tenant set
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await jobs.execute("CREATE TABLE owned_by_the_job (id int)")  # no CREATE
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await jobs.execute("ALTER TABLE tenants ADD COLUMN x int")  # not the owner
    finally:
        await jobs.close()
    pool = await create_pool(silentpulse_jobs_database, bypass_rls=True, min_size=1, max_size=1)
    await pool.close()

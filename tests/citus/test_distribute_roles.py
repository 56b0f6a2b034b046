"""distribute as the roles operators run it as: a role that does not own the tables is
refused; a non-superuser owner distributes once it can log in to the workers."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import pytest

from silentpulse_db import (
    DistributionError,
    PermissionDeniedError,
    run_migrations,
)
from silentpulse_db.migrate import apply_prerequisites, distribute

from .test_distribute import assert_placed_as_planned
from helpers import CITUS_SHARDS, execute, fetchval, login_role


async def test_a_role_that_does_not_own_the_tables_is_refused(
    silentpulse_citus_migrated_database: str,
) -> None:
    dsn = silentpulse_citus_migrated_database
    grants = "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};"
    async with login_role(dsn, grants, prefix="citus_operator") as (role, role_dsn):
        with pytest.raises(PermissionDeniedError, match="owns the tables") as e:
            await distribute(role_dsn)
        assert (e.value.role, e.value.privilege) == (role, "ownership")
    assert await fetchval(dsn, "SELECT count(*) FROM pg_dist_partition") == 0


async def test_a_non_superuser_owner_distributes_once_it_can_log_in_to_the_workers(
    silentpulse_citus_database: str,
) -> None:
    """The role that migrates (no superuser) distributes: Citus places a table as its
    owner, and the coordinator logs in to the workers as that role. Without a way in,
    the error says what to give it."""
    dsn = silentpulse_citus_database
    await apply_prerequisites(dsn)  # the extensions: the superuser's
    grants = "GRANT CREATE, USAGE ON SCHEMA public TO {role};"
    async with login_role(dsn, grants, prefix="citus_owner") as (role, owner):
        password = unquote(urlsplit(owner).password or "")
        authinfo = (
            f"INSERT INTO pg_dist_authinfo (nodeid, rolename, authinfo) "
            f"VALUES (0, '{role}', 'password={password}')"
        )
        await execute(dsn, authinfo)
        try:
            await run_migrations(owner)
            await execute(dsn, f"DELETE FROM pg_dist_authinfo WHERE rolename = '{role}'")
            with pytest.raises(DistributionError, match="pg_dist_authinfo") as caught:
                await distribute(owner, shard_count=CITUS_SHARDS)
            assert (caught.value.step, caught.value.done) == ("reference", ())
            assert f"VALUES (0, '{role}', 'password=...')" in str(caught.value)
            assert await fetchval(dsn, "SELECT count(*) FROM pg_dist_partition") == 0

            await execute(dsn, authinfo)
            report = await distribute(owner, shard_count=CITUS_SHARDS)
            assert report.changed and report.shard_count == CITUS_SHARDS
            await assert_placed_as_planned(dsn)
            assert (await distribute(owner)).steps == ()
        finally:
            await execute(dsn, f"DELETE FROM pg_dist_authinfo WHERE rolename = '{role}'")

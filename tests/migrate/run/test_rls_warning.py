"""A data migration run by a role that row-level security filters is called out.

With FORCE ROW LEVEL SECURITY a backfill run by the table's owner without
BYPASSRLS "succeeds" having changed nothing: the runner says so, naming the file,
the line, the table and the role.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from silentpulse_db import run_migrations

from helpers import execute, fetchval, login_role, write_migrations

TABLE = """
    CREATE TABLE readings (tenant_id uuid NOT NULL, n int NOT NULL);
    INSERT INTO readings SELECT gen_random_uuid(), 1 FROM generate_series(1, 3);
    ALTER TABLE readings ENABLE ROW LEVEL SECURITY;
    ALTER TABLE readings FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant ON readings
        USING (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::uuid);
"""
BACKFILL = {
    1: (
        "backfill_readings",
        "-- bump every reading\nUPDATE readings SET n = n + 1;\n",
        "UPDATE readings SET n = n - 1;\n",
    )
}


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


async def test_backfill_by_a_non_bypassrls_owner_of_a_forced_rls_table_warns(
    silentpulse_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await execute(silentpulse_database, TABLE)
    setup = "GRANT CREATE ON SCHEMA public TO {role}; ALTER TABLE readings OWNER TO {role};"
    async with login_role(silentpulse_database, setup, prefix="owner") as (name, owner_dsn):
        with caplog.at_level(logging.WARNING, logger="silentpulse_db"):
            await run_migrations(owner_dsn, source=write_migrations(tmp_path, BACKFILL))
        # The hazard is real: the migration "succeeded" and changed nothing ...
        assert await fetchval(silentpulse_database, "SELECT sum(n) FROM readings") == 3
        # ... and the operator is told, with where, what and who.
        (warning,) = warnings_of(caplog)
        assert "000001_backfill_readings.up.sql line 2" in warning
        assert "UPDATE on readings" in warning and repr(name) in warning
        assert "BYPASSRLS" in warning and "forces RLS" in warning


async def test_the_same_backfill_as_a_superuser_is_silent(
    silentpulse_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await execute(silentpulse_database, TABLE)
    with caplog.at_level(logging.WARNING, logger="silentpulse_db"):
        await run_migrations(silentpulse_database, source=write_migrations(tmp_path, BACKFILL))
    assert await fetchval(silentpulse_database, "SELECT sum(n) FROM readings") == 6
    assert warnings_of(caplog) == []

"""The tenant for the rest of an open transaction, and SQLAlchemy's AsyncSession, as the
application role under row-level security (issue 27, 2)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from silentpulse_db import InvalidArgumentError, set_tenant, tenant_transaction
from silentpulse_db import sqlalchemy as scoped
from silentpulse_db.tenants import scope_sql

from helpers import execute


async def two_tenants(admin_dsn: str) -> tuple[uuid.UUID, uuid.UUID]:
    alpha, bravo = uuid.uuid4(), uuid.uuid4()
    await execute(
        admin_dsn,
        f"INSERT INTO tenants (id, name, handle) VALUES ('{alpha}', 'alpha', 'alpha'), "
        f"('{bravo}', 'bravo', 'bravo')",
    )
    return alpha, bravo


async def test_a_worker_claims_a_row_then_writes_as_its_tenant_in_one_transaction(
    silentpulse_migrated_database: str, silentpulse_app_database: str
) -> None:
    alpha, bravo = await two_tenants(silentpulse_migrated_database)
    conn = await asyncpg.connect(silentpulse_app_database)
    try:
        with pytest.raises(InvalidArgumentError, match="open transaction"):
            await set_tenant(conn, alpha)  # no transaction: it would last one statement
        async with conn.transaction():
            assert await conn.fetchval("SELECT count(*) FROM tenants") == 0
            await set_tenant(conn, bravo)  # the tenant of the row just claimed
            assert await conn.fetchval("SELECT handle FROM tenants") == "bravo"
            await conn.execute(
                "INSERT INTO assets (tenant_id, external_id) VALUES ($1, 'claimed')", bravo
            )
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(
                    "INSERT INTO assets (tenant_id, external_id) VALUES ($1, 'x')", alpha
                )
        # The transaction ended: no tenant carried on.
        assert await conn.fetchval("SELECT count(*) FROM tenants") == 0
        with pytest.raises(InvalidArgumentError, match="already in one"):
            async with conn.transaction(), tenant_transaction(conn, alpha):
                pass
    finally:
        await conn.close()


async def test_sqlalchemy_async_session_sees_one_tenant_and_leaks_none(
    silentpulse_migrated_database: str, silentpulse_app_database: str
) -> None:
    alpha, bravo = await two_tenants(silentpulse_migrated_database)
    url = silentpulse_app_database.replace("postgresql://", "postgresql+asyncpg://", 1)
    engine = create_async_engine(url, pool_size=1, max_overflow=0)  # one connection, reused
    try:
        async with AsyncSession(engine) as session:
            async with scoped.tenant_transaction(session, alpha):
                handles = (await session.execute(text("SELECT handle FROM tenants"))).scalars()
                assert list(handles) == ["alpha"]
                await session.execute(
                    text("INSERT INTO assets (tenant_id, external_id) VALUES (:t, 'a1')"),
                    {"t": alpha},
                )
            # Committed; the pooled connection carries no tenant into what comes next.
            async with session.begin():
                count = await session.scalar(text("SELECT count(*) FROM assets"))
                assert count == 0
                await scoped.set_tenant(session, bravo)
                assert await session.scalar(text("SELECT handle FROM tenants")) == "bravo"
            with pytest.raises(InvalidArgumentError, match="already in one"):
                await session.execute(text("SELECT 1"))  # autobegins
                async with scoped.tenant_transaction(session, alpha):
                    pass
            await session.rollback()
            with pytest.raises(InvalidArgumentError, match="has none"):
                await scoped.set_tenant(session, alpha)
            with pytest.raises(InvalidArgumentError, match="must be a UUID"):
                async with scoped.tenant_transaction(session, "alpha"):
                    pass
        # A failing block rolls back: the row is not there.
        async with AsyncSession(engine) as session:
            with pytest.raises(RuntimeError):
                async with scoped.tenant_transaction(session, alpha):
                    await session.execute(
                        text("INSERT INTO assets (tenant_id, external_id) VALUES (:t, 'a2')"),
                        {"t": alpha},
                    )
                    raise RuntimeError("the handler failed")
            async with scoped.tenant_transaction(session, alpha):
                names = (await session.execute(text("SELECT external_id FROM assets"))).scalars()
                assert list(names) == ["a1"]
    finally:
        await engine.dispose()


def test_the_scope_is_one_message_of_two_set_local_with_the_tenant_quoted() -> None:
    tenant = uuid.UUID("6f1c3a52-0d4e-4b8a-9c77-2f6b1e0a9d31")
    assert scope_sql(tenant) == (
        "SET LOCAL citus.propagate_set_commands = 'local'; "
        "SET LOCAL app.current_tenant = '6f1c3a52-0d4e-4b8a-9c77-2f6b1e0a9d31'"
    )
    text_given: Any = "6f1c3a52-0d4e-4b8a-9c77-2f6b1e0a9d31'; DROP TABLE tenants; --"
    with pytest.raises(InvalidArgumentError, match=r"uuid\.UUID"):
        scope_sql(text_given)  # only a uuid.UUID: its text is what makes the literal safe


async def test_sqlalchemy_scope_begins_without_the_adapters_own_begin_and_refuses_autocommit(
    silentpulse_migrated_database: str,
    silentpulse_app_database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where SQLAlchemy's asyncpg adapter lacks its (internal) _start_transaction, a
    statement of no consequence begins the transaction; an AUTOCOMMIT engine, where a
    SET LOCAL would last no statement, is refused."""
    alpha, _ = await two_tenants(silentpulse_migrated_database)
    url = silentpulse_app_database.replace("postgresql://", "postgresql+asyncpg://", 1)
    engine = create_async_engine(url, pool_size=1, max_overflow=0)
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    try:
        with monkeypatch.context() as patched:
            patched.setattr(scoped, "_ADAPTER_BEGIN", "_not_in_this_version")
            async with AsyncSession(engine) as session, scoped.tenant_transaction(session, alpha):
                handles = await session.scalars(text("SELECT handle FROM tenants"))
                assert list(handles) == ["alpha"]
        async with AsyncSession(autocommit) as session:
            with pytest.raises(InvalidArgumentError, match="AUTOCOMMIT"):
                async with scoped.tenant_transaction(session, alpha):
                    pass
        # The pooled connection, unharmed, carries no tenant.
        async with AsyncSession(engine) as session, session.begin():
            assert await session.scalar(text("SELECT count(*) FROM tenants")) == 0
    finally:
        await engine.dispose()

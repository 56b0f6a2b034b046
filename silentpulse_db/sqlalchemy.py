"""The tenant scope for SQLAlchemy 2.0's ``AsyncSession`` on asyncpg, beside the asyncpg
form (:mod:`silentpulse_db.tenants`). Needs the ``sqlalchemy`` extra
(``pip install 'silentpulse-db[sqlalchemy]'``).

    engine = create_async_engine("postgresql+asyncpg://silentpulse_app:...@db/silentpulse")
    async with AsyncSession(engine) as session:
        async with tenant_transaction(session, tenant_id):
            rows = (await session.execute(select(Alert))).scalars().all()

The tenant is set for that transaction alone (``SET LOCAL``, forwarded to a Citus
cluster's workers: :mod:`silentpulse_db.tenants` says why and how), so the engine's
pooled connections carry none into the next request. Connect the engine as the
application role: a superuser or BYPASSRLS role sees every tenant whatever is set
(``create_pool`` refuses one; an engine is not checked).

SQLAlchemy's asyncpg dialect prepares every statement it runs, and a prepared statement
holds one command with no room for the tenant as a parameter of ``SET``; so the tenant's
message (two ``SET LOCAL``) goes to the asyncpg connection underneath, as a simple
query, on the transaction SQLAlchemy has begun. The dialect begins it lazily, with the
first statement it runs: where it has not yet, it is begun as the dialect would begin
it, so that the start costs what it did with ``set_config()``: ``BEGIN``, then one
message. A connection lost in those two is asyncpg's error (not wrapped in
``sqlalchemy.exc``), and the session's connection is invalidated, not pooled again.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from .errors import InvalidArgumentError
from .postgres.translate import connection_closed
from .tenants import scope_sql, tenant_uuid

# SQLAlchemy's asyncpg adapter's own (internal) begin, and the lock its statements take.
_ADAPTER_BEGIN = "_start_transaction"
_ADAPTER_LOCK = "_execute_mutex"


@contextlib.asynccontextmanager
async def tenant_transaction(
    session: AsyncSession, tenant_id: uuid.UUID | str
) -> AsyncIterator[AsyncSession]:
    """``session.begin()`` with row-level security showing ``tenant_id``'s rows and no
    other's; commits at the end of the block, rolls back on an error. Refused
    (InvalidArgumentError) on a session already in a transaction (the tenant would
    outlive this block: use :func:`set_tenant` there) and on a tenant that is not a UUID."""
    tenant = tenant_uuid(tenant_id)
    if session.in_transaction():
        raise InvalidArgumentError(
            "tenant_transaction begins the session's transaction, and this session is "
            "already in one (a query autobegins it): the tenant would stay set until it "
            "ends; set_tenant sets it for the rest of that transaction"
        )
    async with session.begin():
        await _scope(session, tenant)
        yield session


async def set_tenant(session: AsyncSession, tenant_id: uuid.UUID | str) -> None:
    """Row-level security shows ``tenant_id``'s rows for the rest of the session's open
    transaction. Refused (InvalidArgumentError) on a session in no transaction."""
    tenant = tenant_uuid(tenant_id)
    if not session.in_transaction():
        raise InvalidArgumentError(
            "set_tenant sets the tenant for the rest of the session's transaction, and "
            "it has none: use tenant_transaction, or session.begin() first"
        )
    await _scope(session, tenant)


async def _scope(session: AsyncSession, tenant: uuid.UUID) -> None:
    """Set ``tenant`` on the session's connection, in its open transaction."""
    connection = await session.connection()
    pooled = await connection.get_raw_connection()
    driver: Any = pooled.driver_connection  # the asyncpg connection
    try:
        if not driver.is_in_transaction():
            await _begin(pooled.dbapi_connection, session)
        if not driver.is_in_transaction():
            # An engine in AUTOCOMMIT: SET LOCAL would last no longer than itself.
            raise InvalidArgumentError(
                "the session's connection runs each statement in a transaction of its own "
                "(isolation_level='AUTOCOMMIT'), so a tenant would be set for no statement: "
                "use an engine (or connection) without AUTOCOMMIT"
            )
        await driver.execute(scope_sql(tenant))
    except Exception:
        if connection_closed(driver):
            # Lost under SQLAlchemy's feet: it would not know, and would pool it again.
            await connection.invalidate()
        raise


async def _begin(adapted: Any, session: AsyncSession) -> None:
    """Begin the transaction SQLAlchemy's asyncpg adapter would begin with its next
    statement, as it would (its isolation level, read-only and deferrable settings).

    Its own ``_start_transaction`` (under its lock) costs the ``BEGIN`` alone; it is
    SQLAlchemy's internal, so where a version lacks it a statement of no consequence
    begins it instead, a round trip more."""
    start = getattr(adapted, _ADAPTER_BEGIN, None)
    lock = getattr(adapted, _ADAPTER_LOCK, None)
    if start is not None and lock is not None:
        async with lock:
            await start()
        return
    await session.execute(text("SELECT"))

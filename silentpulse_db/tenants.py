"""One tenant at a time: the transaction-local ``app.current_tenant`` that row-level
security reads (migration 000004's policies), for asyncpg connections and pools.

:func:`tenant_transaction` begins a transaction with the tenant set;
:func:`set_tenant` sets it for the rest of a transaction already open (the worker that
claims a job, then writes its tenant's alert, in one transaction). Either way the
setting ends with the transaction (``set_config(..., true)``): a pooled connection
carries no tenant into the next request. SQLAlchemy's AsyncSession gets the same two
in :mod:`silentpulse_db.sqlalchemy`.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from .errors import InvalidArgumentError

TENANT_SETTING = "app.current_tenant"
# Transaction-local: it ends with the transaction, committed or rolled back.
SET_TENANT = f"SELECT set_config('{TENANT_SETTING}', $1, true)"


@contextlib.asynccontextmanager
async def tenant_transaction(
    conn: Any, tenant_id: uuid.UUID | str, **transaction_options: Any
) -> AsyncIterator[Any]:
    """A transaction in which row-level security shows ``tenant_id``'s rows and no other's.

    ``conn``: an asyncpg connection, or a pool (a connection is acquired for the
    transaction and released after); yields the connection. ``app.current_tenant`` is
    set for this transaction only (``set_config(..., true)``): once it commits or
    rolls back the connection carries no tenant, so a pooled connection cannot leak
    one tenant's setting into the next request. ``transaction_options`` go to
    ``conn.transaction()`` (isolation, readonly, deferrable).

    Refused with InvalidArgumentError, before anything runs: a ``tenant_id`` that is
    not a UUID, and a connection already in a transaction (the tenant would outlive
    this block, to the end of the outer transaction: use :func:`set_tenant` there).
    """
    tenant = tenant_uuid(tenant_id)
    if isinstance(conn, asyncpg.Pool):
        async with conn.acquire() as acquired, _scoped(acquired, tenant, transaction_options):
            yield acquired
        return
    async with _scoped(conn, tenant, transaction_options):
        yield conn


async def set_tenant(conn: Any, tenant_id: uuid.UUID | str) -> None:
    """Row-level security shows ``tenant_id``'s rows for the rest of ``conn``'s open
    transaction (and of no other): a tenant chosen inside the transaction, from a row it
    read. Refused (InvalidArgumentError) on a connection in no transaction, where the
    setting would last one statement; and on a tenant that is not a UUID."""
    tenant = tenant_uuid(tenant_id)
    if not conn.is_in_transaction():
        raise InvalidArgumentError(
            "set_tenant sets the tenant for the rest of an open transaction, and this "
            "connection is in none: use tenant_transaction, or open one first"
        )
    await conn.execute(SET_TENANT, str(tenant))


@contextlib.asynccontextmanager
async def _scoped(conn: Any, tenant: uuid.UUID, options: dict[str, Any]) -> AsyncIterator[None]:
    if conn.is_in_transaction():
        raise InvalidArgumentError(
            "tenant_transaction starts the transaction, and this connection is already in "
            "one: the tenant would stay set until that outer transaction ends (set_tenant "
            "sets it for the rest of that transaction)"
        )
    async with conn.transaction(**options):
        await conn.execute(SET_TENANT, str(tenant))
        yield


def tenant_uuid(tenant_id: object) -> uuid.UUID:
    """``tenant_id`` as a UUID; InvalidArgumentError (showing at most 40 characters of
    it) for anything else."""
    if isinstance(tenant_id, uuid.UUID):
        return tenant_id
    if isinstance(tenant_id, str):
        with contextlib.suppress(ValueError):
            return uuid.UUID(tenant_id)
    shown = repr(tenant_id)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    raise InvalidArgumentError(f"tenant_id must be a UUID (uuid.UUID or its text), got {shown}")

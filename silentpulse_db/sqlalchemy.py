"""The tenant scope for SQLAlchemy 2.0's ``AsyncSession`` on asyncpg, beside the asyncpg
form (:mod:`silentpulse_db.tenants`). Needs the ``sqlalchemy`` extra
(``pip install 'silentpulse-db[sqlalchemy]'``).

    engine = create_async_engine("postgresql+asyncpg://silentpulse_app:...@db/silentpulse")
    async with AsyncSession(engine) as session:
        async with tenant_transaction(session, tenant_id):
            rows = (await session.execute(select(Alert))).scalars().all()

The tenant is set for that transaction alone (``set_config(..., true)``), so the
engine's pooled connections carry none into the next request. Connect the engine as the
application role: a superuser or BYPASSRLS role sees every tenant whatever is set
(``create_pool`` refuses one; an engine is not checked).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from .errors import InvalidArgumentError
from .tenants import TENANT_SETTING, tenant_uuid

_SET_TENANT = text(f"SELECT set_config('{TENANT_SETTING}', :tenant, true)")


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
        await session.execute(_SET_TENANT, {"tenant": str(tenant)})
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
    await session.execute(_SET_TENANT, {"tenant": str(tenant)})

"""What a service's application code connects with: a pool that keeps tenants apart.

Row-level security keeps tenants apart only for a role it applies to. A
superuser or a role with BYPASSRLS reads every tenant's rows, and nothing says
so: one DSN used for migrations (the owner) and for the pool is enough to leak.
:func:`create_pool` refuses such a role unless the caller says it is meant
(``bypass_rls=True``: the jobs, the listener, tools). :func:`tenant_transaction`
is a transaction that sees one tenant's rows, the tenant set for that
transaction only.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import ssl
import uuid
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import asyncpg

from .errors import ConfigurationError, InvalidArgumentError, RowSecurityError
from .postgres.connect import connect_error
from .postgres.dsn import redact, split_migrations_table, validate_dsn
from .postgres.pooler import Pooling, pooling_error, pooling_of
from .postgres.roles import SessionRole, session_role
from .postgres.translate import typed_errors

logger = logging.getLogger("silentpulse_db.pool")


async def create_pool(dsn: str, *, bypass_rls: bool = False, **asyncpg_options: Any) -> Any:
    """An asyncpg pool (``asyncpg.create_pool(dsn, **asyncpg_options)``) for the
    application's queries, refusing a role that bypasses row-level security.

    The role is read on the pool's first connection. A superuser or a BYPASSRLS role
    is refused with RowSecurityError naming it and why, and the pool is closed,
    unless ``bypass_rls=True`` (a job that must see every tenant's rows). Query a
    tenant's rows inside :func:`tenant_transaction`.

    Behind a pooler in transaction mode (PgBouncer), asyncpg's statement cache breaks:
    its named statements land on server connections other clients use. Unless
    ``statement_cache_size`` is given, such a pool is made again without the cache
    (logged at INFO); give it to keep the cache where the pooler keeps prepared
    statements itself (PgBouncer 1.21+, ``max_prepared_statements``). Statement pooling
    is refused (PoolingModeError): it refuses the transactions :func:`tenant_transaction`
    runs.
    """
    dsn, _ = split_migrations_table(dsn)  # the DSN a service also gives golang-migrate
    validate_dsn(dsn)
    with typed_errors(dsn, "create the application's connection pool"):
        pool = await _checked_pool(dsn, bypass_rls, asyncpg_options)
        if pool is None:
            logger.info(
                "create_pool: %s goes through a pooler in transaction mode: "
                "asyncpg's statement cache is off (statement_cache_size=0)",
                redact(dsn, dsn),
            )
            pool = await _checked_pool(dsn, bypass_rls, {**asyncpg_options, **_NO_CACHE})
    return pool


_NO_CACHE = {"statement_cache_size": 0}


async def _checked_pool(dsn: str, bypass_rls: bool, options: dict[str, Any]) -> Any:
    """The pool, its role checked; None (the pool closed) if it needs to be made
    again without asyncpg's statement cache."""
    try:
        pool = await asyncpg.create_pool(dsn, **options)
    except ssl.SSLCertVerificationError as exc:  # a ValueError, but not the options' fault
        raise connect_error(exc, dsn) from None
    except (TypeError, ValueError) as exc:  # asyncpg's word on an option it cannot take
        raise ConfigurationError(f"create_pool: {redact(str(exc), dsn)}") from None
    try:
        async with pool.acquire() as conn:
            mode = await _pooling(conn, dsn, options)
            if mode is Pooling.STATEMENT:
                raise pooling_error(mode, dsn, need=_NEEDS_TRANSACTIONS)
            remake = "statement_cache_size" not in options and not mode.keeps_session
            # Not on a pool about to be made again: its statement cache may collide.
            role = None if remake else await session_role(conn)
        if role is None:
            await pool.close()
            return None
        if not bypass_rls:
            _refuse_bypassing(role)
    except BaseException:
        pool.terminate()
        raise
    return pool


async def _pooling(conn: Any, dsn: str, options: dict[str, Any]) -> Pooling:
    """How ``conn`` reaches PostgreSQL (a pooler in between, and its mode)."""
    # The connection options of the pool's, for the probe connection of the check.
    accepted = inspect.signature(asyncpg.connect).parameters
    connect_options = {k: v for k, v in options.items() if k in accepted}
    opener = partial(asyncpg.connect, dsn, **{**connect_options, **_NO_CACHE})
    return await pooling_of(conn, opener)


_NEEDS_TRANSACTIONS = (
    "tenant_transaction runs each request in a transaction (the tenant is set for it "
    "alone), which statement pooling refuses; the application's pool needs transaction "
    "or session pooling"
)


def _refuse_bypassing(role: SessionRole) -> None:
    if role.superuser:
        why = "is a superuser"
    elif role.bypassrls:
        why = "has BYPASSRLS"
    else:
        return
    raise RowSecurityError(
        f"role {role.name!r} {why}: row-level security does not apply to it, so through "
        f"this pool every tenant would read every other tenant's rows. Connect the "
        f"application as a role without SUPERUSER or BYPASSRLS (the app role of "
        f"docs/operations.md), or pass bypass_rls=True for a job that must see every "
        f"tenant (the jobs role, the alert listener).",
        role=role.name,
    )


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
    this block, to the end of the outer transaction).
    """
    tenant = _tenant_uuid(tenant_id)
    if isinstance(conn, asyncpg.Pool):
        async with conn.acquire() as acquired, _scoped(acquired, tenant, transaction_options):
            yield acquired
        return
    async with _scoped(conn, tenant, transaction_options):
        yield conn


@contextlib.asynccontextmanager
async def _scoped(conn: Any, tenant: uuid.UUID, options: dict[str, Any]) -> AsyncIterator[None]:
    if conn.is_in_transaction():
        raise InvalidArgumentError(
            "tenant_transaction starts the transaction, and this connection is already in "
            "one: the tenant would stay set until that outer transaction ends"
        )
    async with conn.transaction(**options):
        await conn.execute("SELECT set_config('app.current_tenant', $1, true)", str(tenant))
        yield


def _tenant_uuid(tenant_id: object) -> uuid.UUID:
    if isinstance(tenant_id, uuid.UUID):
        return tenant_id
    if isinstance(tenant_id, str):
        with contextlib.suppress(ValueError):
            return uuid.UUID(tenant_id)
    shown = repr(tenant_id)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    raise InvalidArgumentError(f"tenant_id must be a UUID (uuid.UUID or its text), got {shown}")

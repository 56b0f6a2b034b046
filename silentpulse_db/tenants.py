"""One tenant at a time: the transaction-local ``app.current_tenant`` that row-level
security reads (migration 000004's policies), for asyncpg connections and pools.

:func:`tenant_transaction` begins a transaction with the tenant set;
:func:`set_tenant` sets it for the rest of a transaction already open (the worker that
claims a job, then writes its tenant's alert, in one transaction). Either way the
setting ends with the transaction (``SET LOCAL``): a pooled connection carries no
tenant into the next request. SQLAlchemy's AsyncSession gets the same two in
:mod:`silentpulse_db.sqlalchemy`.

On Citus the setting must reach the workers, where the shards' policies read it.
Citus forwards ``SET LOCAL`` commands to the workers a transaction involves (and to
those it involves later, with each remote ``BEGIN``) when
``citus.propagate_set_commands`` is ``'local'``; ``set_config()`` is a function call
and never reaches them (every insert refused, every read empty). So the tenant is set
by :func:`scope_sql`'s one message: ``SET LOCAL citus.propagate_set_commands =
'local'; SET LOCAL app.current_tenant = '<uuid>'``, right after ``BEGIN``.

The library sets ``citus.propagate_set_commands`` itself, per transaction, rather
than leaving it to a database default that ``distribute`` (or the operator) would set:
it works for any role on any database, with no step to forget, and a forgotten step
would fail closed but silently (empty reads) where nothing can tell the application
why. It costs nothing: it rides in the same message as the tenant, one round trip as
``set_config()`` was. It is ``LOCAL`` too, so the application's other ``SET LOCAL``
commands in the block (``statement_timeout``) reach the workers as well, and nothing
outlives the transaction. On plain PostgreSQL it sets a placeholder no one reads.

A database that cannot serve (refused, restarting, full, a pooler that cannot log in to
it, a connection gone mid-transaction) is a :class:`DatabaseUnavailableError` out of
:func:`tenant_transaction`, not the driver's error: an endpoint answers 503, a handler
may run the transaction again. The errors of the caller's own statements (a constraint,
a row-level security refusal, a serialization failure) stay asyncpg's, as they were.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from .errors import InvalidArgumentError, SilentPulseDBError
from .postgres.connect import connect_error, is_transient
from .postgres.literals import quote_literal
from .postgres.translate import connection_closed, is_unavailable, unavailable_error

TENANT_SETTING = "app.current_tenant"
# Citus forwards a SET LOCAL to the workers only while this is 'local' (module docstring).
PROPAGATE_SET = "SET LOCAL citus.propagate_set_commands = 'local'"


def scope_sql(tenant: uuid.UUID) -> str:
    """The one message that sets ``tenant`` for the rest of the open transaction, on a
    Citus cluster's workers too; transaction-local: it ends with the transaction,
    committed or rolled back.

    ``SET`` takes no bind parameter, so the tenant is a literal. It is safe as one: a
    ``uuid.UUID`` prints as 36 hex digits and hyphens (tenant_uuid has validated what
    the caller gave), and it is quoted as a literal all the same (quotes doubled, no
    backslash in it for standard_conforming_strings to read), so that nothing but a
    string constant can ever reach the statement. Sent as a simple query (no
    arguments), both statements go in one round trip. Citus forwards the whole message
    text to the workers, so it must hold these two ``SET LOCAL`` and nothing else; the
    order matters: the tenant's is forwarded only once propagation is on.
    """
    if not isinstance(tenant, uuid.UUID):  # the literal's safety rests on it
        raise InvalidArgumentError(f"scope_sql takes a uuid.UUID, got {type(tenant).__name__}")
    return f"{PROPAGATE_SET}; SET LOCAL {TENANT_SETTING} = {quote_literal(str(tenant))}"


@contextlib.asynccontextmanager
async def tenant_transaction(
    conn: Any, tenant_id: uuid.UUID | str, **transaction_options: Any
) -> AsyncIterator[Any]:
    """A transaction in which row-level security shows ``tenant_id``'s rows and no other's.

    ``conn``: an asyncpg connection, or a pool (a connection is acquired for the
    transaction and released after); yields the connection. ``app.current_tenant`` is
    set for this transaction only (``SET LOCAL``, on Citus's workers too): once it
    commits or rolls back the connection carries no tenant, so a pooled connection
    cannot leak one tenant's setting into the next request. ``transaction_options`` go
    to ``conn.transaction()`` (isolation, readonly, deferrable).

    Refused with InvalidArgumentError, before anything runs: a ``tenant_id`` that is
    not a UUID, a connection already in a transaction (the tenant would outlive this
    block, to the end of the outer transaction: use :func:`set_tenant` there), a pool
    closed or closing.

    A database that cannot serve is a DatabaseUnavailableError (``retryable``):
    no connection to be had from the pool (refused, starting up, shutting down, no slot
    left), or the connection lost before the commit (the server rolled the transaction
    back; the connection is dropped, the pool makes a new one). Lost while COMMIT was
    in flight: CommitOutcomeUnknownError (a DatabaseUnavailableError, not retryable:
    it may have committed), unless the transaction is ``readonly``. A connection the
    pool cannot open for good (a wrong password, a database gone) is a
    DatabaseConnectionError. What the block's own statements raise otherwise
    (``asyncpg.UniqueViolationError``, a row-level security refusal,
    ``asyncpg.SerializationError``), and the block's own exceptions, pass unchanged.
    """
    tenant = tenant_uuid(tenant_id)
    if isinstance(conn, asyncpg.Pool):
        async with _acquired(conn) as acquired, _scoped(acquired, tenant, transaction_options):
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
    await conn.execute(scope_sql(tenant))


@contextlib.asynccontextmanager
async def _acquired(pool: Any) -> AsyncIterator[Any]:
    """A connection of ``pool`` for the block, released after it; a failure to get one
    as this library's error."""
    try:
        conn = await pool.acquire()
    except Exception as exc:
        typed = _acquire_error(pool, exc)
        if typed is None:
            raise
        raise typed from None
    try:
        yield conn
    finally:
        try:
            await pool.release(conn)
        except Exception as exc:
            # Its reset found the connection gone: asyncpg terminated it, and the pool
            # opens a new one on a later acquire. What committed stays committed.
            if not is_unavailable(exc):
                raise


def _acquire_error(pool: Any, exc: Exception) -> SilentPulseDBError | None:
    if pool.is_closing():
        return InvalidArgumentError(
            "tenant_transaction was given a pool that is closed or closing (pool.close() "
            "ran: the application is shutting down)"
        )
    # The DSN create_pool gave asyncpg, to keep its password out of the message.
    args = getattr(pool, "_connect_args", None) or ("",)
    dsn = args[0] if isinstance(args[0], str) else ""
    if is_unavailable(exc) or is_transient(exc):
        return unavailable_error(exc, doing="get a connection from the pool", dsn=dsn)
    if isinstance(exc, (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
        return connect_error(exc, dsn)  # for good: a password, a database, TLS
    return None  # the pool's init or setup callback's own error


@contextlib.asynccontextmanager
async def _scoped(conn: Any, tenant: uuid.UUID, options: dict[str, Any]) -> AsyncIterator[None]:
    if conn.is_in_transaction():
        raise InvalidArgumentError(
            "tenant_transaction starts the transaction, and this connection is already in "
            "one: the tenant would stay set until that outer transaction ends (set_tenant "
            "sets it for the rest of that transaction)"
        )
    transaction = conn.transaction(**options)
    try:
        await transaction.start()
    except Exception as exc:
        if not is_unavailable(exc, conn):
            raise
        _drop(conn)
        raise unavailable_error(exc, doing="begin the tenant's transaction") from None
    try:
        await conn.execute(scope_sql(tenant))
        yield
    except BaseException as exc:
        await _roll_back(conn, transaction)
        if not (isinstance(exc, Exception) and is_unavailable(exc, conn)):
            raise
        raise unavailable_error(exc, doing="run the tenant's transaction") from None
    # Not sent (a connection closed already, asyncpg refusing to send it after the
    # server's FATAL), COMMIT cannot have committed; a read-only one commits nothing.
    in_flight = not (options.get("readonly") or connection_closed(conn))
    try:
        await transaction.commit()
    except Exception as exc:
        if not is_unavailable(exc, conn):
            raise  # a deferred constraint, a serialization failure: the caller's
        _drop(conn)
        sent = in_flight and not isinstance(exc, asyncpg.exceptions.InternalClientError)
        raise unavailable_error(
            exc, doing="commit the tenant's transaction", committing=sent
        ) from None


async def _roll_back(conn: Any, transaction: Any) -> None:
    """Roll back after the block failed; a lost connection needs none (the server rolls
    back) and is dropped, so that a pool opens a new one."""
    if connection_closed(conn):
        return
    try:
        await transaction.rollback()
    except Exception as exc:
        if not is_unavailable(exc, conn):
            raise
        _drop(conn)


def _drop(conn: Any) -> None:
    """Close a connection that cannot serve any more (asyncpg's protocol may still take it
    for open after the server's FATAL); a pool's returns to the pool, to be opened anew."""
    if not connection_closed(conn):
        conn.terminate()


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

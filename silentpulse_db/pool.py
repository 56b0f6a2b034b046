"""What a service's application code connects with: a pool that keeps tenants apart.

Row-level security keeps tenants apart only for a role it applies to. A
superuser or a role with BYPASSRLS reads every tenant's rows, and nothing says
so: one DSN used for migrations (the owner) and for the pool is enough to leak.
:func:`create_pool` refuses such a role unless the caller says it is meant
(``bypass_rls=True``: the jobs, the listener, tools). :func:`tenant_transaction`
(:mod:`.tenants`) is a transaction that sees one tenant's rows, the tenant set for that
transaction only; so a pool whose sessions start with a tenant (a default
``app.current_tenant``: in the DSN, its options, a role or database default) is
refused as well.
"""

from __future__ import annotations

import inspect
import logging
import re
import ssl
from collections.abc import Iterator, Mapping
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import asyncpg

from .errors import ConfigurationError, RowSecurityError
from .postgres.connect import connect_error, is_transient
from .postgres.dsn import connection_dsn, redact, validate_dsn
from .postgres.pooler import Pooling, pooling_error, pooling_of
from .postgres.roles import SessionRole, session_role
from .postgres.translate import is_unavailable, typed_errors, unavailable_error
from .tenants import TENANT_SETTING, tenant_transaction

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

    A default tenant is refused, whatever the role: ``app.current_tenant`` in the DSN
    (``?app.current_tenant=...``, ``?options=-c app.current_tenant=...``) or in
    ``server_settings``, before connecting (ConfigurationError naming the setting); a
    role or database default (``ALTER ROLE ... SET app.current_tenant``), on the first
    connection (RowSecurityError with the ``ALTER ... RESET`` that removes it). With
    one, a query run outside :func:`tenant_transaction` would see that tenant's rows
    instead of none.

    A server down, starting up or out of connection slots: DatabaseUnavailableError
    (``retryable``), as :func:`tenant_transaction` raises on a pool whose server went away.
    """
    dsn = connection_dsn(dsn)  # the DSN a service also gives golang-migrate: x- options out
    validate_dsn(dsn)
    _refuse_tenant_settings(dsn, asyncpg_options.get("server_settings"))
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
    except Exception as exc:  # a server down, starting up, full: the service may wait
        if not (is_unavailable(exc) or is_transient(exc)):
            raise
        raise unavailable_error(
            exc, doing="open the application's connection pool", dsn=dsn, transaction=False
        ) from None
    try:
        async with pool.acquire() as conn:
            mode = await _pooling(conn, dsn, options)
            if mode is Pooling.STATEMENT:
                raise pooling_error(mode, dsn, need=_NEEDS_TRANSACTIONS)
            remake = "statement_cache_size" not in options and not mode.keeps_session
            # Not on a pool about to be made again: its statement cache may collide.
            role = None if remake else await session_role(conn)
            tenant = None if remake else await conn.fetchrow(_DEFAULT_TENANT)
        if role is None or tenant is None:
            await pool.close()
            return None
        if not bypass_rls:
            _refuse_bypassing(role)
        _refuse_default_tenant(tenant)
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


def _refuse_tenant_settings(dsn: str, server_settings: object) -> None:
    """ConfigurationError, before connecting, when the DSN or ``server_settings`` give
    every session a tenant. Names the setting; shows neither the DSN nor the value."""
    sources: list[tuple[str, str, str]] = [
        (f"the DSN's {name!r} parameter", name, value)
        for name, value in parse_qsl(urlsplit(dsn).query, keep_blank_values=True)
    ]
    if isinstance(server_settings, Mapping):
        sources += [
            (f"server_settings[{name!r}]", str(name), str(value))
            for name, value in server_settings.items()
        ]
    for where, name, value in sources:
        if _is_tenant(name) and value:
            pass
        elif name.strip().lower() == "options" and any(
            _is_tenant(switch) and bool(set_to) for switch, set_to in _switches(value)
        ):
            where += f" (-c {TENANT_SETTING}=...)"
        else:
            continue
        raise ConfigurationError(
            f"create_pool: {where} sets {TENANT_SETTING} for every session of the pool: a "
            f"default tenant, so a query run outside tenant_transaction would read and write "
            f"that tenant's rows instead of none (docs/security.md: never a connection, role "
            f"or database default). Remove it: tenant_transaction sets the tenant for each "
            f"transaction."
        )


def _is_tenant(name: str) -> bool:
    # Setting names are case-insensitive; in the options' switches '-' stands for '_'.
    return name.strip().lower().replace("-", "_") == TENANT_SETTING


_OPTION_WORD = re.compile(r"(?:\\.|[^\s\\])+")


def _switches(options: str) -> Iterator[tuple[str, str]]:
    """(name, value) of each ``-c name=value``, ``-cname=value`` and ``--name=value`` in
    a libpq ``options`` string, split as the server splits it (backslash escapes)."""
    words = [re.sub(r"\\(.)", r"\1", word) for word in _OPTION_WORD.findall(options)]
    for i, word in enumerate(words):
        if word == "-c" and i + 1 < len(words):
            setting = words[i + 1]
        elif word.startswith(("--", "-c")) and len(word) > 2:
            setting = word[2:]
        else:
            continue
        name, _, value = setting.partition("=")
        yield name, value


# On the first connection: is a tenant set from the start, and which role or database
# defaults set it (those that apply to this login role in this database), as the ALTER
# statements that remove them. pg_db_role_setting is readable by every role.
_DEFAULT_TENANT = f"""
SELECT session_user::text AS login,
       coalesce(current_setting('{TENANT_SETTING}', true), '') <> '' AS is_set,
       ARRAY(
         SELECT 'ALTER ' || CASE
             WHEN s.setrole = 0 AND s.setdatabase = 0 THEN 'ROLE ALL'
             WHEN s.setrole = 0 THEN 'DATABASE ' || quote_ident(current_database()::text)
             WHEN s.setdatabase = 0 THEN 'ROLE ' || quote_ident(session_user::text)
             ELSE 'ROLE ' || quote_ident(session_user::text) || ' IN DATABASE '
                  || quote_ident(current_database()::text)
           END || ' RESET {TENANT_SETTING}'
         FROM pg_db_role_setting AS s
         WHERE s.setrole IN (0, (SELECT oid FROM pg_roles WHERE rolname = session_user))
           AND s.setdatabase IN (0, (SELECT oid FROM pg_database
                                     WHERE datname = current_database()))
           AND EXISTS (SELECT FROM unnest(s.setconfig) AS c
                       WHERE lower(split_part(c, '=', 1)) = '{TENANT_SETTING}'
                         AND c NOT LIKE '%=')
         ORDER BY s.setrole DESC, s.setdatabase DESC
       ) AS resets
"""


def _refuse_default_tenant(found: Any) -> None:
    """RowSecurityError when the first session started with a tenant, or a role or
    database default would give one: with the ALTER ... RESET statements to run."""
    role, resets = found["login"], list(found["resets"])
    if resets:
        how = f"by default: as an administrator, run {'; '.join(resets)}"
    elif found["is_set"]:
        how = (
            "by the connection itself (a pg_service.conf entry's options, or the pool's "
            "init or setup callback): remove it from there"
        )
    else:
        return
    raise RowSecurityError(
        f"role {role!r} starts its sessions with {TENANT_SETTING} set {how}. A default "
        f"tenant: through this pool a query run outside tenant_transaction would read and "
        f"write that tenant's rows instead of none, and migrate-credentials refuses the role "
        f"(docs/security.md: never a role or database default).",
        role=role,
    )


__all__ = ["create_pool", "tenant_transaction"]  # tenant_transaction: where it was first

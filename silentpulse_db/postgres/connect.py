"""Connecting to PostgreSQL with the one retry policy, and deciding what a failure means.

Two decisions live here and nowhere else:

- :func:`is_transient`: may this failure to connect pass by itself (the server
  starting, refusing, restarting)? Only those are retried.
- :func:`is_connection_lost`: did an open connection go away (backend
  terminated, server shut down, socket reset), as opposed to a failing statement?
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

import asyncpg

from ..defaults import (
    APPLICATION_NAME,
    CONNECT_ATTEMPTS,
    CONNECT_TIMEOUT,
    CONNECT_WAIT,
    ENGINE_SESSION_SETTINGS,
)
from ..errors import ConfigurationError, DatabaseConnectionError, SilentPulseDBError
from .dsn import connection_dsn, redact, validate_dsn
from .pooler import (
    SHARED_BACKEND_ERRORS,
    behind_a_pooler,
    pooling_error,
    pooling_mode,
    refuse_without_session,
    shared,
)
from .tls import certificate_failure, missing_tls_file, tls_setting

logger = logging.getLogger("silentpulse_db.postgres")

# SQLSTATEs that a starting, restarting or busy server answers with.
_TRANSIENT_SQLSTATES = frozenset(
    {
        "57P03",  # cannot_connect_now: "the database system is starting up"
        "53300",  # too_many_connections
        "53400",  # configuration_limit_exceeded
        "57P01",  # admin_shutdown (server restarting)
        "08000",  # connection_exception
        "08001",
        "08006",
    }
)


def is_transient(exc: BaseException) -> bool:
    """True for failures to connect that may pass by themselves: refused, reset, starting up.

    A setting that cannot work (an sslmode the server refuses, a missing
    certificate, a bad option, a wrong password, a missing database or role)
    is permanent: retrying it would only delay the error.
    """
    if isinstance(exc, DatabaseConnectionError):
        return exc.transient
    if isinstance(exc, (asyncpg.exceptions.ClientConfigurationError, ssl.SSLError)):
        return False
    if isinstance(exc, ConnectionError) and "rejected SSL upgrade" in str(exc):
        return False  # the server answered: it does not do SSL
    if isinstance(exc, asyncpg.PostgresError):
        return getattr(exc, "sqlstate", None) in _TRANSIENT_SQLSTATES
    if isinstance(exc, asyncpg.exceptions.ConnectionDoesNotExistError):
        return True
    # OSError covers refused/reset connections, a socket file not there yet and
    # socket.gaierror (a host name not resolvable yet, e.g. a container starting).
    return isinstance(exc, (OSError, asyncio.TimeoutError, asyncpg.InterfaceError))


def is_connection_lost(exc: BaseException) -> bool:
    """True when an open connection went away, rather than a statement failing on it."""
    if isinstance(exc, DatabaseConnectionError):
        return exc.transient
    if isinstance(
        exc,
        (
            asyncpg.exceptions.ConnectionDoesNotExistError,
            asyncpg.exceptions.AdminShutdownError,  # pg_terminate_backend, fast shutdown
            asyncpg.exceptions.CrashShutdownError,
            asyncpg.InterfaceError,  # "connection is closed"
        ),
    ):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        return str(getattr(exc, "sqlstate", "")).startswith(("57P", "08"))
    return isinstance(exc, OSError)  # ConnectionError is an OSError


def describe(exc: BaseException, *dsns: str) -> str:
    """A one-line reason without secrets (any password of ``dsns`` scrubbed too)."""
    text = " ".join((str(exc) or type(exc).__name__).split())
    return redact(f"{type(exc).__name__}: {text}", *dsns)


# What the library's own work needs of a connection (docs/operations.md, 'Connection
# poolers'), for PoolingModeError's message.
LIBRARY_NEEDS_A_SESSION_BY_DEFAULT = (
    "the library's own work sets its limits on its session (behind this pooler a SET "
    "would stay on a server connection that then serves the application) and holds "
    "session state (locks, cursors, LISTEN)"
)


async def connect(
    dsn: str,
    *,
    attempts: int = CONNECT_ATTEMPTS,
    wait: float = CONNECT_WAIT,
    application_name: str = APPLICATION_NAME,
    session_settings: Mapping[str, str] | None = ENGINE_SESSION_SETTINGS,
    statement_cache_size: int = 100,
    need: str = LIBRARY_NEEDS_A_SESSION_BY_DEFAULT,
) -> Any:
    """Open an asyncpg connection, retrying transient failures ``attempts`` times ``wait`` s apart.

    Permanent failures (bad password, unknown database, malformed DSN) raise at
    once. Nothing logged or raised contains the DSN's password.

    ``session_settings`` are SET once connected (default: the library's own,
    defaults.ENGINE_SESSION_SETTINGS, whatever the role or database sets): PgBouncer
    refuses settings sent at start-up, application_name aside. Behind a pooler that
    keeps no session they are not set: PoolingModeError says ``need``, what needs
    the session (:func:`settle`). None: set nothing, check nothing (a caller that
    does both in a query of its own). ``statement_cache_size``: asyncpg's.
    golang-migrate's ``x-`` options are taken out of ``dsn`` (dsn.connection_dsn).
    """
    dsn = connection_dsn(dsn)
    validate_dsn(dsn)
    if attempts < 1:
        raise ConfigurationError(f"attempts must be at least 1, got {attempts}")
    settings = {"application_name": application_name}
    try:
        # A plain loop, not tenacity: importing it would cost every start-up (the CLI's
        # included) ~5 ms for a retry that rarely happens (bench/bench_startup_tricks.py).
        for attempt in range(1, attempts + 1):
            try:
                conn = await asyncpg.connect(
                    dsn,
                    timeout=CONNECT_TIMEOUT,
                    server_settings=settings,
                    statement_cache_size=statement_cache_size,
                )
                break
            except Exception as exc:
                if attempt == attempts or not is_transient(exc) or missing_tls_file(exc, dsn):
                    raise
                logger.warning(
                    "database not reachable yet (attempt %d of %d): %s; retrying in %.1fs",
                    attempt,
                    attempts,
                    describe(exc, dsn),
                    wait,
                )
            await asyncio.sleep(wait)
    except BaseException as exc:
        if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
            raise
        raise connect_error(exc, dsn, attempts=attempts) from None
    if session_settings:
        try:
            await settle(conn, dsn, session_settings, need=need)
        except BaseException:
            conn.terminate()
            raise
    return conn


def set_config_sql(settings: Mapping[str, str]) -> str:
    """One statement that sets each of ``settings`` for the session (literals: the
    values are the library's own, from defaults.py)."""
    return f"SELECT {_set_config_calls(settings)}"


def _set_config_calls(settings: Mapping[str, str]) -> str:
    return ", ".join(f"set_config('{name}', '{value}', false)" for name, value in settings.items())


def on_own_backend(conn: Any, settings: Mapping[str, str]) -> str:
    """Select-list items: the backend's pid (``backend_pid``), and ``settings`` set only
    if that backend is the one ``conn`` started with (no pooler in between).

    Behind a transaction pooler a session SET would stay on a server connection that
    then serves other clients: the application's would lose their own limits.
    """
    return (
        f"pg_backend_pid() AS backend_pid, CASE WHEN pg_backend_pid() = "
        f"{int(conn.get_server_pid())} THEN concat({_set_config_calls(settings)}) END "
        f"AS settings"
    )


async def settle(
    conn: Any, dsn: str, settings: Mapping[str, str], *, need: str, row: Any = None
) -> bool:
    """``settings`` on ``conn``'s session; whether a (session) pooler is in between.

    ``row``: the caller's query's result with :func:`on_own_backend`'s items, if it
    asked them already (one round trip for a direct connection, the usual case).
    Behind a pooler, the settings are applied once :func:`pooler.pooling_mode` says it
    keeps a session, else PoolingModeError says ``need``.
    """
    if row is None:
        try:
            row = await conn.fetchrow(f"SELECT {on_own_backend(conn, settings)}")
        except SHARED_BACKEND_ERRORS:  # another client's statement on this new backend
            raise pooling_error(await shared(checking_connections(dsn)), dsn, need=need) from None
    if not behind_a_pooler(conn, row["backend_pid"]):
        return False
    mode = await pooling_mode(conn, row["backend_pid"], checking_connections(dsn))
    refuse_without_session(mode, dsn, need=need)
    await conn.execute(set_config_sql(settings))
    return True


def checking_connections(dsn: str) -> Callable[[], Awaitable[Any]]:
    """What :func:`pooler.pooling_mode` probes with: one attempt, no statement cache
    (its named statements collide on shared server connections), nothing set."""
    return partial(connect, dsn, attempts=1, session_settings=None, statement_cache_size=0)


def connect_error(exc: BaseException, dsn: str, *, attempts: int = 1) -> SilentPulseDBError:
    """The typed error for ``exc``, a failure to connect to ``dsn`` after ``attempts``."""
    shown = redact(dsn, dsn)
    missing = missing_tls_file(exc, dsn)
    if missing:
        return ConfigurationError(redact(missing, dsn))
    # Before ValueError: ssl.SSLCertVerificationError is one (and an OSError), but it is
    # the server's certificate that failed, not the DSN that could not be parsed.
    if isinstance(exc, ssl.SSLCertVerificationError):
        return DatabaseConnectionError(
            f"could not connect to {shown}: {redact(certificate_failure(exc, dsn), dsn)}"
        )
    if isinstance(exc, ValueError):
        # asyncpg's DSN parser: bad sslmode, bad port, no root certificate for verify-ca...
        return ConfigurationError(f"invalid DSN {shown}: {redact(str(exc), dsn)}")
    if is_transient(exc):
        tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
        return DatabaseConnectionError(
            f"could not connect to {shown} after {tries}: {describe(exc, dsn)}", transient=True
        )
    hint = ""
    if "rejected SSL upgrade" in str(exc):
        hint = (
            f"; the server does not accept SSL, which sslmode={tls_setting(dsn, 'sslmode')[1]} "
            "requires: enable ssl on the server, or use sslmode=prefer or disable"
        )
    return DatabaseConnectionError(f"could not connect to {shown}: {describe(exc, dsn)}{hint}")


async def close_quietly(conn: Any) -> None:
    """Close ``conn``; if the server is gone, drop the socket without a goodbye."""
    if not conn.is_closed():
        try:
            await conn.close(timeout=5)
        except Exception:
            conn.terminate()


async def rollback(conn: Any) -> None:
    """End the connection's open transaction, if any (a failed COMMIT has ended it
    already); a lost connection needs none: the server rolls back."""
    if not conn.is_in_transaction():
        return
    try:
        await conn.execute("ROLLBACK")
    except Exception as exc:
        if not is_connection_lost(exc):
            raise

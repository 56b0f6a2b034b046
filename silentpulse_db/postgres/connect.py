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
from typing import Any

import asyncpg

from ..defaults import APPLICATION_NAME, CONNECT_ATTEMPTS, CONNECT_TIMEOUT, CONNECT_WAIT
from ..errors import ConfigurationError, DatabaseConnectionError
from .dsn import redact, validate_dsn

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


async def connect(
    dsn: str,
    *,
    attempts: int = CONNECT_ATTEMPTS,
    wait: float = CONNECT_WAIT,
    application_name: str = APPLICATION_NAME,
    server_settings: dict[str, str] | None = None,
) -> Any:
    """Open an asyncpg connection, retrying transient failures ``attempts`` times ``wait`` s apart.

    Permanent failures (bad password, unknown database, malformed DSN) raise at
    once. Nothing logged or raised contains the DSN's password.
    """
    validate_dsn(dsn)
    if attempts < 1:
        raise ConfigurationError(f"attempts must be at least 1, got {attempts}")
    settings = {"application_name": application_name, **(server_settings or {})}
    try:
        # A plain loop, not tenacity: importing it would cost every start-up (the CLI's
        # included) ~5 ms for a retry that rarely happens (bench/bench_startup_tricks.py).
        for attempt in range(1, attempts + 1):
            try:
                return await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT, server_settings=settings)
            except Exception as exc:
                if attempt == attempts or not is_transient(exc):
                    raise
                logger.warning(
                    "database not reachable yet (attempt %d of %d): %s; retrying in %.1fs",
                    attempt,
                    attempts,
                    describe(exc, dsn),
                    wait,
                )
            await asyncio.sleep(wait)
    except ValueError as exc:
        # asyncpg's DSN parser: bad sslmode, bad port, ...
        raise ConfigurationError(
            f"invalid DSN {redact(dsn, dsn)}: {redact(str(exc), dsn)}"
        ) from None
    except BaseException as exc:
        if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
            raise
        if is_transient(exc):
            tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
            raise DatabaseConnectionError(
                f"could not connect to {redact(dsn, dsn)} after {tries}: {describe(exc, dsn)}",
                transient=True,
            ) from None
        hint = (
            "; the server does not accept SSL: use sslmode=prefer or disable, or enable SSL"
            if "rejected SSL upgrade" in str(exc)
            else ""
        )
        raise DatabaseConnectionError(
            f"could not connect to {redact(dsn, dsn)}: {describe(exc, dsn)}{hint}"
        ) from None
    raise AssertionError("unreachable")  # pragma: no cover


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

"""Connecting to PostgreSQL, retrying only what passes as the server starts."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_fixed,
)

from .dsn import redact, validate_dsn
from .errors import ConfigurationError, DatabaseConnectionError

logger = logging.getLogger("silentpulse_db.connect")

APPLICATION_NAME = "silentpulse-db"
CONNECT_TIMEOUT = 10.0

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
    """True for failures that may pass by themselves: refused, reset, unresolvable, starting up."""
    if isinstance(exc, asyncpg.PostgresError):
        return getattr(exc, "sqlstate", None) in _TRANSIENT_SQLSTATES
    if isinstance(exc, asyncpg.exceptions.ConnectionDoesNotExistError):
        return True
    # OSError covers refused/reset connections, a socket file not there yet and
    # socket.gaierror (a host name not resolvable yet, e.g. a container starting).
    return isinstance(exc, (OSError, asyncio.TimeoutError, asyncpg.InterfaceError))


def describe(exc: BaseException) -> str:
    """A one-line reason without secrets."""
    text = str(exc) or type(exc).__name__
    return redact(f"{type(exc).__name__}: {text}")


async def connect(
    dsn: str,
    *,
    attempts: int = 30,
    wait: float = 2.0,
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

    def log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        logger.warning(
            "database not reachable yet (attempt %d of %d): %s; retrying in %.1fs",
            state.attempt_number,
            attempts,
            describe(exc) if exc else "unknown",
            wait,
        )

    retrying = AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_fixed(wait),
        retry=retry_if_exception(is_transient),
        before_sleep=log_retry,
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                return await asyncpg.connect(
                    dsn,
                    timeout=CONNECT_TIMEOUT,
                    server_settings={
                        "application_name": application_name,
                        **(server_settings or {}),
                    },
                )
    except ValueError as exc:
        # asyncpg's DSN parser: bad sslmode, bad port, ...
        raise ConfigurationError(f"invalid DSN {redact(dsn)}: {redact(str(exc))}") from None
    except BaseException as exc:
        if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
            raise
        if is_transient(exc):
            raise DatabaseConnectionError(
                f"could not connect to {redact(dsn)} after {attempts} attempts: {describe(exc)}",
                transient=True,
            ) from None
        raise DatabaseConnectionError(
            f"could not connect to {redact(dsn)}: {describe(exc)}"
        ) from None
    raise AssertionError("unreachable")  # pragma: no cover

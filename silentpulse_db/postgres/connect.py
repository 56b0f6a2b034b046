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
from typing import Any, NamedTuple

import asyncpg

from ..defaults import (
    APPLICATION_NAME,
    CONNECT_TIMEOUT,
    ENGINE_SESSION_SETTINGS,
)
from ..errors import ConfigurationError, DatabaseConnectionError, SilentPulseDBError
from ..settings import DEFAULT_CONNECT, ONE_ATTEMPT, ConnectRetry
from .dsn import connection_dsn, redact, validate_dsn
from .pooler import SHARED_BACKEND_ERRORS, Pooling, pooling_error, pooling_mode
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

# A caller's own question in the session's first query: called with the connection and
# the select-list items settling needs (:func:`_on_own_backend`), it returns the row of
# one query that selects them too.
FirstQuery = Callable[[Any, str], Awaitable[Any]]


class Settled(NamedTuple):
    """A connection, its session settled; what is in front of PostgreSQL (None: not
    asked); the row of the caller's first query, if it gave one."""

    conn: Any
    pooling: Pooling | None
    row: Any = None


async def connect(
    dsn: str,
    retry: ConnectRetry = DEFAULT_CONNECT,
    *,
    application_name: str = APPLICATION_NAME,
    session_settings: Mapping[str, str] | None = ENGINE_SESSION_SETTINGS,
    statement_cache_size: int = 100,
    need: str = LIBRARY_NEEDS_A_SESSION_BY_DEFAULT,
) -> Any:
    """Open an asyncpg connection, retrying transient failures as ``retry`` says.

    Permanent failures (bad password, unknown database, malformed DSN) raise at
    once. Nothing logged or raised contains the DSN's password.

    ``session_settings`` are SET once connected (default: the library's own,
    defaults.ENGINE_SESSION_SETTINGS, whatever the role or database sets): PgBouncer
    refuses settings sent at start-up, application_name aside. Behind a pooler that
    keeps no session they are not set: PoolingModeError says ``need``, what needs
    the session (:func:`connect_settled`). None: set nothing, check nothing.
    ``statement_cache_size``: asyncpg's. golang-migrate's ``x-`` options are taken
    out of ``dsn`` (dsn.connection_dsn).
    """
    settled = await connect_settled(
        dsn,
        session_settings,
        need=need,
        retry=retry,
        application_name=application_name,
        statement_cache_size=statement_cache_size,
    )
    return settled.conn


async def connect_settled(
    dsn: str,
    session_settings: Mapping[str, str] | None,
    *,
    need: str,
    retry: ConnectRetry = DEFAULT_CONNECT,
    application_name: str = APPLICATION_NAME,
    statement_cache_size: int = 100,
    first: FirstQuery | None = None,
) -> Settled:
    """Connect, settle the session, and learn what is in front of PostgreSQL, in one pass:

    1. connect, retrying transient failures as ``retry`` says;
    2. one query: the backend's pid, ``session_settings`` set if that backend is the one the
       connection started with, and the caller's own question (``first``) beside them;
    3. the pid is the start-up key: a direct connection, settled. Else a pooler (PgBouncer
       answers with a key of its own), whose mode pooler.pooling_mode tells: one that
       keeps no session is PoolingModeError saying ``need``; one that does gets
       ``session_settings`` now.

    ``session_settings`` None: steps 2 and 3 are skipped (nothing set, nothing checked).
    """
    dsn = connection_dsn(dsn)
    validate_dsn(dsn)
    if retry.attempts < 1:
        raise ConfigurationError(f"attempts must be at least 1, got {retry.attempts}")
    conn = await _open(dsn, retry, application_name, statement_cache_size)
    if not session_settings:
        return Settled(conn, None)
    try:
        own = _on_own_backend(conn, session_settings)
        row = None if first is None else await _unless_shared(first(conn, own))
        # Without the caller's row (none asked, or its query met another client's statement
        # on a server connection a pooler gave us): the items alone. None again: shared.
        asked = row if row is not None else await _unless_shared(conn.fetchrow(f"SELECT {own}"))
        pid = None if asked is None else asked["backend_pid"]
        if pid is not None and pid == conn.get_server_pid():
            pooling = Pooling.DIRECT  # the start-up key is the backend's own: settled above
        else:  # a pooler's key: which mode (one probe connection, opened here)
            opener = partial(_open, dsn, ONE_ATTEMPT, APPLICATION_NAME, 0)
            pooling = await pooling_mode(conn, opener, pid=pid)
            if not pooling.keeps_session:
                raise pooling_error(pooling, dsn, need=need)
            await conn.execute(set_config_sql(session_settings))
        if first is not None and row is None:  # a session kept, yet its backend was shared
            row = await first(conn, own)
    except BaseException:
        conn.terminate()
        raise
    return Settled(conn, pooling, row)


async def _open(
    dsn: str, retry: ConnectRetry, application_name: str, statement_cache_size: int
) -> Any:
    """An asyncpg connection to ``dsn`` (validated), retrying transient failures; the
    probe connections of the pooling check are opened here too (one attempt, asyncpg's
    statement cache off: its named statements collide on shared server connections)."""
    startup = {"application_name": application_name}
    attempts, wait = retry
    attempt = 1
    try:
        # A plain loop, not tenacity: importing it would cost every start-up (the CLI's
        # included) ~5 ms for a retry that rarely happens (bench/bench_startup_tricks.py).
        while True:
            try:
                return await asyncpg.connect(
                    dsn,
                    timeout=CONNECT_TIMEOUT,
                    server_settings=startup,
                    statement_cache_size=statement_cache_size,
                )
            except Exception as exc:
                if attempt >= attempts or not is_transient(exc) or missing_tls_file(exc, dsn):
                    raise
                logger.warning(
                    "database not reachable yet (attempt %d of %d): %s; retrying in %.1fs",
                    attempt,
                    attempts,
                    describe(exc, dsn),
                    wait,
                )
            await asyncio.sleep(wait)
            attempt += 1
    except BaseException as exc:
        if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
            raise
        raise connect_error(exc, dsn, attempts=attempts) from None


async def _unless_shared(query: Awaitable[Any]) -> Any:
    """``query``'s row; None where it met another client's statement on a server
    connection a pooler gave this new connection (asyncpg's named statements collide)."""
    try:
        return await query
    except SHARED_BACKEND_ERRORS:
        return None


def set_config_sql(session_settings: Mapping[str, str]) -> str:
    """One statement that sets each of ``session_settings`` for the session (literals: the
    values are the library's own, from defaults.py)."""
    return f"SELECT {_set_config_calls(session_settings)}"


def _set_config_calls(session_settings: Mapping[str, str]) -> str:
    return ", ".join(
        f"set_config('{name}', '{value}', false)" for name, value in session_settings.items()
    )


def _on_own_backend(conn: Any, session_settings: Mapping[str, str]) -> str:
    """Select-list items: the backend's pid (``backend_pid``), and ``session_settings`` set only
    if that backend is the one ``conn`` started with (no pooler in between).

    Behind a transaction pooler a session SET would stay on a server connection that
    then serves other clients: the application's would lose their own limits.
    """
    return (
        f"pg_backend_pid() AS backend_pid, CASE WHEN pg_backend_pid() = "
        f"{int(conn.get_server_pid())} THEN concat({_set_config_calls(session_settings)}) END "
        f"AS settings"
    )


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

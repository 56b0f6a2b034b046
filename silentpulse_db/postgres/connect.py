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
import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg

from ..defaults import (
    APPLICATION_NAME,
    CONNECT_ATTEMPTS,
    CONNECT_TIMEOUT,
    CONNECT_WAIT,
    ENGINE_SESSION_SETTINGS,
)
from ..errors import ConfigurationError, DatabaseConnectionError, SilentPulseDBError
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
    session_settings: Mapping[str, str] | None = ENGINE_SESSION_SETTINGS,
    statement_cache_size: int = 100,
) -> Any:
    """Open an asyncpg connection, retrying transient failures ``attempts`` times ``wait`` s apart.

    Permanent failures (bad password, unknown database, malformed DSN) raise at
    once. Nothing logged or raised contains the DSN's password.

    ``session_settings`` are SET once connected (default: the library's own,
    defaults.ENGINE_SESSION_SETTINGS, whatever the role or database sets): PgBouncer
    refuses settings sent at start-up, application_name aside. None: set nothing
    (a caller that sets them in a query of its own). ``statement_cache_size``:
    asyncpg's (0 behind a transaction pooler).
    """
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
                if attempt == attempts or not is_transient(exc) or _missing_tls_file(exc, dsn):
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
            await conn.execute(set_config_sql(session_settings))
        except BaseException:
            conn.terminate()
            raise
    return conn


def set_config_sql(settings: Mapping[str, str]) -> str:
    """One statement that sets each of ``settings`` for the session (literals: the
    values are the library's own, from defaults.py)."""
    calls = ", ".join(f"set_config('{name}', '{value}', false)" for name, value in settings.items())
    return f"SELECT {calls}"


def connect_error(exc: BaseException, dsn: str, *, attempts: int = 1) -> SilentPulseDBError:
    """The typed error for ``exc``, a failure to connect to ``dsn`` after ``attempts``."""
    shown = redact(dsn, dsn)
    missing = _missing_tls_file(exc, dsn)
    if missing:
        return ConfigurationError(redact(missing, dsn))
    # Before ValueError: ssl.SSLCertVerificationError is one (and an OSError), but it is
    # the server's certificate that failed, not the DSN that could not be parsed.
    if isinstance(exc, ssl.SSLCertVerificationError):
        return DatabaseConnectionError(
            f"could not connect to {shown}: {redact(_certificate_failure(exc, dsn), dsn)}"
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
            f"; the server does not accept SSL, which sslmode={_tls_setting(dsn, 'sslmode')[1]} "
            "requires: enable ssl on the server, or use sslmode=prefer or disable"
        )
    return DatabaseConnectionError(f"could not connect to {shown}: {describe(exc, dsn)}{hint}")


# The DSN parameters naming a file asyncpg opens, and the variable it reads when absent.
_TLS_FILE_VARIABLES = {
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL",
}
_DEFAULT_ROOTCERT = "~/.postgresql/root.crt"
_NAME_MISMATCH = frozenset({62, 64})  # X509_V_ERR_HOSTNAME_MISMATCH, ..._IP_ADDRESS_MISMATCH
_OUT_OF_DATE = frozenset({9, 10})  # X509_V_ERR_CERT_NOT_YET_VALID, ..._CERT_HAS_EXPIRED


def _tls_setting(dsn: str, name: str) -> tuple[str, str]:
    """Where ``name`` comes from (the DSN's parameter, or its PG* variable) and its value
    ("" if neither sets it; sslmode then defaults to prefer, as asyncpg's does)."""
    try:
        query = parse_qs(urlsplit(dsn).query)
    except ValueError:
        query = {}
    if query.get(name):
        return name, query[name][-1]
    variable = "PGSSLMODE" if name == "sslmode" else _TLS_FILE_VARIABLES[name]
    if os.environ.get(variable):
        return f"${variable}", os.environ[variable]
    return name, "prefer" if name == "sslmode" else ""


def _missing_tls_file(exc: BaseException, dsn: str) -> str | None:
    """Why ``exc`` is a TLS file that is not there, naming its setting; None if it is not.

    validate_dsn checked the files the DSN names, but asyncpg also reads them from the
    PGSSL* variables, and takes libpq's ``sslrootcert=system`` for a file name. asyncpg
    then raises a bare FileNotFoundError, which a Unix socket not there yet raises too:
    without this it would be retried for a minute and reported as unreachable.
    """
    if not isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return None
    for name in _TLS_FILE_VARIABLES:
        setting, value = _tls_setting(dsn, name)
        if value == "system":
            return (
                f"{setting}=system (the system's CA store, as libpq reads it) is not supported "
                "by asyncpg, which opens a file of that name: give the CA bundle's path, "
                "e.g. sslrootcert=/etc/ssl/certs/ca-certificates.crt"
            )
        if value and not Path(value).expanduser().is_file():
            return f"{setting}={value!r} names a file that does not exist"
    return None


def _certificate_failure(exc: ssl.SSLCertVerificationError, dsn: str) -> str:
    """What failed when the server's certificate was checked, and what to change."""
    sslmode = _tls_setting(dsn, "sslmode")[1]
    setting, rootcert = _tls_setting(dsn, "sslrootcert")
    trusted = f"{setting}={rootcert}" if rootcert else _DEFAULT_ROOTCERT
    # getattr: ssl sets these on the errors it raises, not on one made by hand.
    code = getattr(exc, "verify_code", None)
    reason = str(getattr(exc, "verify_message", None) or exc).rstrip(".")
    if code in _NAME_MISMATCH:
        fix = (
            "connect by a host name that the certificate names, or use sslmode=verify-ca "
            "(checks who signed the certificate, not the name)"
        )
    elif code in _OUT_OF_DATE:
        fix = "renew the server's certificate (or check the clocks)"
    elif sslmode == "require":
        # asyncpg, like libpq, verifies the CA under require once a root certificate is set.
        fix = (
            f"with a root certificate, sslmode=require verifies it as verify-ca does: set "
            f"sslrootcert to the certificate of the CA that signed the server's, or remove "
            f"{trusted} to encrypt without verifying the server"
        )
    else:
        fix = (
            "set sslrootcert to the certificate of the CA that signed the server's (the "
            "server's own, if it is self-signed), or use sslmode=require to encrypt without "
            "verifying the server"
        )
    return (
        f"TLS certificate verification failed (sslmode={sslmode}, root certificate from "
        f"{trusted}): {reason}; {fix}"
    )


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

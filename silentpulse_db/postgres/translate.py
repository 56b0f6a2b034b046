"""Where driver errors become this library's errors.

Public functions run inside :func:`typed_errors`: whatever asyncpg or the
socket raises there leaves as a :class:`SilentPulseDBError` subclass with a
one-line reason and what to do. A refused privilege names the role, the object
and the privilege it needs, with the GRANT that gives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import re
import ssl
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from ..errors import (
    CommitOutcomeUnknownError,
    DatabaseError,
    DatabaseUnavailableError,
    PermissionDeniedError,
    SilentPulseDBError,
)
from .connect import describe, is_connection_lost
from .dsn import redact

# Patterns as text, compiled (and cached by re) when a permission error needs them.
_FOR_OBJECT = r"permission denied for (schema|table|sequence|view|function|database|relation) (\S+)"
_OWNER_OF = r"must be owner of (\w+(?: \w+)?) (\S+)"
_CREATE_DATABASE = r"permission denied to create database"
_EXTENSION = r'permission denied to create extension "?([^"\s]+)"?'


def role_of(dsn: str) -> str:
    """The role a DSN logs in as (libpq's default: the OS user)."""
    try:
        user = urlsplit(dsn).username
    except ValueError:
        user = None
    if user:
        return user
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "<the default role>"


def permission_denied(message: str, *, role: str, doing: str) -> PermissionDeniedError:
    """Turn a server's "permission denied" into who needs what, and how to grant it."""
    if match := re.search(_FOR_OBJECT, message):
        kind, name = match[1], match[2]
        if kind == "schema":
            # Creating objects needs CREATE; merely using them, USAGE. A scratch database
            # (check, baseline, drift) is where the files' schema is created: both.
            privilege = (
                "CREATE, USAGE" if "scratch" in doing else "CREATE" if "creat" in doing else "USAGE"
            )
        elif kind in ("table", "relation", "view"):
            kind, privilege = "table", "SELECT, INSERT, UPDATE, DELETE"
        elif kind == "sequence":
            privilege = "USAGE, SELECT"
        elif kind == "function":
            privilege = "EXECUTE"
        else:
            privilege = "CONNECT, CREATE"
        target = f"{kind} {name}"
        fix = f"GRANT {privilege} ON {kind.upper()} {name} TO {role}"
        if "scratch" in doing:
            fix += " in the scratch database"
    elif match := re.search(_OWNER_OF, message):
        privilege, target = "ownership", f"{match[1]} {match[2]}"
        fix = f"run as the owner of {target} (or a member of its owning role)"
    elif re.search(_CREATE_DATABASE, message):
        privilege, target = "CREATEDB", "the server"
        fix = f"ALTER ROLE {role} CREATEDB (or run it as a role that has it)"
    elif match := re.search(_EXTENSION, message):
        privilege, target = "superuser", f"extension {match[1]}"
        fix = "run it as a superuser (prerequisites.sql installs extensions)"
    else:
        privilege, target, fix = "a privilege", "an object", "grant what the message names"
    return PermissionDeniedError(
        f"role {role!r} may not {doing}: {message}. It needs {privilege} on {target}: {fix}.",
        role=role,
        privilege=privilege,
        object=target,
    )


# What a server (or a pooler in front of it) says when it cannot serve now, besides the
# connection exceptions (class 08: PgBouncer's "server login has been failing" among them).
_UNAVAILABLE_SQLSTATES = frozenset(
    {
        "57P01",  # admin_shutdown: a fast shutdown or restart, pg_terminate_backend
        "57P02",  # crash_shutdown: another backend crashed, the server restarts
        "57P03",  # cannot_connect_now: starting up, shutting down, in recovery
        "53300",  # too_many_connections: max_connections, a role's CONNECTION LIMIT
    }
)


def is_unavailable(exc: BaseException, conn: Any = None) -> bool:
    """Does ``exc`` say the database cannot serve now (and a new connection, a moment
    later, may be served): refused, starting up, shutting down, no slot left, a pooler
    that cannot log in to it, a connection that went away?

    ``conn``: the connection a statement failed on. Then a socket error, a timeout or
    asyncpg's "connection is closed" count only once ``conn`` is closed: an OSError of
    the caller's own (an HTTP call inside a transaction) is not the database's. An
    error the server sends about a statement (a constraint, a privilege, a
    serialization failure) never counts."""
    if isinstance(exc, DatabaseUnavailableError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = str(getattr(exc, "sqlstate", "") or "")
        return sqlstate in _UNAVAILABLE_SQLSTATES or sqlstate.startswith("08")
    if isinstance(exc, asyncpg.exceptions.InternalClientError):
        # asyncpg's protocol between two states: the server's FATAL arrived between two
        # statements ("cannot switch to state 15; another operation (2) is in progress").
        return True
    if isinstance(exc, (asyncpg.exceptions.ClientConfigurationError, ssl.SSLError)):
        return False  # a setting or a certificate: it will not pass by itself
    if isinstance(exc, ConnectionError) and "rejected SSL upgrade" in str(exc):
        return False  # the server answered: it does not do SSL
    if isinstance(exc, (OSError, asyncio.TimeoutError, asyncpg.InterfaceError)):
        return conn is None or connection_closed(conn)
    return False


def connection_closed(conn: Any) -> bool:
    """``conn.is_closed()``; True for a pool's connection released already."""
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:  # a pool's connection, released already
        return True


def unavailable_error(
    exc: BaseException,
    *,
    doing: str,
    dsn: str = "",
    committing: bool = False,
    transaction: bool = True,
) -> DatabaseUnavailableError:
    """The typed error for ``exc``, which :func:`is_unavailable` accepted, met while
    trying to ``doing``. ``committing``: COMMIT was in flight, its outcome unknown;
    ``transaction``: ``doing`` is (part of) a transaction, none of which was kept."""
    if isinstance(exc, DatabaseUnavailableError):
        return exc
    sqlstate = getattr(exc, "sqlstate", None) if isinstance(exc, asyncpg.PostgresError) else None
    reason = describe(exc, dsn) if dsn else describe(exc)
    if committing:
        return CommitOutcomeUnknownError(
            f"the database connection was lost while COMMIT was in flight ({doing}): "
            f"{reason}. The transaction may have committed or not: run it again only if "
            f"it is idempotent, or read the data to tell",
            sqlstate=sqlstate,
        )
    kept = ". Nothing of the transaction was kept:" if transaction else ";"
    return DatabaseUnavailableError(
        f"the database is not available, could not {doing}: {reason}{kept} run it again "
        f"once the server is back",
        sqlstate=sqlstate,
    )


def translate(
    exc: BaseException, *, role: str, doing: str, dsn: str = ""
) -> SilentPulseDBError | None:
    """The typed error for a driver or socket failure, or None if it is not one."""
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):
        return permission_denied(
            redact(exc.args[0] if exc.args else str(exc), dsn), role=role, doing=doing
        )
    if is_connection_lost(exc) or is_unavailable(exc):
        return DatabaseUnavailableError(
            f"the connection was lost while trying to {doing}: {describe(exc, dsn)}; run it again",
            sqlstate=getattr(exc, "sqlstate", None)
            if isinstance(exc, asyncpg.PostgresError)
            else None,
        )
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = getattr(exc, "sqlstate", None)
        return DatabaseError(
            f"could not {doing}: {describe(exc, dsn)} (SQLSTATE {sqlstate})", sqlstate=sqlstate
        )
    return None


@contextlib.contextmanager
def typed_errors(dsn: str, doing: str) -> Iterator[None]:
    """Let only SilentPulseDBError out: driver failures are translated, naming ``doing``."""
    try:
        yield
    except SilentPulseDBError:
        raise
    except Exception as exc:
        typed = translate(exc, role=role_of(dsn), doing=doing, dsn=dsn)
        if typed is None:
            raise
        raise typed from None

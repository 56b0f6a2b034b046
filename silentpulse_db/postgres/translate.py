"""Where driver errors become this library's errors.

Public functions run inside :func:`typed_errors`: whatever asyncpg or the
socket raises there leaves as a :class:`SilentPulseDBError` subclass with a
one-line reason and what to do. A refused privilege names the role, the object
and the privilege it needs, with the GRANT that gives it.
"""

from __future__ import annotations

import contextlib
import getpass
import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import asyncpg

from ..errors import (
    DatabaseConnectionError,
    DatabaseError,
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


def translate(
    exc: BaseException, *, role: str, doing: str, dsn: str = ""
) -> SilentPulseDBError | None:
    """The typed error for a driver or socket failure, or None if it is not one."""
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):
        return permission_denied(
            redact(exc.args[0] if exc.args else str(exc), dsn), role=role, doing=doing
        )
    if is_connection_lost(exc):
        return DatabaseConnectionError(
            f"the connection was lost while trying to {doing}: {describe(exc, dsn)}; run it again",
            transient=True,
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

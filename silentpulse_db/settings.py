"""The settings every verb takes, as objects (as httpx takes ``Timeout`` and ``Limits``).

- :class:`ConnectRetry`: how a call waits for a database that is still starting;
- :class:`DDLLimits`: how long a migration statement may wait for a *table* lock, and
  how long a migration that timed out on one is retried.

The wait for the *migration* lock (another runner) is a plain number,
``migration_lock_timeout``. A service builds its settings once and passes the same
objects to every call::

    retry = ConnectRetry(attempts=60, wait=1.0)
    await run_migrations(dsn, connect=retry, ddl=DDLLimits(table_lock_timeout=5))

The keywords these replace (``attempts``, ``wait``, ``lock_timeout``,
``ddl_lock_timeout``, ``ddl_retry_for``) still work until 0.3.0, with a
DeprecationWarning that names the replacement.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

from .defaults import (
    CONNECT_ATTEMPTS,
    CONNECT_WAIT,
    DDL_RETRY_FOR,
    MIGRATION_LOCK_TIMEOUT,
    TABLE_LOCK_TIMEOUT,
)
from .errors import InvalidArgumentError

__all__ = ["ConnectRetry", "DDLLimits"]

# The release in which the deprecated keywords go.
REMOVED_IN = "0.3.0"


def _seconds(owner: str, name: str, value: object, *, none: bool = False) -> None:
    if value is None and none:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise InvalidArgumentError(
            f"{owner}({name}={value!r}): a number of seconds, 0 or more"
            + (", or None" if none else "")
        )


# NamedTuples, not frozen dataclasses: every process that imports the package creates
# both classes, and a dataclass costs ~1 ms to create where a NamedTuple costs 0.07.
# Their values are checked where a verb takes them (settings()).


class ConnectRetry(NamedTuple):
    """How a call waits for a database that is still starting: ``attempts`` connection
    attempts, ``wait`` seconds apart. The defaults wait a minute, for a service started
    beside its database; the CLI makes one attempt unless told."""

    attempts: int = CONNECT_ATTEMPTS
    wait: float = CONNECT_WAIT


class DDLLimits(NamedTuple):
    """How a migration treats the queries on the tables it changes.

    ``table_lock_timeout``: seconds each migration statement may wait for a table lock,
    while every later query on that table queues behind it (0: no limit; None: set
    nothing, the session's own ``lock_timeout`` applies); a file's ``-- silentpulse:
    lock_timeout=...`` wins for its file. ``retry_for``: a migration that timed out is
    rolled back and tried again with backoff for this many seconds in all, then
    TableLockTimeoutError names who held the lock."""

    table_lock_timeout: float | None = TABLE_LOCK_TIMEOUT
    retry_for: float = DDL_RETRY_FOR


def checked_connect(connect: ConnectRetry) -> ConnectRetry:
    """``connect``, or InvalidArgumentError naming the value it does not take."""
    attempts = connect.attempts
    if isinstance(attempts, bool) or not isinstance(attempts, int):
        raise InvalidArgumentError(f"ConnectRetry(attempts={attempts!r}): a whole number")
    if attempts < 1:
        raise InvalidArgumentError(f"ConnectRetry(attempts={attempts}): 1 or more")
    _seconds("ConnectRetry", "wait", connect.wait)
    return connect


def checked_ddl(ddl: DDLLimits) -> DDLLimits:
    _seconds("DDLLimits", "table_lock_timeout", ddl.table_lock_timeout, none=True)
    _seconds("DDLLimits", "retry_for", ddl.retry_for)
    return ddl


DEFAULT_CONNECT = ConnectRetry()
# A connection whose server is known to be up (a scratch database beside the one just
# reached, the test harness's) or whose caller retries in its own way (the listener).
ONE_ATTEMPT = ConnectRetry(attempts=1)
DEFAULT_DDL = DDLLimits()


def milliseconds(seconds: float) -> str:
    """A timeout in ``seconds`` as a PostgreSQL ``SET`` takes it: ``'1500ms'``. PostgreSQL
    keeps whole milliseconds and reads 0 as no limit, so a limit under a millisecond is
    1ms, never 0 (``int()`` made 0.29 s 289ms and 0.4 ms no limit at all)."""
    if seconds <= 0:
        return "'0ms'"
    return f"'{max(round(seconds * 1000), 1)}ms'"


class Settings(NamedTuple):
    """A verb's settings once the deprecated keywords are folded in."""

    connect: ConnectRetry
    migration_lock_timeout: float
    ddl: DDLLimits


# Each deprecated keyword: the replacement the warning names, and where its value goes.
_RENAMED = {
    "attempts": "connect=ConnectRetry(attempts=...)",
    "wait": "connect=ConnectRetry(wait=...)",
    "lock_timeout": "migration_lock_timeout=...",
    "ddl_lock_timeout": "ddl=DDLLimits(table_lock_timeout=...)",
    "ddl_retry_for": "ddl=DDLLimits(retry_for=...)",
}
CONNECTING = ("attempts", "wait")
LOCKING = (*CONNECTING, "lock_timeout")
MIGRATING = (*LOCKING, "ddl_lock_timeout", "ddl_retry_for")


def settings(
    verb: str,
    old: Mapping[str, Any],
    accepted: tuple[str, ...],
    *,
    connect: ConnectRetry = DEFAULT_CONNECT,
    migration_lock_timeout: float = MIGRATION_LOCK_TIMEOUT,
    ddl: DDLLimits = DEFAULT_DDL,
) -> Settings:
    """``verb``'s settings, checked, with the deprecated keywords in ``old`` (a
    ``**kwargs``) folded in, each with a DeprecationWarning pointing at the caller's
    line. A keyword the verb never had is the TypeError Python gives for any other; a
    value a setting does not take, an InvalidArgumentError naming it."""
    for name in old:
        if name not in accepted:
            raise TypeError(f"{verb}() got an unexpected keyword argument {name!r}")
        warnings.warn(
            f"{verb}({name}=...) is deprecated and goes in {REMOVED_IN}: use {_RENAMED[name]}",
            DeprecationWarning,
            stacklevel=3,  # the caller of the verb
        )
    if "attempts" in old or "wait" in old:
        connect = ConnectRetry(old.get("attempts", connect.attempts), old.get("wait", connect.wait))
    if "ddl_lock_timeout" in old or "ddl_retry_for" in old:
        ddl = DDLLimits(
            old.get("ddl_lock_timeout", ddl.table_lock_timeout),
            old.get("ddl_retry_for", ddl.retry_for),
        )
    migration_lock_timeout = old.get("lock_timeout", migration_lock_timeout)
    _seconds(verb, "migration_lock_timeout", migration_lock_timeout)
    return Settings(checked_connect(connect), migration_lock_timeout, checked_ddl(ddl))

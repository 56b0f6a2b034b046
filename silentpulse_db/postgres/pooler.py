"""Is there a connection pooler between us and PostgreSQL, and does it keep a session?

Migrations (a session-level advisory lock, statements that must follow each other
on one backend) and the listener (LISTEN) need a session: one server connection
for the client's whole connection. PgBouncer gives that in ``pool_mode = session``
only; in transaction or statement pooling each transaction may run on another
server connection, and a session lock taken on one stays held there after the
client has gone.

Two checks, the cheap one first:

- PostgreSQL tells a client its backend pid at start-up (BackendKeyData, asyncpg's
  ``get_server_pid()``); PgBouncer answers with a random key of its own. If
  ``pg_backend_pid()`` differs, something sits in between. The caller compares them
  with the pid read in a query it makes anyway (connect.py: the session's first;
  :func:`pooling_of` for an application pool's connection): a direct connection pays
  nothing more.
- :func:`pooling_mode`, only behind a pooler: one more connection (``probe``,
  without asyncpg's statement cache). Does it ever get the caller's backend, and
  does the caller keep its backend while the probe holds a transaction open? In
  session pooling the caller always keeps it and no one else can get it; a
  transaction pooler gives the probe that very backend (PgBouncer reuses the last
  server connection first) or moves the caller, or keeps the caller waiting for a
  server. A statement pooler refuses the probe's transaction outright.

Only one server connection more is needed in session pooling, and every wait is
bounded: a pool that has no server left for the probe (many replicas at once
through a small session pool) must not hold them all up until the pooler's
query_wait_timeout.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from ..errors import PoolingModeError
from .dsn import redact

logger = logging.getLogger("silentpulse_db.postgres")

_PID = "SELECT pg_backend_pid()"

# What a fresh connection's first statement can meet only on a server connection
# that another client used before: asyncpg's named statements collide there.
SHARED_BACKEND_ERRORS = (
    asyncpg.exceptions.DuplicatePreparedStatementError,
    asyncpg.exceptions.InvalidSQLStatementNameError,
)


class Pooling(enum.Enum):
    """How a DSN reaches PostgreSQL."""

    DIRECT = "direct"
    SESSION = "session"  # through a pooler that keeps one server connection per client
    TRANSACTION = "transaction"
    STATEMENT = "statement"

    @property
    def keeps_session(self) -> bool:
        return self in (Pooling.DIRECT, Pooling.SESSION)


async def pooling_mode(
    conn: Any, open_connection: Callable[[], Awaitable[Any]], *, pid: int | None
) -> Pooling:
    """The mode of the pooler ``conn`` reaches PostgreSQL through (its start-up key is
    not its backend's pid, ``pid``; None: its first statement met another client's, on a
    server connection the pooler shares), told with one probe connection from
    ``open_connection``."""
    if pid is None:
        return await _shared(open_connection)
    probe = await open_connection()
    try:
        try:
            first = await probe.fetchval(_PID, timeout=_WAIT)
        except asyncio.TimeoutError:
            return await _without_probe(conn, pid)
        if first == pid:  # our backend, given to another client
            return await _shares_what(probe)
        for _ in range(_ROUNDS):
            mode = await _keeps_backend(conn, pid, probe)
            if mode is Pooling.TRANSACTION:
                return await _shares_what(probe)
            if mode is Pooling.STATEMENT:
                return mode
        return Pooling.SESSION
    finally:
        probe.terminate()  # no goodbye needed; the pooler sees the client go either way


# A transaction pooler gives a client its last server connection back when no other
# client took it meanwhile: each round is one more chance for it to show.
_ROUNDS = 3
# How long the probe may wait for a server connection: a transaction pooler frees
# them at each transaction's end (our other probes' included: each holds one for at
# most _OWN); a full session pool frees one only when a client leaves.
_WAIT = 3.0
# How long ``conn`` may take to answer: in session pooling it owns its server and
# answers at once; a transaction pooler keeps it waiting for one.
_OWN = 1.0


async def _without_probe(conn: Any, pid: int) -> Pooling:
    """The probe got no server connection: a full session pool, where ``conn`` owns its
    server and answers at once, or a busy transaction pool, where it waits (behind the
    probe) or lands elsewhere."""
    if not await _answers_on(conn, pid):
        return Pooling.TRANSACTION
    logger.warning(
        "the connection pooler had no server connection for a second client within %gs, "
        "while this one kept its own: going on as in session pooling (a full pool)",
        _WAIT,
    )
    return Pooling.SESSION


async def _keeps_backend(conn: Any, pid: int, probe: Any) -> Pooling:
    """SESSION if ``conn`` keeps its backend ``pid`` through a round: ``conn`` asks
    (a transaction pooler frees ``pid`` after, the first to be given again), then
    ``probe`` opens a transaction (and does not get ``pid``), then ``conn`` asks again."""
    if not await _answers_on(conn, pid):
        return Pooling.TRANSACTION
    try:
        async with probe.transaction():
            if await probe.fetchval(_PID, timeout=_WAIT) == pid:
                return Pooling.TRANSACTION
            return Pooling.SESSION if await _answers_on(conn, pid) else Pooling.TRANSACTION
    except asyncpg.exceptions.ConnectionDoesNotExistError as exc:
        if _refused_a_transaction(exc):
            return Pooling.STATEMENT
        raise


async def _answers_on(conn: Any, pid: int) -> bool:
    """Whether ``conn`` answers at once from backend ``pid``."""
    try:
        return bool(await conn.fetchval(_PID, timeout=_OWN) == pid)
    except (asyncio.TimeoutError, *SHARED_BACKEND_ERRORS):
        return False  # waiting for a server, or on another client's one


async def _shares_what(probe: Any) -> Pooling:
    """A pooler that shares server connections: does it take transactions (a
    statement pooler closes ``probe``)?"""
    try:
        async with probe.transaction():
            await probe.fetchval(_PID)
    except asyncpg.exceptions.ConnectionDoesNotExistError as exc:
        if _refused_a_transaction(exc):
            return Pooling.STATEMENT
        raise
    return Pooling.TRANSACTION


def _refused_a_transaction(exc: BaseException) -> bool:
    # PgBouncer closes the client: "transaction blocks not allowed in statement pooling
    # mode".
    return "statement pooling" in str(exc)


async def pooling_of(conn: Any, open_connection: Callable[[], Awaitable[Any]]) -> Pooling:
    """How ``conn``, a connection of the caller's (an application pool's), reaches
    PostgreSQL: DIRECT at the cost of one query, else :func:`pooling_mode`."""
    try:
        pid = await conn.fetchval(_PID)
    except SHARED_BACKEND_ERRORS:  # another client's statement on this new backend
        pid = None
    if pid is not None and pid == conn.get_server_pid():  # the backend's own key
        return Pooling.DIRECT
    return await pooling_mode(conn, open_connection, pid=pid)


async def _shared(open_connection: Callable[[], Awaitable[Any]]) -> Pooling:
    """The mode of a pooler known to share server connections (TRANSACTION, or
    STATEMENT if it refuses transactions)."""
    probe = await open_connection()
    try:
        return await _shares_what(probe)
    finally:
        probe.terminate()


def pooling_error(mode: Pooling, dsn: str, *, need: str) -> PoolingModeError:
    """The error for ``mode``, a pooling that keeps no session, and what needs one."""
    unit = "statement" if mode is Pooling.STATEMENT else "transaction"
    return PoolingModeError(
        f"{redact(dsn, dsn)} reaches PostgreSQL through a connection pooler in "
        f"{mode.value} pooling mode (PgBouncer: pool_mode = {mode.value}), where each "
        f"{unit} may run on another server connection: {need}. Connect directly "
        f"to PostgreSQL for this (a DSN to the server, not to the pooler), or through "
        f"a pooler database in session mode (PgBouncer: pool_mode = session on that "
        f"database's line in [databases]); docs/operations.md, 'Connection poolers'.",
        mode=mode.value,
    )

"""Table-lock conflicts of a transactional migration: who is in the way, and the retries.

Each statement of a transactional migration waits at most the lock timeout for
a table lock, so that the application's queries queued behind it are never held
up longer. An attempt that times out (or loses a deadlock) is rolled back and
raises :class:`LockConflict`; the migration is tried again with backoff for
``retry_for`` seconds, each retry logged with who held the lock, and then
TableLockTimeoutError names them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pglast import parser
from tenacity import RetryCallState, retry_if_exception_type

from ...errors import TableLockHolder
from ...postgres.blockers import lock_backoff, table_lock_holders
from ..files.lock_levels import statement_locks, strongest
from ..files.source import MigrationFile
from ..version_table import HISTORY_TABLE, VersionStore
from .error_messages import locked_out

logger = logging.getLogger("silentpulse_db.migrate")


class LockConflict(Exception):
    """One attempt lost a lock conflict (a lock timeout or a deadlock) and was rolled
    back; it is retried."""

    def __init__(self, blockers: list[TableLockHolder], *, deadlock: bool = False) -> None:
        super().__init__("deadlock" if deadlock else "lock timeout")
        self.blockers = blockers
        self.deadlock = deadlock


async def lock_conflict(
    conn: Any, file: MigrationFile, store: VersionStore, *, deadlock: bool
) -> LockConflict:
    """The conflict, naming who holds a lock that conflicts with what ``file`` needs, or
    with the version row and history row written in its transaction (``store``'s)."""
    table = store.table
    wanted: dict[str, list[str]] = {
        table.qualified(): ["ROW EXCLUSIVE"],
        table.qualified(HISTORY_TABLE): ["ROW EXCLUSIVE"],
    }
    try:
        nodes = parser.parse_sql(file.sql)
    except parser.ParseError:
        nodes = ()
    for raw in nodes:
        for lock in statement_locks(raw.stmt):
            wanted.setdefault(lock.relation, []).append(lock.mode)
    need = {relation: strongest(modes) for relation, modes in wanted.items()}
    return LockConflict(await table_lock_holders(conn, need), deadlock=deadlock)


class LockRetries:
    """Tries a migration again while its table locks stay out of reach (see the module's
    doc). ``wait``: how long each statement may wait for a lock, in words."""

    def __init__(self, file: MigrationFile, *, retry_for: float, wait: str, stays_at: str) -> None:
        self.file = file
        self.retry_for = retry_for
        self.wait = wait
        self.stays_at = stays_at

    async def retry(
        self, attempt: Callable[[], Awaitable[None]], first: LockConflict, started: float
    ) -> None:
        """Call ``attempt`` until it succeeds, after ``first``, the conflict the attempt at
        ``started`` (monotonic) lost; TableLockTimeoutError once ``retry_for`` is spent."""
        attempts = 1
        failed: LockConflict | None = first
        retrying = lock_backoff(
            self.retry_for,
            started,
            retry=retry_if_exception_type(LockConflict),
            before_sleep=self._log_retry,
        )
        try:
            async for try_ in retrying:
                with try_:
                    if failed is not None:
                        # The attempt that already failed: tenacity pauses before the next.
                        error, failed = failed, None
                        raise error
                    attempts += 1
                    await attempt()
        except LockConflict as exc:
            raise locked_out(
                self.file,
                attempts=attempts,
                waited=time.monotonic() - started,
                wait=self.wait,
                blockers=exc.blockers,
                stays_at=self.stays_at,
            ) from None

    def _log_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        blockers = error.blockers if isinstance(error, LockConflict) else []
        deadlock = isinstance(error, LockConflict) and error.deadlock
        logger.warning(
            "%s: %s (attempt %d), rolled back; held by: %s; retrying in %.1fs",
            self.file.location,
            "a deadlock with another session (the server chose this migration to cancel)"
            if deadlock
            else f"a table lock stayed out of reach for {self.wait}",
            state.attempt_number,
            "; ".join(map(str, blockers)) or "(released meanwhile)",
            state.upcoming_sleep,
        )

"""The start-up entry point, run_migrations, and the one-off prerequisites and baseline."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from .catalog import snapshot
from .connect import connect
from .errors import BaselineError, MigrationSourceError
from .lock import MigrationLock
from .migrator import Migrator, version_label
from .results import MigrationResult, PrerequisitesResult
from .scratch import scratch_database
from .session import close_quietly, locked_connection, open_session
from .source import MigrationSource, load_source
from .version_table import (
    HISTORY_TABLE,
    HistoryEntry,
    HistoryRecord,
    VersionState,
    ensure_tables,
    read_state,
    read_version,
    write_version,
)

logger = logging.getLogger("silentpulse_db")

OPTIONAL_EXTENSIONS = ("age",)


async def run_migrations(
    dsn: str,
    *,
    source: str | Path | MigrationSource | None = None,
    attempts: int = 30,
    wait: float = 2.0,
    lock_timeout: float = 60.0,
    target: int | None = None,
    strict: bool = False,
) -> MigrationResult:
    """Apply every pending migration; call it before building the service's pool.

    Connects with retries (``attempts`` tries, ``wait`` seconds apart) while the
    server starts. If anything is pending up to ``target``, takes the migration
    lock (waiting at most ``lock_timeout`` seconds), applies it and returns.
    Replicas starting together queue on the lock; the first applies, the rest
    see that nothing is left and return without taking it. An up-to-date
    database is answered without the lock.

    A database ahead of the files (an older replica during a rolling deploy)
    logs a warning and returns; with ``strict=True`` it raises
    DatabaseAheadError, and a changed checksum of an applied file raises
    ChecksumMismatchError instead of a warning.
    """
    migrations = source if isinstance(source, MigrationSource) else load_source(source)
    session = await open_session(dsn, attempts=attempts, wait=wait)
    conn = session.conn
    try:
        migrator = Migrator(conn, migrations)
        # A committed clean version is final (transactional migrations commit
        # with it), so "nothing pending" needs no lock: the usual restart, and
        # replicas that lost the race, answer without queueing.
        settled: tuple[VersionState, dict[int, HistoryEntry]] | None = None

        async def nothing_left(tables_known: bool = False) -> bool:
            nonlocal settled
            if not tables_known and not await conn.fetchval(
                "SELECT to_regclass($1) IS NOT NULL", HISTORY_TABLE
            ):
                return False
            state, history = await read_state(conn)
            if migrator.nothing_to_do(state, target=target):
                settled = (state, history)
            return settled is not None

        if not (session.tables_exist and await nothing_left(tables_known=True)):
            lock = MigrationLock(
                conn, session.keys, timeout=lock_timeout, stop_waiting=nothing_left
            )
            async with lock:
                if lock.acquired:
                    if not session.tables_exist:
                        await ensure_tables(conn)
                    state, history = await read_state(conn)
                    return await _migrate(migrator, state, history, target=target, strict=strict)
        assert settled is not None
        return await _migrate(migrator, *settled, target=target, strict=strict)
    finally:
        await close_quietly(conn)


async def _migrate(
    migrator: Migrator,
    state: VersionState,
    history: Mapping[int, HistoryEntry],
    *,
    target: int | None,
    strict: bool,
) -> MigrationResult:
    """Check the state and apply what is pending (with the lock held if anything is)."""
    await migrator.require_clean(state)
    if migrator.ahead_of_files(state):
        error = migrator.ahead_error(state)
        # Ahead of every file is an older replica (a warning); a version
        # missing from the middle of the set is a broken deploy (an error).
        if strict or not migrator.past_latest_file(state):
            raise error
        logger.warning("%s; not migrating", error)
        return MigrationResult(
            version_before=state.version,
            version_after=state.version,
            database_ahead=True,
            warnings=(str(error),),
        )
    warnings = migrator.verify_checksums(state, history, strict=strict)
    applied = await migrator.apply(migrator.pending_up(state, target=target), "up")
    after = applied[-1].version if applied else state.version
    if applied:
        logger.info(
            "migrated from version %s to %s (%d applied)",
            version_label(state.version),
            version_label(after),
            len(applied),
        )
    else:
        logger.debug("database is up to date at version %s", version_label(state.version))
    return MigrationResult(
        version_before=state.version,
        version_after=after,
        applied=tuple(applied),
        warnings=tuple(warnings),
    )


async def apply_prerequisites(
    dsn: str,
    *,
    source: str | Path | MigrationSource | None = None,
    attempts: int = 30,
    wait: float = 2.0,
    lock_timeout: float = 60.0,
) -> PrerequisitesResult:
    """Run prerequisites.sql (extensions; needs a superuser) once, under the migration lock.

    Optional extensions the server does not have (Apache AGE) are reported in
    the result, not raised.
    """
    migrations = source if isinstance(source, MigrationSource) else load_source(source)
    if migrations.prerequisites is None:
        raise MigrationSourceError(
            f"{migrations.description} has no prerequisites.sql", file=migrations.description
        )
    notices: list[str] = []
    async with locked_connection(
        dsn, attempts=attempts, wait=wait, lock_timeout=lock_timeout, ensure=False
    ) as conn:
        conn.add_log_listener(lambda _c, msg: notices.append(str(getattr(msg, "message", msg))))
        await Migrator(conn, migrations).run_file(migrations.prerequisites)
        installed = await conn.fetch("SELECT extname FROM pg_extension ORDER BY extname")
        missing = await conn.fetch(
            "SELECT n FROM unnest($1::text[]) n "
            "WHERE n NOT IN (SELECT name FROM pg_available_extensions) ORDER BY n",
            list(OPTIONAL_EXTENSIONS),
        )
    result = PrerequisitesResult(
        installed=tuple(r["extname"] for r in installed),
        unavailable_optional=tuple(r["n"] for r in missing),
        notices=tuple(notices),
    )
    for name in result.unavailable_optional:
        logger.info("optional extension %r is not available on this server; skipped", name)
    return result


async def baseline(
    dsn: str,
    *,
    source: str | Path | MigrationSource | None = None,
    attempts: int = 30,
    wait: float = 2.0,
    lock_timeout: float = 60.0,
    verify: bool = True,
) -> MigrationResult:
    """Adopt a database created before migrations: run baseline.sql (version 1, clean).

    With ``verify`` (the default) the database's schema is first compared with
    what the first migration creates on a scratch database (partitions aside),
    and a mismatch is refused with the differences listed.
    """
    migrations = source if isinstance(source, MigrationSource) else load_source(source)
    if migrations.baseline is None:
        raise MigrationSourceError(
            f"{migrations.description} has no baseline.sql", file=migrations.description
        )
    if verify and migrations.migrations:
        differences = await baseline_differences(dsn, migrations, attempts=attempts, wait=wait)
        if differences:
            raise BaselineError(
                f"the database's schema does not match what "
                f"{migrations.migrations[0].up.location} creates; not baselining. "
                f"{len(differences)} difference(s) (expected -> this database):\n"
                + "\n".join(f"- {d}" for d in differences)
            )
    async with locked_connection(
        dsn, attempts=attempts, wait=wait, lock_timeout=lock_timeout
    ) as conn:
        before = await read_version(conn)
        if before.version is not None or before.dirty:
            raise BaselineError(
                f"database already has a migration version ({before}); baseline only adopts an "
                f"unversioned database"
            )
        migrator = Migrator(conn, migrations)
        await migrator.run_file(migrations.baseline)
        after = await read_version(conn)
        if after.version is not None:
            first = migrations.get(after.version)
            # Keep baseline.sql's row; add the history entry beside it.
            await write_version(
                conn,
                after.version,
                after.dirty,
                HistoryRecord(
                    after.version,
                    first.name if first else "baseline",
                    "baseline",
                    first.up.checksum if first else None,
                ),
            )
    logger.info("baselined database at version %s", version_label(after.version))
    return MigrationResult(version_before=None, version_after=after.version)


async def baseline_differences(
    dsn: str, migrations: MigrationSource, *, attempts: int = 30, wait: float = 2.0
) -> list[str]:
    """How ``dsn``'s schema differs from prerequisites + the first migration on a scratch DB."""
    first = migrations.migrations[0]
    async with scratch_database(dsn, prefix="silentpulse_baseline") as scratch:
        migrator = Migrator(scratch, migrations)
        if migrations.prerequisites is not None:
            await migrator.run_file(migrations.prerequisites)
        await ensure_tables(scratch)
        await migrator.apply([first], "up")
        expected = await snapshot(scratch)
    conn = await connect(dsn, attempts=attempts, wait=wait)
    try:
        actual = await snapshot(conn)
    finally:
        await conn.close()
    return expected.without_partitions().diff(actual.without_partitions())

"""The rotation job: v1 -> v2, or every value from the old master key to the new one.

All three credential columns are rewritten in ONE transaction under a
transaction-level advisory lock: either every value moves or none does. Values
stream through a server-side cursor in batches and go back with one
``UPDATE ... FROM unnest(...)`` per batch; every new envelope is opened with the
new key before it is written. Values already under the target key and version
are left alone, so a second run changes nothing.

The dry run reads in a READ ONLY transaction and seals in memory only: no
UPDATE, no row lock, no dead tuple; it works for a read-only role and on a hot
standby, and reaches the same counts (the same Sealer decides).

After the commit, one more count (from the envelopes' headers, nothing
decrypted) finds values that are still not under the new key: rows inserted,
or rewritten by a service still holding the old key, after the job read them.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import asyncpg

from ..crypto.keyring import Keyring
from ..defaults import ROTATION_CONNECT_ATTEMPTS, ROTATION_LOCK_TIMEOUT
from ..errors import CredentialMigrationError
from ..postgres.advisory import advisory_lock_holders
from ..postgres.connect import close_quietly, connect
from ..postgres.translate import typed_errors
from ..settings import ConnectRetry, checked_connect, milliseconds
from .access import (
    FullView,
    full_view,
    lift_force,
    missing_privileges,
    reading_all,
    require_privileges,
    restore_force,
)
from .columns import COLUMNS, CredentialColumn, Problem, count_not_current, problem_lines
from .sealing import Batch, Mode, Sealer, TableReport

logger = logging.getLogger("silentpulse_db.credentials")

# One key for every migrate-credentials run (pg_advisory_xact_lock).
LOCK_KEY = zlib.crc32(b"silentpulse_db/migrate-credentials")
DEFAULT_BATCH = 5000  # rows per fetch and per UPDATE: ~2 MB of records in flight
WRITER_SETTINGS = "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off"


@dataclass
class RotationReport:
    mode: Mode
    dry_run: bool
    target_kid: str
    role: str = ""
    tables: list[TableReport] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    committed: bool = False
    seconds: float = 0.0
    # After the commit: values per column still not under the target key (written
    # meanwhile by services holding the old key). Empty when every value moved.
    left_behind: dict[str, int] = field(default_factory=dict)
    # Dry run: the tables this role could read but not update (the real run needs it).
    cannot_write: list[str] = field(default_factory=list)
    # The tables' owner without BYPASSRLS: FORCE ROW LEVEL SECURITY was lifted in the
    # run's transaction, which held the three tables (ACCESS EXCLUSIVE), dry run too.
    held_tables: bool = False

    @property
    def rewritten(self) -> int:
        return sum(t.rewritten for t in self.tables)

    @property
    def rows(self) -> int:
        return sum(t.rewritten + t.current + t.empty + t.problems for t in self.tables)


Progress = Callable[[str, int, float], None]


# How the job's connections wait for the server, unless told (verify's too).
ROTATION_CONNECT = ConnectRetry(ROTATION_CONNECT_ATTEMPTS)


class _Job(NamedTuple):
    """What every step of one run reads: how to connect, what seals each value, and the
    run's settings (migrate_credentials' arguments). Not the DSN: a tuple's repr shows
    every field, and a DSN may hold a password."""

    retry: ConnectRetry
    sealer: Sealer
    batch_size: int
    lock_timeout: float
    progress: Progress | None

    async def connect(self, dsn: str, application_name: str) -> Any:
        return await connected(dsn, self.retry, application_name)

    async def scan(self, reader: Any, writer: Any | None, column: CredentialColumn) -> TableReport:
        return await _scan(reader, writer, column, self.sealer, self.batch_size, self.progress)


async def migrate_credentials(
    dsn: str,
    *,
    keyring: Keyring,
    old_keyring: Keyring | None = None,
    mode: Mode = "v2",
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH,
    lock_timeout: float = ROTATION_LOCK_TIMEOUT,
    progress: Progress | None = None,
    connect: ConnectRetry = ROTATION_CONNECT,
) -> RotationReport:
    """Rewrite every credential value, or raise CredentialMigrationError with nothing changed.

    ``mode="v2"``: v1 values (and ai_configs plaintext) become v2 under ``keyring``'s
    key. ``mode="rotate"``: values under ``old_keyring``'s key are re-sealed under
    ``keyring``'s, each keeping its version. ``dry_run`` reads and seals in memory in
    a READ ONLY transaction and reports the same counts. A role that row-level
    security limits is refused (RowSecurityError) before anything is read.
    ``lock_timeout``: how long each lock is waited for, in seconds: another run's (the
    job's advisory lock; the dry run takes none) and, run as the tables' owner, the
    credential tables (see credentials/access.py); then CredentialMigrationError,
    nothing changed (the count after the commit only warns). ``connect``:
    how each connection waits for a server still starting (3 attempts by default).
    """
    retry = checked_connect(connect)
    if mode == "rotate" and old_keyring is None:
        raise CredentialMigrationError("rotation needs the old key (OLD_ENCRYPTION_KEY)")
    if mode == "rotate" and old_keyring is not None and old_keyring.kid == keyring.kid:
        raise CredentialMigrationError(
            "OLD_ENCRYPTION_KEY and ENCRYPTION_KEY are the same key (same key id): "
            "nothing to rotate"
        )
    job = _Job(retry, Sealer(mode, keyring, old_keyring), batch_size, lock_timeout, progress)
    report = RotationReport(mode=mode, dry_run=dry_run, target_kid=keyring.kid.hex())
    started = time.perf_counter()
    doing = "read the credential columns" if dry_run else "rewrite the credential columns"
    with typed_errors(dsn, doing):
        await (_dry_run(dsn, job, report) if dry_run else _rotate(dsn, job, report))
    report.seconds = time.perf_counter() - started
    return report


async def connected(dsn: str, retry: ConnectRetry, application_name: str) -> Any:
    """A connection of the job's (or verify's), waiting for the server as ``retry`` says."""
    return await connect(dsn, retry, application_name=application_name)


async def _dry_run(dsn: str, job: _Job, report: RotationReport) -> None:
    """Read and seal in memory, in a READ ONLY transaction: the counts, nothing written."""
    conn = await job.connect(dsn, "migrate-credentials dry run")
    try:
        view = await full_view(conn, "check the credentials")
        report.role, report.held_tables = view.role, view.lift
        await require_privileges(conn, report.role, write=False, doing="check the credentials")
        # A read-only role can check; the real run needs UPDATE: say so, and go on.
        report.cannot_write = await missing_privileges(conn, write=True)
        async with reading_all(conn, view, job.lock_timeout, doing="check the credentials"):
            for column in COLUMNS:
                report.tables.append(await job.scan(conn, None, column))
        report.problems = job.sealer.problems
        if report.problems:
            raise CredentialMigrationError(_failure_message(report))
    finally:
        await close_quietly(conn)


async def _rotate(dsn: str, job: _Job, report: RotationReport) -> None:
    """Rewrite every value in one transaction under the job's lock, then count what was
    written meanwhile under the old key."""
    lock_timeout = job.lock_timeout
    writer = await job.connect(dsn, "migrate-credentials")
    reader = None
    try:
        view = await full_view(writer, "rewrite the credentials")
        report.role = view.role
        await require_privileges(
            writer, report.role, write=True, doing="rewrite the credential columns"
        )
        # The writer's transaction holds the lock and every change. Read committed:
        # rows written by a run that held the lock before us are visible. A row that
        # changes under us is caught by the xmin guard.
        transaction = writer.transaction()
        await transaction.start()
        try:
            await _lock(writer, lock_timeout)
            if view.lift:
                await lift_force(writer, lock_timeout, doing="rewrite the credentials")
            # Each batch's UPDATE joins a few thousand ids: left to itself the planner
            # hashes the whole table for every batch (a seq scan per batch, quadratic in
            # the rows). Index lookups it is; this transaction runs nothing else.
            await writer.execute(WRITER_SETTINGS)
            if view.lift:
                # The owner: only this transaction sees every row (FORCE lifted, and the
                # tables held): it reads them itself.
                for column in COLUMNS:
                    report.tables.append(await job.scan(writer, writer, column))
            else:
                # A second connection streams the rows, so that reading, sealing (here)
                # and writing (the writer's backend) overlap.
                reader = await job.connect(dsn, "migrate-credentials reader")
                async with reader.transaction(isolation="repeatable_read", readonly=True):
                    for column in COLUMNS:
                        report.tables.append(await job.scan(reader, writer, column))
            report.problems = job.sealer.problems
            if report.problems:
                raise CredentialMigrationError(_failure_message(report))
            if view.lift:
                await restore_force(writer)
        except BaseException:
            await _rollback(transaction)
            raise
        await transaction.commit()
        report.committed = True
        report.left_behind = await _left_behind(writer, job.sealer, view, lock_timeout)
    finally:
        for conn in (reader, writer):
            if conn is not None:
                await close_quietly(conn)


async def _left_behind(
    conn: Any, sealer: Sealer, view: FullView, lock_timeout: float
) -> dict[str, int]:
    """After the commit: values not under the new key, counted as the run saw the rows."""
    require_v2 = sealer.mode == "v2"
    if not view.lift:
        return await count_not_current(conn, sealer.new.kid, require_v2=require_v2)
    try:
        async with reading_all(conn, view, lock_timeout, doing="count what was left behind"):
            return await count_not_current(conn, sealer.new.kid, require_v2=require_v2)
    except CredentialMigrationError as exc:  # committed all the same: not a failure of it
        logger.warning("committed; %s Run migrate-credentials --verify to count them.", exc)
        return {}


async def _lock(conn: Any, timeout: float) -> None:
    await conn.execute(f"SET LOCAL lock_timeout = {milliseconds(timeout)}")
    try:
        async with conn.transaction():  # a savepoint: a timeout leaves the transaction usable
            await conn.execute("SELECT pg_advisory_xact_lock($1::bigint)", LOCK_KEY)
    except asyncpg.LockNotAvailableError:
        holders = await advisory_lock_holders(conn, [LOCK_KEY])
        holder = f" ({holders[0]})" if holders else ""
        raise CredentialMigrationError(
            f"another migrate-credentials run holds the lock{holder}; gave up after "
            f"{timeout:g}s. Nothing was changed. Wait for it to finish, then run again."
        ) from None
    # The rows themselves: no timeout (the procedure stops the services first).
    await conn.execute("SET LOCAL lock_timeout = 0")


async def _scan(
    reader: Any,
    writer: Any | None,
    column: CredentialColumn,
    sealer: Sealer,
    batch_size: int,
    progress: Progress | None,
) -> TableReport:
    """Read, seal and (with a ``writer``) write one column, batch by batch.

    ``writer`` may be ``reader`` itself (the tables' owner: only its transaction sees
    every row); a connection runs one query at a time, so nothing overlaps then.
    """
    stats = TableReport(column.name)
    cursor = await reader.cursor(column.select_sql())
    update = update_sql(column)
    started = time.perf_counter()
    done = 0
    writing: asyncio.Task[str] | None = None
    expected = 0
    shared = writer is reader
    fetching = asyncio.ensure_future(cursor.fetch(batch_size))
    while rows := await fetching:
        if not shared:
            fetching = asyncio.ensure_future(cursor.fetch(batch_size))
            await asyncio.sleep(0)  # let the next fetch go out before sealing this batch
        batch = sealer.batch(rows, column, stats)
        if writing is not None:
            _check_update(column.name, await writing, expected)
            writing = None
        if writer is not None and batch.ids and not sealer.problems:
            expected = len(batch.ids)
            writing = asyncio.ensure_future(writer.execute(update, *_arguments(column, batch)))
            await asyncio.sleep(0)  # send it; the server works while we seal the next batch
        if shared:
            if writing is not None:
                _check_update(column.name, await writing, expected)
                writing = None
            fetching = asyncio.ensure_future(cursor.fetch(batch_size))
        done += len(rows)
        if progress is not None:
            progress(column.name, done, done / max(time.perf_counter() - started, 1e-9))
    if writing is not None:
        _check_update(column.name, await writing, expected)
    return stats


def _arguments(column: CredentialColumn, batch: Batch) -> list[Any]:
    args: list[Any] = [batch.ids, batch.tenants, batch.xmins, batch.values]
    return [*args, batch.versions] if column.version_column else args


def _check_update(name: str, status: str, expected: int) -> None:
    updated = int(status.split()[-1])
    if updated != expected:
        raise CredentialMigrationError(
            f"{name}: {expected - updated} row(s) changed while the job ran (services still "
            f"writing?); everything was rolled back: stop the services and run again"
        )


def update_sql(column: CredentialColumn) -> str:
    """One UPDATE per batch, each row found by its key, (tenant_id, id): an id is unique
    within its tenant only (000044), and by id alone a row of another tenant with the
    same id would take this one's value (its own then lost, sealed for another tenant),
    and no index would serve the lookup. ``t.xmin = v.xmin`` skips a row that changed
    since the cursor read it, so a concurrent writer's value is never overwritten."""
    extra = f", {column.version_column} = v.version" if column.version_column else ""
    arrays = "$1::uuid[], $2::uuid[], $3::xid[], $4::bytea[]" + (
        ", $5::int[]" if column.version_column else ""
    )
    names = "id, tenant_id, xmin, value" + (", version" if column.version_column else "")
    return (
        f"UPDATE {column.table} AS t SET {column.column} = v.value{extra} "
        f"FROM unnest({arrays}) AS v({names}) "
        f"WHERE t.tenant_id = v.tenant_id AND t.{column.id_column} = v.id AND t.xmin = v.xmin"
    )


def _failure_message(report: RotationReport) -> str:
    done = "nothing would change" if report.dry_run else "nothing was changed"
    return (
        f"{len(report.problems)} value(s) cannot be opened; {done} "
        f"(the transaction was rolled back):\n{problem_lines(report.problems)}"
    )


async def _rollback(transaction: Any) -> None:
    try:
        await transaction.rollback()
    except Exception as exc:  # the connection may be gone: the server rolls back anyway
        logger.debug("rollback failed: %s", exc)

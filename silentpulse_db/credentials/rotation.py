"""The rotation job: v1 -> v2, or every value from the old master key to the new one.

All three credential columns are rewritten in ONE transaction
under a transaction-level advisory lock: either every value moves or none
does. Values stream through a server-side cursor in batches and go back with
one ``UPDATE ... FROM unnest(...)`` per batch; every new envelope is opened
with the new key before it is written. Values already under the target key and
version are left alone, so a second run changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg

from ..crypto import envelope as env
from ..crypto.keyring import Keyring
from ..defaults import ROTATION_LOCK_TIMEOUT
from ..errors import CredentialMigrationError, CryptoError
from ..postgres.advisory import advisory_lock_holders
from ..postgres.connect import close_quietly, connect
from ..postgres.translate import typed_errors

logger = logging.getLogger("silentpulse_db.credentials")

# One key for every migrate-credentials run (pg_advisory_xact_lock).
LOCK_KEY = zlib.crc32(b"silentpulse_db/migrate-credentials")
DEFAULT_BATCH = 2000
PROBLEMS_SHOWN = 100

Mode = Literal["v2", "rotate"]


@dataclass(frozen=True)
class CredentialColumn:
    table: str
    column: str
    id_column: str = "id"
    version_column: str | None = None  # ai_configs.encryption_version: 0 plaintext, 1, 2


COLUMNS = (
    CredentialColumn("integration_points", "connection_config"),
    CredentialColumn("notification_channels", "config"),
    CredentialColumn(
        "ai_configs", "api_key_enc", id_column="tenant_id", version_column="encryption_version"
    ),
)


@dataclass(frozen=True)
class Problem:
    """A value that cannot be opened: where it is and why. Never the value."""

    table: str
    row_id: str
    kid: str
    reason: str

    def __str__(self) -> str:
        return f"{self.table} id={self.row_id} kid={self.kid}: {self.reason}"


@dataclass
class TableReport:
    name: str
    rewritten: int = 0
    current: int = 0
    empty: int = 0
    problems: int = 0


@dataclass
class RotationReport:
    mode: Mode
    dry_run: bool
    target_kid: str
    tables: list[TableReport] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    committed: bool = False
    seconds: float = 0.0

    @property
    def rewritten(self) -> int:
        return sum(t.rewritten for t in self.tables)

    @property
    def rows(self) -> int:
        return sum(t.rewritten + t.current + t.empty + t.problems for t in self.tables)


Progress = Callable[[str, int, float], None]


class _Plan:
    """What to do with one value: decide, open with the source key, seal with the target."""

    def __init__(self, mode: Mode, new: Keyring, old: Keyring | None) -> None:
        self.mode = mode
        self.new = new
        self.source: Keyring = old if mode == "rotate" and old is not None else new
        self._tenants: dict[tuple[str, Any], tuple[str, bytes]] = {}

    def tenant(self, column: CredentialColumn, tenant_id: Any) -> tuple[str, bytes]:
        """The tenant's id string and its cells' associated-data prefix, computed once."""
        cached = self._tenants.get((column.table, tenant_id))
        if cached is None:
            text = str(tenant_id)
            cached = (text, env.cell_prefix(column.table, column.column, text))
            self._tenants[(column.table, tenant_id)] = cached
        return cached

    def target_version(self, version: int) -> int:
        return env.V2_PER_TENANT if self.mode == "v2" else version

    def is_current(self, version: int, kid: bytes) -> bool:
        if self.mode == "v2":
            return version == env.V2_PER_TENANT and kid == self.new.kid
        return kid == self.new.kid


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
) -> RotationReport:
    """Rewrite every credential value, or raise CredentialMigrationError with nothing changed.

    ``mode="v2"``: v1 values (and ai_configs plaintext) become v2 under ``keyring``'s
    key. ``mode="rotate"``: values under ``old_keyring``'s key are re-sealed under
    ``keyring``'s, each keeping its version. ``dry_run`` does the same work and
    rolls back.
    """
    if mode == "rotate" and old_keyring is None:
        raise CredentialMigrationError("rotation needs the old key (OLD_ENCRYPTION_KEY)")
    if mode == "rotate" and old_keyring is not None and old_keyring.kid == keyring.kid:
        raise CredentialMigrationError(
            "OLD_ENCRYPTION_KEY and ENCRYPTION_KEY are the same key (same key id): "
            "nothing to rotate"
        )
    with typed_errors(dsn, "rewrite the credential columns"):
        plan = _Plan(mode, keyring, old_keyring)
        report = RotationReport(mode=mode, dry_run=dry_run, target_kid=keyring.kid.hex())
        started = time.perf_counter()
        writer = await connect(dsn, attempts=3, application_name="migrate-credentials")
        reader = None
        try:
            # The writer's transaction holds the lock and every change. Read
            # committed: rows written by a run that held the lock before us are
            # visible. A row that changes under us is caught by the xmin guard.
            transaction = writer.transaction()
            await transaction.start()
            try:
                await _lock(writer, lock_timeout)
                # A second connection streams the rows, so that reading, sealing
                # (here) and writing (the writer's backend) overlap.
                reader = await connect(
                    dsn, attempts=3, application_name="migrate-credentials reader"
                )
                async with reader.transaction(isolation="repeatable_read", readonly=True):
                    for column in COLUMNS:
                        report.tables.append(
                            await _rewrite(
                                reader, writer, column, plan, report, batch_size, progress
                            )
                        )
                if report.problems:
                    raise CredentialMigrationError(_failure_message(report))
            except BaseException:
                await _rollback(transaction)
                raise
            if dry_run:
                await transaction.rollback()
            else:
                await transaction.commit()
                report.committed = True
        finally:
            for conn in (reader, writer):
                if conn is not None:
                    await close_quietly(conn)
        report.seconds = time.perf_counter() - started
        return report


async def _lock(conn: Any, timeout: float) -> None:
    await conn.execute(f"SET LOCAL lock_timeout = '{int(timeout * 1000)}ms'")
    try:
        async with conn.transaction():  # a savepoint: a timeout leaves the transaction usable
            await conn.execute("SELECT pg_advisory_xact_lock($1::bigint)", LOCK_KEY)
    except asyncpg.LockNotAvailableError:
        holder = await _holder(conn)
        raise CredentialMigrationError(
            f"another migrate-credentials run holds the lock{holder}; gave up after "
            f"{timeout:g}s. Nothing was changed. Wait for it to finish, then run again."
        ) from None
    # The rows themselves: no timeout (the procedure stops the services first).
    await conn.execute("SET LOCAL lock_timeout = 0")


async def _holder(conn: Any) -> str:
    holders = await advisory_lock_holders(conn, [LOCK_KEY])
    return f" ({holders[0]})" if holders else ""


async def _rewrite(
    reader: Any,
    writer: Any,
    column: CredentialColumn,
    plan: _Plan,
    report: RotationReport,
    batch_size: int,
    progress: Progress | None,
) -> TableReport:
    name = f"{column.table}.{column.column}"
    stats = TableReport(name)
    version_select = f", {column.version_column} AS enc_version" if column.version_column else ""
    cursor = await reader.cursor(
        f"SELECT {column.id_column} AS id, tenant_id, xmin AS row_xmin, {column.column} AS value"
        f"{version_select} FROM {column.table}"
    )
    update = _update_sql(column)
    started = time.perf_counter()
    done = 0
    writing: asyncio.Task[str] | None = None
    expected = 0
    fetching = asyncio.ensure_future(cursor.fetch(batch_size))
    while rows := await fetching:
        fetching = asyncio.ensure_future(cursor.fetch(batch_size))
        await asyncio.sleep(0)  # let the next fetch go out before sealing this batch
        batch = _seal_batch(rows, column, plan, stats, report)
        if writing is not None:
            _check_update(name, await writing, expected)
            writing = None
        if batch[0] and not report.problems:
            expected = len(batch[0])
            args = list(batch) if column.version_column else list(batch[:3])
            writing = asyncio.ensure_future(writer.execute(update, *args))
            await asyncio.sleep(0)  # send it; the server works while we seal the next batch
        done += len(rows)
        if progress is not None:
            progress(name, done, done / max(time.perf_counter() - started, 1e-9))
    if writing is not None:
        _check_update(name, await writing, expected)
    return stats


def _check_update(name: str, status: str, expected: int) -> None:
    updated = int(status.split()[-1])
    if updated != expected:
        raise CredentialMigrationError(
            f"{name}: {expected - updated} row(s) changed while the job ran (services still "
            f"writing?); everything was rolled back: stop the services and run again"
        )


def _update_sql(column: CredentialColumn) -> str:
    """One UPDATE per batch. ``t.xmin = v.xmin`` skips a row that changed since the
    cursor read it, so a concurrent writer's value is never overwritten."""
    extra = f", {column.version_column} = v.version" if column.version_column else ""
    arrays = "$1::uuid[], $2::xid[], $3::bytea[]" + (", $4::int[]" if column.version_column else "")
    names = "id, xmin, value" + (", version" if column.version_column else "")
    return (
        f"UPDATE {column.table} AS t SET {column.column} = v.value{extra} "
        f"FROM unnest({arrays}) AS v({names}) "
        f"WHERE t.{column.id_column} = v.id AND t.xmin = v.xmin"
    )


def _seal_batch(
    rows: list[Any],
    column: CredentialColumn,
    plan: _Plan,
    stats: TableReport,
    report: RotationReport,
) -> tuple[list[Any], list[int], list[bytes], list[int]]:
    """(ids, xmins, new envelopes, versions) of the rows that change."""
    ids: list[Any] = []
    xmins: list[int] = []
    values: list[bytes] = []
    versions: list[int] = []
    nonces = os.urandom(env.NONCE_LEN * len(rows))  # one syscall per batch, 12 fresh bytes each
    for i, row in enumerate(rows):
        nonce = nonces[i * env.NONCE_LEN : (i + 1) * env.NONCE_LEN]
        outcome = _one(row, column, plan, stats, report, nonce)
        if outcome is not None:
            ids.append(row["id"])
            xmins.append(row["row_xmin"])
            values.append(outcome[0])
            versions.append(outcome[1])
    return ids, xmins, values, versions


def _one(
    row: Any,
    column: CredentialColumn,
    plan: _Plan,
    stats: TableReport,
    report: RotationReport,
    nonce: bytes,
) -> tuple[bytes, int] | None:
    """The new envelope and its version, or None when the value stays as it is."""
    value = row["value"]
    if value is None:
        stats.empty += 1
        return None
    tenant, prefix = plan.tenant(column, row["tenant_id"])
    cell = env.Cell(column.table, column.column, tenant, str(row["id"]), prefix=prefix)
    raw_kid = b""
    try:
        if column.version_column and row["enc_version"] == 0:
            if plan.mode == "rotate":
                raise _Skip(
                    "plaintext value (encryption_version 0): run migrate-credentials "
                    "without --rotate first"
                )
            plaintext, version = bytes(value), env.V2_PER_TENANT
        else:
            version, raw_kid = env.peek(value)
            if plan.is_current(version, raw_kid):
                stats.current += 1
                return None
            plaintext = plan.source.open(value, cell)
        target = plan.target_version(version)
        sealed = plan.new.seal(plaintext, cell, version=target, nonce=nonce)
        # Checked before it is written: the new envelope opens with the new key.
        if plan.new.open(sealed, cell) != plaintext:
            raise _Skip("re-sealed value did not open with the new key")
    except (CryptoError, _Skip) as exc:
        stats.problems += 1
        kid = raw_kid.hex() or "-"
        report.problems.append(Problem(column.table, str(row["id"]), kid, _reason(exc)))
        return None
    stats.rewritten += 1
    return sealed, target


class _Skip(Exception):
    pass


def _reason(exc: Exception) -> str:
    kind = {
        "UnknownKeyError": "unknown key",
        "TamperedValueError": "tampered or misplaced",
        "MalformedEnvelopeError": "malformed envelope",
    }.get(type(exc).__name__, "cannot open")
    return f"{kind}: {exc}"


def _failure_message(report: RotationReport) -> str:
    shown = report.problems[:PROBLEMS_SHOWN]
    more = len(report.problems) - len(shown)
    lines = "\n".join(f"  {p}" for p in shown) + (f"\n  ... and {more} more" if more else "")
    return (
        f"{len(report.problems)} value(s) cannot be opened; nothing was changed "
        f"(the transaction was rolled back):\n{lines}"
    )


async def _rollback(transaction: Any) -> None:
    try:
        await transaction.rollback()
    except Exception as exc:  # the connection may be gone: the server rolls back anyway
        logger.debug("rollback failed: %s", exc)

"""The check before the old key is retired: does every value open with the new key alone?

Reads in a READ ONLY transaction (no lock, no write: safe with the services
live and on a hot standby), opens every value with a keyring that holds only
the key to keep, and counts what would still need another key.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from ..crypto import envelope as env
from ..crypto.keyring import Keyring, shown_kid
from ..defaults import ROTATION_LOCK_TIMEOUT
from ..errors import ConfigurationError, CryptoError, InvalidArgumentError
from ..postgres.connect import close_quietly
from ..postgres.translate import typed_errors
from ..settings import ConnectRetry, checked_connect
from .access import full_view, reading_all, require_privileges
from .columns import COLUMNS, CredentialColumn, Problem, reason
from .rotation import DEFAULT_BATCH, ROTATION_CONNECT, Progress, connected


@dataclass
class VerifiedColumn:
    name: str
    opened: int = 0  # open with the key alone (v1 and v2)
    v1: int = 0  # of those, still v1: readable, not yet per-tenant
    other_key: int = 0  # under another master key (or an unknown key id): needs another key
    plaintext: int = 0  # ai_configs values never encrypted (encryption_version 0)
    problems: int = 0  # under this key, but do not open (tampered, misplaced, malformed)
    empty: int = 0


@dataclass
class VerifyReport:
    kid: str
    role: str = ""
    columns: list[VerifiedColumn] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    # Values under each of the other keys named to the check (``known_kids``), by key id
    # (a one-way fingerprint, safe to show).
    other_kids: Counter[str] = field(default_factory=Counter)
    # Values whose header names a key id no key at hand has: under a key nobody named
    # (a lost key?), or not an envelope at all (a plaintext whose first byte is 0x01 or
    # 0x02). Their "key id" is never shown: it may be a plaintext's own bytes.
    unknown_key: int = 0
    seconds: float = 0.0

    @property
    def need_other_key(self) -> int:
        return sum(c.other_key + c.plaintext for c in self.columns)

    @property
    def passed(self) -> bool:
        """True when the old key can be retired: every value opens with this key alone."""
        return self.need_other_key == 0 and not self.problems


async def verify_credentials(
    dsn: str,
    *,
    keyring: Keyring,
    batch_size: int = DEFAULT_BATCH,
    progress: Progress | None = None,
    lock_timeout: float = ROTATION_LOCK_TIMEOUT,
    known_kids: Collection[bytes] = (),
    connect: ConnectRetry = ROTATION_CONNECT,
) -> VerifyReport:
    """Open every credential value with ``keyring``'s one key; changes nothing.

    ``keyring`` must hold only the key to keep (no previous keys): a value that
    opens only with a previous key is what this check exists to find. ``known_kids``:
    the key ids of other keys that may still be in use (``Keyring(old_key).kid``),
    which the report may name: values under them are counted by key id in
    ``other_kids``; a header naming any other key id counts in ``unknown_key``, never
    shown (without the key it cannot be told from a value that is not an envelope). As the
    tables' owner (no BYPASSRLS) it holds them exclusively while it reads (see
    credentials/access.py), waiting at most ``lock_timeout`` seconds for them.
    ``connect``: how the connection waits for a server still starting.
    """
    retry = checked_connect(connect)
    if len(keyring.kids) != 1:
        raise ConfigurationError(
            "verify with the new key alone: this keyring also holds "
            f"{len(keyring.kids) - 1} previous key(s) (unset OLD_ENCRYPTION_KEY)"
        )
    others = tuple(known_kids)
    if not all(isinstance(kid, bytes) and len(kid) == env.KID_LEN for kid in others):
        raise InvalidArgumentError(
            f"known_kids: each must be a key id, {env.KID_LEN} bytes (Keyring(key).kid)"
        )
    report = VerifyReport(kid=keyring.kid.hex())
    known = frozenset(others) | {keyring.kid}
    started = time.perf_counter()
    with typed_errors(dsn, "read the credential columns"):
        conn = await connected(dsn, retry, "migrate-credentials verify")
        try:
            view = await full_view(conn, "verify the credentials")
            report.role = view.role
            await require_privileges(conn, report.role, write=False, doing="verify the credentials")
            async with reading_all(conn, view, lock_timeout, doing="verify the credentials"):
                for column in COLUMNS:
                    report.columns.append(
                        await _verify(conn, column, keyring, known, report, batch_size, progress)
                    )
        finally:
            await close_quietly(conn)
    report.seconds = time.perf_counter() - started
    return report


async def _verify(
    conn: Any,
    column: CredentialColumn,
    keyring: Keyring,
    known: frozenset[bytes],
    report: VerifyReport,
    batch_size: int,
    progress: Progress | None,
) -> VerifiedColumn:
    stats = VerifiedColumn(column.name)
    started = time.perf_counter()
    done = 0
    cursor = await conn.cursor(column.select_sql())
    while rows := await cursor.fetch(batch_size):
        for row in rows:
            _one(row, column, keyring, known, stats, report)
        done += len(rows)
        if progress is not None:
            progress(column.name, done, done / max(time.perf_counter() - started, 1e-9))
    return stats


def _one(
    row: Any,
    column: CredentialColumn,
    keyring: Keyring,
    known: frozenset[bytes],
    stats: VerifiedColumn,
    report: VerifyReport,
) -> None:
    value = row["value"]
    if value is None:
        stats.empty += 1
        return
    if column.version_column and row["enc_version"] == 0:
        stats.plaintext += 1
        return
    cell = env.Cell(column.table, column.column, str(row["tenant_id"]), str(row["id"]))
    kid = b""
    try:
        version, kid = env.peek(value)
        if kid != keyring.kid:
            stats.other_key += 1
            if kid in known:
                report.other_kids[kid.hex()] += 1
            else:
                report.unknown_key += 1
            return
        keyring.open(value, cell)
    except CryptoError as exc:
        stats.problems += 1
        shown = shown_kid(kid, known)
        report.problems.append(Problem(column.table, str(row["id"]), shown, reason(exc)))
        return
    stats.opened += 1
    stats.v1 += version == env.V1_MASTER

"""Deciding, per value, what the job does with it: keep it, re-seal it, or report it.

Pure Python over rows already read: no database access here, so the dry run
and the real run reach the same verdicts from the same code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

from ..crypto import envelope as env
from ..crypto.keyring import Keyring
from ..errors import CryptoError
from .columns import CredentialColumn, Problem, reason

Mode = Literal["v2", "rotate"]


@dataclass
class TableReport:
    name: str
    rewritten: int = 0
    current: int = 0
    empty: int = 0
    problems: int = 0


@dataclass
class Batch:
    """The rows of one fetch that change, as parallel lists for ``UPDATE ... FROM unnest``."""

    ids: list[Any] = field(default_factory=list)
    xmins: list[int] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)


class Sealer:
    """Opens each value with the source key and seals it under the target key."""

    def __init__(self, mode: Mode, new: Keyring, old: Keyring | None) -> None:
        self.mode = mode
        self.new = new
        self.source: Keyring = old if mode == "rotate" and old is not None else new
        self.problems: list[Problem] = []
        self._tenants: dict[tuple[str, Any], tuple[str, bytes]] = {}

    def batch(self, rows: list[Any], column: CredentialColumn, stats: TableReport) -> Batch:
        """The new envelopes of the rows that change; counts the others in ``stats``."""
        out = Batch()
        nonces = os.urandom(env.NONCE_LEN * len(rows))  # one syscall per batch, 12 bytes each
        for i, row in enumerate(rows):
            nonce = nonces[i * env.NONCE_LEN : (i + 1) * env.NONCE_LEN]
            sealed = self._one(row, column, stats, nonce)
            if sealed is not None:
                out.ids.append(row["id"])
                out.xmins.append(row["row_xmin"])
                out.values.append(sealed[0])
                out.versions.append(sealed[1])
        return out

    def _tenant(self, column: CredentialColumn, tenant_id: Any) -> tuple[str, bytes]:
        """The tenant's id string and its cells' associated-data prefix, computed once."""
        cached = self._tenants.get((column.table, tenant_id))
        if cached is None:
            text = str(tenant_id)
            cached = (text, env.cell_prefix(column.table, column.column, text))
            self._tenants[(column.table, tenant_id)] = cached
        return cached

    def _is_current(self, version: int, kid: bytes) -> bool:
        if self.mode == "v2":
            return version == env.V2_PER_TENANT and kid == self.new.kid
        return kid == self.new.kid

    def _one(
        self, row: Any, column: CredentialColumn, stats: TableReport, nonce: bytes
    ) -> tuple[bytes, int] | None:
        """The new envelope and its version, or None when the value stays as it is."""
        value = row["value"]
        if value is None:
            stats.empty += 1
            return None
        tenant, prefix = self._tenant(column, row["tenant_id"])
        cell = env.Cell(column.table, column.column, tenant, str(row["id"]), prefix=prefix)
        raw_kid = b""
        try:
            if column.version_column and row["enc_version"] == 0:
                if self.mode == "rotate":
                    raise _Skip(
                        "plaintext value (encryption_version 0): run migrate-credentials "
                        "without --rotate first"
                    )
                plaintext, version = bytes(value), env.V2_PER_TENANT
            else:
                version, raw_kid = env.peek(value)
                if self._is_current(version, raw_kid):
                    stats.current += 1
                    return None
                plaintext = self.source.open(value, cell)
            target = env.V2_PER_TENANT if self.mode == "v2" else version
            sealed = self.new.seal(plaintext, cell, version=target, nonce=nonce)
            # Checked before it is written: the new envelope opens with the new key.
            if self.new.open(sealed, cell) != plaintext:
                raise _Skip("re-sealed value did not open with the new key")
        except (CryptoError, _Skip) as exc:
            stats.problems += 1
            kid = raw_kid.hex() or "-"
            self.problems.append(Problem(column.table, str(row["id"]), kid, reason(exc)))
            return None
        stats.rewritten += 1
        return sealed, target


class _Skip(Exception):
    pass

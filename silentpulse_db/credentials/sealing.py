"""Deciding, per value, what the job does with it: keep it, re-seal it, or report it.

Pure Python over rows already read: no database access here, so the dry run
and the real run reach the same verdicts from the same code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..crypto import envelope as env
from ..crypto.envelope import HEADER_LEN, MIN_LEN, NONCE_LEN, PREFIX_LEN
from ..crypto.keyring import Keyring, shown_kid
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
    # Each row's tenant: an id is unique within its tenant only (000044), and another
    # tenant may hold a row of the same id.
    tenants: list[Any] = field(default_factory=list)
    xmins: list[int] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)


# Where select_sql() puts each field; positions, not names: a Record looked up by
# name costs a dict lookup per field per row.
_ID, _TENANT, _XMIN, _VALUE, _VERSION = range(5)
TENANT_CACHE = 4096  # bounded like the keyring's own cache of per-tenant keys


class _Tenant:
    """One tenant's cells in one column: its id string, associated-data prefix, and
    per envelope version the source and target ciphers with the associated data up
    to the row field, derived once (a tenant's rows come back many times)."""

    __slots__ = ("prefix", "text", "ways")

    def __init__(self, text: str, prefix: bytes) -> None:
        self.text, self.prefix = text, prefix
        # version -> (source cipher, source aad head, target cipher, target aad head,
        # target header, target version); None when the source keyring lacks the key.
        self.ways: dict[int, _Way | None] = {}


_Way = tuple[AESGCM, bytes, AESGCM, bytes, bytes, int]


class _TenantCiphers:
    """Per table and tenant, the ciphers and associated data the job needs, derived once
    and kept for at most TENANT_CACHE tenants a table."""

    def __init__(self, mode: Mode, new: Keyring, source: Keyring) -> None:
        self.mode = mode
        self.new = new
        self.source = source
        self._tenants: dict[str, dict[Any, _Tenant]] = {}  # table -> tenant id -> _Tenant
        self._headers = {v: bytes((v,)) + new.kid for v in env.VERSIONS}

    def of_table(self, table: str) -> dict[Any, _Tenant]:
        """The tenants of ``table`` derived so far, by tenant id."""
        return self._tenants.setdefault(table, {})

    def tenant(self, column: CredentialColumn, tenant_id: Any) -> _Tenant:
        """The tenant's id string and its cells' associated-data prefix, computed once."""
        tenants = self._tenants.setdefault(column.table, {})
        if len(tenants) >= TENANT_CACHE:
            tenants.clear()
        text = str(tenant_id)
        cached = tenants[tenant_id] = _Tenant(
            text, env.cell_prefix(column.table, column.column, text)
        )
        return cached

    def way(self, tenant: _Tenant, source_header: bytes) -> _Way | None:
        """How ``tenant``'s envelopes with ``source_header`` are opened and sealed anew
        (kept in ``tenant.ways``); None when the source keyring lacks their key."""
        version = source_header[0]
        source = self.source.cipher(source_header[1:], version, tenant.text)
        target = env.V2_PER_TENANT if self.mode == "v2" else version
        cipher = self.new.cipher(self.new.kid, target, tenant.text)
        way: _Way | None = None
        if source is not None and cipher is not None:
            header = self._headers[target]
            way = (
                source,
                env.aad_head(source_header, tenant.prefix),
                cipher,
                env.aad_head(header, tenant.prefix),
                header,
                target,
            )
        tenant.ways[version] = way
        return way


class Sealer:
    """Opens each value with the source key and seals it under the target key."""

    def __init__(self, mode: Mode, new: Keyring, old: Keyring | None) -> None:
        self.mode = mode
        self.new = new
        self.source: Keyring = old if mode == "rotate" and old is not None else new
        self.problems: list[Problem] = []
        self._ciphers = _TenantCiphers(mode, new, self.source)
        # The key ids a problem may name: those of the keys at hand. Any other "kid" may
        # be bytes 1-8 of a value that is not an envelope (crypto.keyring.shown_kid).
        self._known = frozenset(new.kids + self.source.kids)

    def batch(self, rows: list[Any], column: CredentialColumn, stats: TableReport) -> Batch:
        """The new envelopes of the rows that change; counts the others in ``stats``.

        The common case (an envelope under the source key that is not current) is
        inlined: the same steps as :meth:`_one` (open with the source key, seal under
        the new key, open the new envelope with the new key) on ciphers and associated
        data cached per tenant. Anything else, and any failure, goes through
        :meth:`_one`, which decides and words it exactly as before.
        """
        out = Batch()
        ids, tenant_ids, xmins = out.ids, out.tenants, out.xmins
        values, versions = out.values, out.versions
        nonces = os.urandom(NONCE_LEN * len(rows))  # one syscall per batch, 12 bytes each
        has_version = column.version_column is not None
        rotate = self.mode == "rotate"
        source_kid, new_kid = self.source.kid, self.new.kid
        tenants = self._ciphers.of_table(column.table)
        row_field, versions_ok = env.row_field, env.VERSIONS
        rewritten = current = empty = 0
        for i, row in enumerate(rows):
            value = row[_VALUE]
            if value is None:
                empty += 1
                continue
            nonce = nonces[i * NONCE_LEN : (i + 1) * NONCE_LEN]
            tenant = tenants.get(row[_TENANT])
            if tenant is None:
                tenant = self._ciphers.tenant(column, row[_TENANT])
            kid = value[1:HEADER_LEN]
            version = value[0] if len(value) >= MIN_LEN else 0
            sealed: tuple[bytes, int] | None
            if version not in versions_ok or (has_version and row[_VERSION] == 0):
                sealed = self._one(row, column, stats, nonce, tenant)  # plaintext or malformed
            elif kid == new_kid and (rotate or version == env.V2_PER_TENANT):
                current += 1
                continue
            elif kid != source_kid:
                sealed = self._one(row, column, stats, nonce, tenant)  # another key
            else:
                way = tenant.ways.get(version, _MISSING)
                if way is _MISSING:
                    way = self._ciphers.way(tenant, value[:HEADER_LEN])
                if way is None:
                    sealed = self._one(row, column, stats, nonce, tenant)
                else:
                    source, source_head, cipher, head, header, target = way
                    tail = row_field(row[_ID])
                    try:
                        plaintext = source.decrypt(
                            value[HEADER_LEN:PREFIX_LEN], value[PREFIX_LEN:], source_head + tail
                        )
                    except InvalidTag:
                        plaintext = None
                    if plaintext is None:
                        sealed = self._one(row, column, stats, nonce, tenant)  # words it
                    else:
                        aad = head + tail
                        body = cipher.encrypt(nonce, plaintext, aad)
                        # Checked before it is written: the new envelope opens with the new key.
                        if self._opens(cipher, nonce, body, aad, plaintext):
                            sealed = (header + nonce + body, target)
                        else:
                            sealed = None
                            self._failed(row, column, stats, kid)
            if sealed is not None:
                ids.append(row[_ID])
                tenant_ids.append(row[_TENANT])
                xmins.append(row[_XMIN])
                values.append(sealed[0])
                versions.append(sealed[1])
                rewritten += 1
        stats.rewritten += rewritten
        stats.current += current
        stats.empty += empty
        return out

    @staticmethod
    def _opens(cipher: AESGCM, nonce: bytes, body: bytes, aad: bytes, plaintext: bytes) -> bool:
        try:
            return cipher.decrypt(nonce, body, aad) == plaintext
        except InvalidTag:
            return False

    def _failed(self, row: Any, column: CredentialColumn, stats: TableReport, kid: bytes) -> None:
        stats.problems += 1
        why = reason(_Skip("re-sealed value did not open with the new key"))
        self.problems.append(Problem(column.table, row[_ID], shown_kid(kid, self._known), why))

    def _is_current(self, version: int, kid: bytes) -> bool:
        if self.mode == "v2":
            return version == env.V2_PER_TENANT and kid == self.new.kid
        return kid == self.new.kid

    def _one(
        self, row: Any, column: CredentialColumn, stats: TableReport, nonce: bytes, tenant: _Tenant
    ) -> tuple[bytes, int] | None:
        """The new envelope and its version, or None when the value stays as it is.
        Counts the value in ``stats`` except when it is rewritten (the caller counts)."""
        value = row[_VALUE]
        cell = env.Cell(column.table, column.column, tenant.text, row[_ID], prefix=tenant.prefix)
        raw_kid = b""
        try:
            if column.version_column and row[_VERSION] == 0:
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
            kid = shown_kid(raw_kid, self._known)
            self.problems.append(Problem(column.table, row[_ID], kid, reason(exc)))
            return None
        return sealed, target


_MISSING: Any = object()


class _Skip(Exception):
    pass

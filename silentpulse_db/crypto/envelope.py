"""The credential envelope: byte layout and associated data. Pure functions, no keys.

```
offset len   field
0      1     version: 0x01 AES-256-GCM under the master key
                      0x02 AES-256-GCM under HKDF-SHA256(master, HKDF_SALT,
                                                       info=V2_INFO || tenant_id)
1      8     kid: HKDF-SHA256(master, HKDF_SALT, info=KID_INFO), 8 bytes
9      12    nonce: random, fresh for every encryption
21     n+16  AES-GCM ciphertext and tag
```

Associated data binds a value to where it lives: the 9-byte header, the table,
the column, the tenant id and the row id, each preceded by its length as a
4-byte big-endian integer. Ids are written as canonical UUID strings
(lowercase, hyphenated).
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

from ..errors import MalformedEnvelopeError

V1_MASTER = 0x01
V2_PER_TENANT = 0x02
VERSIONS = (V1_MASTER, V2_PER_TENANT)

KID_LEN = 8
NONCE_LEN = 12
TAG_LEN = 16
HEADER_LEN = 1 + KID_LEN
PREFIX_LEN = HEADER_LEN + NONCE_LEN
MIN_LEN = PREFIX_LEN + TAG_LEN

# HKDF info labels: changing one changes every key id or per-tenant key.
KID_INFO = b"silentpulse/credentials/kid/v1"
V2_INFO = b"silentpulse/credentials/tenant-key/v2/"

_LEN = struct.Struct(">I")


@dataclass(frozen=True)
class Envelope:
    """A parsed envelope. ``body`` is the ciphertext with its tag."""

    version: int
    kid: bytes
    nonce: bytes
    body: bytes

    @property
    def header(self) -> bytes:
        return bytes((self.version,)) + self.kid

    def __repr__(self) -> str:
        # Neither the kid nor a length: parsing proves only the first byte and the length,
        # so these may be a plaintext's bytes (docs/security.md: no byte of a stored value).
        return f"Envelope(version={self.version}, kid and body not shown)"


def parse(data: bytes) -> Envelope:
    """Split an envelope into its fields; MalformedEnvelopeError if it cannot be one."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedEnvelopeError(f"an envelope is bytes, not {type(data).__name__}")
    data = bytes(data)
    version, kid = peek(data)
    return Envelope(
        version=version, kid=kid, nonce=data[HEADER_LEN:PREFIX_LEN], body=data[PREFIX_LEN:]
    )


def peek(data: bytes) -> tuple[int, bytes]:
    """(version, kid) of an envelope, checking only its length and version byte.

    The kid is bytes 1-8 of whatever was stored: a key id only if a keyring holds a key
    with it. A value that is not an envelope but passes these checks (37 bytes or more,
    the first 0x01 or 0x02: a plaintext) gives its own bytes here: show the kid only
    through :func:`~silentpulse_db.crypto.keyring.shown_kid`.
    """
    if len(data) < MIN_LEN:
        # Neither the length nor a byte is quoted: a plaintext stored where an
        # envelope belongs would leak through the message (the caller names the row).
        raise MalformedEnvelopeError("not an envelope")
    if data[0] not in VERSIONS:
        raise MalformedEnvelopeError("not an envelope")
    return data[0], bytes(data[1:HEADER_LEN])


def canonical_id(value: uuid.UUID | str) -> str:
    """A row or tenant id as it enters the associated data."""
    if isinstance(value, uuid.UUID):
        return str(value)
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        if isinstance(value, str) and value:
            return value  # a non-UUID key (e.g. a text primary key) is used as given
        raise MalformedEnvelopeError(
            f"an id must be a UUID or a non-empty string, not {value!r}"
        ) from None


_HEADER_PREFIX = _LEN.pack(HEADER_LEN)
_PLACES: dict[tuple[str, str], bytes] = {}  # (table, column) -> their length-prefixed bytes


def _field(data: bytes) -> bytes:
    return _LEN.pack(len(data)) + data


def cell_prefix(table: str, column: str, tenant: str) -> bytes:
    """The associated data's table, column and tenant fields: shared by a tenant's cells."""
    place = _PLACES.get((table, column))
    if place is None:
        place = _PLACES[(table, column)] = _field(table.encode()) + _field(column.encode())
    return place + _field(tenant.encode())


def aad_head(header: bytes, prefix: bytes) -> bytes:
    """The associated data of every cell with this ``header`` and :func:`cell_prefix`,
    up to the row field: ``aad_head(header, prefix) + row_field(row)`` equals
    ``Cell(..., row, prefix=prefix).aad(header)``, for loops over many rows."""
    return _HEADER_PREFIX + header + prefix


def row_field(row: str) -> bytes:
    """The associated data's last field, the row id (see :func:`aad_head`)."""
    data = row.encode()
    return _LEN.pack(len(data)) + data


class Cell:
    """Where a value lives: table, column, tenant and row, with its associated data
    (all but the header) computed once. Build with :meth:`of`; hot loops that
    already hold canonical id strings may call the constructor directly."""

    __slots__ = ("column", "row", "table", "tail", "tenant")

    def __init__(
        self, table: str, column: str, tenant: str, row: str, *, prefix: bytes | None = None
    ) -> None:
        self.table, self.column, self.tenant, self.row = table, column, tenant, row
        if prefix is None:
            prefix = cell_prefix(table, column, tenant)
        row_bytes = row.encode()
        self.tail = prefix + _LEN.pack(len(row_bytes)) + row_bytes

    @classmethod
    def of(
        cls, table: str, column: str, tenant_id: uuid.UUID | str, row_id: uuid.UUID | str
    ) -> Cell:
        return cls(table, column, canonical_id(tenant_id), canonical_id(row_id))

    def aad(self, header: bytes) -> bytes:
        """Length-prefixed header, table, column, tenant and row (docs/encryption.md)."""
        return _HEADER_PREFIX + header + self.tail

    def __repr__(self) -> str:
        return f"Cell({self.table}.{self.column}, tenant {self.tenant}, row {self.row})"

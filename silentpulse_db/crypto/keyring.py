"""Keys and the envelope's sealing and opening.

A :class:`Keyring` holds the current master key (from ``ENCRYPTION_KEY``) and,
for a rollout window, decrypt-only previous ones (``OLD_ENCRYPTION_KEY``).
Each master key has a key id (kid) derived with HKDF, written into every
envelope, so a value names the key that opens it and no key is tried blindly.
Per-tenant (v2) keys are derived with HKDF-SHA256 and cached.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Collection, Mapping, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import CryptoError, KeyConfigError, TamperedValueError, UnknownKeyError
from . import envelope as env
from .envelope import HEADER_LEN, MIN_LEN, PREFIX_LEN, VERSIONS

KEY_LEN = 32
TENANT_KEY_CACHE = 4096

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _hkdf(master: bytes, salt: bytes | None, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(master)


def parse_key(value: str | None, variable: str) -> bytes:
    """A 64-hex-character key from a setting; the error names the variable, never the value."""
    if value is None or not value.strip():
        raise KeyConfigError(f"{variable} is not set: expected 64 hex characters (32 bytes)")
    text = value.strip()
    if len(text) != 2 * KEY_LEN:
        raise KeyConfigError(
            f"{variable} must be 64 hex characters (32 bytes); got {len(text)} characters"
        )
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise KeyConfigError(f"{variable} must be hexadecimal (0-9, a-f); it is not") from None
    if len(set(key)) == 1:
        # All-zero or one repeated byte: a placeholder, not a key. The value is never quoted.
        raise KeyConfigError(f"{variable} is a placeholder (one byte repeated), not a random key")
    return key


def parse_flag(value: str | None, variable: str) -> bool:
    text = (value or "").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise KeyConfigError(f"{variable} must be true or false (also 1/0, yes/no, on/off)")


class MasterKey:
    """One master key with its salt: its kid, its v1 cipher and its per-tenant ciphers."""

    __slots__ = ("_master", "_salt", "_tenants", "_v1", "kid")

    def __init__(self, master: bytes, salt: bytes | None) -> None:
        if len(master) != KEY_LEN:
            raise KeyConfigError(f"a master key is {KEY_LEN} bytes; got {len(master)}")
        if len(set(master)) == 1:
            raise KeyConfigError("a master key of one repeated byte is a placeholder, not a key")
        self._master = bytes(master)
        self._salt = salt
        self.kid = _hkdf(self._master, salt, env.KID_INFO, env.KID_LEN)
        self._v1 = AESGCM(self._master)
        self._tenants: dict[str, AESGCM] = {}

    def __repr__(self) -> str:
        return f"MasterKey(kid={self.kid.hex()})"

    def cipher(self, version: int, tenant_id: str) -> AESGCM:
        if version == env.V1_MASTER:
            return self._v1
        cached = self._tenants.get(tenant_id)
        if cached is not None:
            return cached
        if len(self._tenants) >= TENANT_KEY_CACHE:
            # Bounded; deriving again costs ~20 us, so a plain reset beats LRU bookkeeping
            # on every hit.
            self._tenants.clear()
        key = _hkdf(self._master, self._salt, env.V2_INFO + tenant_id.encode(), KEY_LEN)
        cipher = self._tenants[tenant_id] = AESGCM(key)
        return cipher


class Keyring:
    """Encrypts with the current master key; decrypts with any key it holds, chosen by kid."""

    def __init__(
        self,
        master_key: bytes,
        *,
        salt: bytes | None = None,
        per_tenant: bool = False,
        previous_keys: Sequence[bytes] = (),
    ) -> None:
        self._current = MasterKey(master_key, salt)
        self._keys = {self._current.kid: self._current}
        for old in previous_keys:
            key = MasterKey(old, salt)
            self._keys.setdefault(key.kid, key)
        self.per_tenant = per_tenant

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Keyring:
        """From ENCRYPTION_KEY, HKDF_SALT (UTF-8 text), PER_TENANT_ENCRYPTION, and
        OLD_ENCRYPTION_KEY as a decrypt-only previous key when set."""
        e = os.environ if environ is None else environ
        master = parse_key(e.get("ENCRYPTION_KEY"), "ENCRYPTION_KEY")
        previous = []
        if e.get("OLD_ENCRYPTION_KEY"):
            previous.append(parse_key(e.get("OLD_ENCRYPTION_KEY"), "OLD_ENCRYPTION_KEY"))
        return cls(
            master,
            salt=salt_from(e.get("HKDF_SALT")),
            per_tenant=parse_flag(e.get("PER_TENANT_ENCRYPTION"), "PER_TENANT_ENCRYPTION"),
            previous_keys=previous,
        )

    # --- what the keyring is --------------------------------------------------------

    @property
    def kid(self) -> bytes:
        """Key id of the current master key."""
        return self._current.kid

    @property
    def kids(self) -> tuple[bytes, ...]:
        return tuple(self._keys)

    @property
    def default_version(self) -> int:
        return env.V2_PER_TENANT if self.per_tenant else env.V1_MASTER

    def __repr__(self) -> str:
        previous = [k.hex() for k in self._keys if k != self.kid]
        return f"Keyring(kid={self.kid.hex()}, per_tenant={self.per_tenant}, previous={previous})"

    __str__ = __repr__

    # --- sealing and opening ----------------------------------------------------------
    # encrypt/decrypt: one value, named by its cell's fields (what services call);
    # they spell out the same keyword fields, on purpose: that is the call users read.
    # seal/open: the same for a prepared Cell, whose associated data is built once
    # (what the rotation job calls for each of many values).

    def encrypt(
        self,
        plaintext: bytes,
        *,
        tenant_id: uuid.UUID | str,
        table: str,
        column: str,
        row_id: uuid.UUID | str,
        version: int | None = None,
    ) -> bytes:
        """Seal ``plaintext`` for one cell; v2 if per_tenant (or ``version=2``), else v1."""
        return self.seal(plaintext, env.Cell.of(table, column, tenant_id, row_id), version=version)

    def decrypt(
        self,
        envelope: bytes,
        *,
        tenant_id: uuid.UUID | str,
        table: str,
        column: str,
        row_id: uuid.UUID | str,
    ) -> bytes:
        """Open an envelope sealed for this cell (v1 or v2, current or previous key)."""
        return self.open(envelope, env.Cell.of(table, column, tenant_id, row_id))

    def cipher(self, kid: bytes, version: int, tenant: str) -> AESGCM | None:
        """The AES-GCM cipher that :meth:`open` uses for an envelope of ``version``
        under key ``kid`` for the canonical ``tenant`` id (and :meth:`seal`, for the
        current kid), or None when this keyring does not hold ``kid``. For hot loops
        (the rotation job) that seal and open many values of one tenant."""
        key = self._keys.get(kid)
        return None if key is None else key.cipher(version, tenant)

    def seal(
        self,
        plaintext: bytes,
        cell: env.Cell,
        *,
        version: int | None = None,
        nonce: bytes | None = None,
    ) -> bytes:
        """encrypt() for a prepared :class:`Cell`. ``nonce``: 12 fresh random bytes
        (default os.urandom; the rotation draws them in batches, the known-answer
        tests fix them); never reuse one."""
        version = self.default_version if version is None else version
        if version not in env.VERSIONS:
            raise CryptoError(
                f"envelope version must be one of {sorted(env.VERSIONS)}, not {version!r}"
            )
        _require_bytes(plaintext, "plaintext")
        if nonce is None:
            nonce = os.urandom(env.NONCE_LEN)
        header = bytes((version,)) + self._current.kid
        cipher = self._current.cipher(version, cell.tenant)
        return header + nonce + cipher.encrypt(nonce, plaintext, cell.aad(header))

    def open(self, envelope: bytes, cell: env.Cell) -> bytes:
        """decrypt() for a prepared :class:`Cell`."""
        _require_bytes(envelope, "envelope")
        envelope = bytes(envelope)
        if len(envelope) < MIN_LEN or envelope[0] not in VERSIONS:
            env.parse(envelope)  # raises MalformedEnvelopeError with the reason
        header = envelope[:HEADER_LEN]
        key = self._keys.get(header[1:])
        if key is None:
            # Not a byte of the value: without the key nothing tells an envelope under a
            # key this keyring lacks from a plaintext that starts with 0x01 or 0x02.
            raise UnknownKeyError(
                f"value of {cell.table}.{cell.column} of row {cell.row} (tenant {cell.tenant}) "
                f"names a key id this keyring does not hold (it holds "
                f"{', '.join(k.hex() for k in self._keys)}): sealed under another master key, "
                f"or not an envelope at all; its bytes are not shown"
            )
        try:
            return key.cipher(envelope[0], cell.tenant).decrypt(
                envelope[HEADER_LEN:PREFIX_LEN], envelope[PREFIX_LEN:], cell.aad(header)
            )
        except InvalidTag:
            raise TamperedValueError(
                f"value does not authenticate for {cell.table}.{cell.column} of row {cell.row} "
                f"(tenant {cell.tenant}): altered, or moved from another row, column or tenant"
            ) from None


NO_KID = "-"


def shown_kid(kid: bytes, known: Collection[bytes]) -> str:
    """How a value's kid (bytes 1-8) may be shown: in hex when it is one of the ``known``
    key ids (those of the keys at hand), else :data:`NO_KID`.

    A kid is a key's id only once a key has it: a plaintext stored where an envelope
    belongs, 37 bytes or more and starting with 0x01 or 0x02, passes for an envelope up
    to the key lookup, and its bytes 1-8 would be printed as its "key id"
    (docs/security.md: no byte of a stored value is ever shown).
    """
    return kid.hex() if kid in known else NO_KID


def _require_bytes(value: object, what: str) -> None:
    # AESGCM would raise TypeError; callers get the library's own error.
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise CryptoError(
            f"{what} must be bytes, bytearray or memoryview, not {type(value).__name__}"
        )


def salt_from(value: str | None) -> bytes | None:
    """HKDF_SALT is text, used as its UTF-8 bytes; unset or empty means no salt."""
    return value.encode() if value else None

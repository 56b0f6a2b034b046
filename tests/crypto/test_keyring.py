"""Keyring behaviour: roundtrips, tampering, misplacement, settings, and what never leaks."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, TypedDict, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from silentpulse_db import (
    CryptoError,
    KeyConfigError,
    MalformedEnvelopeError,
    TamperedValueError,
    UnknownKeyError,
)
from silentpulse_db.crypto import Keyring, parse
from silentpulse_db.crypto.envelope import Cell
from silentpulse_db.crypto.keyring import NO_KID, shown_kid

from .corpus import NOT_ENVELOPES, PASS_THE_HEADER, shown_bytes

KEY = bytes.fromhex("7f01" * 16)
OTHER = bytes.fromhex("3c02" * 16)
TENANT, OTHER_TENANT = uuid.uuid4(), uuid.uuid4()
ROW, OTHER_ROW = uuid.uuid4(), uuid.uuid4()


class CellFields(TypedDict):
    """Where a value lives: what its associated data binds it to."""

    tenant_id: uuid.UUID | str
    table: str
    column: str
    row_id: uuid.UUID | str


def replace(cell: CellFields, **changes: Any) -> CellFields:
    """``cell`` with some of its fields changed."""
    return cast(CellFields, {**cell, **changes})


CELL: CellFields = {
    "tenant_id": TENANT,
    "table": "notification_channels",
    "column": "config",
    "row_id": ROW,
}

ids = st.uuids()


@settings(max_examples=200, deadline=None)
@given(
    plaintext=st.binary(max_size=2048),
    tenant=ids,
    row=ids,
    per_tenant=st.booleans(),
    salt=st.one_of(st.none(), st.binary(min_size=1, max_size=32)),
)
def test_roundtrip(
    plaintext: bytes, tenant: uuid.UUID, row: uuid.UUID, per_tenant: bool, salt: bytes | None
) -> None:
    keyring = Keyring(KEY, salt=salt, per_tenant=per_tenant)
    cell: CellFields = {
        "tenant_id": tenant,
        "table": "ai_configs",
        "column": "api_key_enc",
        "row_id": row,
    }
    sealed = keyring.encrypt(plaintext, **cell)
    assert sealed[0] == (2 if per_tenant else 1)
    assert keyring.decrypt(sealed, **cell) == plaintext
    # String ids name the same cell as UUID objects.
    assert (
        keyring.decrypt(sealed, **replace(cell, tenant_id=str(tenant).upper(), row_id=str(row)))
        == plaintext
    )


@settings(max_examples=300, deadline=None)
@given(
    plaintext=st.binary(min_size=0, max_size=300), version=st.sampled_from([1, 2]), data=st.data()
)
def test_any_single_flipped_bit_fails(plaintext: bytes, version: int, data: st.DataObject) -> None:
    keyring = Keyring(KEY, salt=b"salt")
    sealed = keyring.encrypt(plaintext, version=version, **CELL)
    bit = data.draw(st.integers(min_value=0, max_value=len(sealed) * 8 - 1))
    flipped = bytearray(sealed)
    flipped[bit // 8] ^= 1 << (bit % 8)
    # Which error says which part was hit: version byte, key id, or the rest.
    expected = (
        MalformedEnvelopeError if bit < 8 else UnknownKeyError if bit < 72 else TamperedValueError
    )
    with pytest.raises(expected):
        keyring.decrypt(bytes(flipped), **CELL)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize(
    "moved",
    [
        {"row_id": OTHER_ROW},
        {"column": "name"},
        {"table": "integration_points"},
        {"tenant_id": OTHER_TENANT},
    ],
)
def test_a_value_moved_elsewhere_fails(version: int, moved: dict[str, object]) -> None:
    keyring = Keyring(KEY)
    sealed = keyring.encrypt(b"token", version=version, **CELL)
    with pytest.raises(TamperedValueError, match="moved from another row, column or tenant"):
        keyring.decrypt(sealed, **replace(CELL, **moved))


def test_nonce_is_fresh_every_time() -> None:
    keyring = Keyring(KEY, per_tenant=True)
    nonces = {keyring.encrypt(b"same", **CELL)[9:21] for _ in range(1000)}
    assert len(nonces) == 1000


def test_per_tenant_keys_differ() -> None:
    keyring = Keyring(KEY, per_tenant=True)
    nonce = b"\x00" * 12
    a = keyring.seal(b"x", Cell.of("t", "c", TENANT, ROW), version=2, nonce=nonce)
    b = keyring.seal(b"x", Cell.of("t", "c", OTHER_TENANT, ROW), version=2, nonce=nonce)
    assert a[21:] != b[21:]


def test_salt_is_part_of_the_key_identity() -> None:
    assert Keyring(KEY, salt=b"a").kid != Keyring(KEY, salt=b"b").kid != Keyring(KEY).kid


def test_previous_keys_decrypt_only() -> None:
    old = Keyring(OTHER, per_tenant=True)
    sealed = old.encrypt(b"secret", **CELL)
    rolling = Keyring(KEY, per_tenant=True, previous_keys=[OTHER])
    assert rolling.decrypt(sealed, **CELL) == b"secret"
    assert rolling.encrypt(b"new", **CELL)[1:9] == rolling.kid != old.kid
    with pytest.raises(UnknownKeyError, match="does not hold") as info:
        Keyring(KEY).decrypt(sealed, **CELL)
    # The keys it holds are named, the value's "key id" is not: without that key nothing
    # tells this envelope from a plaintext that starts with 0x02 (see the test below).
    assert Keyring(KEY).kid.hex() in str(info.value) and old.kid.hex() not in str(info.value)
    assert f"row {ROW}" in str(info.value)


GOOD = {"ENCRYPTION_KEY": KEY.hex()}


def test_from_env() -> None:
    keyring = Keyring.from_env({**GOOD, "HKDF_SALT": "pepper", "PER_TENANT_ENCRYPTION": "TRUE"})
    assert keyring.per_tenant and keyring.kid == Keyring(KEY, salt=b"pepper").kid
    assert not Keyring.from_env(GOOD).per_tenant
    rolling = Keyring.from_env({**GOOD, "OLD_ENCRYPTION_KEY": OTHER.hex()})
    assert Keyring(OTHER).kid in rolling.kids


@pytest.mark.parametrize(
    ("environ", "variable", "problem"),
    [
        ({}, "ENCRYPTION_KEY", "not set"),
        ({"ENCRYPTION_KEY": "ab" * 31 + "a"}, "ENCRYPTION_KEY", "got 63 characters"),
        ({"ENCRYPTION_KEY": "ab" * 32 + "a"}, "ENCRYPTION_KEY", "got 65 characters"),
        ({"ENCRYPTION_KEY": "zz" * 32}, "ENCRYPTION_KEY", "hexadecimal"),
        ({**GOOD, "OLD_ENCRYPTION_KEY": "12" * 16}, "OLD_ENCRYPTION_KEY", "got 32 characters"),
        ({**GOOD, "PER_TENANT_ENCRYPTION": "maybe"}, "PER_TENANT_ENCRYPTION", "true or false"),
    ],
)
def test_bad_settings_name_the_variable_never_the_value(
    environ: dict[str, str], variable: str, problem: str
) -> None:
    with pytest.raises(KeyConfigError) as info:
        Keyring.from_env(environ)
    assert variable in str(info.value) and problem in str(info.value)
    for value in environ.values():
        if len(value) > 8:
            assert value not in str(info.value) and value.upper() not in str(info.value)


def test_nothing_shows_a_key_or_plaintext() -> None:
    secret = b"sk-live-VERY-SECRET-VALUE"
    keyring = Keyring(KEY, salt=b"salty", per_tenant=True, previous_keys=[OTHER])
    texts = [repr(keyring), str(keyring)]
    sealed = keyring.encrypt(secret, **CELL)
    attempts: list[tuple[type[CryptoError], Callable[[], object]]] = [
        (
            TamperedValueError,
            lambda: keyring.decrypt(sealed[:-1] + bytes([sealed[-1] ^ 1]), **CELL),
        ),
        (TamperedValueError, lambda: keyring.decrypt(sealed, **replace(CELL, row_id=OTHER_ROW))),
        (UnknownKeyError, lambda: Keyring(bytes(range(1, 33))).decrypt(sealed, **CELL)),
        (MalformedEnvelopeError, lambda: keyring.decrypt(b"\x09" + sealed[1:], **CELL)),
    ]
    for expected, attempt in attempts:
        with pytest.raises(expected) as info:
            attempt()
        assert type(info.value) is expected
        texts += [str(info.value), repr(info.value)]
        assert info.value.__cause__ is None
    blob = "\n".join(texts)
    for forbidden in (KEY.hex(), OTHER.hex(), secret.decode(), "salty"):
        assert forbidden not in blob


@pytest.mark.parametrize(("name", "value"), NOT_ENVELOPES, ids=[n for n, _ in NOT_ENVELOPES])
def test_a_value_that_is_not_an_envelope_shows_none_of_its_bytes(name: str, value: bytes) -> None:
    """Issue 27 (item 6): bytes 1-8 of a plaintext of 37 bytes or more that starts with
    0x01 or 0x02 were printed as the "key id" it was sealed with."""
    keyring = Keyring(KEY, previous_keys=[OTHER])
    passes = (name, value) in PASS_THE_HEADER
    expected = UnknownKeyError if passes else MalformedEnvelopeError
    with pytest.raises(expected) as info:
        keyring.decrypt(value, **CELL)
    assert type(info.value) is expected and info.value.__cause__ is None
    text = f"{info.value}\n{info.value!r}"
    assert shown_bytes(text, value) == [], text
    if passes:
        # What is shown instead: where the value is, and the keys that were looked for.
        assert f"notification_channels.config of row {ROW}" in text
        assert keyring.kid.hex() in text and Keyring(OTHER).kid.hex() in text
        assert repr(parse(value)) == f"Envelope(version={value[0]}, kid and body not shown)"
        assert shown_kid(parse(value).kid, keyring.kids) == NO_KID


def test_a_key_id_is_shown_only_when_a_key_at_hand_has_it() -> None:
    keyring = Keyring(KEY, previous_keys=[OTHER])
    old = Keyring(OTHER)
    sealed = old.encrypt(b"token", **CELL)
    assert shown_kid(sealed[1:9], keyring.kids) == old.kid.hex()
    assert shown_kid(sealed[1:9], Keyring(KEY).kids) == NO_KID == "-"


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_any_bytes_like_value_is_accepted(kind: Callable[[bytes], object]) -> None:
    keyring = Keyring(KEY)
    sealed = keyring.encrypt(kind(b"token"), **CELL)  # type: ignore[arg-type]
    assert keyring.decrypt(kind(sealed), **CELL) == b"token"  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["token", 42, None, [1, 2]])
def test_anything_else_is_a_typed_error(value: object) -> None:
    keyring = Keyring(KEY)
    with pytest.raises(CryptoError, match="must be bytes"):
        keyring.encrypt(value, **CELL)  # type: ignore[arg-type]
    with pytest.raises(CryptoError, match="must be bytes"):
        keyring.decrypt(value, **CELL)  # type: ignore[arg-type]
    with pytest.raises(CryptoError, match="version must be one of"):
        keyring.encrypt(b"x", version=7, **CELL)


@pytest.mark.parametrize("key_hex", ["00" * 32, "ff" * 32, "5a" * 32, "AB" * 32])
def test_placeholder_master_key_is_refused_without_quoting_it(key_hex: str) -> None:
    with pytest.raises(KeyConfigError) as info:
        Keyring.from_env({"ENCRYPTION_KEY": key_hex})
    message = str(info.value)
    assert "ENCRYPTION_KEY" in message
    assert key_hex.lower() not in message.lower()
    assert key_hex[:2].lower() not in message.lower().replace("encryption_key", "")


@pytest.mark.parametrize("key", [bytes(32), b"\xff" * 32, b"\x07" * 32])
def test_placeholder_master_key_is_refused_by_the_constructor_too(key: bytes) -> None:
    with pytest.raises(KeyConfigError, match="placeholder"):
        Keyring(key)
    with pytest.raises(KeyConfigError, match="placeholder"):
        Keyring(KEY, previous_keys=[key])

"""The envelope format: committed known-answer vectors and an independent recomputation."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from silentpulse_db import MalformedEnvelopeError
from silentpulse_db.crypto import Keyring, parse
from silentpulse_db.crypto.envelope import Cell

from .corpus import NOT_ENVELOPES, PASS_THE_HEADER, shown_bytes

VECTORS = json.loads(Path(__file__).with_name("vectors.json").read_text())


def keyring_for(vector: Mapping[str, object]) -> Keyring:
    salt = vector["salt"]
    return Keyring(bytes.fromhex(str(vector["key_hex"])), salt=str(salt).encode() if salt else None)


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_known_answer_vectors(vector: dict[str, str]) -> None:
    keyring = keyring_for(vector)
    assert keyring.kid.hex() == vector["kid_hex"]
    cell = Cell.of(vector["table"], vector["column"], vector["tenant_id"], vector["row_id"])
    sealed = keyring.seal(
        vector["plaintext"].encode(),
        cell,
        version=int(vector["version"]),
        nonce=bytes.fromhex(vector["nonce_hex"]),
    )
    assert sealed.hex() == vector["envelope_hex"]
    opened = keyring.decrypt(
        bytes.fromhex(vector["envelope_hex"]),
        tenant_id=vector["tenant_id"],
        table=vector["table"],
        column=vector["column"],
        row_id=vector["row_id"],
    )
    assert opened == vector["plaintext"].encode()


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_format_recomputed_from_the_documentation(vector: dict[str, str]) -> None:
    """docs/encryption.md, byte by byte, with cryptography's primitives only."""
    master = bytes.fromhex(vector["key_hex"])
    salt = vector["salt"].encode() if vector["salt"] else None

    def hkdf(info: bytes, length: int) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(master)

    version = int(vector["version"])
    kid = hkdf(b"silentpulse/credentials/kid/v1", 8)
    key = (
        master
        if version == 1
        else hkdf(b"silentpulse/credentials/tenant-key/v2/" + vector["tenant_id"].encode(), 32)
    )
    header = bytes([version]) + kid
    fields = [
        header,
        vector["table"].encode(),
        vector["column"].encode(),
        vector["tenant_id"].encode(),
        vector["row_id"].encode(),
    ]
    aad = b"".join(struct.pack(">I", len(f)) + f for f in fields)
    nonce = bytes.fromhex(vector["nonce_hex"])
    expected = header + nonce + AESGCM(key).encrypt(nonce, vector["plaintext"].encode(), aad)
    assert expected.hex() == vector["envelope_hex"]
    parsed = parse(expected)
    assert (parsed.version, parsed.kid, parsed.nonce) == (version, kid, nonce)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not an envelope"),
        (b"\x01" + b"\x00" * 35, "not an envelope"),
        (b"\x03" + b"\x00" * 40, "not an envelope"),
        (b"\x00" + b"\x00" * 40, "not an envelope"),
        (b'{"password": "plain"}' + b"\x00" * 20, "not an envelope"),
    ],
)
def test_malformed_envelopes(data: bytes, reason: str) -> None:
    with pytest.raises(MalformedEnvelopeError, match=reason):
        parse(data)


@pytest.mark.parametrize(
    "plaintext", [b"hunter2", b"s", b"secret-password-" * 4, b"\x73" + b"\x00" * 40]
)
def test_malformed_message_reveals_no_byte_or_length(plaintext: bytes) -> None:
    with pytest.raises(MalformedEnvelopeError) as info:
        parse(plaintext)
    message = str(info.value)
    assert message == "not an envelope"
    assert str(len(plaintext)) not in message
    assert f"{plaintext[0]:02x}" not in message


@pytest.mark.parametrize(("name", "value"), NOT_ENVELOPES, ids=[n for n, _ in NOT_ENVELOPES])
def test_parsing_shows_no_byte_of_a_value_that_is_not_an_envelope(name: str, value: bytes) -> None:
    if (name, value) in PASS_THE_HEADER:
        # parse() proves the length and the first byte only: its repr shows neither the
        # "key id" (bytes 1-8 of a plaintext here) nor a length.
        shown = repr(parse(value))
        assert str(len(value) - 21) not in shown
    else:
        with pytest.raises(MalformedEnvelopeError) as info:
            parse(value)
        shown = f"{info.value}\n{info.value!r}"
    assert shown_bytes(shown, value) == [], shown

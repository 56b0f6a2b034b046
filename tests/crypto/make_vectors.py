"""Write vectors.json: known-answer vectors for the credential envelope.

Run ONLY when the envelope format changes on purpose (a new version byte):
    python tests/crypto/make_vectors.py
The committed vectors are what keeps the format from drifting silently.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypedDict

from silentpulse_db.crypto import Keyring
from silentpulse_db.crypto.envelope import Cell

KEY = bytes(range(32))


class Case(TypedDict):
    name: str
    version: int
    salt: str | None


CASES: list[Case] = [
    {"name": "v1 without salt", "version": 1, "salt": None},
    {"name": "v2 without salt", "version": 2, "salt": None},
    {"name": "v2 with salt", "version": 2, "salt": "silentpulse-test-salt"},
    {"name": "v1 with salt", "version": 1, "salt": "silentpulse-test-salt"},
]
COMMON: dict[str, str] = {
    "key_hex": KEY.hex(),
    "tenant_id": "6f1c2a7e-3b9d-4e5f-8a1b-2c3d4e5f6a7b",
    "row_id": "0b8e7d6c-5a4b-4c3d-9e2f-1a0b9c8d7e6f",
    "table": "integration_points",
    "column": "connection_config",
    "nonce_hex": "000102030405060708090a0b",
    "plaintext": '{"bootstrap": "kafka:9092", "password": "hunter2"}',
}


def main() -> None:
    vectors: list[dict[str, object]] = []
    for case in CASES:
        salt = case["salt"]
        keyring = Keyring(KEY, salt=salt.encode() if salt else None)
        cell = Cell.of(COMMON["table"], COMMON["column"], COMMON["tenant_id"], COMMON["row_id"])
        envelope = keyring.seal(
            COMMON["plaintext"].encode(),
            cell,
            version=case["version"],
            nonce=bytes.fromhex(COMMON["nonce_hex"]),
        )
        vectors.append(
            {
                "name": case["name"],
                "version": case["version"],
                "salt": salt,
                **COMMON,
                "kid_hex": keyring.kid.hex(),
                "envelope_hex": envelope.hex(),
            }
        )
    out = Path(__file__).with_name("vectors.json")
    out.write_text(json.dumps(vectors, indent=2) + "\n")
    print(f"wrote {len(vectors)} vectors to {out}")


if __name__ == "__main__":
    main()

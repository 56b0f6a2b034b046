"""Credential rows for the rotation tests: tenants and envelopes in all three tables."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from silentpulse_db.credentials import COLUMNS
from silentpulse_db.crypto import Keyring

OLD_KEY = bytes.fromhex("a1c3" * 16)
NEW_KEY = bytes.fromhex("b2d4" * 16)
SALT = b"test-salt"


@dataclass
class Cell:
    table: str
    column: str
    row_id: uuid.UUID
    tenant_id: uuid.UUID
    plaintext: bytes


async def populate(
    conn: Any, keyring: Keyring, *, tenants: int, per_table: int, versions: tuple[int, ...] = (1,)
) -> list[Cell]:
    """``tenants`` tenants, each with ``per_table`` integration points and channels and one ai_config."""
    cells: list[Cell] = []
    tenant_ids = [uuid.uuid4() for _ in range(tenants)]
    await conn.copy_records_to_table(
        "tenants",
        records=[(t, f"T{t.hex[:6]}", f"h-{t.hex}") for t in tenant_ids],
        columns=["id", "name", "handle"],
    )
    points: list[tuple[Any, ...]] = []
    channels: list[tuple[Any, ...]] = []
    configs: list[tuple[Any, ...]] = []
    n = 0
    for tenant in tenant_ids:
        for i in range(per_table):
            for table, column, bucket, extra in (
                ("integration_points", "connection_config", points, ("kafka",)),
                ("notification_channels", "config", channels, ("webhook",)),
            ):
                row = uuid.uuid4()
                secret = f'{{"password": "pw-{table}-{n}-{i}"}}'.encode()
                sealed = keyring.encrypt(
                    secret,
                    version=versions[n % len(versions)],
                    tenant_id=tenant,
                    table=table,
                    column=column,
                    row_id=row,
                )
                bucket.append((row, tenant, f"{table[:4]}-{i}", *extra, sealed))
                cells.append(Cell(table, column, row, tenant, secret))
                n += 1
        secret = f"sk-{tenant.hex}".encode()
        version = versions[n % len(versions)]
        sealed = keyring.encrypt(
            secret,
            version=version,
            tenant_id=tenant,
            table="ai_configs",
            column="api_key_enc",
            row_id=tenant,
        )
        configs.append((tenant, "openai", "gpt", sealed, version))
        cells.append(Cell("ai_configs", "api_key_enc", tenant, tenant, secret))
        n += 1
    await conn.copy_records_to_table(
        "integration_points",
        records=points,
        columns=["id", "tenant_id", "name", "type", "connection_config"],
    )
    await conn.copy_records_to_table(
        "notification_channels",
        records=channels,
        columns=["id", "tenant_id", "name", "type", "config"],
    )
    await conn.copy_records_to_table(
        "ai_configs",
        records=configs,
        columns=["tenant_id", "provider", "model", "api_key_enc", "encryption_version"],
    )
    return cells


async def read_value(conn: Any, cell: Cell) -> bytes:
    """The cell's value, found by its key: an id is unique within its tenant only."""
    id_column = "tenant_id" if cell.table == "ai_configs" else "id"
    value: bytes = await conn.fetchval(
        f"SELECT {cell.column} FROM {cell.table} WHERE tenant_id = $1 AND {id_column} = $2",
        cell.tenant_id,
        cell.row_id,
    )
    return value


async def checksum(conn: Any) -> str:
    """A digest of every byte of the three tables."""
    digest = hashlib.sha256()
    for column in COLUMNS:
        rows = await conn.fetch(
            f"SELECT * FROM {column.table} ORDER BY tenant_id, {column.id_column}"
        )
        digest.update(repr([tuple(r) for r in rows]).encode())
    return digest.hexdigest()


def open_all(keyring: Keyring, cells: list[Cell], values: list[bytes]) -> list[bytes]:
    return [
        keyring.decrypt(v, tenant_id=c.tenant_id, table=c.table, column=c.column, row_id=c.row_id)
        for c, v in zip(cells, values, strict=True)
    ]

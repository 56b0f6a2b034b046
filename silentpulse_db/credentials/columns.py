"""Where credentials live, and how the jobs read them and count what is left."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CredentialColumn:
    table: str
    column: str
    id_column: str = "id"
    version_column: str | None = None  # ai_configs.encryption_version: 0 plaintext, 1, 2

    @property
    def name(self) -> str:
        return f"{self.table}.{self.column}"

    def select_sql(self) -> str:
        """Every row: id, tenant, xmin (the concurrency guard), value [, version]."""
        version = f", {self.version_column} AS enc_version" if self.version_column else ""
        # The id as text, its canonical form, as the associated data holds it: the
        # server's uuid_out costs less than str() on a decoded UUID, once per row.
        return (
            f"SELECT {self.id_column}::text AS id, tenant_id, xmin AS row_xmin, "
            f"{self.column} AS value{version} FROM {self.table}"
        )

    def not_current_sql(self) -> str:
        """How many values are not under key $1 (and, when $2, not v2), from the
        envelope's fixed header alone: nothing is decrypted and no value leaves
        the server. Plaintext (encryption_version 0) always counts."""
        c = self.column
        plaintext = f" OR {self.version_column} = 0" if self.version_column else ""
        return (
            f"SELECT count(*) FROM {self.table} WHERE {c} IS NOT NULL AND ("
            f"length({c}) < 37 OR substring({c} FROM 2 FOR 8) <> $1::bytea "
            f"OR ($2::bool AND substring({c} FROM 1 FOR 1) <> '\\x02'::bytea){plaintext})"
        )


COLUMNS = (
    CredentialColumn("integration_points", "connection_config"),
    CredentialColumn("notification_channels", "config"),
    CredentialColumn(
        "ai_configs", "api_key_enc", id_column="tenant_id", version_column="encryption_version"
    ),
)


@dataclass(frozen=True)
class Problem:
    """A value that cannot be opened: where it is and why. Never the value: ``kid`` is
    its key id only when a key at hand has it, else "-" (crypto.keyring.shown_kid)."""

    table: str
    row_id: str
    kid: str
    reason: str

    def __str__(self) -> str:
        return f"{self.table} id={self.row_id} kid={self.kid}: {self.reason}"


async def count_not_current(conn: Any, kid: bytes, *, require_v2: bool) -> dict[str, int]:
    """Per column, the values not under ``kid`` (or not v2 when ``require_v2``); zeros left out."""
    left: dict[str, int] = {}
    for column in COLUMNS:
        count = await conn.fetchval(column.not_current_sql(), kid, require_v2)
        if count:
            left[column.name] = int(count)
    return left


def reason(exc: Exception) -> str:
    kind = {
        "UnknownKeyError": "unknown key",
        "TamperedValueError": "tampered or misplaced",
        "MalformedEnvelopeError": "malformed envelope",
    }.get(type(exc).__name__, "cannot open")
    return f"{kind}: {exc}"


PROBLEMS_SHOWN = 100


def problem_lines(problems: list[Problem]) -> str:
    shown = problems[:PROBLEMS_SHOWN]
    more = len(problems) - len(shown)
    return "\n".join(f"  {p}" for p in shown) + (f"\n  ... and {more} more" if more else "")

"""INVALID indexes: what a failed CREATE INDEX CONCURRENTLY (or REINDEX CONCURRENTLY)
leaves behind. Writes keep maintaining them, queries never use them, and a unique
one still rejects duplicates: `status` and `check` name every one."""

from __future__ import annotations

from typing import Any

_INVALID = """
    SELECT format('%s on %s', i.indexrelid::regclass, i.indrelid::regclass) AS what
    FROM pg_index AS i
    JOIN pg_class AS c ON c.oid = i.indexrelid
    JOIN pg_namespace AS n ON n.oid = c.relnamespace
    WHERE NOT i.indisvalid AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg_toast%'
    ORDER BY 1
"""


async def invalid_indexes(conn: Any) -> list[str]:
    """Each INVALID index of the database as "index on table", with what to do: the
    command that stopped, run again, finishes the build (run/unfinished.py), whichever
    way it was going; `up` after a stopped down would undo the down instead."""
    return [
        f"index {row['what']} is INVALID (a concurrent build failed): if a migration builds "
        f"it, run the `silentpulse-db` command that stopped again (`up`; the `down` or `goto` "
        f"whose down file builds it), else DROP INDEX CONCURRENTLY it"
        for row in await conn.fetch(_INVALID)
    ]

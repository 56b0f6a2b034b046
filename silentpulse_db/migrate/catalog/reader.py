"""Reading a database's schema with queries.py: its objects, kind by kind (what `check`
and `drift` compare), and for drift the rest of a ``Catalog`` (the role that migrates,
default privileges, who may CREATE where, the history's sequence)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from .queries import (
    DEFAULT_PRIVILEGES,
    HISTORY_SEQUENCE,
    KINDS,
    MIGRATING_ROLE,
    SCHEMA_CREATE,
)

# Each kind's SQL, with and without the columns drift alone reads.
_SQL = {
    statements: {
        kind: "\nUNION ALL\n".join(query.select(statements) for query in queries)
        for kind, queries in KINDS.items()
    }
    for statements in (True, False)
}


class CatalogObject(NamedTuple):
    """One object as read: ``value``, what is compared; the rest as in queries.Query
    (None where not read)."""

    value: str
    table: str | None
    create: str | None
    drop: str | None
    parent: str | None = None
    bound: str | None = None


Objects = dict[str, dict[str, CatalogObject]]


async def read_objects(conn: Any, kinds: Iterable[str], *, statements: bool = True) -> Objects:
    """{kind: {key: object}} of the connected database, for each of ``kinds`` (in that
    order). ``statements=False``: the key, the value and a partition's bound alone (the
    statements and what drift groups by cost each read more)."""
    objects: Objects = {}
    for kind in kinds:
        objects[kind] = {
            r["key"]: CatalogObject(
                r["value"] or "", r["table"], r["create"], r["drop"], r["parent"], r["bound"]
            )
            for r in await conn.fetch(_SQL[statements][kind])
        }
    return objects


class Catalog(NamedTuple):
    """One database's schema as drift compares it: {kind: {key: object}}, the role that
    migrates it, its default privileges, and who may CREATE in which schema."""

    objects: dict[str, dict[str, CatalogObject]]
    owner: str | None
    default_privileges: tuple[tuple[str, str, str, str], ...]
    schema_create: tuple[tuple[str, str], ...] = ()


async def read_catalog(conn: Any, kinds: Iterable[str]) -> Catalog:
    """``kinds`` of the connected database's objects, with their statements (the
    history's sequence among the sequences), and the rest of its ``Catalog``."""
    objects = await read_objects(conn, kinds)
    if "sequence" in objects:
        objects["sequence"].update(await _history_sequence(conn))
    owner = await conn.fetchval(MIGRATING_ROLE)
    defaults = tuple(
        (r["role"], r["grantee"], r["privilege"], r["objtype"])
        for r in await conn.fetch(DEFAULT_PRIVILEGES)
    )
    schema_create = tuple((r["schema"], r["grantee"]) for r in await conn.fetch(SCHEMA_CREATE))
    return Catalog(objects, owner, defaults, schema_create)


HISTORY_SEQUENCE_IN_ORDER = "its next id above every recorded one"


async def _history_sequence(conn: Any) -> dict[str, CatalogObject]:
    """The history's sequence, as in order or restarted (its next id at or below one
    recorded), with the setval that puts it back. A role that may not read it (a
    read-only role given SELECT on the tables alone) cannot tell: it reads in order."""
    found = await conn.fetchrow(HISTORY_SEQUENCE)
    if found is None:
        return {}
    value = HISTORY_SEQUENCE_IN_ORDER
    if found["readable"]:
        position = await conn.fetchrow(f"SELECT last_value, is_called FROM {found['seq']}")
        recorded = await conn.fetchval(f"SELECT max(id) FROM {found['history']}")
        next_id = position["last_value"] + (found["increment"] if position["is_called"] else 0)
        if recorded is not None and next_id <= recorded:
            value = f"restarted: its next id {next_id} is at or below the recorded {recorded}"
    fix = f"SELECT setval('{found['seq']}', (SELECT max(id) FROM {found['history']}))"
    return {found["seq"]: CatalogObject(value, None, fix, None)}

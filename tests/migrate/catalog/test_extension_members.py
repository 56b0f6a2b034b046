"""An extension is listed as the extension alone, by `check`'s snapshot and by drift's
catalog alike (one filter, by pg_depend, in migrate/catalog/): nothing its script made
(a schema, a table with its policy and trigger, a function, a type) is a migration's
to compare. Citus makes such objects in public and schemas of its own."""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg

from silentpulse_db.migrate.catalog.reader import read_catalog
from silentpulse_db.migrate.proofs.snapshot import snapshot
from silentpulse_db.migrate.schema_diff.expected import COMPARED

KEPT = """
    CREATE EXTENSION IF NOT EXISTS pgcrypto;
    CREATE SCHEMA kept;
    CREATE TABLE kept.t (id int);
    CREATE POLICY p ON kept.t USING (true);
    CREATE FUNCTION kept.f() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';
    CREATE TRIGGER tr BEFORE INSERT ON kept.t FOR EACH ROW EXECUTE FUNCTION kept.f();
    CREATE TYPE kept.mood AS ENUM ('a');
"""
# What an extension's script does with what it creates (here by hand).
MADE_MEMBERS = """
    ALTER EXTENSION pgcrypto ADD SCHEMA kept;
    ALTER EXTENSION pgcrypto ADD TABLE kept.t;
    ALTER EXTENSION pgcrypto ADD FUNCTION kept.f();
    ALTER EXTENSION pgcrypto ADD TYPE kept.mood;
"""


def _kept(objects: Mapping[str, Mapping[str, object]]) -> set[str]:
    return {f"{kind} {key}" for kind, items in objects.items() for key in items if "kept" in key}


async def test_an_extensions_own_objects_are_read_by_neither(silentpulse_database: str) -> None:
    conn = await asyncpg.connect(silentpulse_database)
    try:
        await conn.execute(KEPT)
        compared = {"schema kept", "relation kept.t", "column kept.t.id", "policy kept.t.p"}
        compared |= {"trigger kept.t.tr", "function kept.f()", "type kept.mood"}
        assert _kept((await snapshot(conn)).objects) == compared
        assert compared < _kept((await read_catalog(conn, COMPARED)).objects)

        await conn.execute(MADE_MEMBERS)
        snapshot_after = await snapshot(conn)
        catalog_after = await read_catalog(conn, COMPARED)
    finally:
        await conn.close()
    assert _kept(snapshot_after.objects) == set()
    assert _kept(catalog_after.objects) == set()
    assert "pgcrypto" in snapshot_after.objects["extension"]
    assert "pgcrypto" in catalog_after.objects["extension"]

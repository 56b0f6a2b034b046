"""Which tables of the migrated schema Citus distributes by tenant, as the schema is today.

On a migrated database on a Citus coordinator: ``create_reference_table('tenants')``,
then ``create_distributed_table(t, 'tenant_id', colocate_with => ...)`` for every table
with a ``tenant_id`` column (partitioned tables whole, not their partitions), referenced
tables before the tables referencing them, each colocated with the first that
distributed. Each attempt is a statement of its own: one refused leaves the rest to try.

``tenants`` is tried twice: with Citus's defaults, then with
``citus.enable_local_reference_table_foreign_keys = off`` (which the rest keep). Citus
checks a table's foreign keys first, so a table whose referenced table did not distribute
says only that; it is tried again "alone" to find its own blocker: in a transaction rolled
back, the tables it references are distributed first (or made reference tables).

Prints a Markdown table: each attempt's table, outcome, the error's first line and the
first line of its DETAIL (where Citus gives its reason).

    python tools/citus_probe.py [--target N]      # a throwaway cluster: migrate, probe
    DATABASE_URL=... python tools/citus_probe.py  # that migrated database (it CHANGES it)

tests/citus/test_distribution.py holds the outcomes on the schema up to 000023 (main's
before issue 31's tenant-first keys) to what they are.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass
from typing import Any

import asyncpg

REFERENCE = "reference"
DISTRIBUTED = "distributed"
FAILED = "failed"
LOCAL_REFERENCE_KEYS_OFF = "SET citus.enable_local_reference_table_foreign_keys = off"

# The tables (not partitions): whether they have a tenant_id column, and the tables they
# reference (partitions' inherited keys aside).
TABLES = """
SELECT c.relname AS name,
       EXISTS (SELECT 1 FROM pg_attribute a
                WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
         AS tenant,
       array(SELECT DISTINCT r.relname::text
               FROM pg_constraint k JOIN pg_class r ON r.oid = k.confrelid
              WHERE k.conrelid = c.oid AND k.contype = 'f' AND k.confrelid <> c.oid
                AND k.conparentid = 0) AS refs
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
 ORDER BY c.relname
"""


@dataclass(frozen=True)
class Outcome:
    table: str
    outcome: str  # REFERENCE, DISTRIBUTED or FAILED
    error: str = ""  # the error's first line, when it failed
    detail: str = ""  # the first line of its DETAIL (Citus's reason, often)
    setting: str = ""  # how it was tried, beyond the defaults


def referenced_first(tables: dict[str, list[str]], names: list[str] | None = None) -> list[str]:
    """``names`` (default: every table) and the tables among ``tables`` they reference,
    directly or not, each after those it references; by name otherwise. ``tables``: each
    table's name and the names it references."""
    order: list[str] = []

    def place(name: str, path: tuple[str, ...]) -> None:
        if name in order or name in path:  # done, or a cycle: leave it where it is
            return
        for ref in sorted(tables.get(name, [])):
            if ref in tables:
                place(ref, (*path, name))
        order.append(name)

    for name in sorted(tables) if names is None else names:
        place(name, ())
    return order


def _first_line(text: str | None) -> str:
    return (str(text or "").strip().splitlines() or [""])[0]


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


REFERENCE_SQL = "SELECT create_reference_table($1::regclass)"
DISTRIBUTE_SQL = "SELECT create_distributed_table($1::regclass, 'tenant_id', colocate_with => $2)"
BLOCKED = "must be a distributed table or a reference table"
CITUS_TABLES = "SELECT c.relname FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid"


async def _attempt(conn: Any, table: str, kind: str, *args: str, setting: str = "") -> Outcome:
    sql = REFERENCE_SQL if kind == REFERENCE else DISTRIBUTE_SQL
    try:
        await conn.execute(sql, _quoted(table), *args)
    except asyncpg.PostgresError as exc:
        error = _first_line(getattr(exc, "message", None) or str(exc))
        return Outcome(table, FAILED, error, _first_line(getattr(exc, "detail", "")), setting)
    return Outcome(table, kind, "", "", setting)


ALONE = "alone: in a transaction rolled back, what it references distributed first"


async def _alone(
    conn: Any, tables: dict[str, list[str]], tenant: set[str], table: str, anchor: str
) -> Outcome:
    """``table``'s own blocker, past the tables it references that did not distribute: in a
    transaction rolled back, each of those (referenced first) is distributed, or made a
    reference table where it has no tenant_id or does not distribute; then ``table``."""
    citus = {row[0] for row in await conn.fetch(CITUS_TABLES)}
    transaction = conn.transaction()
    await transaction.start()
    try:
        # Shards of reference tables made in this transaction: created one by one.
        await conn.execute("SET LOCAL citus.multi_shard_modify_mode = 'sequential'")
        for ref in referenced_first(tables, [table])[:-1]:
            if ref not in citus and not await _made_citus(conn, ref, ref in tenant, anchor):
                error = f"{ref} neither distributes nor becomes a reference table"
                return Outcome(table, FAILED, error, "", ALONE)
        outcome = await _attempt(conn, table, DISTRIBUTED, anchor)
        return Outcome(table, outcome.outcome, outcome.error, outcome.detail, ALONE)
    finally:
        await transaction.rollback()


async def _made_citus(conn: Any, table: str, tenant: bool, anchor: str) -> bool:
    """Distribute ``table`` (if ``tenant``), else make it a reference table; each try in a
    savepoint, so that a refusal leaves the transaction usable."""
    tries = [(DISTRIBUTED, anchor)] if tenant else []
    for kind, *args in [*tries, (REFERENCE,)]:
        savepoint = conn.transaction()
        await savepoint.start()
        outcome = await _attempt(conn, table, kind, *args)
        if outcome.outcome == FAILED:
            await savepoint.rollback()
            continue
        await savepoint.commit()
        return True
    return False


async def probe(dsn: str) -> list[Outcome]:
    """Try each table on ``dsn``'s database (a migrated one on a Citus coordinator; the
    tables that distribute stay distributed); one Outcome per attempt, in order. A table
    refused because a table it references did not distribute is tried again alone
    (:func:`_alone`), its outcome right after."""
    conn = await asyncpg.connect(dsn)
    try:
        outcomes = [await _attempt(conn, "tenants", REFERENCE)]
        if outcomes[0].outcome == FAILED:
            await conn.execute(LOCAL_REFERENCE_KEYS_OFF)
            setting = LOCAL_REFERENCE_KEYS_OFF.removeprefix("SET ")
            outcomes.append(await _attempt(conn, "tenants", REFERENCE, setting=setting))
        rows = await conn.fetch(TABLES)
        tables = {row["name"]: list(row["refs"]) for row in rows}
        tenant = {row["name"] for row in rows if row["tenant"]}
        tenant_tables = {name: refs for name, refs in tables.items() if name in tenant}
        anchor = "default"  # until one distributes: then the others colocate with it
        for table in referenced_first(tenant_tables):
            outcome = await _attempt(conn, table, DISTRIBUTED, anchor)
            if outcome.outcome == DISTRIBUTED and anchor == "default":
                anchor = _quoted(table)
            outcomes.append(outcome)
            if BLOCKED in outcome.error:
                outcomes.append(await _alone(conn, tables, tenant, table, anchor))
        return outcomes
    finally:
        await conn.close()


def render(outcomes: list[Outcome]) -> str:
    """A Markdown table: table, outcome, the error's first line and its detail's."""
    lines = ["| table | outcome | error (first line) | detail (first line) |", "|---|---|---|---|"]
    for item in outcomes:
        outcome = f"{item.outcome} ({item.setting})" if item.setting else item.outcome
        cells = [f"`{item.table}`", outcome, item.error, item.detail]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    counts: dict[str, int] = {}
    for item in outcomes:
        if item.setting != ALONE:
            counts[item.outcome] = counts.get(item.outcome, 0) + 1
    summary = ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items()))
    return "\n".join([*lines, "", f"attempts, the alone ones aside: {summary}"])


async def _migrate(dsn: str, target: int | None) -> None:
    from silentpulse_db import run_migrations
    from silentpulse_db.migrate import apply_prerequisites

    await apply_prerequisites(dsn)
    await run_migrations(dsn, target=target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--target", type=int, help="migrate the throwaway cluster's database up to this version"
    )
    args = parser.parse_args(argv)
    dsn = os.environ.get("DATABASE_URL")
    if dsn:
        print(render(asyncio.run(probe(dsn))))
        return 0
    from silentpulse_db.testing.citus import CitusCluster, citus_missing

    reason = citus_missing()
    if reason:
        print(f"citus_probe: {reason}", file=sys.stderr)
        return 1
    with CitusCluster() as cluster:
        dsn = cluster.create_database("citus_probe")
        asyncio.run(_migrate(dsn, args.target))
        print(render(asyncio.run(probe(dsn))))
    return 0


if __name__ == "__main__":
    sys.exit(main())

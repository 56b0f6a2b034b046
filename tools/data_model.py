"""`make data-model`: docs/data-model.md, generated from the catalog of a migrated database.

A throwaway PostgreSQL gets the prerequisites and every packaged migration; the
tables, columns, keys, CHECK constraints, row-level security and partitioning
are read from pg_catalog and written out with an entity-relationship diagram
(Mermaid). The suite regenerates the page and fails when the committed one is
stale (tests/schema/test_data_model.py). Only ``WRITERS`` below is written by
hand: which service writes each table is not in the catalog.

    python tools/data_model.py            # rewrite docs/data-model.md
    python tools/data_model.py --check    # exit 1 if it is stale
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "data-model.md"

# Which services write each table: the API (requests of tenants' users and their
# integrations), the worker (pulse checks, observations, reports, learning), the
# notifications service, the operators' jobs. A new table needs a line here (tested).
WRITERS: dict[str, str] = {
    "ai_configs": "API",
    "alert_changes": (
        "the alerts trigger (one row per change; read by the notifications service's "
        "listener); retention prunes it"
    ),
    "alert_changes_pruned": "retention (the highest position it deleted from alert_changes)",
    "alert_listener_positions": "notifications service (its listener's position)",
    "alerts": "worker (creates); API (acknowledge, resolve)",
    "anomaly_events": "worker (creates); API (acknowledge)",
    "api_keys": "API",
    "asset_group_mitre": "API",
    "asset_groups": "API",
    "asset_observation_daily": "worker (rolls up hourly)",
    "asset_observation_hourly": "worker (rolls up observations)",
    "asset_observations": "worker",
    "asset_profiles": "worker (learning); API (configuration)",
    "assets": "API (CMDB import)",
    "audit_logs": "API (every change a user makes)",
    "audit_tasks": "API",
    "availability_snapshots": "worker",
    "compliance_breaches": "worker (opens); API (acknowledge, resolve)",
    "connector_defs": "API (connector hub sync, outside any tenant's transaction)",
    "exclusion_logs": "worker (instead of an alert)",
    "exclusion_windows": "API",
    "feed_profiles": "worker (learning); API (configuration)",
    "flow_pulses": "API",
    "flows": "API",
    "integration_points": "API; migrate-credentials (re-encryption)",
    "mitre_techniques": "operators (reference data, as the owner)",
    "notification_channels": "API; migrate-credentials (re-encryption)",
    "notification_rules": "API",
    "report_definitions": "API",
    "report_executions": "worker",
    "tenants": "API (onboarding)",
    "threshold_suggestions": "worker (suggests); API (operator's answer)",
    "users": "API",
}

_TABLES = """
    SELECT c.oid, c.relname AS name, c.relkind = 'p' AS partitioned,
           c.relrowsecurity AS rls, c.relforcerowsecurity AS forced,
           obj_description(c.oid, 'pg_class') AS comment,
           CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END AS partition_key
    FROM pg_class AS c
    WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')
      AND NOT c.relispartition AND c.relname NOT LIKE 'schema_migrations%'
    ORDER BY c.relname
"""
_COLUMNS = """
    SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type,
           a.attnotnull AS not_null, pg_get_expr(d.adbin, d.adrelid) AS default,
           col_description(a.attrelid, a.attnum) AS comment
    FROM pg_attribute AS a
    LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
    ORDER BY a.attnum
"""
_CONSTRAINTS = """
    SELECT conname AS name, contype::text AS kind, pg_get_constraintdef(oid) AS definition,
           confrelid::regclass::text AS refers_to,
           ARRAY(SELECT attname FROM unnest(conkey) WITH ORDINALITY AS k(n, i)
                 JOIN pg_attribute ON attrelid = conrelid AND attnum = k.n ORDER BY k.i)
               AS columns
    FROM pg_constraint WHERE conrelid = $1 AND contype IN ('p', 'u', 'f', 'c')
    ORDER BY contype, conname
"""
_POLICIES = """
    SELECT policyname AS name, cmd, qual, with_check FROM pg_policies
    WHERE schemaname = current_schema() AND tablename = $1 ORDER BY policyname
"""


async def render(conn: Any) -> str:
    """The page for the database ``conn`` is connected to (migrated)."""
    tables = await conn.fetch(_TABLES)
    missing = sorted({t["name"] for t in tables} - set(WRITERS))
    if missing:
        raise SystemExit(f"tools/data_model.py: WRITERS has no line for {', '.join(missing)}")
    sections, edges = [], []
    for table in tables:
        columns = await conn.fetch(_COLUMNS, table["oid"])
        constraints = await conn.fetch(_CONSTRAINTS, table["oid"])
        policies = await conn.fetch(_POLICIES, table["name"])
        sections.append(_section(table, columns, constraints, policies))
        edges += [(table["name"], c) for c in constraints if c["kind"] == "f"]
    version = await conn.fetchval("SELECT version FROM schema_migrations")
    return _page(version, tables, edges, sections)


def _page(version: int, tables: list[Any], edges: list[Any], sections: list[str]) -> str:
    index = "\n".join(
        f"| [{t['name']}](#{t['name']}) | {WRITERS[t['name']]} | "
        f"{'yes' if t['partitioned'] else ''} | {_rls(t)} |"
        for t in tables
    )
    return f"""# The data model

Generated by `make data-model` (tools/data_model.py) from the catalog of a database
migrated to version {version}; do not edit by hand: the suite fails when this page
is stale. Columns, keys, CHECK values, row-level security and partitioning are the
database's own; "written by" is tools/data_model.py's `WRITERS`.

Tenant isolation: a table with row-level security shows a role without BYPASSRLS
only the rows of `app.current_tenant` (set it with `tenant_transaction`, see
docs/tenancy.md); "forced" means the table's owner is held to it too. "enabled"
(not forced): a table shared by every tenant, which every role granted SELECT reads
whole and only its writers change (docs/security.md, "Shared reference tables").

| table | written by | partitioned | row-level security |
|---|---|---|---|
{index}

## Relationships

{_diagram(tables, edges)}

{chr(10).join(sections)}"""


def _rls(table: Any) -> str:
    if not table["rls"]:
        return "no"
    return "forced" if table["forced"] else "enabled"


def _policy(policy: Any) -> str:
    """A policy's expressions: rows it shows (USING), rows it admits (WITH CHECK)."""
    qual, check = (" ".join(e.split()) if e else e for e in (policy["qual"], policy["with_check"]))
    if check is None or check == qual:
        return f"`{qual}`"
    if qual is None:
        return f"WITH CHECK `{check}`"
    return f"`{qual}`, WITH CHECK `{check}`"


def _diagram(tables: list[Any], edges: list[Any]) -> str:
    lines = ["```mermaid", "erDiagram"]
    for source, fk in edges:
        target = fk["refers_to"].split(".")[-1].strip('"')
        label = ", ".join(fk["columns"])
        lines.append(f'    {target} ||--o{{ {source} : "{label}"')
    linked = {s for s, _ in edges} | {fk["refers_to"].split(".")[-1] for _, fk in edges}
    lines += [f"    {t['name']}" for t in tables if t["name"] not in linked]
    lines.append("```")
    return "\n".join(lines)


def _section(table: Any, columns: list[Any], constraints: list[Any], policies: list[Any]) -> str:
    out = [f"### {table['name']}", ""]
    if table["comment"]:
        out += [table["comment"], ""]
    facts = [f"Written by: {WRITERS[table['name']]}.", f"Row-level security: {_rls(table)}."]
    if table["partition_key"]:
        facts.append(
            f"Partitioned by {table['partition_key']} (monthly partitions, see docs/operations.md)."
        )
    out += [" ".join(facts), "", "| column | type | null | default | |", "|---|---|---|---|---|"]
    for c in columns:
        default = f"`{c['default']}`" if c["default"] else ""
        out.append(
            f"| {c['name']} | {c['type']} | {'' if c['not_null'] else 'null'} | {default} | "
            f"{(c['comment'] or '').replace('|', '/')} |"
        )
    keys = [f"- `{c['name']}`: {c['definition']}" for c in constraints]
    if keys:
        out += ["", "Keys and checks:", "", *keys]
    if policies:
        out += ["", "Policies:", ""]
        out += [f"- `{p['name']}` ({p['cmd']}): {_policy(p)}" for p in policies]
    out.append("")
    return "\n".join(out)


async def _generate() -> str:
    from silentpulse_db import run_migrations
    from silentpulse_db.migrate import apply_prerequisites
    from silentpulse_db.testing.server import PostgresServer, create_database

    with PostgresServer() as server:
        dsn = create_database(server.dsn, "data_model")
        await apply_prerequisites(dsn)
        await run_migrations(dsn, partitions_ahead=None)
        conn = await asyncpg.connect(dsn)
        try:
            return await render(conn)
        finally:
            await conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    args = parser.parse_args(argv)
    page = asyncio.run(_generate())
    if args.check:
        stale = not PAGE.exists() or PAGE.read_text() != page
        print("docs/data-model.md is stale: run `make data-model`" if stale else "up to date")
        return 1 if stale else 0
    PAGE.write_text(page)
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

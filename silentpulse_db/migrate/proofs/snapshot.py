"""A snapshot of a database's schema from pg_catalog, and the difference of two.

Each object gets a stable key ("index public.t_pkey", "column public.t.id") and
a description of everything a migration could change about it, so that two
snapshots compare object by object and a difference names the object.
The migration bookkeeping tables are left out, and what protects them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..version_table import GUARD_FUNCTION, HISTORY_TABLE, VERSION_TABLE

# Schemas that belong to PostgreSQL or to extensions' internals.
SKIP_SCHEMAS = "('pg_catalog', 'information_schema', 'pg_toast', 'ag_catalog')"
_OWN = f"NOT IN ('{VERSION_TABLE}', '{HISTORY_TABLE}')"
# Objects created by an extension are the extension's; list the extension instead.
_NOT_EXTENSION_MEMBER = (
    "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = {oid} AND d.deptype = 'e')"
)

QUERIES: dict[str, str] = {
    "schema": f"""
        SELECT nspname AS key, coalesce(obj_description(oid, 'pg_namespace'), '') AS value
        FROM pg_namespace
        WHERE nspname NOT IN {SKIP_SCHEMAS} AND nspname NOT LIKE 'pg_temp%'
          AND nspname NOT LIKE 'pg_toast_temp%'
    """,
    "extension": """
        SELECT extname AS key, extversion AS value FROM pg_extension WHERE extname <> 'plpgsql'
    """,
    "relation": f"""
        SELECT n.nspname || '.' || c.relname AS key,
               concat_ws(' | ', 'kind ' || c.relkind::text,
                 'persistence ' || c.relpersistence::text,
                 CASE WHEN c.relrowsecurity THEN 'rls' END,
                 CASE WHEN c.relforcerowsecurity THEN 'force rls' END,
                 CASE WHEN c.relispartition THEN 'partition of ' || (
                   SELECT pn.nspname || '.' || p.relname FROM pg_inherits i
                   JOIN pg_class p ON p.oid = i.inhparent
                   JOIN pg_namespace pn ON pn.oid = p.relnamespace WHERE i.inhrelid = c.oid)
                   || ' ' || pg_get_expr(c.relpartbound, c.oid) END,
                 CASE WHEN c.relkind = 'p' THEN 'partitioned by ' || pg_get_partkeydef(c.oid) END,
                 CASE WHEN c.relkind IN ('v', 'm') THEN 'view ' || pg_get_viewdef(c.oid) END,
                 'comment ' || obj_description(c.oid, 'pg_class')) AS value
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
          AND n.nspname NOT IN {SKIP_SCHEMAS} AND n.nspname NOT LIKE 'pg_temp%'
          AND c.relname {_OWN} AND c.relname NOT LIKE '{HISTORY_TABLE}%'
          AND {_NOT_EXTENSION_MEMBER.format(oid="c.oid")}
    """,
    "column": f"""
        SELECT n.nspname || '.' || c.relname || '.' || a.attname AS key,
               concat_ws(' | ', format_type(a.atttypid, a.atttypmod),
                 CASE WHEN a.attnotnull THEN 'not null' END,
                 'default ' || pg_get_expr(ad.adbin, ad.adrelid),
                 CASE WHEN a.attidentity <> '' THEN 'identity ' || a.attidentity::text END,
                 CASE WHEN a.attgenerated <> '' THEN 'generated' END,
                 'collation ' || NULLIF(a.attcollation, 0)::regcollation::text,
                 'comment ' || col_description(c.oid, a.attnum)) AS value
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
        WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND n.nspname NOT IN {SKIP_SCHEMAS} AND n.nspname NOT LIKE 'pg_temp%'
          AND c.relname {_OWN}
          AND {_NOT_EXTENSION_MEMBER.format(oid="c.oid")}
    """,
    "constraint": f"""
        SELECT n.nspname || '.' || c.relname || '.' || con.conname AS key,
               pg_get_constraintdef(con.oid) AS value
        FROM pg_constraint con
        JOIN pg_class c ON c.oid = con.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN {SKIP_SCHEMAS} AND c.relname {_OWN}
          AND {_NOT_EXTENSION_MEMBER.format(oid="c.oid")}
    """,
    "index": f"""
        SELECT n.nspname || '.' || ic.relname AS key, pg_get_indexdef(i.indexrelid) AS value
        FROM pg_index i
        JOIN pg_class ic ON ic.oid = i.indexrelid
        JOIN pg_class c ON c.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = ic.relnamespace
        WHERE n.nspname NOT IN {SKIP_SCHEMAS} AND c.relname {_OWN}
          AND {_NOT_EXTENSION_MEMBER.format(oid="c.oid")}
    """,
    "function": f"""
        SELECT n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid)
               || ')' AS key,
               concat_ws(' | ', 'returns ' || pg_get_function_result(p.oid),
                 'md5 ' || md5(pg_get_functiondef(p.oid)),
                 'comment ' || obj_description(p.oid, 'pg_proc')) AS value
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname NOT IN {SKIP_SCHEMAS} AND p.prokind IN ('f', 'p', 'w')
          AND p.proname <> '{GUARD_FUNCTION}'
          AND {_NOT_EXTENSION_MEMBER.format(oid="p.oid")}
    """,
    "trigger": f"""
        SELECT n.nspname || '.' || c.relname || '.' || t.tgname AS key,
               pg_get_triggerdef(t.oid) || ' enabled ' || t.tgenabled::text AS value
        FROM pg_trigger t
        JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT t.tgisinternal AND n.nspname NOT IN {SKIP_SCHEMAS} AND c.relname {_OWN}
    """,
    "policy": f"""
        SELECT schemaname || '.' || tablename || '.' || policyname AS key,
               concat_ws(' | ', permissive, cmd, array_to_string(roles, ','),
                 'using ' || qual, 'check ' || with_check) AS value
        FROM pg_policies WHERE schemaname NOT IN {SKIP_SCHEMAS} AND tablename {_OWN}
    """,
    "type": f"""
        SELECT n.nspname || '.' || t.typname AS key,
               concat_ws(' | ', 'kind ' || t.typtype::text,
                 'labels ' || (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                               FROM pg_enum e WHERE e.enumtypid = t.oid),
                 'base ' || CASE WHEN t.typtype = 'd'
                                 THEN format_type(t.typbasetype, t.typtypmod) END,
                 'comment ' || obj_description(t.oid, 'pg_type')) AS value
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE t.typtype IN ('e', 'd') AND n.nspname NOT IN {SKIP_SCHEMAS}
          AND {_NOT_EXTENSION_MEMBER.format(oid="t.oid")}
    """,
}


@dataclass(frozen=True)
class Snapshot:
    """Every object of a schema: {kind: {key: description}}."""

    objects: Mapping[str, Mapping[str, str]]

    def diff(self, other: Snapshot) -> list[str]:
        """Lines naming each object that differs from ``self`` (before) to ``other`` (after)."""
        lines = []
        for kind in sorted(set(self.objects) | set(other.objects)):
            mine, theirs = self.objects.get(kind, {}), other.objects.get(kind, {})
            for key in sorted(set(mine) | set(theirs)):
                if key not in theirs:
                    lines.append(f"{kind} {key}: missing (was: {mine[key]})")
                elif key not in mine:
                    lines.append(f"{kind} {key}: unexpected (now: {theirs[key]})")
                elif mine[key] != theirs[key]:
                    lines.append(f"{kind} {key}: changed from {mine[key]!r} to {theirs[key]!r}")
        return lines

    def without_partitions(self) -> Snapshot:
        """The snapshot without partitions and their columns, constraints, indexes, triggers.

        Which monthly partitions exist depends on when a database was created;
        the partitioned tables themselves stay in.
        """
        relations = self.objects.get("relation", {})
        parts = {k for k, v in relations.items() if "partition of " in v}
        if not parts:
            return self

        def keep(kind: str, key: str, value: str) -> bool:
            if kind == "relation":
                return key not in parts
            if kind == "index":
                return not any(f" ON {p} USING" in value for p in parts)
            return not any(key.startswith(p + ".") for p in parts)

        return Snapshot(
            {
                kind: {k: v for k, v in items.items() if keep(kind, k, v)}
                for kind, items in self.objects.items()
            }
        )

    def count(self, kind: str) -> int:
        return len(self.objects.get(kind, {}))


async def snapshot(conn: Any) -> Snapshot:
    """Read the schema of the connected database."""
    objects: dict[str, dict[str, str]] = {}
    for kind, query in QUERIES.items():
        rows = await conn.fetch(query)
        objects[kind] = {r["key"]: r["value"] or "" for r in rows}
    return Snapshot(objects)

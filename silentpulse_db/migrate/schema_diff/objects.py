"""What drift reads of a database's catalog: the proofs' snapshot, and what drift adds.

`check` compares one database with itself before and after a migration; drift
compares two databases made differently (the live one, and a scratch one the
migration files built), so it also reads what differs between databases without
being drift (owners, grants, partition names and bounds) in a form the comparison
can normalise, and, for each object, the statement that creates it as it is
(``create``) and the one that drops it (``drop``): the SQL a report offers where one
statement brings the live database back.

Every query reads the catalog only: no lock on the application's tables.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..proofs.snapshot import QUERIES, SKIP_SCHEMAS
from ..version_table import GUARD_FUNCTION, HISTORY_TABLE, VERSION_TABLE

# The version table and its history (and the history's sequence, and what protects
# them: their policy and trigger, and GUARD_FUNCTION): the runner's own.
_BOOKKEEPING = (
    f"NOT IN ('{VERSION_TABLE}', '{HISTORY_TABLE}') AND c.relname NOT LIKE '{HISTORY_TABLE}%'"
)
_USER_SCHEMA = f"n.nspname NOT IN {SKIP_SCHEMAS} AND n.nspname NOT LIKE 'pg_temp%'"


def _not_member(oid: str, catalog: str = "pg_class") -> str:
    """No extension's own object (pg_depend 'e': made by its script, dropped with it):
    an extension's tables, views, sequences, functions, schemas, and so their grants,
    policies and triggers, are the extension's to keep, listed as the extension alone.
    Citus puts views in public and schemas of its own, granted to PUBLIC: not drift,
    and no REVOKE to propose on them."""
    return (
        f"NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '{catalog}'::regclass "
        f"AND d.objid = {oid} AND d.deptype = 'e')"
    )


def _storage(column: str) -> str:
    return (
        f"CASE {column} WHEN 'p' THEN 'plain' WHEN 'e' THEN 'external' WHEN 'm' THEN 'main' "
        f"ELSE 'extended' END"
    )


# An owner's own privileges are not grants (the grant queries leave them aside), but an
# owner can revoke them from itself (REVOKE ALL ON t FROM <owner>): the role that
# migrates then fails on its own table. Appended to the owner: ' (revoked from itself:
# DELETE, ...)', or nothing.
REVOKED_FROM_ITSELF = " (revoked from itself: "
_REVOKED_FROM_OWNER = f"""coalesce((
    SELECT '{REVOKED_FROM_ITSELF}' || string_agg(d.privilege_type, ', '
           ORDER BY d.privilege_type) || ')'
    FROM aclexplode(acldefault(({{kind}})::"char", {{owner}})) AS d
    WHERE {{acl}} IS NOT NULL AND d.grantee = {{owner}} AND NOT EXISTS (
      SELECT 1 FROM aclexplode({{acl}}) AS g
      WHERE g.grantee = {{owner}} AND g.privilege_type = d.privilege_type)), '')"""
_RELATION_REVOKED = _REVOKED_FROM_OWNER.format(
    acl="c.relacl", owner="c.relowner", kind="CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END"
)
_FUNCTION_REVOKED = _REVOKED_FROM_OWNER.format(acl="p.proacl", owner="p.proowner", kind="'f'")

# Each: key, value (what is compared), table (the relation it belongs to, for the
# partition rule), create and drop (a statement each, or NULL).
DRIFT_QUERIES: dict[str, str] = {
    "relation": f"""
        SELECT n.nspname || '.' || c.relname AS key,
               concat_ws(' | ', 'kind ' || c.relkind::text,
                 CASE WHEN c.relrowsecurity THEN 'rls' END,
                 CASE WHEN c.relforcerowsecurity THEN 'force rls' END,
                 CASE WHEN c.relkind = 'p' THEN 'partitioned by ' || pg_get_partkeydef(c.oid) END,
                 CASE WHEN c.relkind IN ('v', 'm') THEN 'view ' || pg_get_viewdef(c.oid) END,
                 -- Detached, a default partition no longer takes a month without its
                 -- partition (inserts fail) and its rows leave the table.
                 CASE WHEN c.relispartition THEN 'partition of ' || (
                   SELECT pn.nspname || '.' || p.relname FROM pg_inherits i
                   JOIN pg_class p ON p.oid = i.inhparent
                   JOIN pg_namespace pn ON pn.oid = p.relnamespace WHERE i.inhrelid = c.oid)
                   || CASE WHEN c.relpartbound IS NOT NULL
                           AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'
                      THEN ' (default)' ELSE '' END END,
                 -- DISABLE TRIGGER ALL also stops the foreign keys' internal triggers
                 CASE WHEN EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid
                                   AND t.tgisinternal AND t.tgenabled = 'D')
                      THEN 'internal triggers disabled' END,
                 -- UNLOGGED: emptied by a crash, not replicated
                 CASE WHEN c.relpersistence = 'u' THEN 'unlogged' END,
                 'options ' || array_to_string(c.reloptions, ','),
                 CASE WHEN c.relkind IN ('r', 'p') AND c.relreplident <> 'd'
                      THEN 'replica identity ' || c.relreplident::text END,
                 'comment ' || obj_description(c.oid, 'pg_class'))
                 AS value,
               n.nspname || '.' || c.relname AS "table",
               CASE WHEN c.relispartition THEN (
                 SELECT pn.nspname || '.' || p.relname FROM pg_inherits i
                 JOIN pg_class p ON p.oid = i.inhparent
                 JOIN pg_namespace pn ON pn.oid = p.relnamespace WHERE i.inhrelid = c.oid)
               END AS parent,
               pg_get_expr(c.relpartbound, c.oid) AS bound,
               NULL AS "create",
               format('DROP %s %I.%I', CASE c.relkind WHEN 'v' THEN 'VIEW'
                 WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE'
                 WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, n.nspname, c.relname) AS "drop"
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND {_USER_SCHEMA}
          AND c.relname {_BOOKKEEPING}
          AND {_not_member("c.oid")}
    """,
    "column": f"""
        SELECT n.nspname || '.' || c.relname || '.' || a.attname AS key,
               concat_ws(' | ', format_type(a.atttypid, a.atttypmod),
                 CASE WHEN a.attnotnull THEN 'not null' END,
                 'default ' || pg_get_expr(ad.adbin, ad.adrelid),
                 CASE WHEN a.attidentity <> '' THEN 'identity ' || a.attidentity::text END,
                 CASE WHEN a.attgenerated <> '' THEN 'generated' END,
                 (SELECT 'collate ' || quote_ident(co.collname) FROM pg_collation co
                  JOIN pg_type ty ON ty.oid = a.atttypid
                  WHERE co.oid = a.attcollation AND a.attcollation <> ty.typcollation),
                 -- SET STORAGE (another TOAST strategy than its type's) and SET STATISTICS
                 -- (another sample for the planner): with the type's own, for the fix
                 -- (PostgreSQL 15 has no SET STORAGE DEFAULT).
                 (SELECT 'storage ' || {_storage("a.attstorage")} || ' (its type '
                         || {_storage("ty.typstorage")} || ')'
                  FROM pg_type ty WHERE ty.oid = a.atttypid AND a.attstorage <> ty.typstorage),
                 CASE WHEN a.attstattarget <> -1 THEN 'statistics ' || a.attstattarget END,
                 'comment ' || col_description(c.oid, a.attnum)) AS value,
               n.nspname || '.' || c.relname AS "table",
               CASE WHEN c.relkind IN ('r', 'p') THEN
               format('ALTER TABLE %I.%I ADD COLUMN %I %s%s%s', n.nspname, c.relname,
                 a.attname, format_type(a.atttypid, a.atttypmod),
                 ' DEFAULT ' || pg_get_expr(ad.adbin, ad.adrelid),
                 CASE WHEN a.attnotnull THEN ' NOT NULL' END) END AS "create",
               CASE WHEN c.relkind IN ('r', 'p') THEN
               format('ALTER TABLE %I.%I DROP COLUMN %I', n.nspname, c.relname, a.attname)
               END AS "drop"
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
        WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND {_USER_SCHEMA} AND c.relname {_BOOKKEEPING}
          AND {_not_member("c.oid")}
    """,
    "constraint": f"""
        SELECT n.nspname || '.' || c.relname || '.' || con.conname AS key,
               pg_get_constraintdef(con.oid) AS value,
               n.nspname || '.' || c.relname AS "table",
               format('ALTER TABLE %I.%I ADD CONSTRAINT %I %s', n.nspname, c.relname,
                 con.conname, pg_get_constraintdef(con.oid)) AS "create",
               format('ALTER TABLE %I.%I DROP CONSTRAINT %I', n.nspname, c.relname,
                 con.conname) AS "drop"
        FROM pg_constraint con
        JOIN pg_class c ON c.oid = con.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {_USER_SCHEMA} AND c.relname {_BOOKKEEPING}
          AND {_not_member("c.oid")}
    """,
    "index": f"""
        SELECT n.nspname || '.' || ic.relname AS key,
               pg_get_indexdef(i.indexrelid)
                 || CASE WHEN i.indisvalid THEN '' ELSE ' (INVALID)' END AS value,
               n.nspname || '.' || c.relname AS "table",
               -- A partition's index attached to its table's index comes and goes with
               -- that one: no statement of its own.
               CASE WHEN attached THEN NULL
                    -- On a partitioned table: built on every partition at once, which
                    -- holds writes (no CONCURRENTLY there); "ON ONLY" would leave it INVALID.
                    WHEN c.relkind = 'p'
                      THEN replace(pg_get_indexdef(i.indexrelid), ' ON ONLY ', ' ON ')
                    ELSE regexp_replace(pg_get_indexdef(i.indexrelid), '^CREATE (UNIQUE )?INDEX',
                                        'CREATE \\1INDEX CONCURRENTLY') END AS "create",
               (SELECT pn.nspname || '.' || p.relname FROM pg_inherits h
                JOIN pg_class p ON p.oid = h.inhparent
                JOIN pg_namespace pn ON pn.oid = p.relnamespace
                WHERE h.inhrelid = i.indexrelid) AS parent,
               CASE WHEN attached THEN NULL ELSE format('DROP INDEX %s%I.%I',
                 CASE WHEN c.relkind = 'p' THEN '' ELSE 'CONCURRENTLY ' END,
                 n.nspname, ic.relname) END AS "drop"
        FROM pg_index i
        JOIN pg_class ic ON ic.oid = i.indexrelid
        JOIN pg_class c ON c.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = ic.relnamespace
        CROSS JOIN LATERAL (SELECT EXISTS (SELECT 1 FROM pg_inherits h
                                           WHERE h.inhrelid = i.indexrelid) AS attached) AS a
        WHERE {_USER_SCHEMA} AND c.relname {_BOOKKEEPING}
          AND {_not_member("c.oid")}
          AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid
                          AND k.contype IN ('p', 'u', 'x'))
    """,
    "policy": f"""
        SELECT n.nspname || '.' || c.relname || '.' || p.polname AS key,
               concat_ws(' | ', CASE WHEN p.polpermissive THEN 'permissive' ELSE 'restrictive' END,
                 pol.cmd, array_to_string(pol.roles, ','), 'using ' || pol.qual,
                 'check ' || pol.with_check) AS value,
               n.nspname || '.' || c.relname AS "table",
               format('CREATE POLICY %I ON %I.%I AS %s FOR %s TO %s%s%s', p.polname,
                 n.nspname, c.relname,
                 CASE WHEN p.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END,
                 pol.cmd,
                 (SELECT string_agg(CASE WHEN r = 'public' THEN r ELSE quote_ident(r) END, ', ')
                  FROM unnest(pol.roles) AS r),
                 ' USING (' || pol.qual || ')',
                 ' WITH CHECK (' || pol.with_check || ')') AS "create",
               format('DROP POLICY %I ON %I.%I', p.polname, n.nspname, c.relname) AS "drop"
        FROM pg_policy p
        JOIN pg_class c ON c.oid = p.polrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_policies pol ON pol.schemaname = n.nspname AND pol.tablename = c.relname
                             AND pol.policyname = p.polname
        WHERE {_USER_SCHEMA} AND c.relname {_BOOKKEEPING} AND {_not_member("c.oid")}
    """,
    "trigger": f"""
        SELECT n.nspname || '.' || c.relname || '.' || t.tgname AS key,
               pg_get_triggerdef(t.oid) || ' enabled ' || t.tgenabled::text AS value,
               n.nspname || '.' || c.relname AS "table",
               pg_get_triggerdef(t.oid) AS "create",
               format('DROP TRIGGER %I ON %I.%I', t.tgname, n.nspname, c.relname) AS "drop"
        FROM pg_trigger t
        JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT t.tgisinternal AND {_USER_SCHEMA} AND c.relname {_BOOKKEEPING}
          AND {_not_member("c.oid")}
    """,
    "function": f"""
        SELECT n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid)
               || ')' AS key,
               'md5 ' || md5(pg_get_functiondef(p.oid)) AS value,
               NULL AS "table",
               pg_get_functiondef(p.oid) AS "create",
               format('DROP FUNCTION %I.%I(%s)', n.nspname, p.proname,
                 pg_get_function_identity_arguments(p.oid)) AS "drop"
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE {_USER_SCHEMA} AND p.prokind IN ('f', 'p', 'w') AND p.proname <> '{GUARD_FUNCTION}'
          AND {_not_member("p.oid", "pg_proc")}
    """,
    # pg_sequence, not pg_sequences: that one reads each sequence's last value, which
    # waits for a session altering it.
    "sequence": f"""
        SELECT n.nspname || '.' || c.relname AS key,
               concat_ws(' | ', format_type(s.seqtypid, NULL), 'start ' || s.seqstart,
                 'increment ' || s.seqincrement, 'min ' || s.seqmin, 'max ' || s.seqmax,
                 CASE WHEN s.seqcycle THEN 'cycle' END) AS value,
               n.nspname || '.' || c.relname AS "table", NULL AS "create", NULL AS "drop"
        FROM pg_sequence s
        JOIN pg_class c ON c.oid = s.seqrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {_USER_SCHEMA} AND c.relname {_BOOKKEEPING} AND {_not_member("c.oid")}
    """,
    # Who owns each relation and function: normalised by the comparison to "the owner"
    # (the role that owns the version table, the one that migrates).
    "owner": f"""
        SELECT 'relation ' || n.nspname || '.' || c.relname AS key,
               pg_get_userbyid(c.relowner) || {_RELATION_REVOKED} AS value,
               n.nspname || '.' || c.relname AS "table",
               NULL AS "create", NULL AS "drop"
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND {_USER_SCHEMA}
          AND c.relname {_BOOKKEEPING}
          AND {_not_member("c.oid")}
        UNION ALL
        SELECT 'function ' || n.nspname || '.' || p.proname || '('
                 || pg_get_function_identity_arguments(p.oid) || ')',
               pg_get_userbyid(p.proowner) || {_FUNCTION_REVOKED},
               NULL, NULL, NULL
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE {_USER_SCHEMA} AND p.prokind IN ('f', 'p', 'w') AND p.proname <> '{GUARD_FUNCTION}'
          AND {_not_member("p.oid", "pg_proc")}
    """,
    # EXECUTE on each function (PUBLIC's by default), the owner's own aside.
    "function grant": f"""
        SELECT n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid)
                 || ') to ' || CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                    ELSE pg_get_userbyid(a.grantee) END
                 || ': ' || a.privilege_type AS key,
               'granted' AS value, NULL AS "table",
               format('GRANT %s ON FUNCTION %I.%I(%s) TO %s', a.privilege_type, n.nspname,
                 p.proname, pg_get_function_identity_arguments(p.oid),
                 CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                      ELSE quote_ident(pg_get_userbyid(a.grantee)) END) AS "create",
               format('REVOKE %s ON FUNCTION %I.%I(%s) FROM %s', a.privilege_type, n.nspname,
                 p.proname, pg_get_function_identity_arguments(p.oid),
                 CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                      ELSE quote_ident(pg_get_userbyid(a.grantee)) END) AS "drop"
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        CROSS JOIN LATERAL aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) AS a
        WHERE {_USER_SCHEMA} AND p.prokind IN ('f', 'p', 'w') AND p.proname <> '{GUARD_FUNCTION}'
          AND {_not_member("p.oid", "pg_proc")} AND a.grantee <> p.proowner
    """,
    # Column-level grants: the runbook gives none.
    "column grant": f"""
        SELECT n.nspname || '.' || c.relname || '.' || att.attname || ' to ' ||
                 CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END
                 || ': ' || a.privilege_type AS key,
               'granted' AS value,
               n.nspname || '.' || c.relname AS "table",
               format('GRANT %s (%I) ON %I.%I TO %s', a.privilege_type, att.attname, n.nspname,
                 c.relname, CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                 ELSE quote_ident(pg_get_userbyid(a.grantee)) END) AS "create",
               format('REVOKE %s (%I) ON %I.%I FROM %s', a.privilege_type, att.attname,
                 n.nspname, c.relname, CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                 ELSE quote_ident(pg_get_userbyid(a.grantee)) END) AS "drop"
        FROM pg_attribute att
        JOIN pg_class c ON c.oid = att.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        CROSS JOIN LATERAL aclexplode(att.attacl) AS a
        WHERE att.attnum > 0 AND NOT att.attisdropped AND {_USER_SCHEMA}
          AND c.relname {_BOOKKEEPING} AND a.grantee <> c.relowner AND {_not_member("c.oid")}
    """,
    # One row per (relation, grantee, privilege); the owner's own privileges aside.
    "grant": f"""
        SELECT n.nspname || '.' || c.relname || ' to ' ||
                 CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END
                 || ': ' || a.privilege_type AS key,
               'granted' AS value,
               n.nspname || '.' || c.relname AS "table",
               format('GRANT %s ON %I.%I TO %s', a.privilege_type, n.nspname, c.relname,
                 CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                      ELSE quote_ident(pg_get_userbyid(a.grantee)) END) AS "create",
               format('REVOKE %s ON %I.%I FROM %s', a.privilege_type, n.nspname, c.relname,
                 CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                      ELSE quote_ident(pg_get_userbyid(a.grantee)) END) AS "drop"
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        CROSS JOIN LATERAL aclexplode(c.relacl) AS a
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND {_USER_SCHEMA}
          AND c.relname {_BOOKKEEPING} AND a.grantee <> c.relowner AND {_not_member("c.oid")}
    """,
}

# Schemas, extensions and types as the proofs read them (snapshot.py); the schemas an
# extension made aside (Citus's citus, citus_internal, columnar, ...).
_NAMED = {
    "schema": f"""
        SELECT n.nspname AS key, coalesce(obj_description(n.oid, 'pg_namespace'), '') AS value
        FROM pg_namespace n
        WHERE n.nspname NOT IN {SKIP_SCHEMAS} AND n.nspname NOT LIKE 'pg_temp%'
          AND n.nspname NOT LIKE 'pg_toast_temp%' AND {_not_member("n.oid", "pg_namespace")}
    """,
    "extension": QUERIES["extension"],
    "type": QUERIES["type"],
}

# Default privileges (ALTER DEFAULT PRIVILEGES, a runbook step): what a relation the
# owner creates gets without a GRANT. Rows: role, grantee, privilege, objtype.
DEFAULT_PRIVILEGES = """
    SELECT pg_get_userbyid(d.defaclrole) AS role,
           CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END AS grantee,
           a.privilege_type AS privilege, d.defaclobjtype::text AS objtype
    FROM pg_default_acl d CROSS JOIN LATERAL aclexplode(d.defaclacl) AS a
    WHERE d.defaclnamespace = 0 OR d.defaclnamespace = 'public'::regnamespace
"""

# The history's own sequence (an identity column): restarted, the next record the
# runner writes (up, down, force) fails with a duplicate key. Its position is no
# catalog fact, so it is read apart (_history_sequence) where the role may read it.
HISTORY_SEQUENCE = f"""
    SELECT quote_ident(n.nspname) || '.' || quote_ident(sc.relname) AS seq,
           d.refobjid::regclass::text AS history,
           has_sequence_privilege(sc.oid, 'SELECT') AND has_table_privilege(d.refobjid, 'SELECT')
             AS readable,
           s.seqincrement AS increment
    FROM pg_depend d
    JOIN pg_class sc ON sc.oid = d.objid AND sc.relkind = 'S'
    JOIN pg_namespace n ON n.oid = sc.relnamespace
    JOIN pg_sequence s ON s.seqrelid = sc.oid
    WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
      AND d.refobjid = to_regclass('"{HISTORY_TABLE}"') AND d.deptype IN ('i', 'a')
"""
HISTORY_SEQUENCE_IN_ORDER = "its next id above every recorded one"

# CREATE on a schema, to whom (its owner aside): a role that may create there can
# shadow the schema's functions and tables for whoever resolves names through it.
SCHEMA_CREATE = f"""
    SELECT n.nspname AS schema,
           CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END AS grantee
    FROM pg_namespace n CROSS JOIN LATERAL aclexplode(n.nspacl) AS a
    WHERE n.nspname NOT IN {SKIP_SCHEMAS} AND n.nspname NOT LIKE 'pg\\_%'
      AND a.privilege_type = 'CREATE' AND a.grantee <> n.nspowner
      AND {_not_member("n.oid", "pg_namespace")}
"""

# The role that migrates: the version table's owner.
MIGRATING_ROLE = f"""
    SELECT pg_get_userbyid(relowner) FROM pg_class
    WHERE oid = to_regclass('{VERSION_TABLE}')
"""


class CatalogObject(NamedTuple):
    """``parent``: a partition's partitioned table, or a partition's index's index on
    that table; ``bound``: a partition's bound."""

    value: str
    table: str | None
    create: str | None
    drop: str | None
    parent: str | None = None
    bound: str | None = None


class Catalog(NamedTuple):
    """One database's schema as drift compares it: {kind: {key: object}}, the role that
    migrates it, its default privileges, and who may CREATE in which schema."""

    objects: dict[str, dict[str, CatalogObject]]
    owner: str | None
    default_privileges: tuple[tuple[str, str, str, str], ...]
    schema_create: tuple[tuple[str, str], ...] = ()


async def read_catalog(conn: Any) -> Catalog:
    """Read the schema of the connected database (catalog queries only)."""
    objects: dict[str, dict[str, CatalogObject]] = {}
    for kind, query in DRIFT_QUERIES.items():
        objects[kind] = {
            r["key"]: CatalogObject(
                r["value"] or "",
                r["table"],
                r["create"],
                r["drop"],
                r.get("parent"),
                r.get("bound"),
            )
            for r in await conn.fetch(query)
        }
    for kind, query in _NAMED.items():
        objects[kind] = {
            r["key"]: CatalogObject(r["value"] or "", None, *_statements(kind, r["key"]))
            for r in await conn.fetch(query)
        }
    objects["sequence"].update(await _history_sequence(conn))
    owner = await conn.fetchval(MIGRATING_ROLE)
    defaults = tuple(
        (r["role"], r["grantee"], r["privilege"], r["objtype"])
        for r in await conn.fetch(DEFAULT_PRIVILEGES)
    )
    schema_create = tuple((r["schema"], r["grantee"]) for r in await conn.fetch(SCHEMA_CREATE))
    return Catalog(objects, owner, defaults, schema_create)


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


def _statements(kind: str, key: str) -> tuple[str | None, str | None]:
    """Create and drop for a schema or an extension (prerequisites.sql creates the
    extensions: IF NOT EXISTS, as it does); a type's take more than its name."""
    name = '"' + key.replace('"', '""') + '"'
    if kind == "schema":
        return f"CREATE SCHEMA {name}", f"DROP SCHEMA {name}"
    if kind == "extension":
        return f"CREATE EXTENSION IF NOT EXISTS {name}", f"DROP EXTENSION {name}"
    return None, None

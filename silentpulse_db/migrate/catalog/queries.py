"""Each kind of object, queried once: its ``Query`` (the SQL of its key, its value and
what drift adds), and the filters every kind shares (PostgreSQL's schemas, the
migration bookkeeping, extensions' own objects). reader.py runs them.

Every query reads the catalog only: no lock on the application's tables."""

from __future__ import annotations

from typing import NamedTuple

from ..version_table import GUARD_FUNCTION, HISTORY_TABLE, VERSION_TABLE

# Schemas that belong to PostgreSQL or to extensions' internals.
SKIP_SCHEMAS = "('pg_catalog', 'information_schema', 'pg_toast', 'ag_catalog')"
_USER_SCHEMA = f"n.nspname NOT IN {SKIP_SCHEMAS} AND n.nspname NOT LIKE 'pg_temp%'"
# The version table and its history (and the history's sequence, and what protects
# them: their policy and trigger, and GUARD_FUNCTION): the runner's own. So is a
# service set's version table, whatever its name: golang-migrate's two columns, guarded
# by the runner's trigger. Both, since a role with TRIGGER on a table (GRANT ALL gives
# it) may attach that trigger to any table: the trigger alone would hide it from drift.
_VERSION_TABLE_LAYOUT = (
    "(SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a "
    "WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) "
    "= ARRAY['dirty', 'version']"
)
_NOT_BOOKKEEPING = (
    f"c.relname NOT IN ('{VERSION_TABLE}', '{HISTORY_TABLE}') "
    f"AND c.relname NOT LIKE '{HISTORY_TABLE}%' "
    "AND NOT (EXISTS (SELECT 1 FROM pg_trigger g JOIN pg_proc gp ON gp.oid = g.tgfoid "
    f"WHERE g.tgrelid = c.oid AND gp.proname = '{GUARD_FUNCTION}') "
    f"AND {_VERSION_TABLE_LAYOUT})"
)
_USER_FUNCTION = (
    f"{_USER_SCHEMA} AND p.prokind IN ('f', 'p', 'w') AND p.proname <> '{GUARD_FUNCTION}'"
)


def _not_member(oid: str, catalog: str = "pg_class") -> str:
    """No extension's own object (pg_depend 'e': made by its script, dropped with it):
    an extension's tables, views, sequences, functions, types, schemas, and so their
    grants, policies and triggers, are the extension's to keep, listed as the extension
    alone. Citus puts views in public and schemas of its own, granted to PUBLIC: not a
    migration's, nor drift. The catalog named too: an object's oid is unique in its own
    catalog only, so an oid alone could match another catalog's member and hide this
    object (and pg_depend's index is by catalog, then oid)."""
    return (
        f"NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '{catalog}'::regclass "
        f"AND d.objid = {oid} AND d.deptype = 'e')"
    )


def _storage(column: str) -> str:
    return (
        f"CASE {column} WHEN 'p' THEN 'plain' WHEN 'e' THEN 'external' WHEN 'm' THEN 'main' "
        f"ELSE 'extended' END"
    )


def _quoted(name: str) -> str:
    """A name always double-quoted (as the fixes for a schema or an extension print it)."""
    return f"""'"' || replace({name}, '"', '""') || '"'"""


# A grant's grantee, as a key names it and as a statement does.
_GRANTEE = "CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END"
_GRANTEE_SQL = (
    "CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END"
)
_FUNCTION_KEY = (
    "n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'"
)
_PARENT_TABLE = """(SELECT pn.nspname || '.' || p.relname FROM pg_inherits i
                   JOIN pg_class p ON p.oid = i.inhparent
                   JOIN pg_namespace pn ON pn.oid = p.relnamespace WHERE i.inhrelid = c.oid)"""

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


class Query(NamedTuple):
    """One kind of object: where its rows come from (FROM ... WHERE ...) and the SQL
    expression of each column. ``table``: the relation it belongs to (drift's partition
    rule); ``parent``: a partition's partitioned table, or a partition's index's index
    on that table; ``bound``: a partition's bound; ``create``/``drop``: a statement
    each, or NULL."""

    source: str
    key: str
    value: str
    table: str = "NULL"
    parent: str = "NULL"
    bound: str = "NULL"
    create: str = "NULL"
    drop: str = "NULL"

    def select(self, statements: bool) -> str:
        """Its SQL; without ``statements``, NULL for the columns drift alone reads."""
        table, parent, create, drop = (
            (self.table, self.parent, self.create, self.drop) if statements else ("NULL",) * 4
        )
        return (
            f"SELECT {self.key} AS key, {self.value} AS value, {self.bound} AS bound,\n"
            f'  {table} AS "table", {parent} AS parent, {create} AS "create", {drop} AS "drop"\n'
            f"{self.source}"
        )


_RELATIONS = f"""
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND {_USER_SCHEMA} AND {_NOT_BOOKKEEPING}
      AND {_not_member("c.oid")}
"""
_FUNCTIONS = f"""
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE {_USER_FUNCTION} AND {_not_member("p.oid", "pg_proc")}
"""

_SCHEMA = Query(
    source=f"""
        FROM pg_namespace n
        WHERE n.nspname NOT IN {SKIP_SCHEMAS} AND n.nspname NOT LIKE 'pg_temp%'
          AND n.nspname NOT LIKE 'pg_toast_temp%' AND {_not_member("n.oid", "pg_namespace")}
    """,
    key="n.nspname",
    value="coalesce(obj_description(n.oid, 'pg_namespace'), '')",
    create=f"'CREATE SCHEMA ' || {_quoted('n.nspname')}",
    drop=f"'DROP SCHEMA ' || {_quoted('n.nspname')}",
)

# prerequisites.sql creates the extensions: IF NOT EXISTS, as it does.
_EXTENSION = Query(
    source="FROM pg_extension e WHERE e.extname <> 'plpgsql'",
    key="e.extname",
    value="e.extversion",
    create=f"'CREATE EXTENSION IF NOT EXISTS ' || {_quoted('e.extname')}",
    drop=f"'DROP EXTENSION ' || {_quoted('e.extname')}",
)

_TYPE = Query(
    source=f"""
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE t.typtype IN ('e', 'd') AND n.nspname NOT IN {SKIP_SCHEMAS}
          AND {_not_member("t.oid", "pg_type")}
    """,
    key="n.nspname || '.' || t.typname",
    value="""concat_ws(' | ', 'kind ' || t.typtype::text,
                 'labels ' || (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                               FROM pg_enum e WHERE e.enumtypid = t.oid),
                 'base ' || CASE WHEN t.typtype = 'd'
                                 THEN format_type(t.typbasetype, t.typtypmod) END,
                 'comment ' || obj_description(t.oid, 'pg_type'))""",
)

_RELATION = Query(
    source=_RELATIONS,
    key="n.nspname || '.' || c.relname",
    value=f"""concat_ws(' | ', 'kind ' || c.relkind::text,
                 CASE WHEN c.relrowsecurity THEN 'rls' END,
                 CASE WHEN c.relforcerowsecurity THEN 'force rls' END,
                 CASE WHEN c.relkind = 'p' THEN 'partitioned by ' || pg_get_partkeydef(c.oid) END,
                 CASE WHEN c.relkind IN ('v', 'm') THEN 'view ' || pg_get_viewdef(c.oid) END,
                 -- Detached, a default partition no longer takes a month without its
                 -- partition (inserts fail) and its rows leave the table. The bound of
                 -- another is apart (drift compares it month by month).
                 CASE WHEN c.relispartition THEN 'partition of ' || {_PARENT_TABLE}
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
                 'comment ' || obj_description(c.oid, 'pg_class'))""",
    table="n.nspname || '.' || c.relname",
    parent=f"CASE WHEN c.relispartition THEN {_PARENT_TABLE} END",
    bound="pg_get_expr(c.relpartbound, c.oid)",
    drop="""format('DROP %s %I.%I', CASE c.relkind WHEN 'v' THEN 'VIEW'
                 WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE'
                 WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, n.nspname, c.relname)""",
)

_COLUMN = Query(
    source=f"""
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_type ty ON ty.oid = a.atttypid
        LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
        WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND {_USER_SCHEMA} AND {_NOT_BOOKKEEPING} AND {_not_member("c.oid")}
    """,
    key="n.nspname || '.' || c.relname || '.' || a.attname",
    value=f"""concat_ws(' | ', format_type(a.atttypid, a.atttypmod),
                 CASE WHEN a.attnotnull THEN 'not null' END,
                 'default ' || pg_get_expr(ad.adbin, ad.adrelid),
                 CASE WHEN a.attidentity <> '' THEN 'identity ' || a.attidentity::text END,
                 CASE WHEN a.attgenerated <> '' THEN 'generated' END,
                 (SELECT 'collate ' || quote_ident(co.collname) FROM pg_collation co
                  WHERE co.oid = a.attcollation AND a.attcollation <> ty.typcollation),
                 -- SET STORAGE (another TOAST strategy than its type's) and SET STATISTICS
                 -- (another sample for the planner): with the type's own, for the fix
                 -- (PostgreSQL 15 has no SET STORAGE DEFAULT).
                 CASE WHEN a.attstorage <> ty.typstorage
                      THEN 'storage ' || {_storage("a.attstorage")} || ' (its type '
                           || {_storage("ty.typstorage")} || ')' END,
                 CASE WHEN a.attstattarget <> -1 THEN 'statistics ' || a.attstattarget END,
                 'comment ' || col_description(c.oid, a.attnum))""",
    table="n.nspname || '.' || c.relname",
    create="""CASE WHEN c.relkind IN ('r', 'p') THEN
               format('ALTER TABLE %I.%I ADD COLUMN %I %s%s%s', n.nspname, c.relname,
                 a.attname, format_type(a.atttypid, a.atttypmod),
                 ' DEFAULT ' || pg_get_expr(ad.adbin, ad.adrelid),
                 CASE WHEN a.attnotnull THEN ' NOT NULL' END) END""",
    drop="""CASE WHEN c.relkind IN ('r', 'p') THEN
               format('ALTER TABLE %I.%I DROP COLUMN %I', n.nspname, c.relname, a.attname)
               END""",
)

_CONSTRAINT = Query(
    source=f"""
        FROM pg_constraint con
        JOIN pg_class c ON c.oid = con.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {_USER_SCHEMA} AND {_NOT_BOOKKEEPING} AND {_not_member("c.oid")}
    """,
    key="n.nspname || '.' || c.relname || '.' || con.conname",
    value="pg_get_constraintdef(con.oid)",
    table="n.nspname || '.' || c.relname",
    create="""format('ALTER TABLE %I.%I ADD CONSTRAINT %I %s', n.nspname, c.relname,
                 con.conname, pg_get_constraintdef(con.oid))""",
    drop="format('ALTER TABLE %I.%I DROP CONSTRAINT %I', n.nspname, c.relname, con.conname)",
)

# The index of a primary key, a unique or an exclusion constraint is that constraint's.
_INDEX = Query(
    source=f"""
        FROM pg_index i
        JOIN pg_class ic ON ic.oid = i.indexrelid
        JOIN pg_class c ON c.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = ic.relnamespace
        CROSS JOIN LATERAL (SELECT EXISTS (SELECT 1 FROM pg_inherits h
                                           WHERE h.inhrelid = i.indexrelid) AS attached) AS a
        WHERE {_USER_SCHEMA} AND {_NOT_BOOKKEEPING} AND {_not_member("c.oid")}
          AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid
                          AND k.contype IN ('p', 'u', 'x'))
    """,
    key="n.nspname || '.' || ic.relname",
    value="pg_get_indexdef(i.indexrelid) || CASE WHEN i.indisvalid THEN '' ELSE ' (INVALID)' END",
    table="n.nspname || '.' || c.relname",
    parent="""(SELECT pn.nspname || '.' || p.relname FROM pg_inherits h
                JOIN pg_class p ON p.oid = h.inhparent
                JOIN pg_namespace pn ON pn.oid = p.relnamespace
                WHERE h.inhrelid = i.indexrelid)""",
    # A partition's index attached to its table's index comes and goes with that one:
    # no statement of its own. On a partitioned table: built on every partition at
    # once, which holds writes (no CONCURRENTLY there); "ON ONLY" would leave it INVALID.
    create="""CASE WHEN attached THEN NULL
                    WHEN c.relkind = 'p'
                      THEN replace(pg_get_indexdef(i.indexrelid), ' ON ONLY ', ' ON ')
                    ELSE regexp_replace(pg_get_indexdef(i.indexrelid), '^CREATE (UNIQUE )?INDEX',
                                        'CREATE \\1INDEX CONCURRENTLY') END""",
    drop="""CASE WHEN attached THEN NULL ELSE format('DROP INDEX %s%I.%I',
                 CASE WHEN c.relkind = 'p' THEN '' ELSE 'CONCURRENTLY ' END,
                 n.nspname, ic.relname) END""",
)

_POLICY = Query(
    source=f"""
        FROM pg_policies pol
        JOIN pg_namespace n ON n.nspname = pol.schemaname
        JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pol.tablename
        WHERE {_USER_SCHEMA} AND {_NOT_BOOKKEEPING} AND {_not_member("c.oid")}
    """,
    key="n.nspname || '.' || c.relname || '.' || pol.policyname",
    value="""concat_ws(' | ', lower(pol.permissive), pol.cmd, array_to_string(pol.roles, ','),
                 'using ' || pol.qual, 'check ' || pol.with_check)""",
    table="n.nspname || '.' || c.relname",
    create="""format('CREATE POLICY %I ON %I.%I AS %s FOR %s TO %s%s%s', pol.policyname,
                 n.nspname, c.relname, pol.permissive, pol.cmd,
                 (SELECT string_agg(CASE WHEN r = 'public' THEN r ELSE quote_ident(r) END, ', ')
                  FROM unnest(pol.roles) AS r),
                 ' USING (' || pol.qual || ')',
                 ' WITH CHECK (' || pol.with_check || ')')""",
    drop="format('DROP POLICY %I ON %I.%I', pol.policyname, n.nspname, c.relname)",
)

_TRIGGER = Query(
    source=f"""
        FROM pg_trigger t
        JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT t.tgisinternal AND {_USER_SCHEMA} AND {_NOT_BOOKKEEPING}
          AND {_not_member("c.oid")}
    """,
    key="n.nspname || '.' || c.relname || '.' || t.tgname",
    value="pg_get_triggerdef(t.oid) || ' enabled ' || t.tgenabled::text",
    table="n.nspname || '.' || c.relname",
    create="pg_get_triggerdef(t.oid)",
    drop="format('DROP TRIGGER %I ON %I.%I', t.tgname, n.nspname, c.relname)",
)

# Its definition (arguments, result, body, settings), as a digest.
_FUNCTION = Query(
    source=_FUNCTIONS,
    key=_FUNCTION_KEY,
    value="'md5 ' || md5(pg_get_functiondef(p.oid))",
    create="pg_get_functiondef(p.oid)",
    drop="""format('DROP FUNCTION %I.%I(%s)', n.nspname, p.proname,
                 pg_get_function_identity_arguments(p.oid))""",
)

# Apart from the function: its fix (CREATE OR REPLACE FUNCTION) leaves a comment as it
# was. `check` compares it; drift does not read it.
_FUNCTION_COMMENT = Query(
    source=_FUNCTIONS + " AND obj_description(p.oid, 'pg_proc') IS NOT NULL",
    key=_FUNCTION_KEY,
    value="obj_description(p.oid, 'pg_proc')",
)

# pg_sequence, not pg_sequences: that one reads each sequence's last value, which
# waits for a session altering it.
_SEQUENCE = Query(
    source=f"""
        FROM pg_sequence s
        JOIN pg_class c ON c.oid = s.seqrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {_USER_SCHEMA} AND {_NOT_BOOKKEEPING} AND {_not_member("c.oid")}
    """,
    key="n.nspname || '.' || c.relname",
    value="""concat_ws(' | ', format_type(s.seqtypid, NULL), 'start ' || s.seqstart,
                 'increment ' || s.seqincrement, 'min ' || s.seqmin, 'max ' || s.seqmax,
                 CASE WHEN s.seqcycle THEN 'cycle' END)""",
    table="n.nspname || '.' || c.relname",
)

# Who owns each relation and function: normalised by drift's comparison to "the owner"
# (the role that owns the version table, the one that migrates).
_RELATION_OWNER = Query(
    source=_RELATIONS,
    key="'relation ' || n.nspname || '.' || c.relname",
    value=f"pg_get_userbyid(c.relowner) || {_RELATION_REVOKED}",
    table="n.nspname || '.' || c.relname",
)
_FUNCTION_OWNER = Query(
    source=_FUNCTIONS,
    key=f"'function ' || {_FUNCTION_KEY}",
    value=f"pg_get_userbyid(p.proowner) || {_FUNCTION_REVOKED}",
)

# EXECUTE on each function (PUBLIC's by default), the owner's own aside.
_FUNCTION_GRANT = Query(
    source=f"""
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        CROSS JOIN LATERAL aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) AS a
        WHERE {_USER_FUNCTION} AND {_not_member("p.oid", "pg_proc")} AND a.grantee <> p.proowner
    """,
    key=f"{_FUNCTION_KEY} || ' to ' || {_GRANTEE} || ': ' || a.privilege_type",
    value="'granted'",
    create=f"""format('GRANT %s ON FUNCTION %I.%I(%s) TO %s', a.privilege_type, n.nspname,
                 p.proname, pg_get_function_identity_arguments(p.oid), {_GRANTEE_SQL})""",
    drop=f"""format('REVOKE %s ON FUNCTION %I.%I(%s) FROM %s', a.privilege_type, n.nspname,
                 p.proname, pg_get_function_identity_arguments(p.oid), {_GRANTEE_SQL})""",
)

# Column-level grants: the runbook gives none.
_COLUMN_GRANT = Query(
    source=f"""
        FROM pg_attribute att
        JOIN pg_class c ON c.oid = att.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        CROSS JOIN LATERAL aclexplode(att.attacl) AS a
        WHERE att.attnum > 0 AND NOT att.attisdropped AND {_USER_SCHEMA}
          AND {_NOT_BOOKKEEPING} AND a.grantee <> c.relowner AND {_not_member("c.oid")}
    """,
    key=f"""n.nspname || '.' || c.relname || '.' || att.attname || ' to ' || {_GRANTEE}
                 || ': ' || a.privilege_type""",
    value="'granted'",
    table="n.nspname || '.' || c.relname",
    create=f"""format('GRANT %s (%I) ON %I.%I TO %s', a.privilege_type, att.attname,
                 n.nspname, c.relname, {_GRANTEE_SQL})""",
    drop=f"""format('REVOKE %s (%I) ON %I.%I FROM %s', a.privilege_type, att.attname,
                 n.nspname, c.relname, {_GRANTEE_SQL})""",
)

# One row per (relation, grantee, privilege); the owner's own privileges aside.
_GRANT = Query(
    source=f"""
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        CROSS JOIN LATERAL aclexplode(c.relacl) AS a
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND {_USER_SCHEMA}
          AND {_NOT_BOOKKEEPING} AND a.grantee <> c.relowner AND {_not_member("c.oid")}
    """,
    key=f"n.nspname || '.' || c.relname || ' to ' || {_GRANTEE} || ': ' || a.privilege_type",
    value="'granted'",
    table="n.nspname || '.' || c.relname",
    create=f"""format('GRANT %s ON %I.%I TO %s', a.privilege_type, n.nspname, c.relname,
                 {_GRANTEE_SQL})""",
    drop=f"""format('REVOKE %s ON %I.%I FROM %s', a.privilege_type, n.nspname, c.relname,
                 {_GRANTEE_SQL})""",
)

# Each kind, once: its rows from one query (or several, read as one).
KINDS: dict[str, tuple[Query, ...]] = {
    "schema": (_SCHEMA,),
    "extension": (_EXTENSION,),
    "type": (_TYPE,),
    "relation": (_RELATION,),
    "column": (_COLUMN,),
    "constraint": (_CONSTRAINT,),
    "index": (_INDEX,),
    "policy": (_POLICY,),
    "trigger": (_TRIGGER,),
    "function": (_FUNCTION,),
    "function comment": (_FUNCTION_COMMENT,),
    "sequence": (_SEQUENCE,),
    "owner": (_RELATION_OWNER, _FUNCTION_OWNER),
    "function grant": (_FUNCTION_GRANT,),
    "column grant": (_COLUMN_GRANT,),
    "grant": (_GRANT,),
}

# What drift reads of a database beyond its objects (reader.read_catalog).

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
# catalog fact, so it is read apart (reader._history_sequence) where the role may read it.
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

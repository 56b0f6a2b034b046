"""Every relation that holds tenant rows is guarded by row-level security.

A relation with a ``tenant_id`` column (a table, a partition, a default
partition, one created by hand or by a later migration) must have row-level
security enabled AND forced and at least one policy: otherwise any role that
is granted SELECT on it (the usual blanket ``GRANT ... ON ALL TABLES`` does)
reads every tenant's rows. `check` fails on any such relation; `status`
lists them with the roles that can read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_GAPS = r"""
    SELECT c.oid::regclass::text AS relation,
           c.relrowsecurity AS rls, c.relforcerowsecurity AS forced,
           EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid) AS has_policy,
           ARRAY(SELECT r.rolname FROM pg_roles r
                 WHERE r.oid <> c.relowner AND NOT r.rolsuper AND NOT r.rolbypassrls
                   AND r.rolname NOT LIKE 'pg\_%'
                   AND has_table_privilege(r.oid, c.oid, 'SELECT')
                 ORDER BY r.rolname) AS readers
    FROM pg_class c
    WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')
      AND EXISTS (SELECT 1 FROM pg_attribute a
                  WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
      AND NOT (c.relrowsecurity AND c.relforcerowsecurity
               AND EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid))
    ORDER BY c.relname
"""


async def rls_gaps(conn: Any) -> list[str]:
    """One line per relation with tenant rows that row-level security does not guard."""
    lines = []
    for r in await conn.fetch(_GAPS):
        missing = [
            what
            for what, present in (
                ("row-level security enabled", r["rls"]),
                ("forced", r["forced"]),
                ("a policy", r["has_policy"]),
            )
            if not present
        ]
        readers = ", ".join(r["readers"]) or "no non-owner role yet"
        lines.append(
            f"{r['relation']} holds tenant_id rows without {' / '.join(missing)}; "
            f"readable by: {readers}"
        )
    return lines


# Does row-level security filter what the current role sees in table $1?
# Superusers and BYPASSRLS roles are never filtered; an owner only when forced.
_FILTERED = """
    SELECT current_user AS role, c.relforcerowsecurity AS forced
    FROM pg_class c, pg_roles r
    WHERE c.oid = to_regclass($1) AND r.rolname = current_user
      AND c.relrowsecurity AND NOT r.rolsuper AND NOT r.rolbypassrls
      AND (c.relforcerowsecurity OR NOT pg_has_role(c.relowner, 'USAGE'))
"""


@dataclass(frozen=True)
class Filtered:
    """Row-level security hides rows of a table from ``role`` (``forced``: even as owner)."""

    role: str
    forced: bool


async def rls_filters(conn: Any, relation: str) -> Filtered | None:
    """How row-level security filters the current role on ``relation``, or None if it does not."""
    row = await conn.fetchrow(_FILTERED, relation)
    return None if row is None else Filtered(row["role"], row["forced"])

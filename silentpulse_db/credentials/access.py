"""Proof that the job sees every credential row before it reads or rewrites any.

The three credential tables force row-level security: a role without BYPASSRLS
(even their owner) reads no rows at all, or only one tenant's when
``app.current_tenant`` is set. A rotation that sees nothing "succeeds" with
nothing to do, and retiring the old key afterwards loses every credential.
So the job refuses such a role before it touches anything.
"""

from __future__ import annotations

from typing import Any

from ..errors import PermissionDeniedError, RowSecurityError
from .columns import COLUMNS

_WHO = """
SELECT current_user::text AS role,
       r.rolsuper AS superuser,
       r.rolbypassrls AS bypassrls,
       coalesce(current_setting('app.current_tenant', true), '') AS tenant,
       current_setting('row_security') AS row_security
FROM pg_roles AS r WHERE r.rolname = current_user
"""


async def require_full_view(conn: Any, doing: str) -> str:
    """Return the role's name, or raise RowSecurityError saying what it lacks."""
    row = await conn.fetchrow(_WHO)
    role = row["role"]
    if not (row["superuser"] or row["bypassrls"]):
        raise RowSecurityError(
            f"cannot {doing} as role {role!r}: row-level security limits what it sees (the "
            f"credential tables force RLS, so it would read some rows or none and report "
            f"success). Connect as the deployment's jobs role, the role with BYPASSRLS that "
            f"no request-serving service uses (docs/security.md; not by giving this role "
            f"BYPASSRLS: an application role must stay subject to row-level security). "
            f"Nothing was read or changed.",
            role=role,
        )
    if row["tenant"]:
        raise RowSecurityError(
            f"cannot {doing} as role {role!r}: app.current_tenant is set for this session "
            f"(a role or database default, or PGOPTIONS), so this is an application role's "
            f"configuration. Run it as the jobs role with app.current_tenant unset "
            f"(ALTER ROLE {role} RESET app.current_tenant). Nothing was read or changed.",
            role=role,
        )
    return str(role)


async def missing_privileges(conn: Any, *, write: bool) -> list[str]:
    """The credential tables this role may not read (or, with ``write``, update)."""
    # has_table_privilege(t, 'SELECT, UPDATE') is true if EITHER is held: ask each.
    rows = await conn.fetch(
        "SELECT t AS name FROM unnest($1::text[]) AS t "
        "WHERE NOT has_table_privilege(current_user, t, 'SELECT') "
        "OR ($2 AND NOT has_table_privilege(current_user, t, 'UPDATE'))",
        [column.table for column in COLUMNS],
        write,
    )
    return [row["name"] for row in rows]


async def require_privileges(conn: Any, role: str, *, write: bool, doing: str) -> None:
    """PermissionDeniedError naming the exact GRANT, before anything is read."""
    missing = await missing_privileges(conn, write=write)
    if missing:
        privileges = "SELECT, UPDATE" if write else "SELECT"
        tables = ", ".join(missing)
        raise PermissionDeniedError(
            f"role {role!r} may not {doing}: it needs {privileges} on {tables}: "
            f"GRANT {privileges} ON {tables} TO {role}. Nothing was read or changed.",
            role=role,
            privilege=privileges,
            object=tables,
        )

"""Proof that the job sees every credential row before it reads or rewrites any.

The three credential tables force row-level security: a role without BYPASSRLS
(even their owner) reads no rows at all, or only one tenant's when
``app.current_tenant`` is set. A rotation that sees nothing "succeeds" with
nothing to do, and retiring the old key afterwards loses every credential.
So the job refuses such a role before it touches anything.
"""

from __future__ import annotations

from typing import Any

from ..errors import RowSecurityError

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
            f"success). Run it as a role with BYPASSRLS (or a superuser), e.g. the jobs "
            f"role: ALTER ROLE {role} BYPASSRLS, or connect as silentpulse_jobs. "
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

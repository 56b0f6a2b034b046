"""Who a session is: its role, and whether row-level security applies to it."""

from __future__ import annotations

from typing import Any, NamedTuple

_ROLE = """
    SELECT current_user AS name, r.rolsuper AS superuser, r.rolbypassrls AS bypassrls
    FROM pg_roles AS r WHERE r.rolname = current_user
"""


class SessionRole(NamedTuple):
    name: str
    superuser: bool
    bypassrls: bool

    @property
    def bypasses_rls(self) -> bool:
        """Row-level security does not apply to it (it sees every tenant's rows)."""
        return self.superuser or self.bypassrls


async def session_role(conn: Any) -> SessionRole:
    row = await conn.fetchrow(_ROLE)
    return SessionRole(row["name"], row["superuser"], row["bypassrls"])

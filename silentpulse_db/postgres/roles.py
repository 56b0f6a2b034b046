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


# Of extensions $1, those not installed that this role may not create: a superuser may
# create any; others only a trusted extension (or one not marked superuser), and only
# with CREATE on the database (PostgreSQL 13+). Absent from the server: not listed
# (no statement an administrator runs in SQL makes them appear).
_OUT_OF_REACH = """
    SELECT a.name
    FROM unnest($1::text[]) WITH ORDINALITY AS n(name, i)
    JOIN pg_available_extensions a ON a.name = n.name
    WHERE a.installed_version IS NULL
      AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
      AND NOT (
        has_database_privilege(current_database(), 'CREATE')
        AND EXISTS (SELECT 1 FROM pg_available_extension_versions v
                    WHERE v.name = a.name AND v.version = a.default_version
                      AND (v.trusted OR NOT v.superuser)))
    ORDER BY n.i
"""


async def extensions_out_of_reach(conn: Any, names: list[str]) -> list[str]:
    """Of ``names``, the extensions missing from this database that this role may not create."""
    return [row["name"] for row in await conn.fetch(_OUT_OF_REACH, names)]


async def trusted_extensions(conn: Any, names: list[str]) -> list[str]:
    """Of ``names``, those a role with CREATE on the database may create without a superuser."""
    rows = await conn.fetch(
        "SELECT DISTINCT v.name FROM pg_available_extension_versions v "
        "JOIN pg_available_extensions a ON a.name = v.name AND a.default_version = v.version "
        "WHERE v.name = ANY($1::text[]) AND (v.trusted OR NOT v.superuser)",
        names,
    )
    found = {row["name"] for row in rows}
    return [name for name in names if name in found]

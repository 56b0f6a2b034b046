"""Proof that the job sees every credential row before it reads or rewrites any.

The three credential tables force row-level security: a role without BYPASSRLS
(even their owner) reads no rows at all, or only one tenant's when
``app.current_tenant`` is set. A rotation that sees nothing "succeeds" with
nothing to do, and retiring the old key afterwards loses every credential.
So the job refuses such a role before it touches anything, but for the tables'
owner (on a managed server, where no role may have BYPASSRLS): it lifts FORCE
ROW LEVEL SECURITY inside the job's own transaction (:func:`lift_force`), which
no other session sees, and puts it back before committing.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import asyncpg

from ..errors import CredentialMigrationError, PermissionDeniedError, RowSecurityError
from ..settings import milliseconds
from .columns import COLUMNS

_WHO = """
SELECT current_user::text AS role,
       r.rolsuper AS superuser,
       r.rolbypassrls AS bypassrls,
       coalesce(current_setting('app.current_tenant', true), '') AS tenant,
       current_setting('row_security') AS row_security,
       (SELECT count(*) = cardinality($1::text[]) FROM unnest($1::text[]) AS t
        JOIN pg_class c ON c.oid = to_regclass(t)
        WHERE pg_has_role(c.relowner, 'USAGE')) AS owner
FROM pg_roles AS r WHERE r.rolname = current_user
"""

TABLES = [column.table for column in COLUMNS]


class FullView(NamedTuple):
    """How ``role`` sees every credential row: by BYPASSRLS (or as a superuser), or, with
    ``lift``, as the tables' owner lifting FORCE ROW LEVEL SECURITY in its transaction."""

    role: str
    lift: bool


async def require_full_view(conn: Any, doing: str) -> str:
    """Return the role's name, or raise RowSecurityError saying what it lacks."""
    return (await full_view(conn, doing)).role


async def full_view(conn: Any, doing: str) -> FullView:
    """How this role sees every credential row, or RowSecurityError saying what it lacks."""
    row = await conn.fetchrow(_WHO, TABLES)
    role = row["role"]
    bypasses = row["superuser"] or row["bypassrls"]
    if not (bypasses or row["owner"]):
        raise RowSecurityError(
            f"cannot {doing} as role {role!r}: row-level security limits what it sees (the "
            f"credential tables force RLS, so it would read some rows or none and report "
            f"success). Connect as the deployment's jobs role, the role with BYPASSRLS that "
            f"no request-serving service uses, or as the tables' owner (docs/security.md; "
            f"not by giving this role BYPASSRLS: an application role must stay subject to "
            f"row-level security). Nothing was read or changed.",
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
    return FullView(str(role), lift=not bypasses)


async def lift_force(conn: Any, lock_timeout: float, *, doing: str) -> None:
    """In ``conn``'s transaction: FORCE ROW LEVEL SECURITY off on the credential tables, so
    that their owner sees every row. Uncommitted, no other session sees the change (each
    table is held ACCESS EXCLUSIVE until the transaction ends); :func:`restore_force` puts
    it back before a commit, a rollback does by itself. Other roles never depended on it:
    FORCE only subjects the owner to the policies."""
    await conn.execute(f"SET LOCAL lock_timeout = {milliseconds(lock_timeout)}")
    try:
        for table in TABLES:
            await conn.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
    except asyncpg.LockNotAvailableError:
        raise CredentialMigrationError(
            f"cannot {doing}: as the credential tables' owner the job sees every row only "
            f"while it holds them exclusively (it lifts FORCE ROW LEVEL SECURITY for its own "
            f"transaction), and {', '.join(TABLES)} stayed in use for {lock_timeout:g}s. "
            f"Nothing was read or changed. Stop the services using them, or run it as the "
            f"jobs role (BYPASSRLS), which needs no such lock."
        ) from None
    await conn.execute("SET LOCAL lock_timeout = 0")


@contextlib.asynccontextmanager
async def reading_all(
    conn: Any, view: FullView, lock_timeout: float, *, doing: str
) -> AsyncIterator[None]:
    """A REPEATABLE READ transaction that sees every credential row and changes nothing:
    READ ONLY for a role that bypasses RLS; for the owner, FORCE lifted and rolled back."""
    if not view.lift:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            yield
        return
    transaction = conn.transaction(isolation="repeatable_read")
    await transaction.start()
    try:
        await lift_force(conn, lock_timeout, doing=doing)
        yield
    finally:
        # A connection gone has been rolled back by the server already.
        with contextlib.suppress(Exception):
            await transaction.rollback()


async def restore_force(conn: Any) -> None:
    """FORCE ROW LEVEL SECURITY back on the credential tables, before the commit."""
    # The scan's cursors (portals), read to the end but open until the transaction ends,
    # count as queries using the tables: ALTER TABLE refuses while they stay open.
    await conn.execute("CLOSE ALL")
    for table in TABLES:
        await conn.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")


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

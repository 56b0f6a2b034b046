"""Every relation that holds tenant rows is guarded by row-level security.

A relation with a ``tenant_id`` column (a table, a partition, a default
partition, one created by hand or by a later migration) must have row-level
security enabled AND forced and at least one policy: otherwise any role that
is granted SELECT on it (the usual blanket ``GRANT ... ON ALL TABLES`` does)
reads every tenant's rows. `check` fails on any such relation; `status`
lists them with the roles that can read them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..settings import milliseconds

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
    SELECT current_user AS role, c.relforcerowsecurity AS forced,
           pg_has_role(c.relowner, 'USAGE') AS owner
    FROM pg_class c, pg_roles r
    WHERE c.oid = to_regclass($1) AND r.rolname = current_user
      AND c.relrowsecurity AND NOT r.rolsuper AND NOT r.rolbypassrls
      AND (c.relforcerowsecurity OR NOT pg_has_role(c.relowner, 'USAGE'))
"""


@dataclass(frozen=True)
class Filtered:
    """Row-level security hides rows of a table from ``role`` (``forced``: even as owner).

    ``owner``: the role owns the table (or inherits its owner's privileges), so it may lift
    FORCE ROW LEVEL SECURITY for a transaction of its own and see every row: see
    :func:`seeing_every_row`.
    """

    role: str
    forced: bool
    owner: bool = False


async def rls_filters(conn: Any, relation: str) -> Filtered | None:
    """How row-level security filters the current role on ``relation``, or None if it does not."""
    row = await conn.fetchrow(_FILTERED, relation)
    return None if row is None else Filtered(row["role"], row["forced"], row["owner"])


@contextlib.asynccontextmanager
async def seeing_every_row(
    conn: Any, relations: Sequence[str], lock_timeout: float | None
) -> AsyncIterator[None]:
    """A transaction in which the owner of ``relations`` sees all their rows; rolled back.

    FORCE ROW LEVEL SECURITY subjects the owner to the policies too, and an owner that
    is no superuser cannot have BYPASSRLS (only a superuser grants it; a managed server
    has none). The owner may lift FORCE itself: done here inside a transaction that is
    always rolled back, so no other session ever sees a table without it (the ALTER
    holds ACCESS EXCLUSIVE until the rollback, under ``lock_timeout`` seconds: None,
    the session's setting). Other roles' isolation does not depend on FORCE at all.
    Raises asyncpg.LockNotAvailableError when a table stays busy.
    """
    transaction = conn.transaction()
    await transaction.start()
    try:
        if lock_timeout is not None:
            await conn.execute(f"SET LOCAL lock_timeout = {milliseconds(lock_timeout)}")
        for relation in relations:
            await conn.execute(f"ALTER TABLE {relation} NO FORCE ROW LEVEL SECURITY")
        yield
    finally:
        # A connection gone has been rolled back by the server already.
        with contextlib.suppress(Exception):
            await transaction.rollback()

"""Who holds an advisory lock: the one query both lock users (migrations, rotation) share."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import LockHolder

# A bigint key below 2**32 is stored as classid 0, objid key, objsubid 1.
_HOLDERS = """
    SELECT l.pid, coalesce(a.application_name, '') AS application_name,
           l.objid::bigint AS key, a.state, host(a.client_addr) AS client_addr,
           a.xact_start AS since,
           CASE WHEN a.query = '<insufficient privilege>' THEN current_user::text
           END AS hidden_from,
           a.client_addr IS NOT DISTINCT FROM inet_client_addr() AS our_client,
           a.usename::text AS role
    FROM pg_locks l
    LEFT JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objsubid = 1
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.objid::bigint = ANY($1::bigint[]) AND l.pid <> pg_backend_pid()
    ORDER BY l.pid, l.objid
"""


async def advisory_lock_holders(
    conn: Any, keys: Iterable[int], *, pooled: bool = False
) -> list[LockHolder]:
    """Backends other than ours holding any of ``keys`` (each backend listed once).

    ``pooled``: ``conn`` goes through a connection pooler; a holder connected from
    the address ``conn`` is seen from is marked as coming through that pooler.
    """
    holders: dict[int, LockHolder] = {}
    for r in await conn.fetch(_HOLDERS, list(keys)):
        holders.setdefault(
            r["pid"],
            LockHolder(
                pid=r["pid"],
                application_name=r["application_name"],
                key=r["key"],
                state=r["state"],
                client_addr=r["client_addr"],
                since=r["since"],
                hidden_from=r["hidden_from"],
                through_pooler=pooled and r["our_client"],
                role=r["role"],
            ),
        )
    return list(holders.values())

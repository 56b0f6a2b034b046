"""Who holds the table locks a statement is waiting for, and the backoff that waits
them out.

After a statement gave up waiting (lock_timeout), the runner asks which other
sessions hold locks on the tables it needed, in a mode that conflicts with the
one it asked for (PostgreSQL's conflict table, "Explicit Locking"): that names
the long transaction in the way, not every reader of the table.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    stop_before_delay,
    wait_exponential,
    wait_random,
)
from tenacity.retry import retry_base

from ..defaults import DDL_RETRY_FIRST, DDL_RETRY_MAX
from ..errors import TableLockHolder

# pg_locks spells modes "AccessShareLock"; the docs (and files/lock_levels.py) "ACCESS SHARE".
_NAMES = {
    "AccessShareLock": "ACCESS SHARE",
    "RowShareLock": "ROW SHARE",
    "RowExclusiveLock": "ROW EXCLUSIVE",
    "ShareUpdateExclusiveLock": "SHARE UPDATE EXCLUSIVE",
    "ShareLock": "SHARE",
    "ShareRowExclusiveLock": "SHARE ROW EXCLUSIVE",
    "ExclusiveLock": "EXCLUSIVE",
    "AccessExclusiveLock": "ACCESS EXCLUSIVE",
}
_ALL = frozenset(_NAMES.values())
CONFLICTS: dict[str, frozenset[str]] = {
    "ACCESS SHARE": frozenset({"ACCESS EXCLUSIVE"}),
    "ROW SHARE": frozenset({"EXCLUSIVE", "ACCESS EXCLUSIVE"}),
    "ROW EXCLUSIVE": frozenset({"SHARE", "SHARE ROW EXCLUSIVE", "EXCLUSIVE", "ACCESS EXCLUSIVE"}),
    "SHARE UPDATE EXCLUSIVE": frozenset(
        {"SHARE UPDATE EXCLUSIVE", "SHARE", "SHARE ROW EXCLUSIVE", "EXCLUSIVE", "ACCESS EXCLUSIVE"}
    ),
    "SHARE": frozenset(
        {"ROW EXCLUSIVE", "SHARE UPDATE EXCLUSIVE", "SHARE ROW EXCLUSIVE", "EXCLUSIVE"}
        | {"ACCESS EXCLUSIVE"}
    ),
    "SHARE ROW EXCLUSIVE": _ALL - {"ACCESS SHARE", "ROW SHARE"},
    "EXCLUSIVE": _ALL - {"ACCESS SHARE"},
    "ACCESS EXCLUSIVE": _ALL,
}

_HOLDERS = """
    SELECT l.pid, coalesce(a.application_name, '') AS application_name, l.mode,
           l.relation::regclass::text AS relation, a.state, a.query,
           a.xact_start AS since, extract(epoch FROM clock_timestamp() - a.xact_start) AS age,
           CASE WHEN a.query = '<insufficient privilege>' THEN current_user::text
           END AS hidden_from, a.usename::text AS role
    FROM pg_locks AS l
    LEFT JOIN pg_stat_activity AS a ON a.pid = l.pid
    WHERE l.locktype = 'relation' AND l.granted AND l.pid <> pg_backend_pid()
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.relation = ANY (SELECT to_regclass(name) FROM unnest($1::text[]) AS name)
    ORDER BY a.xact_start NULLS LAST, l.pid
"""


async def table_lock_holders(conn: Any, wanted: Mapping[str, str]) -> list[TableLockHolder]:
    """Sessions holding a lock that conflicts with ``wanted`` (relation -> mode we need)."""
    if not wanted:
        return []
    by_oid_name = {name.lower(): mode for name, mode in wanted.items()}
    holders: dict[int, TableLockHolder] = {}
    for row in await conn.fetch(_HOLDERS, list(wanted)):
        held = _NAMES.get(row["mode"], row["mode"])
        need = by_oid_name.get(row["relation"].lower()) or _match(row["relation"], by_oid_name)
        if need is None or held not in CONFLICTS.get(need, _ALL):
            continue
        holders.setdefault(
            row["pid"],
            TableLockHolder(
                pid=row["pid"],
                application_name=row["application_name"],
                relation=row["relation"],
                mode=held,
                state=row["state"],
                query=None if row["hidden_from"] else scrub(row["query"]),
                since=row["since"],
                age=None if row["age"] is None else float(row["age"]),
                hidden_from=row["hidden_from"],
                role=row["role"],
            ),
        )
    return list(holders.values())


# Another session's statement may carry secrets in its literals (a password in a
# DSN, an API key): they are replaced by '?' before the text is shown anywhere.
_LITERALS = re.compile(
    r"""(?xs)
    \$(?P<tag>[A-Za-z_]\w*)?\$.*?(?:\$(?P=tag)?\$|\Z)   # $tag$ ... $tag$
    | [eE]'(?:[^'\\]|\\.|'')*(?:'|\Z)                # E'...' (backslash escapes)
    | '(?:[^']|'')*(?:'|\Z)                            # '...' (also cut off at the end)
    """
)


def scrub(query: str | None, limit: int = 200) -> str | None:
    """``query`` with every string literal replaced by '?', on one line, cut to ``limit``."""
    if not query:
        return None
    text = " ".join(_LITERALS.sub("'?'", query).split()).rstrip(";").rstrip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _match(relation: str, wanted: Mapping[str, str]) -> str | None:
    """``relation`` as regclass prints it ("t" or "s.t") against names as written."""
    bare = relation.rsplit(".", 1)[-1].strip('"').lower()
    for name, mode in wanted.items():
        if name.rsplit(".", 1)[-1].strip('"') == bare:
            return mode
    return None


def lock_backoff(
    retry_for: float,
    started: float,
    *,
    retry: retry_base,
    before_sleep: Callable[[RetryCallState], None],
) -> AsyncRetrying:
    """The retries of DDL that lost a table-lock conflict (a migration's, a distribute
    step's): pauses from DDL_RETRY_FIRST, doubling up to DDL_RETRY_MAX, with jitter
    (replicas do not retry in step), and no new attempt once its pause would end past
    ``retry_for`` seconds after ``started`` (time.monotonic() of the first attempt)."""
    return AsyncRetrying(
        retry=retry,
        wait=wait_exponential(multiplier=DDL_RETRY_FIRST, max=DDL_RETRY_MAX)
        + wait_random(0, DDL_RETRY_FIRST),
        stop=stop_before_delay(max(retry_for - (time.monotonic() - started), 0)),
        before_sleep=before_sleep,
        reraise=True,
    )

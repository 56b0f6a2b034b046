"""Retention of the alert change log once Citus distributes it: pruned on each node group.

The same rules as on plain PostgreSQL (schema/alert_log.py): a change goes once every
named consumer has passed it and it is older than ALERT_LOG_KEEP, or once it is older
than ALERT_LOG_MAX_AGE. "Passed" is judged on the change's node group of origin
(``seq >> 48``; listener/nodes.py), against each consumer's position there: origin 0's in
``log_xid``/``log_seq``, the others' in ``log_nodes``. A consumer not carried over yet
needs all of it; a group a consumer never knew (added since it last wrote) too; one it
counts none of (gone before it started), none. The highest position deleted on each
group is kept in ``alert_changes_pruned`` (0's in ``xid``/``seq``, the others' in
``log_nodes``): a listener behind it gets AlertGapError.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from ..listener.events import START, Position
from ..listener.nodes import Nodes

_CONSUMERS = "SELECT log_xid, log_seq, log_nodes FROM alert_listener_positions"
_TOP = """
    SELECT greatest(
        (SELECT coalesce(max(groupid), 0) FROM pg_catalog.pg_dist_node),
        (SELECT CASE WHEN is_called THEN last_value ELSE 0 END
         FROM pg_catalog.pg_dist_groupid_seq))::int
"""
_ORIGIN = "(c.seq >> 48)"
_MARKED = "SELECT xid, seq, log_nodes FROM alert_changes_pruned FOR UPDATE"
_MARK = """
    INSERT INTO alert_changes_pruned AS p (xid, seq, log_nodes) VALUES ($1, $2, $3::jsonb)
    ON CONFLICT (one) DO UPDATE
    SET xid = EXCLUDED.xid, seq = EXCLUDED.seq, log_nodes = EXCLUDED.log_nodes, pruned_at = now()
"""

Bound = Position | None  # changes at or before it were passed by every consumer; None: all


def passed_by_all(consumers: list[Any], top: int) -> dict[int, Bound]:
    """Per node group 0..top+1 (top+1 standing for every group above top), the position
    every consumer has passed. No consumer: all of it, every group."""
    bounds: dict[int, Bound] = dict.fromkeys(range(top + 2))
    for row in consumers:
        if row["log_xid"] is None:  # not carried over yet: needs the whole log
            return dict.fromkeys(range(top + 2), START)
        nodes = Nodes.from_json(row["log_nodes"])
        for group in bounds:
            at = Position(row["log_xid"], row["log_seq"]) if group == 0 else nodes.after(group)
            if at is None:
                continue  # none of that group is for it
            known = bounds[group]
            bounds[group] = at if known is None else min(known, at)
    return bounds


def doomed(bounds: dict[int, Bound], args: list[Any]) -> str:
    """The WHERE of the changes retention deletes; ``args`` (the two cut-offs, $1: keep,
    $2: max age) gets its other parameters."""
    top = max(bounds) - 1
    arms = ["c.recorded_at < $2"]
    for group, bound in sorted(bounds.items()):
        where = f"{_ORIGIN} = {group}" if group <= top else f"{_ORIGIN} > {top}"
        if bound is None:
            arms.append(f"({where} AND c.recorded_at < $1)")
        elif bound != START:
            args += [bound.xid, bound.seq]
            arms.append(
                f"({where} AND c.recorded_at < $1 AND (c.xid, c.seq) <= "
                f"(${len(args) - 1}::xid8, ${len(args)}::bigint))"
            )
    return " OR ".join(arms)


async def prune_by_node(
    conn: Any,
    dry_run: bool,
    keep_before: datetime,
    expire_before: datetime,
    lift: Callable[[], Awaitable[None]] | None,
    tables: Sequence[str],
) -> tuple[int, int]:
    """Delete (``dry_run``: count) what no consumer needs on any node group; returns the
    changes concerned and how many of them had expired. ``lift``: for the tables' owner,
    lifts FORCE ROW LEVEL SECURITY on ``tables`` in the transaction (put back before it
    commits)."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        # DDL (lifting FORCE) and DML on the distributed log: one connection per node.
        await conn.execute("SET LOCAL citus.multi_shard_modify_mode = 'sequential'")
        if lift is not None:
            await lift()
        top = int(await conn.fetchval(_TOP))
        args: list[Any] = [keep_before, expire_before]
        where = doomed(passed_by_all(list(await conn.fetch(_CONSUMERS)), top), args)
        row = await conn.fetchrow(
            f"SELECT count(*) AS passed, count(*) FILTER (WHERE c.recorded_at < $2) AS expired "
            f"FROM alert_changes c WHERE {where}",
            *args,
        )
        if not dry_run and row["passed"]:
            await _delete(conn, where, args)
        if lift is not None:
            for table in tables:
                await conn.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    except BaseException:
        await transaction.rollback()
        raise
    if dry_run:
        await transaction.rollback()  # FORCE lifted, if it was, never seen by another
    else:
        await transaction.commit()
    return row["passed"], row["expired"]


async def _delete(conn: Any, where: str, args: list[Any]) -> None:
    """The highest position deleted on each group first (retention's mark, never lowered),
    then the rows."""
    found = await conn.fetch(
        f"SELECT DISTINCT {_ORIGIN} AS g FROM alert_changes c WHERE {where}", *args
    )
    highest: dict[int, Position] = {}
    for group in sorted(int(row["g"]) for row in found):
        last = await conn.fetchrow(
            f"SELECT c.xid, c.seq FROM alert_changes c WHERE {_ORIGIN} = {group} "
            f"AND ({where}) ORDER BY c.xid DESC, c.seq DESC LIMIT 1",
            *args,
        )
        highest[group] = Position(int(last["xid"]), int(last["seq"]))
    await conn.execute(f"DELETE FROM alert_changes c WHERE {where}", *args)
    marked = await conn.fetchrow(_MARKED)
    if marked is not None:
        highest[0] = max(highest.get(0, START), Position(marked["xid"], marked["seq"]))
        for group, (xid, seq) in json.loads(marked["log_nodes"] or "{}").items():
            before = Position(int(xid), int(seq))
            highest[int(group)] = max(highest.get(int(group), before), before)
    zero = highest.pop(0, START)
    others = {str(g): [str(p.xid), p.seq] for g, p in sorted(highest.items())}
    await conn.execute(_MARK, zero.xid, zero.seq, json.dumps(others))

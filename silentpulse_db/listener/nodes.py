"""The alert change log distributed by Citus: each node's changes in that node's order.

On Citus the statement trigger fires on the shards of ``alerts`` and writes each change
on the node that holds the alert (migration 000059), at a position of that node: ``xid``
is the node's transaction id and ``seq`` comes from the node's own range of the identity
(Citus gives node group *g* the values from ``g << 48`` on). So ``seq >> 48`` names the
node group whose transactions a row's xid counts: its **origin**, wherever the row lives
now (a shard the rebalancer moves carries its rows along; the rows written before the
log was distributed have origin 0, the coordinator's). Xids of two nodes are unrelated:
a reader keeps one position per origin and delivers a row once every transaction of its
origin below it has ended:

- a row read on its origin: below the horizon of the very snapshot it was read in (the
  read runs REPEATABLE READ with one connection per node, so one snapshot per node, and
  each row carries its node's ``pg_snapshot_xmin`` and ``silentpulse_node_group()``);
- a row read elsewhere: below its origin's horizon measured before the read (the
  coordinator's, taken first in the same transaction, for origin 0; for a moved row, its
  node's from an earlier read, or asked of every node with ``run_command_on_all_nodes``
  when that is not enough; an origin that is no node any more writes nothing).

Node groups are never reused (they come from a sequence), so a group the reader did not
know of when it last wrote its position was added since: all its changes are new.

A tenant whose shard moved has rows of two origins: those the move brought along, older
than any its new node wrote for it (the move blocks the shard's writes while it copies).
Its new node's rows wait while it has brought-along rows to deliver; a full read asks
for them past the positions, and if there are some, reads each origin on its own, so
that one origin's backlog neither fills the read nor hides another's.
"""

from __future__ import annotations

import heapq
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..errors import DatabaseUnavailableError
from .events import START, AlertEvent, Position, Source, from_log

logger = logging.getLogger("silentpulse_db.listener")

NODE_SHIFT = 48  # Citus: node group g draws a bigint identity from (g << 48) + 1 on
# Catalog reads on the coordinator; pg_dist_* are readable by every role.
_CITUS = "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')"
_DISTRIBUTED = (
    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition "
    "WHERE logicalrelid = 'alert_changes'::regclass)"
)
# One connection per node: each node's rows of one read then share one snapshot, whose
# horizon they carry (several connections to a node would read it in several).
SESSION = (
    "SET citus.multi_shard_modify_mode = 'sequential'; "
    "SET citus.max_adaptive_executor_pool_size = 1"
)
# Every node's horizon, asked of each (a connection per node, made for the call: rare).
_HORIZONS = """
    SELECT coalesce(n.groupid, 0) AS node, r.success, r.result
    FROM run_command_on_all_nodes('SELECT pg_snapshot_xmin(pg_current_snapshot())') r
    LEFT JOIN pg_catalog.pg_dist_node n ON n.nodeid = r.nodeid
"""
# The highest node group there ever was (removed ones included: groups are not reused).
_TOP = """
    SELECT greatest(
        (SELECT coalesce(max(groupid), 0) FROM pg_catalog.pg_dist_node),
        (SELECT CASE WHEN is_called THEN last_value ELSE 0 END
         FROM pg_catalog.pg_dist_groupid_seq))::int
"""
_GROUPS = "SELECT coalesce(array_agg(DISTINCT groupid), '{}') FROM pg_catalog.pg_dist_node"
_HORIZON = "SELECT pg_snapshot_xmin(pg_current_snapshot())"
NO_WRITER = 1 << 64  # above every xid8: the horizon of a group that is no node now
_COLUMNS = (
    "c.xid, c.seq, c.tenant_id, c.alert_id, c.started_at, c.operation, c.status, "
    "c.changed_at, c.recorded_at"
)
_ORIGIN = "(c.seq >> 48)"
# What a read asks of one origin: (group, the position after which); (top, None): every
# group above top, from its first change.
Arm = tuple[int, Position | None]


def origin(seq: int) -> int:
    """The node group whose transaction ids a row with this ``seq`` carries."""
    return seq >> NODE_SHIFT


async def citus_present(conn: Any) -> bool:
    return bool(await conn.fetchval(_CITUS))


async def log_distributed(conn: Any) -> bool:
    """Whether ``alert_changes`` is a Citus distributed table (ask only where Citus is)."""
    return bool(await conn.fetchval(_DISTRIBUTED))


@dataclass
class Nodes:
    """A reader's positions on the node groups but 0 (whose is kept as before, in
    ``log_xid``/``log_seq``): ``at[g]`` is the last change delivered from group g, None
    for none of its changes (a group gone when the reader started); a group above
    ``top`` was added since: from its first change."""

    at: dict[int, Position | None] = field(default_factory=dict)
    top: int = 0

    def after(self, group: int) -> Position | None:
        if group in self.at:
            return self.at[group]
        return START if group > self.top else None

    def move(self, position: Position) -> None:
        """Past ``position`` on its origin."""
        self.set(origin(position.seq), position)

    def set(self, group: int, position: Position) -> None:
        # A group above top becomes known; those between it and top, from their start.
        for between in range(self.top + 1, group):
            self.at.setdefault(between, START)
        self.top = max(self.top, group)
        self.at[group] = position

    def to_json(self) -> str:
        at = {
            str(group): None if at is None else [str(at.xid), at.seq]
            for group, at in sorted(self.at.items())
        }
        return json.dumps({"top": self.top, "at": at})

    @classmethod
    def from_json(cls, text: str | None) -> Nodes:
        """NULL (a consumer of plain PostgreSQL, or from before the log was distributed):
        no group known, every one from its first change."""
        if text is None:
            return cls()
        data = json.loads(text)
        at = {
            int(g): None if p is None else Position(int(p[0]), int(p[1]))
            for g, p in data.get("at", {}).items()
        }
        return cls(at, int(data.get("top", max(at, default=0))))

    def copy(self) -> Nodes:
        return Nodes(dict(self.at), self.top)


@dataclass(frozen=True)
class NodeBatch:
    """Rows read in each origin's order, merged across origins by the time they were
    recorded; ``held_back``: a committed row waits for an older transaction of its node
    (named); ``full``: the limit was reached, more may follow at once."""

    changes: list[tuple[Position, AlertEvent]]
    held_back: str | None
    full: bool


@dataclass(frozen=True)
class NodeStart:
    """Where a reader starts on every node: origin 0's position, the others', and the
    transactions above each horizon that had committed already (skipped)."""

    position: Position
    nodes: Nodes
    committed: frozenset[tuple[int, int]]


class NodeReader:
    """Reads the distributed log for one listener; remembers each node's horizon."""

    def __init__(self) -> None:
        self.horizons: dict[int, int] = {}  # per node, as read before (never lowered)
        self.live: set[int] | None = None  # the node groups at the last ask
        self._ask = False  # a moved row waits for its node's horizon: ask every node
        self._split_reported = False

    async def prepare(self, conn: Any) -> None:
        """Once per connection: one connection (one snapshot) per node in reads, and every
        node's horizon, for the rows a move left on another node: known before the first
        read, they are judged there, and come in their time's order with the rest."""
        await conn.execute(SESSION)
        await self.ask_every_node(conn)

    async def ask_every_node(self, conn: Any, *, every: bool = False) -> dict[int, int]:
        """Each node's horizon now (``run_command_on_all_nodes``). A node that does not
        answer is left out (its moved rows wait), or with ``every`` raises."""
        found: dict[int, int] = {}
        failed: list[str] = []
        for row in await conn.fetch(_HORIZONS):
            if row["success"]:
                found[row["node"]] = int(row["result"])
            else:
                failed.append(f"node group {row['node']}: {row['result']}")
        self.live = {0, *(await conn.fetchval(_GROUPS))}
        if every and failed:
            raise DatabaseUnavailableError(
                "the alert listener starts from now on every Citus node, and asks each for "
                "its horizon through the coordinator; " + "; ".join(failed)
            )
        for node, horizon in found.items():
            self.horizons[node] = max(horizon, self.horizons.get(node, 0))
        return found

    async def read_after(
        self, conn: Any, position: Position, nodes: Nodes, limit: int, source: Source
    ) -> NodeBatch:
        if self._ask:
            self._ask = False
            await self.ask_every_node(conn)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            # The coordinator's horizon first: taken before any node's snapshot.
            coordinator = int(await conn.fetchval(_HORIZON))
            rows, full, brought = await _read(conn, _arms(position, nodes), limit)
        return self._settle(rows, coordinator, source, full=full, brought=brought)

    def _settle(
        self,
        rows: list[Any],
        coordinator: int,
        source: Source,
        *,
        full: bool = False,
        brought: set[Any] | None = None,
    ) -> NodeBatch:
        """Per origin, its rows up to the first one not settled; merged by time.
        ``brought``: the tenants with rows a shard move brought along past these
        positions (None: those among ``rows``, all there are when the read was not full)."""
        snapshots: dict[int, set[int]] = {}
        for row in rows:
            snapshots.setdefault(row["node"], set()).add(int(row["horizon"]))
        split = {node for node, seen in snapshots.items() if len(seen) > 1}
        if split and not self._split_reported:
            self._split_reported = True
            logger.warning(
                "alert listener: node group(s) %s were read in more than one snapshot "
                "(citus.multi_shard_modify_mode is not 'sequential' on its connection?); "
                "their changes wait",
                describe(split),
            )
        streams: dict[int, list[tuple[Position, AlertEvent]]] = {}
        held: dict[int, str] = {}
        brought = _brought_along(rows) if brought is None else brought
        for row in rows:
            xid, node = int(row["xid"]), row["node"]
            group = origin(int(row["seq"]))
            if group in held:
                continue
            if node in split:
                held[group] = f"node group {node} read in several snapshots"
                continue
            if node == group and row["tenant_id"] in brought:
                # Written after its tenant's shard moved here: after every change the
                # shard brought along, which go first (in this read or a later one).
                held[group] = f"tenant {row['tenant_id']}: changes a shard move brought along"
                continue
            if node == group:
                bound = min(snapshots[node])
            elif group == 0:
                bound = coordinator
            elif self.live is not None and group not in self.live:
                bound = NO_WRITER
            else:
                bound = self.horizons.get(group, 0)
            if xid >= bound:
                held[group] = f"transaction {xid} of node group {group}"
                self._ask = self._ask or (node != group and group != 0)
                continue
            streams.setdefault(group, []).append(from_log(row, source))
        for node, seen in snapshots.items():  # for the reads to come: taken during this one
            if node not in split:
                self.horizons[node] = max(min(seen), self.horizons.get(node, 0))
        # Each origin's order kept; across origins, by the time the node recorded them.
        changes = list(heapq.merge(*streams.values(), key=lambda change: _order(change[1])))
        return NodeBatch(changes, next(iter(held.values()), None), full)

    async def from_now(self, conn: Any) -> NodeStart:
        """Every change of a transaction not ended yet on its node, and none committed
        before, on every node."""
        horizons = await self.ask_every_node(conn, every=True)
        if 0 not in horizons:  # the coordinator is not in pg_dist_node
            horizons[0] = int(await conn.fetchval(_HORIZON))
        top = int(await conn.fetchval(_TOP))
        nodes = Nodes(top=top)
        for group in range(1, top + 1):
            # A group that is no node now (removed) writes nothing more: none of it.
            nodes.at[group] = Position(horizons[group], 0) if group in horizons else None
        arms = " OR ".join(
            f"({_ORIGIN} = {group} AND c.xid >= '{horizon}'::xid8)"
            for group, horizon in sorted(horizons.items())
        )
        rows = await conn.fetch(
            f"SELECT DISTINCT {_ORIGIN} AS node, c.xid FROM alert_changes c WHERE {arms}"
        )
        committed = frozenset((row["node"], int(row["xid"])) for row in rows)
        return NodeStart(Position(horizons[0], 0), nodes, committed)

    async def from_time(self, conn: Any, since: datetime) -> NodeStart:
        """On each node, before its first change recorded at or after ``since`` (the
        nodes' time); from now on a node that has none."""
        start = await self.from_now(conn)
        firsts = await conn.fetch(
            f"SELECT {_ORIGIN} AS node, min(c.xid) AS xid FROM alert_changes c "
            f"WHERE c.recorded_at >= $1 GROUP BY 1",
            since,
        )
        position, nodes, committed = start.position, start.nodes, set(start.committed)
        for row in firsts:
            group, first = row["node"], Position(int(row["xid"]), 0)
            committed = {c for c in committed if c[0] != group}
            if group == 0:
                position = first
            else:
                nodes.set(group, first)
        return NodeStart(position, nodes, frozenset(committed))


async def _read(conn: Any, arms: list[Arm], limit: int) -> tuple[list[Any], bool, set[Any]]:
    """The rows to settle, whether the read was full, and the tenants with rows a shard
    move brought along still to deliver."""
    sql, args = _read_query(arms, limit)
    rows = await conn.fetch(sql, *args)
    if len(rows) < limit:  # every row past the positions: all there is to know
        return rows, False, _brought_along(rows)
    # A full read may have left out rows a shard move brought along: asked for.
    brought = await _brought_past(conn, arms)
    if not brought:
        return rows, True, brought
    # Catching up after a shard move: each origin read on its own (the same snapshots),
    # so that one origin's backlog neither fills the read nor hides the rows a move
    # brought along to another origin's shards.
    rows, full = [], False
    for arm in arms:
        sql, args = _read_query([arm], limit)
        part = await conn.fetch(sql, *args)
        rows, full = rows + part, full or len(part) == limit
    return rows, full, brought


def _brought_along(rows: list[Any]) -> set[Any]:
    """Tenants with a change read on a node not its origin's: a shard move (or the
    distribution, for origin 0) brought it along, so it is older than every change the
    tenant's new node wrote for it (the move blocks the shard's writes while it copies)."""
    return {row["tenant_id"] for row in rows if row["node"] != origin(int(row["seq"]))}


async def _brought_past(conn: Any, arms: list[Arm]) -> set[Any]:
    """The tenants with a row of ``arms`` that a shard move brought along, read or not:
    few rows, found by origin on the nodes that are not it (an arm's own node skips its
    scan: ``silentpulse_node_group()`` is stable, a one-time filter)."""
    found: set[Any] = set()
    for arm in arms:
        sql, args = _brought_query(arm)
        found |= {row["tenant_id"] for row in await conn.fetch(sql, *args)}
    return found


def _order(event: AlertEvent) -> tuple[datetime, str]:
    recorded = event.recorded_at
    assert recorded is not None  # every row of the log has one
    return recorded, event.id


def _arms(position: Position, nodes: Nodes) -> list[Arm]:
    """What to read of each origin: (group, the position after which), in group order;
    none of a group that is None; last (group, None): every group above ``top``, from
    its first change (added since)."""
    known = [(0, position), *sorted(nodes.at.items())]
    return [*[(group, after) for group, after in known if after is not None], (nodes.top, None)]


def _where(arms: list[Arm], args: list[Any]) -> str:
    """The rows of ``arms``; their positions appended to ``args`` as parameters."""
    parts = []
    for group, after in arms:
        if after is None:
            parts.append(f"{_ORIGIN} > {group}")
            continue
        args += [after.xid, after.seq]
        xid, seq = f"${len(args) - 1}::xid8", f"${len(args)}::bigint"
        parts.append(f"({_ORIGIN} = {group} AND (c.xid, c.seq) > ({xid}, {seq}))")
    return " OR ".join(parts)


def _read_query(arms: list[Arm], limit: int) -> tuple[str, list[Any]]:
    """The first ``limit`` rows of ``arms``, in origin then (xid, seq) order, so that each
    origin's rows read are the first after its position (a full read cuts one origin's
    and leaves out those after it); each with its node and horizon."""
    args: list[Any] = []
    where = _where(arms, args)
    args.append(limit)
    sql = (
        f"SELECT {_COLUMNS}, pg_snapshot_xmin(pg_current_snapshot()) AS horizon, "
        f"silentpulse_node_group() AS node FROM alert_changes c WHERE {where} "
        f"ORDER BY {_ORIGIN}, c.xid, c.seq LIMIT ${len(args)}"
    )
    return sql, args


def _brought_query(arm: Arm) -> tuple[str, list[Any]]:
    """The tenants with a row of ``arm`` on a node not its origin's."""
    group, after = arm
    if after is None:  # groups added since: rare, and read from their first change
        where = f"{_ORIGIN} > {group} AND {_ORIGIN} <> silentpulse_node_group()"
        return f"SELECT DISTINCT c.tenant_id FROM alert_changes c WHERE {where}", []
    where = (
        f"silentpulse_node_group() <> {group} AND {_ORIGIN} = {group} "
        "AND (c.xid, c.seq) > ($1::xid8, $2::bigint)"
    )
    return f"SELECT DISTINCT c.tenant_id FROM alert_changes c WHERE {where}", [
        after.xid,
        after.seq,
    ]


def describe(groups: Iterable[int]) -> str:
    return ", ".join(str(g) for g in sorted(groups))

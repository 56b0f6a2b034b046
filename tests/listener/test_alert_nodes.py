"""The positions of a reader of the distributed alert log, one per node group of origin
(listener/nodes.py), and what retention may delete on each (schema/alert_log_nodes.py):
pure logic, no server."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from silentpulse_db.listener.events import START, Position
from silentpulse_db.listener.nodes import (
    NodeReader,
    Nodes,
    _arms,
    _brought_query,
    _read_query,
    origin,
)
from silentpulse_db.schema.alert_log_nodes import doomed, passed_by_all

G1, G2 = 1 << 48, 2 << 48  # the first seq of node groups 1 and 2


def test_seq_names_the_node_group_whose_xids_the_row_carries() -> None:
    assert [origin(s) for s in (1, G1 - 1, G1 + 1, G2 + 5)] == [0, 0, 1, 2]


def test_a_group_above_top_is_new_and_one_known_as_gone_gives_nothing() -> None:
    nodes = Nodes({1: Position(10, G1 + 3), 2: None}, top=2)
    assert nodes.after(1) == Position(10, G1 + 3)
    assert nodes.after(2) is None  # gone when the reader started: none of its changes
    assert nodes.after(3) == START  # added since: from its first change
    nodes.move(Position(7, (5 << 48) + 1))  # group 5: 3 and 4 become known, from the start
    assert (nodes.top, nodes.after(3), nodes.after(4)) == (5, START, START)
    again = Nodes.from_json(nodes.to_json())
    assert (again.at, again.top) == (nodes.at, nodes.top)
    assert Nodes.from_json(None).after(1) == START  # written on plain PostgreSQL


def test_the_read_asks_each_origin_after_its_own_position() -> None:
    nodes = Nodes({1: Position(10, G1 + 3), 2: None}, top=2)
    sql, args = _read_query(_arms(Position(99, 7), nodes), 500)
    assert "((c.seq >> 48) = 0 AND (c.xid, c.seq) > ($1::xid8, $2::bigint))" in sql
    assert "((c.seq >> 48) = 1 AND (c.xid, c.seq) > ($3::xid8, $4::bigint))" in sql
    assert "(c.seq >> 48) = 2" not in sql  # none of group 2
    assert "(c.seq >> 48) > 2" in sql  # groups added since: all
    assert sql.endswith("ORDER BY (c.seq >> 48), c.xid, c.seq LIMIT $5")
    assert args == [99, 7, 10, G1 + 3, 500]


def test_catching_up_reads_each_origin_alone_and_asks_for_moved_tenants() -> None:
    arms = _arms(Position(99, 7), Nodes({1: Position(10, G1 + 3), 2: None}, top=2))
    assert arms == [(0, Position(99, 7)), (1, Position(10, G1 + 3)), (2, None)]
    sql, args = _read_query([arms[1]], 500)
    assert "WHERE ((c.seq >> 48) = 1 AND (c.xid, c.seq) > ($1::xid8, $2::bigint)) ORDER" in sql
    assert args == [10, G1 + 3, 500]
    sql, args = _brought_query(arms[1])
    # On node 1 a one-time filter: no scan of its own rows
    assert "WHERE silentpulse_node_group() <> 1 AND (c.seq >> 48) = 1 AND (c.xid, c.seq) >" in sql
    assert args == [10, G1 + 3]
    sql, args = _brought_query(arms[2])
    assert "(c.seq >> 48) > 2 AND (c.seq >> 48) <> silentpulse_node_group()" in sql and not args


class Row(dict[str, Any]):
    """A row of the read as asyncpg gives it: by name, and its first columns by slice."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            return list(self.values())[key]
        return super().__getitem__(key)


def row(xid: int, seq: int, node: int, horizon: int, at: int) -> Row:
    recorded = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=at)
    return Row(
        xid=xid, seq=seq, tenant_id=uuid.uuid4(), alert_id=uuid.uuid4(), started_at=recorded,
        operation="INSERT", status="open", changed_at=recorded, recorded_at=recorded,
        horizon=horizon, node=node,
    )  # fmt: skip


def test_each_origin_stops_at_its_first_row_not_settled_and_the_others_go_on() -> None:
    reader = NodeReader()
    reader.live = {0, 1, 2}
    rows = [
        row(5, 3, node=1, horizon=60, at=9),  # origin 0, on node 1: judged by the coordinator
        row(50, G1 + 1, node=1, horizon=60, at=1),
        row(70, G1 + 2, node=1, horizon=60, at=2),  # above node 1's horizon: held
        row(80, G1 + 3, node=1, horizon=60, at=3),  # behind it: held too
        row(20, G2 + 1, node=2, horizon=30, at=5),
    ]
    batch = reader._settle(rows, coordinator=6, source="notify")
    # Merged by the time recorded, each origin's order kept.
    assert [p for p, _ in batch.changes] == [
        Position(50, G1 + 1),
        Position(20, G2 + 1),
        Position(5, 3),
    ]
    assert batch.held_back == "transaction 70 of node group 1" and not batch.full
    assert reader.horizons == {1: 60, 2: 30}  # for the reads to come


def test_a_moved_row_waits_for_its_nodes_horizon_and_asks_for_it() -> None:
    reader = NodeReader()
    reader.live = {0, 1, 2}
    moved = [row(50, G1 + 1, node=2, horizon=900, at=1)]  # node 1's xid, read on node 2
    assert reader._settle(moved, coordinator=1, source="notify").changes == []
    assert reader._ask
    reader.horizons[1] = 51  # asked: node 1's transactions below 51 have ended
    assert len(reader._settle(moved, coordinator=1, source="notify").changes) == 1
    reader.live = {0, 2}  # node 1 removed: it writes nothing more
    reader.horizons.pop(1)
    assert len(reader._settle(moved, coordinator=1, source="notify").changes) == 1


def test_a_moved_tenants_rows_on_its_new_node_wait_for_those_its_shard_brought() -> None:
    reader = NodeReader()
    reader.live = {0, 1, 2}
    reader.horizons[1] = 40  # node 1's transaction 40 is still open
    brought = row(50, G1 + 1, node=2, horizon=900, at=1)  # written on node 1 before the move
    other = row(60, G2 + 1, node=2, horizon=900, at=2)  # another tenant's, on node 2
    new = row(70, G2 + 2, node=2, horizon=900, at=3)  # the moved tenant's, after the move
    later = row(80, G2 + 3, node=2, horizon=900, at=4)
    new["tenant_id"] = brought["tenant_id"]
    batch = reader._settle([brought, other, new, later], coordinator=1, source="notify")
    assert [p for p, _ in batch.changes] == [Position(60, G2 + 1)]
    assert batch.held_back == "transaction 50 of node group 1"
    reader.horizons[1] = 51  # ended: the brought row goes, the tenant's new ones at the next read
    batch = reader._settle([brought, new, later], coordinator=1, source="notify")
    assert [p for p, _ in batch.changes] == [Position(50, G1 + 1)]
    assert batch.held_back == f"tenant {new['tenant_id']}: changes a shard move brought along"
    batch = reader._settle([new, later], coordinator=1, source="notify")
    assert [p for p, _ in batch.changes] == [Position(70, G2 + 2), Position(80, G2 + 3)]
    assert batch.held_back is None


def consumer(xid: int | None, seq: int, nodes: Nodes | None) -> dict[str, Any]:
    return {"log_xid": xid, "log_seq": seq, "log_nodes": nodes.to_json() if nodes else None}


def test_retention_deletes_on_each_group_what_every_consumer_passed_there() -> None:
    a = consumer(100, 4, Nodes({1: Position(50, G1 + 9), 2: None}, top=2))
    b = consumer(90, 2, Nodes({1: Position(70, G1 + 12), 2: Position(8, G2 + 1)}, top=2))
    bounds = passed_by_all([a, b], top=2)
    assert bounds == {0: Position(90, 2), 1: Position(50, G1 + 9), 2: Position(8, G2 + 1), 3: START}
    args: list[Any] = ["keep", "max_age"]
    where = doomed(bounds, args)
    assert where.startswith("c.recorded_at < $2")  # past the age: whoever needs it
    assert "((c.seq >> 48) = 1 AND c.recorded_at < $1 AND (c.xid, c.seq) <= ($5::xid8" in where
    assert "(c.seq >> 48) > 2" not in where  # groups added since: every consumer needs them
    assert args[2:] == [90, 2, 50, G1 + 9, 8, G2 + 1]
    # A consumer not carried over yet needs all of it; none at all: all of it may go.
    assert set(passed_by_all([a, consumer(None, 0, None)], top=2).values()) == {START}
    assert set(passed_by_all([], top=2).values()) == {None}


def test_a_node_read_in_two_snapshots_is_judged_by_neither() -> None:
    reader = NodeReader()
    rows = [row(10, G1 + 1, node=1, horizon=60, at=1), row(11, G1 + 2, node=1, horizon=70, at=2)]
    batch = reader._settle(rows, coordinator=1, source="notify")
    assert batch.changes == [] and batch.held_back == "node group 1 read in several snapshots"
    assert 1 not in reader.horizons

"""The alert stream on a real Citus cluster (issue 31; docs/notifications.md, "On Citus"):
alerts and alert_changes distributed by tenant_id, writers on both workers at once, a
transaction across both workers, a named consumer delivering every change once in each
node's order, and resuming after a restart.

One migrated, distributed database for the module (a copy of the run's migrated
template, distributing takes a while); each test uses tenants and consumer names of its
own."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any

import asyncpg
import pytest

from silentpulse_db import AlertEvent
from silentpulse_db.listener.events import START, Position
from silentpulse_db.listener.nodes import origin
from silentpulse_db.listener.stream import BATCH
from silentpulse_db.schema.citus_alerts import prepare_alert_stream_for_citus
from silentpulse_db.testing.alerts import HANG, listening
from silentpulse_db.testing.citus import CitusCluster
from silentpulse_db.testing.server import run_sync

from helpers import CITUS_SHARDS, fetch, fetchval, wait_for

# alerts' foreign keys reach these (each after those it references): distributed first.
REFERENCED = ["assets", "asset_groups", "integration_points", "flows", "flow_pulses"]
FAST: dict[str, Any] = {"initial_backoff": 0.1, "max_backoff": 0.5, "poll_interval": 0.2}


async def distribute_alerts(dsn: str) -> list[str]:
    """On a migrated database, distribute what the alert stream needs as `distribute`
    would: tenants a reference table, alerts' referenced tables, the stream (prepare
    first), alerts."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET citus.enable_local_reference_table_foreign_keys = off")
        await conn.execute(f"SET citus.shard_count = {CITUS_SHARDS}")
        await conn.execute("SELECT create_reference_table('tenants')")
        for table in REFERENCED:
            await conn.execute(
                f"SELECT create_distributed_table('{table}', 'tenant_id', colocate_with => 'default')"
            )
        steps = await prepare_alert_stream_for_citus(conn, colocate_with="assets")
        assert await prepare_alert_stream_for_citus(conn) == [
            "SET citus.enable_unsafe_triggers = on (this session: distributing alerts needs it)"
        ]
        return steps
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def citus_alerts(
    silentpulse_citus: CitusCluster, silentpulse_citus_migrated_template: str
) -> Iterator[str]:
    name = f"alerts_{uuid.uuid4().hex[:10]}"
    dsn = silentpulse_citus.copy_database(silentpulse_citus_migrated_template, name)
    try:
        run_sync(distribute_alerts(dsn))
        yield dsn
    finally:
        silentpulse_citus.drop_database(name)


SEED = (
    "INSERT INTO assets (id, tenant_id, external_id, hostname, vendor) "
    "VALUES ($1, $1, 'cmdb', 'host', 'acme')",
    "INSERT INTO asset_groups (id, tenant_id, name, filters) VALUES ($1, $1, 'all', '{}')",
    "INSERT INTO integration_points (id, tenant_id, name, type, connection_config) "
    "VALUES ($1, $1, 'k', 'kafka', '\\x01')",
    "INSERT INTO flows (id, tenant_id, name, asset_group_id) VALUES ($1, $1, 'main', $1)",
    "INSERT INTO flow_pulses (id, tenant_id, flow_id, integration_point_id, position, "
    "scheduler_interval, time_window) VALUES ($1, $1, $1, $1, 0, '1 min', '5 min')",
)


class Tenant:
    """A tenant with what an alert references; ``node``: the group its shards are on."""

    def __init__(self, tenant_id: uuid.UUID, node: int) -> None:
        self.id, self.node = tenant_id, node


async def tenants_on_each_worker(conn: asyncpg.Connection, each: int) -> list[Tenant]:
    """``each`` new tenants on every worker, seeded."""
    found: dict[int, list[Tenant]] = {}
    while any(len(found.get(g, [])) < each for g in (1, 2)):
        tenant = uuid.uuid4()
        node = await conn.fetchval(
            "SELECT p.groupid FROM pg_dist_placement p "
            "WHERE p.shardid = get_shard_id_for_distribution_column('alerts', $1::uuid)",
            tenant,
        )
        if len(found.setdefault(node, [])) < each:
            found[node].append(Tenant(tenant, node))
    tenants = [t for g in sorted(found) for t in found[g]]
    for t in tenants:
        handle = f"t{t.id.hex[:12]}"
        await conn.execute(
            "INSERT INTO tenants (id, name, handle) VALUES ($1, $2, $2)", t.id, handle
        )
        for sql in SEED:
            await conn.execute(sql, t.id)
    return tenants


INSERT = (
    "INSERT INTO alerts (tenant_id, flow_pulse_id, asset_id, alert_type, severity, started_at) "
    "SELECT $1, $1, $1, 'silence', 'high', now() FROM generate_series(1, $2) RETURNING id"
)


async def new_alerts(conn: asyncpg.Connection, tenant: Tenant, n: int = 1) -> list[uuid.UUID]:
    return [row["id"] for row in await conn.fetch(INSERT, tenant.id, n)]


@contextlib.asynccontextmanager
async def consuming(dsn: str, **options: Any) -> AsyncIterator[list[AlertEvent]]:
    async with listening(dsn, **{**FAST, **options}) as alerts:
        yield alerts.events


async def arrived(events: list[AlertEvent], expected: set[tuple[uuid.UUID, str]]) -> None:
    async def all_there() -> bool:
        return expected <= {(e.alert_id, e.status) for e in events}

    await wait_for(all_there, timeout=HANG)


def changes(events: list[AlertEvent], tenants: list[Tenant]) -> list[AlertEvent]:
    ours = {t.id for t in tenants}
    return [e for e in events if e.tenant_id in ours]


@contextlib.asynccontextmanager
async def moved(conn: asyncpg.Connection, tenant: Tenant, to: int) -> AsyncIterator[None]:
    """The tenant's shards (alert_changes' and all colocated with it) moved from its
    worker to worker ``to`` as the rebalancer would, and back afterwards: the module's
    other tests find tenants on both workers still."""
    move = (
        "SELECT citus_move_shard_placement(get_shard_id_for_distribution_column("
        "'alert_changes', $1::uuid), src.nodename, src.nodeport, dst.nodename, dst.nodeport, "
        "shard_transfer_mode => 'block_writes') "
        "FROM pg_dist_node src, pg_dist_node dst WHERE src.groupid = $2 AND dst.groupid = $3"
    )
    await conn.execute(move, tenant.id, tenant.node, to)
    try:
        yield
    finally:
        # The move left its source shards to a deferred drop, which waits for the
        # sessions still holding them (a listener's read): a move back before it fails
        # ("orphaned shard ... could not be cleaned up"). Wait for the drop first.
        await wait_for(partial(_cleaned_up, conn), timeout=120)
        await conn.execute(move, tenant.id, to, tenant.node)


async def _cleaned_up(conn: asyncpg.Connection) -> bool:
    """Citus has dropped what earlier moves left behind (asked to try now)."""
    with contextlib.suppress(asyncpg.PostgresError):  # a shard still held: ask again
        await conn.execute("CALL citus_cleanup_orphaned_resources()")
    return not await conn.fetchval("SELECT count(*) FROM pg_dist_cleanup")


def assert_each_nodes_order(events: list[AlertEvent]) -> None:
    """Per node of origin, (xid, seq) never goes back: that node's transaction order."""
    last: dict[int, tuple[int, int]] = {}
    for event in events:
        xid, seq = (int(part) for part in event.id.split("."))
        node = origin(seq)
        assert (xid, seq) > last.get(node, (0, 0)), (event, last)
        last[node] = (xid, seq)


async def writer(dsn: str, tenant: Tenant, rounds: int) -> set[tuple[uuid.UUID, str]]:
    """``rounds`` alerts, each created, acknowledged and resolved in transactions of its
    own (the tenant's shard: one worker, one-phase commit)."""
    conn = await asyncpg.connect(dsn)
    written: set[tuple[uuid.UUID, str]] = set()
    try:
        for _ in range(rounds):
            [alert] = await new_alerts(conn, tenant)
            for status in ("acknowledged", "resolved"):
                await conn.execute(
                    "UPDATE alerts SET status = $3 WHERE tenant_id = $1 AND id = $2",
                    tenant.id,
                    alert,
                    status,
                )
            written |= {(alert, "open"), (alert, "acknowledged"), (alert, "resolved")}
    finally:
        await conn.close()
    return written


async def across_both_workers(dsn: str, tenants: list[Tenant]) -> set[tuple[uuid.UUID, str]]:
    """One transaction that writes on both workers (two-phase commit): an alert for each
    tenant, then one UPDATE over all of them."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            alerts = [a for t in tenants for a in await new_alerts(conn, t)]
            await conn.execute(
                "UPDATE alerts SET status = 'acknowledged' WHERE id = ANY($1)", alerts
            )
    finally:
        await conn.close()
    return {(a, s) for a in alerts for s in ("open", "acknowledged")}


async def test_prepare_is_idempotent_and_the_stream_is_laid_out_for_citus(
    citus_alerts: str,
) -> None:
    distributed = await fetch(
        citus_alerts,
        "SELECT logicalrelid::text AS name, colocationid FROM pg_dist_partition "
        "WHERE logicalrelid IN ('alerts'::regclass, 'alert_changes'::regclass)",
    )
    assert len({r["colocationid"] for r in distributed}) == 1 and len(distributed) == 2
    indexes = await fetch(
        citus_alerts,
        "SELECT indexrelid::regclass::text AS name FROM pg_index "
        "WHERE indrelid = 'alert_changes'::regclass ORDER BY 1",
    )
    assert [r["name"] for r in indexes] == ["alert_changes_node_xid_seq_idx", "alert_changes_pkey"]
    local = await fetch(
        citus_alerts,
        "SELECT count(*) FROM pg_dist_partition WHERE logicalrelid IN "
        "('alert_listener_positions'::regclass, 'alert_changes_pruned'::regclass)",
    )
    assert local[0]["count"] == 0  # plain tables of the coordinator
    conn = await asyncpg.connect(citus_alerts)
    try:
        plan = await prepare_alert_stream_for_citus(conn, dry_run=True)
        assert len(plan) == 1 and plan[0].startswith("SET citus.enable_unsafe_triggers")
    finally:
        await conn.close()


async def test_writers_on_both_workers_and_a_two_phase_commit_arrive_once_in_order(
    citus_alerts: str,
) -> None:
    """Four tenants (two per worker) writing at once, 3 changes per alert in transactions
    of their own, and a transaction across both workers: a named consumer delivers each
    change once, every alert's changes in order, each node's in its transaction order."""
    setup = await asyncpg.connect(citus_alerts)
    try:
        tenants = await tenants_on_each_worker(setup, 2)
    finally:
        await setup.close()
    async with consuming(citus_alerts, consumer=f"pager-{uuid.uuid4().hex[:6]}") as events:
        written = await asyncio.gather(
            *(writer(citus_alerts, t, 15) for t in tenants),
            across_both_workers(citus_alerts, tenants),
        )
        expected = set().union(*written)
        await arrived(events, expected)
        # Anything delivered twice would be on its way by now: a sentinel per worker,
        # written after everything else, arrives after it in its node's order.
        sentinels = [a for t in tenants[::2] for a in await _sentinel(citus_alerts, t)]
        await arrived(events, {(a, "open") for a in sentinels})
        ours = [e for e in changes(events, tenants) if e.alert_id not in sentinels]
    assert len(ours) == len(expected) == 4 * 15 * 3 + 4 * 2
    assert {(e.alert_id, e.status) for e in ours} == expected
    assert len({e.id for e in ours}) == len(ours)
    by_alert: dict[uuid.UUID, list[str]] = {}
    for e in ours:
        by_alert.setdefault(e.alert_id, []).append(e.status)
    assert all(
        s in (["open", "acknowledged", "resolved"], ["open", "acknowledged"])
        for s in by_alert.values()
    )
    assert {origin(int(e.id.split(".")[1])) for e in ours} == {1, 2}
    assert_each_nodes_order(ours)


async def _sentinel(dsn: str, tenant: Tenant) -> list[uuid.UUID]:
    conn = await asyncpg.connect(dsn)
    try:
        return await new_alerts(conn, tenant)
    finally:
        await conn.close()


async def test_a_restart_resumes_after_the_last_change_delivered(citus_alerts: str) -> None:
    """Stopped after part of the changes, written to while it was down: the consumer's
    next start delivers exactly the rest, from both workers."""
    conn = await asyncpg.connect(citus_alerts)
    name = f"resume-{uuid.uuid4().hex[:6]}"
    try:
        tenants = await tenants_on_each_worker(conn, 1)
        async with consuming(citus_alerts, consumer=name) as first:
            before = {(a, "open") for t in tenants for a in await new_alerts(conn, t, 3)}
            await arrived(first, before)
        while_down = {(a, "open") for t in tenants for a in await new_alerts(conn, t, 4)}
        stored = await fetchval(
            citus_alerts,
            "SELECT log_nodes FROM alert_listener_positions WHERE consumer = $1",
            name,
        )
        assert stored is not None and '"1"' in stored and '"2"' in stored
        async with consuming(citus_alerts, consumer=name) as second:
            await arrived(second, while_down)
            after = {(a, "open") for t in tenants for a in await new_alerts(conn, t, 2)}
            await arrived(second, after)
        assert {(e.alert_id, e.status) for e in changes(first, tenants)} == before
        assert sorted((e.alert_id, e.status) for e in changes(second, tenants)) == sorted(
            while_down | after
        )
        assert_each_nodes_order(changes(second, tenants))
    finally:
        await conn.close()


async def test_a_late_commit_on_one_worker_holds_that_worker_only(citus_alerts: str) -> None:
    """An open transaction on worker 1 holds back worker 1's later changes (its node's
    transaction order), not worker 2's; once it commits, all arrive, in order."""
    conn = await asyncpg.connect(citus_alerts)
    holder = await asyncpg.connect(citus_alerts)
    try:
        one, two = await tenants_on_each_worker(conn, 1)
        assert (one.node, two.node) == (1, 2)
        async with consuming(citus_alerts) as events:
            tx = holder.transaction()
            await tx.start()
            [late] = await new_alerts(holder, one)  # begins on worker 1, not committed
            [after] = await new_alerts(conn, one)
            [other] = await new_alerts(conn, two)
            await arrived(events, {(other, "open")})
            assert after not in {e.alert_id for e in events}  # held behind `late`
            await tx.commit()
            await arrived(events, {(late, "open"), (after, "open")})
        ours = [e.alert_id for e in events if e.alert_id in (late, after)]
        assert ours == [late, after]
    finally:
        await holder.close()
        await conn.close()


async def test_a_tenant_moved_to_the_other_worker_loses_nothing(citus_alerts: str) -> None:
    """The rebalancer moves a tenant's shards, log included, to the other worker while
    its consumer is stopped: the changes from before (worker 1's transactions, read on
    worker 2) and after (worker 2's) arrive once each, the older first."""
    conn = await asyncpg.connect(citus_alerts)
    name = f"moved-{uuid.uuid4().hex[:6]}"
    try:
        one, _ = await tenants_on_each_worker(conn, 1)
        async with consuming(citus_alerts, consumer=name):
            pass
        before = await new_alerts(conn, one, 3)
        async with moved(conn, one, to=2):
            after = await new_alerts(conn, one, 2)
            async with consuming(citus_alerts, consumer=name) as events:
                await arrived(events, {(a, "open") for a in before + after})
        ours = changes(events, [one])
        assert [e.alert_id for e in ours] == before + after
        assert [origin(int(e.id.split(".")[1])) for e in ours] == [1, 1, 1, 2, 2]
    finally:
        await conn.close()


async def test_a_nodes_changes_read_on_two_nodes_after_a_move_keep_its_order(
    citus_alerts: str,
) -> None:
    """Worker 1's transactions, some for a tenant whose shard then moves to worker 2 and
    some for a tenant that stays: read from both nodes, they arrive in worker 1's
    transaction order, each once."""
    conn = await asyncpg.connect(citus_alerts)
    name = f"split-{uuid.uuid4().hex[:6]}"
    try:
        moving, _ = await tenants_on_each_worker(conn, 1)
        staying = await another_tenant_on_worker_1(conn, moving)
        async with consuming(citus_alerts, consumer=name):
            pass
        written = [
            a for _ in range(3) for t in (moving, staying) for a in await new_alerts(conn, t)
        ]
        async with (
            moved(conn, moving, to=2),
            consuming(citus_alerts, consumer=name) as events,
        ):
            await arrived(events, {(a, "open") for a in written})
        ours = changes(events, [moving, staying])
        assert [e.alert_id for e in ours] == written
        assert_each_nodes_order(ours)
    finally:
        await conn.close()


async def another_tenant_on_worker_1(conn: asyncpg.Connection, other: Tenant) -> Tenant:
    """A new tenant on worker 1 whose shard is not ``other``'s (stays when that moves)."""
    shard = "get_shard_id_for_distribution_column('alerts', $1::uuid)"
    while True:
        found = (await tenants_on_each_worker(conn, 1))[0]
        if await conn.fetchval(
            f"SELECT {shard} <> {shard.replace('$1', '$2')}", found.id, other.id
        ):
            return found


async def test_a_consumer_more_than_a_read_behind_keeps_a_moved_tenants_order(
    citus_alerts: str,
) -> None:
    """Moved from worker 2 to worker 1 while the consumer was stopped, then worker 1
    wrote more than a read (BATCH rows) after the tenant's new changes: read in origin
    order those fill the read before worker 2's rows, the brought-along ones among them.
    Caught up origin by origin, the tenant's order holds, and everything arrives once."""
    conn = await asyncpg.connect(citus_alerts)
    name = f"behind-{uuid.uuid4().hex[:6]}"
    try:
        busy, moving = await tenants_on_each_worker(conn, 1)
        async with consuming(citus_alerts, consumer=name):
            pass
        before = await new_alerts(conn, moving, 3)
        async with moved(conn, moving, to=1):
            after = await new_alerts(conn, moving, 2)
            backlog = await new_alerts(conn, busy, BATCH + 100)
            async with consuming(citus_alerts, consumer=name) as events:
                await arrived(events, {(a, "open") for a in before + after + backlog})
        assert [e.alert_id for e in changes(events, [moving])] == before + after
        ours = changes(events, [moving, busy])
        assert len(ours) == len({e.id for e in ours}) == 5 + BATCH + 100
        assert_each_nodes_order(ours)
    finally:
        await conn.close()


async def test_a_moved_tenants_new_changes_wait_for_those_its_shard_brought(
    citus_alerts: str,
) -> None:
    """The moved changes wait for an older transaction of their origin (worker 1) while
    the tenant's new node (worker 2) has settled its own: the tenant's order still holds,
    and worker 2's changes before the tenant's first new one are not held."""
    conn = await asyncpg.connect(citus_alerts)
    name = f"brought-{uuid.uuid4().hex[:6]}"
    one_host, one_port = await conn.fetchrow(
        "SELECT nodename, nodeport FROM pg_dist_node WHERE groupid = 1"
    )
    blocker = await asyncpg.connect(citus_alerts, host=one_host, port=one_port)
    try:
        one, two = await tenants_on_each_worker(conn, 1)
        async with consuming(citus_alerts, consumer=name):
            pass
        tx = blocker.transaction()
        await tx.start()
        await blocker.fetchval("SELECT pg_current_xact_id()")  # worker 1's horizon stays here
        before = await new_alerts(conn, one, 3)
        async with moved(conn, one, to=2):
            [earlier] = await new_alerts(conn, two)  # worker 2's, before the tenant's new ones
            after = await new_alerts(conn, one, 2)
            async with consuming(citus_alerts, consumer=name) as events:
                # The read that delivers `earlier` saw `after` too, settled on worker 2.
                await arrived(events, {(earlier, "open")})
                assert not {e.alert_id for e in events} & set(before + after)
                await tx.commit()
                await arrived(events, {(a, "open") for a in before + after})
        assert [e.alert_id for e in changes(events, [one])] == before + after
    finally:
        await blocker.close()
        await conn.close()


async def test_from_now_skips_what_had_committed_on_every_node(citus_alerts: str) -> None:
    conn = await asyncpg.connect(citus_alerts)
    try:
        tenants = await tenants_on_each_worker(conn, 1)
        before = [a for t in tenants for a in await new_alerts(conn, t)]
        async with consuming(citus_alerts) as events:
            after = [a for t in tenants for a in await new_alerts(conn, t)]
            await arrived(events, {(a, "open") for a in after})
        assert not {e.alert_id for e in events} & set(before)
    finally:
        await conn.close()


async def test_since_starts_each_node_at_its_first_change_recorded_then(
    citus_alerts: str,
) -> None:
    conn = await asyncpg.connect(citus_alerts)
    try:
        tenants = await tenants_on_each_worker(conn, 1)
        before = [a for t in tenants for a in await new_alerts(conn, t)]
        since = await conn.fetchval("SELECT now()")
        after = [a for t in tenants for a in await new_alerts(conn, t)]
        async with consuming(citus_alerts, since=since) as events:
            await arrived(events, {(a, "open") for a in after})
        ours = {e.alert_id for e in changes(events, tenants)}
        assert ours == set(after) and not ours & set(before)
    finally:
        await conn.close()


async def test_a_consumers_positions_never_move_back_on_any_node(citus_alerts: str) -> None:
    """Written by a process that lost its lock without noticing: refused, node by node."""
    from silentpulse_db.listener import consumer as consumers
    from silentpulse_db.listener.nodes import Nodes

    conn = await asyncpg.connect(citus_alerts)
    name = f"back-{uuid.uuid4().hex[:6]}"
    g1 = 1 << 48
    try:
        ahead = Nodes({1: Position(50, g1 + 5), 2: None}, top=2)
        await consumers.create(conn, name, Position(10, 1), ahead)
        behind = Nodes({1: Position(40, g1 + 2), 2: None}, top=2)
        await consumers.save(conn, name, Position(10, 1), None, behind)
        stored = await consumers.load(conn, name, timedelta(0), distributed=True)
        assert stored is not None and stored.nodes is not None
        assert stored.nodes.at == ahead.at
        further = Nodes({1: Position(60, g1 + 7), 2: None, 3: START}, top=3)
        await consumers.save(conn, name, Position(10, 1), None, further)
        stored = await consumers.load(conn, name, timedelta(0), distributed=True)
        assert stored is not None and stored.nodes is not None
        assert (stored.nodes.at, stored.nodes.top) == (further.at, 3)
    finally:
        await conn.close()


def utc_now() -> datetime:
    return datetime.now(timezone.utc)

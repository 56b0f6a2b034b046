"""The alert stream on Citus across its upkeep: a listener going on while the tables get
distributed, and retention pruning each node behind its consumers."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import asyncpg
import pytest

from silentpulse_db import AlertGapError, enforce_retention, listen_alerts
from silentpulse_db.listener.nodes import origin
from silentpulse_db.schema.citus_alerts import prepare_alert_stream_for_citus
from silentpulse_db.testing.alerts import HANG

from .test_alert_stream import (
    FAST,
    REFERENCED,
    SEED,
    Tenant,
    arrived,
    assert_each_nodes_order,
    consuming,
    distribute_alerts,
    new_alerts,
    tenants_on_each_worker,
    utc_now,
)
from helpers import CITUS_SHARDS, fetch, fetchval


async def test_a_listener_goes_on_across_the_distribution(
    silentpulse_citus_migrated_database: str,
) -> None:
    """A consumer following the log on the coordinator, and one stopped, while alerts and
    the log are distributed: the changes from before (now on the workers, in the
    coordinator's order) and after (in each worker's) arrive once each, to both."""
    dsn = silentpulse_citus_migrated_database
    conn = await asyncpg.connect(dsn)
    try:
        tenant = Tenant(uuid.uuid4(), 0)
        await _seed_plain(conn, tenant)
        async with consuming(dsn, consumer="stopped"):
            pass
        async with consuming(dsn, consumer="running") as running:
            before = {(a, "open") for a in await new_alerts(conn, tenant, 3)}
            await arrived(running, before)
            await conn.close()
            await distribute_alerts_only(dsn)
            conn = await asyncpg.connect(dsn)
            later = await tenants_on_each_worker(conn, 1)
            after = {(a, "open") for t in [tenant, *later] for a in await new_alerts(conn, t, 2)}
            await arrived(running, after)
        async with consuming(dsn, consumer="stopped") as stopped:
            await arrived(stopped, before | after)
        for events in (running, stopped):
            assert sorted((e.alert_id, e.status) for e in events) == sorted(before | after)
            assert_each_nodes_order(events)
        assert {origin(int(e.id.split(".")[1])) for e in stopped} == {0, 1, 2}
    finally:
        await conn.close()


async def _seed_plain(conn: asyncpg.Connection, tenant: Tenant) -> None:
    """A tenant with what an alert references, on tables not distributed yet."""
    await conn.execute(
        "INSERT INTO tenants (id, name, handle) VALUES ($1, $2, $2)", tenant.id, "before"
    )
    for sql in SEED:
        await conn.execute(sql, tenant.id)


async def distribute_alerts_only(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET citus.enable_local_reference_table_foreign_keys = off")
        await conn.execute(f"SET citus.shard_count = {CITUS_SHARDS}")
        await conn.execute("SET citus.multi_shard_modify_mode = 'sequential'")
        await conn.execute("SELECT create_reference_table('tenants')")
        for table in REFERENCED:
            await conn.execute(
                f"SELECT create_distributed_table('{table}', 'tenant_id', colocate_with => 'default')"
            )
        await prepare_alert_stream_for_citus(conn, colocate_with="assets")
    finally:
        await conn.close()


async def test_retention_prunes_each_node_behind_its_consumers(
    silentpulse_citus_migrated_database: str,
) -> None:
    """What every consumer has passed on a node goes after a day; what one has not, stays
    (on that node), and arrives once it runs; a month on, all goes, and the consumer
    behind hears of the gap."""
    dsn = silentpulse_citus_migrated_database
    await distribute_alerts(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        tenants = await tenants_on_each_worker(conn, 1)
        async with consuming(dsn, consumer="slow"):
            pass
        async with consuming(dsn, consumer="fast") as fast:
            first = {(a, "open") for t in tenants for a in await new_alerts(conn, t, 2)}
            await arrived(fast, first)
        async with consuming(dsn, consumer="slow") as slow:
            await arrived(slow, first)
        behind = {(a, "open") for a in await new_alerts(conn, tenants[1], 3)}  # worker 2
        async with consuming(dsn, consumer="fast") as fast:
            await arrived(fast, behind)
        tomorrow = utc_now() + timedelta(days=1, minutes=1)
        report = await enforce_retention(dsn, now=tomorrow)
        (action,) = [a for a in report.actions if a.table == "alert_changes"]
        assert action.partition == "4 change(s) of alert_changes"
        kept = await fetch(dsn, "SELECT alert_id FROM alert_changes")
        assert {(r["alert_id"], "open") for r in kept} == behind
        async with consuming(dsn, consumer="slow") as slow:
            await arrived(slow, behind)
        assert sorted((e.alert_id, e.status) for e in slow) == sorted(behind)
        # A month on: past the age, whoever needs them; `slow` behind on worker 1 hears it.
        gone = await new_alerts(conn, tenants[0])
        await enforce_retention(dsn, now=tomorrow + timedelta(days=31))
        assert await fetchval(dsn, "SELECT count(*) FROM alert_changes") == 0
        with pytest.raises(AlertGapError, match="node group 1") as info:
            await asyncio.wait_for(anext(listen_alerts(dsn, consumer="slow", **FAST)), HANG)
        assert info.value.consumer == "slow"
        async with consuming(dsn, consumer="slow", on_gap="skip") as slow:
            later = await new_alerts(conn, tenants[0])
            await arrived(slow, {(later[0], "open")})
        assert [e.alert_id for e in slow] == later and gone != later
    finally:
        await conn.close()

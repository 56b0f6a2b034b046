"""distribute cut short: a run killed mid-way (SIGKILL while a step waits behind a
writer) is finished by the next; a step whose table lock stays out of reach is retried,
then refused naming who holds it."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys

import asyncpg
import pytest

from silentpulse_db import DDLLimits, DistributionError
from silentpulse_db.migrate import distribute

from .test_distribute import assert_placed_as_planned, local_bytes, placements, seed
from helpers import CITUS_SHARDS, fetchval, wait_for


async def distribute_waits_on(dsn: str, table: str) -> bool:
    """A session waits for a lock on ``table`` (distribute, behind the test's writer)."""
    return bool(
        await fetchval(
            dsn,
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE NOT granted AND relation = $1::regclass)",
            table,
        )
    )


async def test_a_run_killed_mid_way_is_finished_by_the_next(
    silentpulse_citus_migrated_database: str,
) -> None:
    dsn = silentpulse_citus_migrated_database
    await seed(dsn, ("alpha",))
    plan = await distribute(dsn, dry_run=True, shard_count=CITUS_SHARDS)
    planned = [s.table for s in plan.steps if s.action != "free local copy"]
    middle = "asset_profiles"
    assert 5 < planned.index(middle) < len(planned) - 5
    # An application's open write on a table in the middle: distribute queues behind it
    # (no table lock timeout), with the steps before it done.
    writer = await asyncpg.connect(dsn)
    await writer.execute(f"BEGIN; LOCK TABLE {middle} IN ROW EXCLUSIVE MODE")
    command = ["distribute", "--table-lock-timeout", "0", "--shard-count", str(CITUS_SHARDS)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "silentpulse_db", *command],
        env={**os.environ, "DATABASE_URL": dsn},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        await wait_for(lambda: distribute_waits_on(dsn, middle), timeout=240)
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await writer.execute("ROLLBACK")
        await writer.close()
    assert proc.returncode == -signal.SIGKILL

    placed = await placements(dsn)
    done = planned[: planned.index(middle)]
    assert all(placed[t]["method"] is not None for t in done), done
    assert placed[middle]["method"] is None  # its step was rolled back with the process

    # The killed run's session (and its migration lock) goes once the server notices.
    report = await distribute(dsn)  # the count the first tables got
    assert report.shard_count == CITUS_SHARDS
    rest = [s.table for s in report.steps if s.action != "free local copy"]
    assert rest == planned[planned.index(middle) :]
    assert report.steps[0].table == middle
    await assert_placed_as_planned(dsn)
    assert await local_bytes(dsn) == 0
    assert (await distribute(dsn)).steps == ()


async def test_a_step_behind_a_writer_is_retried_then_refused_naming_it(
    silentpulse_citus_migrated_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The writer's lock outlasts the retries: DistributionError names its pid, the steps
    before stay done. Released while a second run retries: that run goes on to the end."""
    dsn = silentpulse_citus_migrated_database
    await seed(dsn, ("alpha",))
    plan = await distribute(dsn, dry_run=True, shard_count=CITUS_SHARDS)
    planned = [s.table for s in plan.steps if s.action != "free local copy"]
    held = planned[2]
    writer = await asyncpg.connect(dsn)
    await writer.execute(f"BEGIN; LOCK TABLE {held} IN ROW EXCLUSIVE MODE")
    caplog.set_level(logging.INFO, logger="silentpulse_db.distribute")
    try:
        with pytest.raises(DistributionError) as refused:
            await distribute(
                dsn,
                shard_count=CITUS_SHARDS,
                ddl=DDLLimits(table_lock_timeout=0.1, retry_for=3.0),
            )
        assert refused.value.sqlstate == "55P03" and refused.value.table == held
        assert f"pid {writer.get_server_pid()}" in str(refused.value)
        assert [d.split(" ", 1)[1] for d in refused.value.done] == planned[:2]
        assert "waited for a table lock; again in" in caplog.text

        caplog.clear()
        second = asyncio.ensure_future(
            distribute(dsn, ddl=DDLLimits(table_lock_timeout=0.1, retry_for=600))
        )

        async def retrying() -> bool:
            return f"{held} waited for a table lock" in caplog.text or second.done()

        await wait_for(retrying, timeout=240)
        await writer.execute("ROLLBACK")
        report = await second
    finally:
        if not writer.is_closed():
            await writer.close()
    assert report.steps[0].table == held
    await assert_placed_as_planned(dsn)

"""CREATE INDEX CONCURRENTLY on a partitioned table, which PostgreSQL refuses, run as
pg_partman runs it (run/partitioned_index.py; issue 31): the parent's index ON ONLY,
then each partition's built concurrently and attached. On a populated table with a
sub-partitioned month and a default partition, under a writer that must never wait
longer than the table-lock timeout, through a runner killed with SIGKILL mid-build,
and with a partition created while it builds.

The build of one partition is held with a transaction that holds ROW EXCLUSIVE on that
partition alone (as a writer's does): PostgreSQL's concurrent build waits for it after
writing its index into the catalog (INVALID), while the other partitions' builds go on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from silentpulse_db import ForceRefusedError
from silentpulse_db.migrate import down, force, plan_up, up
from silentpulse_db.migrate.dryrun.preview import format_plan
from silentpulse_db.settings import DDLLimits

from .test_interrupted_indexes import backend_state, building, cli, holding_writes, until
from helpers import execute, fetch, fetchval, version_rows, wait_for, write_migrations

TABLE = """
CREATE TABLE t (tenant_id int NOT NULL, id int NOT NULL, at date NOT NULL, note text,
                PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE t_p1 PARTITION OF t FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');
CREATE TABLE t_p2 PARTITION OF t FOR VALUES FROM ('2026-02-01') TO ('2026-03-01')
    PARTITION BY RANGE (id);
CREATE TABLE t_p2_low PARTITION OF t_p2 FOR VALUES FROM (0) TO (5000);
CREATE TABLE t_p2_high PARTITION OF t_p2 DEFAULT;
CREATE TABLE t_p3 PARTITION OF t FOR VALUES FROM ('2026-03-01') TO ('2026-04-01');
CREATE TABLE t_p4 PARTITION OF t FOR VALUES FROM ('2026-04-01') TO ('2026-05-01');
CREATE TABLE t_default PARTITION OF t DEFAULT;
INSERT INTO t SELECT g % 4, g, date '2026-01-01' + (g % 150) FROM generate_series(1, 20000) g;
"""
INDEX = (
    "create_index_t_tenant_key",
    "-- squawk-ignore prefer-robust-stmts\n"
    "CREATE UNIQUE INDEX CONCURRENTLY t_tenant_key ON t (tenant_id, id, at);\n",
    "SET LOCAL lock_timeout = '3s';\nDROP INDEX IF EXISTS t_tenant_key;\n",
)
LEAVES = ["t_default", "t_p1", "t_p2_high", "t_p2_low", "t_p3", "t_p4"]
# Every index of t's tree built for the file: where, valid, attached to which index.
OURS = """
    SELECT c.relname AS tbl, x.indexrelid::regclass::text AS index, x.indisvalid AS valid,
           (SELECT h.inhparent::regclass::text FROM pg_inherits h
            WHERE h.inhrelid = x.indexrelid) AS parent, x.indexrelid::oid AS oid
    FROM pg_partition_tree('t') AS p
    JOIN pg_class c ON c.oid = p.relid
    JOIN pg_index x ON x.indrelid = c.oid
    WHERE NOT x.indisprimary
    ORDER BY 1
"""


def files(tmp_path: Path, *, partitions_only: bool = False) -> Path:
    name, up_sql, down_sql = INDEX
    if partitions_only:
        up_sql = "-- silentpulse: partitions only\n" + up_sql
        down_sql = "SET LOCAL lock_timeout = '3s';\n" + "".join(
            f"DROP INDEX IF EXISTS {leaf}_tenant_key;\n" for leaf in LEAVES
        )
    return write_migrations(
        tmp_path, {1: ("add_t", TABLE, "DROP TABLE t;\n"), 2: (name, up_sql, down_sql)}
    )


async def ours(dsn: str) -> dict[str, Any]:
    return {r["tbl"]: r for r in await fetch(dsn, OURS)}


def attached_everywhere(found: dict[str, Any]) -> None:
    """The parent's index valid; each partition's index valid, attached to its parent's."""
    assert found["t"]["index"] == "t_tenant_key" and found["t"]["valid"]
    assert found["t_p2"]["index"] == "t_p2_tenant_key" and found["t_p2"]["parent"] == "t_tenant_key"
    for leaf in LEAVES:
        parent = "t_p2_tenant_key" if leaf.startswith("t_p2_") else "t_tenant_key"
        assert (found[leaf]["index"], found[leaf]["valid"], found[leaf]["parent"]) == (
            f"{leaf}_tenant_key",
            True,
            parent,
        ), leaf


async def test_a_populated_partitioned_table_is_indexed_partition_by_partition(
    silentpulse_database: str, tmp_path: Path
) -> None:
    dsn = silentpulse_database
    source = files(tmp_path)
    await up(dsn, source=source, target=1)
    plan = await plan_up(dsn, source=source)
    (statement,) = plan.migrations[0].statements
    shown = format_plan(plan)
    assert statement.steps[1] == (
        "CREATE UNIQUE INDEX IF NOT EXISTS t_tenant_key ON ONLY t (tenant_id, id, at)"
    ), shown
    assert (
        "CREATE UNIQUE INDEX CONCURRENTLY t_p1_tenant_key ON public.t_p1 (tenant_id, id, at)"
        in statement.steps
    ), shown
    assert "CREATE UNIQUE INDEX t_p2_tenant_key ON ONLY public.t_p2 (tenant_id, id, at)" in (
        statement.steps
    )
    assert ("public.t_p3", "SHARE UPDATE EXCLUSIVE", True) in {
        (lock.relation, lock.mode, lock.scans) for lock in statement.locks
    }
    assert ("t", "SHARE") in {(lock.relation, lock.mode) for lock in statement.locks}
    assert "runs as: t is partitioned" in shown and statement.warnings == ()

    await up(dsn, source=source)
    attached_everywhere(await ours(dsn))
    assert await version_rows(dsn) == [(2, False)]
    # A partition made later gets its own index from PostgreSQL, attached.
    await execute(
        dsn, "CREATE TABLE t_p5 PARTITION OF t FOR VALUES FROM ('2027-01-01') TO ('2027-02-01')"
    )
    assert (await ours(dsn))["t_p5"]["parent"] == "t_tenant_key"
    assert format_plan(await plan_up(dsn, source=source)).endswith("no change to make")

    await down(dsn, 1, source=source)
    assert await ours(dsn) == {}
    # Partitions only: each leaf's index, none on the parent, none attached.
    source = files(tmp_path / "only", partitions_only=True)
    await execute(dsn, "DROP TABLE t_p5")
    await up(dsn, source=source)
    found = await ours(dsn)
    assert sorted(found) == LEAVES
    assert all(r["valid"] and r["parent"] is None for r in found.values())
    await down(dsn, 1, source=source)
    assert await ours(dsn) == {}


class Writer:
    """Inserts into t (a new row of this month: t_p3) in a loop, each statement under
    lock_timeout; any failure ends it and fails the test."""

    def __init__(self, dsn: str, lock_timeout: str) -> None:
        self.dsn, self.lock_timeout = dsn, lock_timeout
        self.done = 0
        self.stop = asyncio.Event()

    async def run(self) -> None:
        conn = await asyncpg.connect(self.dsn, server_settings={"lock_timeout": self.lock_timeout})
        try:
            while not self.stop.is_set():
                await conn.execute(
                    "INSERT INTO t (tenant_id, id, at) VALUES (1, $1, '2026-03-15')",
                    100_000 + self.done,
                )
                self.done += 1
        finally:
            await conn.close()

    async def progressed(self) -> None:
        beyond = self.done

        async def more() -> bool:
            return self.done >= beyond + 10

        await wait_for(more, timeout=60)


async def test_a_writer_waits_no_longer_than_the_table_lock_timeout(
    silentpulse_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A transaction that wrote through the parent keeps the ON ONLY step (SHARE on the
    parent) out: it gives up after the table-lock timeout and tries again, while the
    writer goes on; the partitions' builds wait for that transaction too, as concurrent
    builds do, and the writer goes on meanwhile. Each of the writer's statements may
    wait 1.5 s for a lock (queued behind one of the migration's steps, which waits 0.5 s
    at most): none fails."""
    dsn = silentpulse_database
    source = files(tmp_path)
    await up(dsn, source=source, target=1)
    writer = Writer(dsn, "1500ms")
    writing = asyncio.create_task(writer.run())
    holder = await asyncpg.connect(dsn)
    try:
        await holder.execute("BEGIN; INSERT INTO t (tenant_id, id, at) VALUES (2, 1, '2026-03-02')")
        with caplog.at_level(logging.WARNING, logger="silentpulse_db"):
            migrating = asyncio.create_task(
                up(dsn, source=source, ddl=DDLLimits(table_lock_timeout=0.5, retry_for=120))
            )

            async def retried() -> bool:
                assert not migrating.done() and not writing.done()
                return "a lock stayed out of reach for 500ms" in caplog.text

            await wait_for(retried, timeout=60)
            await writer.progressed()
            await holder.execute("COMMIT")
            await asyncio.wait_for(migrating, 120)
        await writer.progressed()
    finally:
        writer.stop.set()
        await asyncio.wait_for(writing, 60)  # raises what the writer met, if anything
        await holder.close()
    attached_everywhere(await ours(dsn))
    assert await fetchval(dsn, "SELECT count(*) FROM t WHERE id >= 100000") == writer.done


@pytest.mark.slow
async def test_a_runner_killed_mid_build_is_finished_by_a_rerun(
    silentpulse_database: str, tmp_path: Path
) -> None:
    """SIGKILL while t_p3's build waits: the partitions before it are attached, t_p3's
    index is INVALID. `force` is refused; a plain rerun keeps what was done, drops the
    INVALID index, builds it again and finishes."""
    dsn = silentpulse_database
    source = files(tmp_path)
    await up(dsn, source=source, target=1)
    writes = await holding_writes(dsn, "t_p3")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "silentpulse_db",
        "up",
        "--path",
        str(source),
        env={**os.environ, "DATABASE_URL": dsn},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        orphan = await until(lambda: building(dsn, "t_p3_tenant_key"))
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    # The server notices its client gone and stops the build: INVALID, as it left it.
    await until(lambda: _gone(backend_state(dsn, orphan)))
    before = await ours(dsn)
    assert before["t"]["valid"] is False
    # Parents before their partitions: t_p2's index is there, its partitions' not yet.
    assert {leaf for leaf in LEAVES if before.get(leaf, {}).get("parent")} == {"t_default", "t_p1"}
    assert before["t_p2"]["parent"] == "t_tenant_key" and before["t_p2"]["valid"] is False
    assert before["t_p3"]["valid"] is False and before["t_p3"]["parent"] is None
    assert await version_rows(dsn) == [(2, True)]
    with pytest.raises(ForceRefusedError, match="t_tenant_key is INVALID"):
        await force(dsn, 2, source=source)
    await writes.execute("COMMIT")
    await writes.close()

    rerun = await cli(dsn, "up", "--path", str(source))
    assert rerun.returncode == 0, rerun.stderr
    assert "going on with the partitions left" in rerun.stderr
    assert 't_p3_tenant_key" is INVALID (a failed earlier build)' in rerun.stderr
    after = await ours(dsn)
    attached_everywhere(after)
    assert await version_rows(dsn) == [(2, False)]
    # What was done is kept; t_p3's index is a new one.
    for leaf in ("t_default", "t_p1", "t_p2"):
        assert after[leaf]["oid"] == before[leaf]["oid"]
    assert after["t_p3"]["oid"] != before["t_p3"]["oid"]


async def _gone(state: Any) -> bool:
    return await state is None


@pytest.mark.parametrize("partitions_only", [False, True], ids=["attached", "partitions only"])
async def test_a_partition_created_mid_build_gets_its_index(
    silentpulse_database: str, tmp_path: Path, partitions_only: bool
) -> None:
    """The partition job makes next month's partition while t_p3's build waits: with the
    parent's index there, PostgreSQL gives it one of its own, attached, and the build
    leaves it be; with partitions only, a later pass of the build gives it one."""
    dsn = silentpulse_database
    source = files(tmp_path, partitions_only=partitions_only)
    await up(dsn, source=source, target=1)
    writes = await holding_writes(dsn, "t_p3")
    try:
        migrating = asyncio.create_task(up(dsn, source=source))
        await until(lambda: building(dsn, "t_p3_tenant_key"))
        await execute(
            dsn,
            "CREATE TABLE t_p5 PARTITION OF t FOR VALUES FROM ('2027-01-01') TO ('2027-02-01'); "
            "INSERT INTO t VALUES (1, 1, '2027-01-02')",
        )
        assert not migrating.done()
        await writes.execute("COMMIT")
        await asyncio.wait_for(migrating, 120)
    finally:
        await writes.close()
    found = await ours(dsn)
    if partitions_only:
        assert found["t_p5"]["index"] == "t_p5_tenant_key" and found["t_p5"]["parent"] is None
        assert sorted(found) == sorted([*LEAVES, "t_p5"])
    else:
        attached_everywhere(found)
        assert found["t_p5"]["parent"] == "t_tenant_key"  # PostgreSQL's own copy
    count = "SELECT count(*) FROM pg_index WHERE indrelid = 't_p5'::regclass AND NOT indisprimary"
    assert await fetchval(dsn, count) == 1

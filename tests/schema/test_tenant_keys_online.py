"""Issue 31, item 1: 000024-000058 applied while the application writes, and while other
sessions hold long transactions, never hold up a write beyond the ddl lock timeout.

The writer inserts alerts, audit entries and observations (through the partitioned
parents, into this month's partitions, which 000045-000047 index concurrently and 000048
re-keys) and updates a flow pulse (a table 000044 re-keys), each statement on its own under
lock_timeout = 5 s: a write held up longer than that fails, and fails the test (no
time is measured here; the figures: bench/bench_tenant_keys.py). Two sessions stand in
the migration's way meanwhile:

- a REPEATABLE READ transaction with a snapshot: every CREATE INDEX CONCURRENTLY waits
  for it (as a concurrent build must), the writer goes on;
- a READ COMMITTED transaction that read flow_pulses (ACCESS SHARE, no snapshot held
  between statements: concurrent builds do not wait for it): 000044 cannot take its
  ACCESS EXCLUSIVE lock, gives up after 3 s, is rolled back and tried again, and the
  writer goes on between the tries.

Each is ended only once the writer has done more work while the migration waited on it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any

import asyncpg
import pytest

from silentpulse_db.migrate import load_source, up

from .populated import counts, populate
from helpers import wait_for

PROGRESS = 10  # writer iterations that must succeed while the migration waits


class Writer:
    """Writes in a loop until stopped; any failure ends it (and the test)."""

    def __init__(self, dsn: str, ids: dict[str, Any]) -> None:
        self.dsn = dsn
        self.ids = ids
        self.done = 0
        self.stop = asyncio.Event()

    async def run(self) -> None:
        conn = await asyncpg.connect(
            self.dsn, server_settings={"lock_timeout": "5s", "application_name": "writer"}
        )
        t = self.ids
        try:
            while not self.stop.is_set():
                now = datetime.now(timezone.utc)
                await conn.execute(
                    "INSERT INTO alerts (tenant_id, flow_pulse_id, asset_id, alert_type, severity,"
                    " started_at) VALUES ($1, $2, $3, 'silence', 'low', $4)",
                    t["tenants"],
                    t["flow_pulses"],
                    t["assets"],
                    now,
                )
                await conn.execute(
                    "INSERT INTO audit_logs (tenant_id, user_id, action, entity_type)"
                    " VALUES ($1, $2, 'update', 'flow')",
                    t["tenants"],
                    t["users"],
                )
                await conn.execute(
                    "INSERT INTO asset_observations (tenant_id, asset_id, flow_pulse_id, observed_at)"
                    " VALUES ($1, $2, $3, $4)",
                    t["tenants"],
                    t["assets"],
                    t["flow_pulses"],
                    now,
                )
                await conn.execute(
                    "UPDATE flow_pulses SET time_window = time_window WHERE id = $1",
                    t["flow_pulses"],
                )
                self.done += 1
        finally:
            await conn.close()

    async def progressed(self, beyond: int) -> None:
        """Wait until PROGRESS more iterations than ``beyond`` are done."""

        async def enough() -> bool:
            return self.done >= beyond + PROGRESS

        await wait_for(enough, timeout=60)


async def test_the_migration_never_holds_up_a_writer(
    silentpulse_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    dsn = silentpulse_database
    tenants = await populate(dsn, 23)
    admin = await asyncpg.connect(dsn)
    snapshot_holder = await asyncpg.connect(dsn, server_settings={"application_name": "report"})
    lock_holder = await asyncpg.connect(dsn, server_settings={"application_name": "export"})
    before = await counts(admin)
    writer = Writer(dsn, tenants["tenant-a"])
    writing = asyncio.create_task(writer.run())
    try:
        await snapshot_holder.execute(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM tenants"
        )
        await lock_holder.execute("BEGIN; SELECT count(*) FROM flow_pulses")
        with caplog.at_level(logging.WARNING, logger="silentpulse_db"):
            migrating = asyncio.create_task(up(dsn))

            async def building_waits() -> bool:
                assert not migrating.done() and not writing.done()
                return bool(
                    await admin.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND query LIKE 'CREATE UNIQUE INDEX CONCURRENTLY%'"
                    )
                )

            await wait_for(building_waits, timeout=60)
            await writer.progressed(writer.done)
            assert not migrating.done()
            await snapshot_holder.execute("COMMIT")

            async def keys_wait() -> bool:
                assert not migrating.done() and not writing.done()
                return (
                    "000044_alter_keys_tenant_first.up.sql: a table lock stayed out of reach"
                    in (caplog.text)
                )

            await wait_for(keys_wait, timeout=60)
            await writer.progressed(writer.done)
            assert not migrating.done()
            await lock_holder.execute("COMMIT")
            result = await asyncio.wait_for(migrating, 120)
        await writer.progressed(writer.done)
    finally:
        writer.stop.set()
        await asyncio.wait_for(writing, 60)  # raises what the writer met, if anything
        await snapshot_holder.close()
        await lock_holder.close()
    try:
        last = load_source().migrations[-1].version  # the packaged set, whatever follows 58
        assert [a.version for a in result.applied] == list(range(24, last + 1))
        after = await counts(admin)
        written = writer.done
        # Every write landed, once: alerts, audit_logs and asset_observations each got
        # one row an iteration (in this month's partitions), nothing else changed.
        grew = {name: after[name] - before.get(name, 0) for name in after}
        assert sum(n for name, n in grew.items() if name.startswith("alerts_")) == written
        assert sum(n for name, n in grew.items() if name.startswith("audit_logs_")) == written
        assert (
            sum(n for name, n in grew.items() if name.startswith("asset_observations_")) == written
        )
        assert {name for name, n in grew.items() if n} <= {
            name
            for name in after
            if name.startswith(("alerts_", "audit_logs_", "asset_observations_", "alert_changes"))
        }
    finally:
        await admin.close()

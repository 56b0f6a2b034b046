"""000022 upgrades in place under load: applied while writers insert alerts and change
their statuses and readers query them, it fails none of their operations, and from its
commit on every write is in alert_changes, once, in (xid, seq) order.

The partitions of alerts are those the migrations made (this month and 3 ahead, then
the default one) and the next month's, created after the default one as the monthly
job does. Each write returns its transaction's id, which its log row must carry. What
a write may expect depends on when it ran against run_migrations, as the client saw it
(the event loop's clock):

- answered before run_migrations was called: it ran 000019's trigger, not logged;
- sent after run_migrations returned (so after 000022 committed): logged exactly once;
- in between (it straddled the commit): logged at most once. A write answered after
  the return may have run before the commit: "answered after" is no criterion.

No time is measured or slept on: the loops run until the migration has returned and
then a fixed number of iterations each. The latencies: bench/bench_upgrade_alert_log.py.

A month created after later months (a back-filled one) is another matter: 000022 locks
the partitions in OID order, an UPDATE through alerts in bound order, and the two
deadlock (test_000022_deadlocks_with_an_update_through_alerts, set up step by step).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

from silentpulse_db import run_migrations
from silentpulse_db.migrate import apply_prerequisites

from .seed import seed_tenant
from helpers import version_rows, wait_for

TENANTS = 3
ALERTS = 20_000
WRITERS = 3
READERS = 2
# Iterations each loop runs before the migration starts (at least) and after it returned.
WARM_UP = 5
AFTER = 25
NEXT_STATUS = {"open": "acknowledged", "acknowledged": "resolved", "resolved": "open"}

INSERT = """
    INSERT INTO alerts (tenant_id, flow_pulse_id, asset_id, alert_type, severity, started_at)
    VALUES ($1, $2, $3, 'silence', 'low', $4)
    RETURNING id, status, pg_current_xact_id()::text AS xid
"""
UPDATE = """
    UPDATE {table} SET status = $2 WHERE id = $1
    RETURNING status, pg_current_xact_id()::text AS xid
"""
READS = (
    "SELECT count(*) FROM alerts WHERE tenant_id = $1 AND status = 'open'",
    "SELECT count(*) FROM alerts WHERE tenant_id = $1 AND started_at >= now() + interval '20 days'",
    "SELECT id, status FROM alerts WHERE tenant_id = $1 ORDER BY started_at DESC LIMIT 20",
)
# The monthly partitions of alerts, in bound order.
PARTITIONS = r"""
    SELECT c.oid::regclass::text AS name,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']+)''\)'))[1]::timestamptz AS lo,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz AS hi
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'alerts'::regclass AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
    ORDER BY lo
"""


@dataclass(frozen=True)
class Write:
    writer: int
    number: int  # its place in the writer's sequence
    operation: str  # INSERT or UPDATE
    alert: uuid.UUID
    status: str
    xid: int
    started: float  # event loop's clock: sent ...
    finished: float  # ... and answered
    direct: bool = False  # an UPDATE naming the partition, not alerts


@dataclass
class Load:
    """The loops' shared state: what they did, what failed, when to stop."""

    dsn: str
    tenants: list[dict[str, uuid.UUID]]
    months: list[tuple[datetime, datetime]]
    writes: list[Write] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    iterations: dict[str, int] = field(default_factory=dict)
    migrated: asyncio.Event = field(default_factory=asyncio.Event)

    def keep_going(self, name: str, done_after: list[int]) -> bool:
        """Counts this loop's iteration; False once it ran AFTER iterations past the
        migration's return."""
        self.iterations[name] = self.iterations.get(name, 0) + 1
        if self.migrated.is_set():
            done_after[0] += 1
        return done_after[0] <= AFTER


async def create_month(conn: asyncpg.Connection, months_from_now: int) -> None:
    """That month's partition of alerts, as the monthly job (or a back-fill) creates it."""
    await conn.execute(
        "SELECT silentpulse_create_monthly_partition('alerts', "
        "(date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => $1))::date)",
        months_from_now,
    )


async def seed_alerts(conn: asyncpg.Connection, load: Load) -> None:
    """ALERTS alerts, spread evenly over the tenants and the months."""
    per = ALERTS // (len(load.tenants) * len(load.months))
    for ids in load.tenants:
        for lo, hi in load.months:
            await conn.execute(
                """
                INSERT INTO alerts (tenant_id, flow_pulse_id, asset_id, alert_type, severity,
                                    status, started_at)
                SELECT $1, $2, $3, 'silence', 'high',
                       (ARRAY['open', 'acknowledged', 'resolved'])[1 + g % 3],
                       $4::timestamptz + ($5::timestamptz - $4::timestamptz) * (g::float8 / $6)
                FROM generate_series(0, $6 - 1) g
                """,
                ids["tenants"],
                ids["flow_pulses"],
                ids["assets"],
                lo,
                hi - timedelta(seconds=1),
                per,
            )


async def writer(load: Load, number: int, pool: list[asyncpg.Record]) -> None:
    """INSERT an alert, then change another one's status (its own alerts, so that it
    knows their status): every third UPDATE names the alert's partition."""
    loop = asyncio.get_running_loop()
    ids = load.tenants[number % len(load.tenants)]
    statuses = {r["id"]: r["status"] for r in pool}
    conn = await asyncpg.connect(load.dsn)
    try:
        done_after = [0]
        n = 0
        while load.keep_going(f"writer {number}", done_after):
            lo, hi = load.months[n % len(load.months)]
            started_at = lo + (hi - lo) * ((n * 7919) % 1000) / 1000
            t0 = loop.time()
            try:
                row = await conn.fetchrow(
                    INSERT, ids["tenants"], ids["flow_pulses"], ids["assets"], started_at
                )
            except Exception as exc:
                load.failures.append(
                    f"writer {number} INSERT: {exc!r} {getattr(exc, 'detail', '')}"
                )
            else:
                load.writes.append(
                    Write(
                        number,
                        2 * n,
                        "INSERT",
                        row["id"],
                        row["status"],
                        int(row["xid"]),
                        t0,
                        loop.time(),
                    )
                )
            target = pool[n % len(pool)]
            direct = n % 3 == 2
            table = target["partition"] if direct else "alerts"
            t0 = loop.time()
            try:
                row = await conn.fetchrow(
                    UPDATE.format(table=table), target["id"], NEXT_STATUS[statuses[target["id"]]]
                )
            except Exception as exc:
                load.failures.append(
                    f"writer {number} UPDATE {table}: {exc!r} {getattr(exc, 'detail', '')}"
                )
            else:
                statuses[target["id"]] = row["status"]
                load.writes.append(
                    Write(
                        number,
                        2 * n + 1,
                        "UPDATE",
                        target["id"],
                        row["status"],
                        int(row["xid"]),
                        t0,
                        loop.time(),
                        direct,
                    )
                )
            n += 1
    finally:
        await conn.close()


async def reader(load: Load, number: int) -> None:
    conn = await asyncpg.connect(load.dsn)
    try:
        done_after = [0]
        n = 0
        while load.keep_going(f"reader {number}", done_after):
            tenant = load.tenants[n % len(load.tenants)]["tenants"]
            try:
                await conn.fetch(READS[n % len(READS)], tenant)
            except Exception as exc:
                load.failures.append(f"reader {number}: {exc!r}")
            n += 1
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def loops_running(load: Load, pools: list[list[asyncpg.Record]]) -> AsyncIterator[None]:
    """The writers and readers, each past WARM_UP iterations; on leaving, they finish
    (after AFTER iterations past load.migrated)."""
    tasks = [asyncio.create_task(writer(load, w, pools[w])) for w in range(WRITERS)]
    tasks += [asyncio.create_task(reader(load, r)) for r in range(READERS)]

    async def warm() -> bool:
        for task in tasks:
            if task.done():
                task.result()  # a loop that died: its error, now
        return len(load.iterations) == len(tasks) and min(load.iterations.values()) > WARM_UP

    try:
        await wait_for(warm, timeout=120)
        yield
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def check_order(writes: list[Write]) -> None:
    """Logged writes: each writer's in its own order by xid, and a write answered before
    another was sent has the lower xid (the order a reader of the log sees them in)."""
    by_writer: dict[int, list[Write]] = {}
    for w in sorted(writes, key=lambda w: w.xid):
        by_writer.setdefault(w.writer, []).append(w)
    for number, seq in by_writer.items():
        assert [w.number for w in seq] == sorted(w.number for w in seq), f"writer {number}"
    answered = sorted(writes, key=lambda w: w.finished)
    highest, i = -1, 0
    for w in sorted(writes, key=lambda w: w.started):
        while i < len(answered) and answered[i].finished < w.started:
            highest = max(highest, answered[i].xid)
            i += 1
        assert highest < w.xid, f"{w} has a lower xid than a write answered before it was sent"


@pytest.mark.slow
async def test_000022_upgrades_in_place_under_load(silentpulse_database: str) -> None:
    dsn = silentpulse_database
    await apply_prerequisites(dsn)
    await run_migrations(dsn, target=21)
    conn = await asyncpg.connect(dsn)
    try:
        await create_month(conn, 4)  # next month's job: after the default partition
        tenants = [await seed_tenant(conn, f"upgrade_{i}") for i in range(TENANTS)]
        months = [(r["lo"], r["hi"]) for r in await conn.fetch(PARTITIONS)]
        assert len(months) == 5
        load = Load(dsn, tenants, months)
        await seed_alerts(conn, load)
        seeded = await conn.fetch(
            "SELECT id, status, tableoid::regclass::text AS partition FROM alerts "
            "WHERE tenant_id = ANY($1::uuid[]) ORDER BY random() LIMIT $2",
            [t["tenants"] for t in tenants],
            WRITERS * 200,
        )
        spread = await conn.fetchval(
            "SELECT count(DISTINCT tableoid) FROM alerts WHERE tenant_id = ANY($1::uuid[])",
            [t["tenants"] for t in tenants],
        )
        assert spread == len(months)
    finally:
        await conn.close()
    pools = [list(seeded[w::WRITERS]) for w in range(WRITERS)]

    loop = asyncio.get_running_loop()
    async with loops_running(load, pools):
        called = loop.time()
        result = await run_migrations(dsn, target=22)  # 000022 alone, not what follows
        returned = loop.time()
        load.migrated.set()

    assert [m.version for m in result.applied] == [22]
    assert await version_rows(dsn) == [(22, False)]
    conn = await asyncpg.connect(dsn)
    try:
        logged = await conn.fetch(
            "SELECT xid::text AS xid, seq, alert_id, operation, status FROM alert_changes "
            "ORDER BY xid, seq"
        )
    finally:
        await conn.close()
    rows: dict[tuple[int, uuid.UUID], list[Any]] = {}
    for r in logged:
        rows.setdefault((int(r["xid"]), r["alert_id"]), []).append(r)
    writes = {(w.xid, w.alert): w for w in load.writes}
    assert len(writes) == len(load.writes)  # one alert per write, each its own transaction
    assert set(rows) <= set(writes), "alert_changes has rows no write made"

    before = [w for w in load.writes if w.finished < called]
    after = [w for w in load.writes if w.started > returned]
    straddled = [w for w in load.writes if w.finished >= called and w.started <= returned]
    assert before and after and any(w.direct for w in after)
    for w in before:
        assert (w.xid, w.alert) not in rows, f"{w} ran before the migration and is logged"
    for w in after:
        found = rows.get((w.xid, w.alert), [])
        assert [(r["operation"], r["status"]) for r in found] == [(w.operation, w.status)], w
    for w in straddled:
        found = rows.get((w.xid, w.alert), [])
        assert len(found) <= 1, f"{w} is logged {len(found)} times"
        assert all((r["operation"], r["status"]) == (w.operation, w.status) for r in found), w
    check_order([writes[key] for key in rows])
    # Last, so that a failed operation does not hide what the log says.
    assert load.failures == []


async def waiting(conn: asyncpg.Connection, pid: int, relation: str, mode: str) -> bool:
    """Whether backend ``pid`` waits for ``mode`` on ``relation``."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND NOT granted "
            "AND relation = $2::regclass AND mode = $3)",
            pid,
            relation,
            mode,
        )
    )


class Deadlocked(AssertionError):
    """The server found a deadlock between the migration and the application."""


async def test_000022_and_an_update_through_alerts_do_not_deadlock(
    silentpulse_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A month back-filled after the others (its OID last, its bound first). A session
    holds this month's partition; the migration waits for it. An UPDATE through alerts
    comes next. The migration took the partitions in OID order and an UPDATE locks them
    in bound order: had the migration not locked the parent first, the UPDATE would hold
    the back-filled month, wait for this month, and the server would cancel one of the
    two once the session commits (it did, before the parent lock). Now the UPDATE waits
    at the parent, holding no partition, and both finish."""
    caplog.set_level(logging.WARNING, logger="silentpulse_db.migrate")
    dsn = silentpulse_database
    await apply_prerequisites(dsn)
    await run_migrations(dsn, target=21)
    admin = await asyncpg.connect(dsn)
    holder = await asyncpg.connect(dsn)
    updater = await asyncpg.connect(dsn)
    migration: asyncio.Task[Any] | None = None
    try:
        ids = await seed_tenant(admin, "backfill")
        await create_month(admin, -1)
        by_oid = await admin.fetch(
            "SELECT i.inhrelid::regclass::text AS name FROM pg_inherits i "
            "WHERE i.inhparent = 'alerts'::regclass ORDER BY i.inhrelid"
        )
        first, second, backfilled = by_oid[0]["name"], by_oid[1]["name"], by_oid[-1]["name"]
        bound_order = [r["name"] for r in await admin.fetch(PARTITIONS)]
        assert bound_order[0] == backfilled  # the back-filled month: first by bound, last by OID

        await holder.execute(f"BEGIN; UPDATE {second} SET severity = severity")
        migration = asyncio.create_task(run_migrations(dsn))

        async def migration_waits() -> bool:
            return bool(
                (migration is not None and migration.done())
                or await admin.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE NOT granted "
                    "AND relation = $1::regclass AND mode = 'ShareRowExclusiveLock')",
                    second,
                )
            )

        await wait_for(migration_waits)
        assert not migration.done(), migration.result()
        update = asyncio.create_task(
            updater.fetchval(
                "UPDATE alerts SET status = 'resolved' WHERE id = $1 RETURNING id", ids["alerts"]
            )
        )
        updater_pid = updater.get_server_pid()

        async def update_waits() -> bool:
            return (
                update.done()
                or await waiting(admin, updater_pid, first, "RowExclusiveLock")
                or await waiting(admin, updater_pid, "alerts", "RowExclusiveLock")
            )

        await wait_for(update_waits)
        if update.done() or migration.done():
            pytest.skip("the migration's lock wait (3 s) ran out before the UPDATE queued")
        await holder.execute("COMMIT")
        outcome = await asyncio.gather(update, migration, return_exceptions=True)
        retried = [r.getMessage() for r in caplog.records if "deadlock" in r.getMessage()]
        if isinstance(outcome[0], asyncpg.DeadlockDetectedError) or retried:
            raise Deadlocked(f"UPDATE: {outcome[0]!r}; migration retried: {retried}")
        assert outcome[0] == ids["alerts"], f"the UPDATE through alerts failed: {outcome[0]!r}"
        assert not isinstance(outcome[1], BaseException), outcome[1]
    finally:
        if migration is not None and not migration.done():
            migration.cancel()
            await asyncio.gather(migration, return_exceptions=True)
        for conn in (holder, updater, admin):
            await conn.close()

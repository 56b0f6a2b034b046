"""The alert listener (000022's change log, NOTIFY as a wake-up) against what it is
built on, in one run on one freshly migrated database.

Live: one alert inserted in its own transaction at a time, N times; each latency runs
from the INSERT's autocommit returning to the consuming task receiving that alert's
event. A bare asyncpg LISTEN connection, connected through the same run, receives the
same inserts' raw NOTIFY: the baseline (PostgreSQL's NOTIFY itself). Target: the
listener's p99 <= 50 ms.

Catch-up: 100,000 changes (100 INSERTs of 1,000 alerts) in the log, then a listener
started with ``since`` before them, timed from its creation until it has yielded the
last one; against a plain SELECT of the same columns in the log's order, fetched at
once and in keyset batches of 1,000 as the listener reads; each from its own new
connection, in alternation. Target: the listener >= 0.5 x the plain SELECT's events/s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
import uuid
from datetime import datetime

import asyncpg
from bench_notify import describe_server, seed

from silentpulse_db import listen_alerts, run_migrations
from silentpulse_db.migrate import apply_prerequisites

from common import (
    alternate_samples,
    create_database,
    drop_database,
    machine,
    paired_ratio,
    run,
    server_dsn,
    write_section,
)

LIVE = 300
WARM_UP = 10  # live inserts before the measured ones
CHANGES = 100_000
PER_INSERT = 1_000
ROUNDS = 3
BATCH = 1_000
HANG = 60.0  # a guard against a hang, not a timing
CHANNEL = "silentpulse_alerts"
INSERT_ONE = """
    INSERT INTO alerts (id, tenant_id, flow_pulse_id, asset_id, alert_type, severity, started_at)
    VALUES ($1, $2, $3, $4, 'silence', 'high', now())
"""
INSERT_MANY = f"""
    INSERT INTO alerts (tenant_id, flow_pulse_id, asset_id, alert_type, severity, started_at)
    SELECT $1, $2, $3, 'silence', 'high', now() - ($4 * {PER_INSERT} + g) * interval '1 second'
    FROM generate_series(1, {PER_INSERT}) g
"""
COLUMNS = "xid, seq, tenant_id, alert_id, started_at, operation, status, changed_at, recorded_at"
SELECT_ALL = f"SELECT {COLUMNS} FROM alert_changes ORDER BY xid, seq"
SELECT_AFTER = f"""
    SELECT {COLUMNS} FROM alert_changes
    WHERE (xid, seq) > ($1::xid8, $2::bigint) ORDER BY xid, seq LIMIT {BATCH}
"""


def percentiles(latencies: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "p50": cuts[49],
        "p95": cuts[94],
        "p99": cuts[98],
        "max": max(latencies),
    }


async def live(
    dsn: str, conn: asyncpg.Connection, ids: tuple[object, ...]
) -> dict[str, list[float]]:
    """Seconds from each INSERT's return to its event: the listener's, the raw NOTIFY's."""
    waiting: dict[str, dict[uuid.UUID, asyncio.Future[float]]] = {"listener": {}, "notify": {}}

    def arrived(kind: str, alert_id: uuid.UUID) -> None:
        now = time.perf_counter()
        future = waiting[kind].pop(alert_id, None)
        if future is not None and not future.done():
            future.set_result(now)

    def on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        for alert in json.loads(payload).get("alerts", []):
            arrived("notify", uuid.UUID(alert[0]))

    listener = listen_alerts(dsn)

    async def consume() -> None:
        async for event in listener:
            arrived("listener", event.alert_id)

    raw = await asyncpg.connect(dsn)
    await raw.add_listener(CHANNEL, on_notify)
    task = asyncio.create_task(consume())
    latencies: dict[str, list[float]] = {"listener": [], "notify": []}
    ready = asyncio.ensure_future(listener.ready())
    try:
        await asyncio.wait({ready, task}, timeout=HANG, return_when="FIRST_COMPLETED")
        if task.done():
            task.result()
        if not ready.done():
            raise RuntimeError(f"the listener was not ready within {HANG:g} s")
        loop = asyncio.get_running_loop()
        for number in range(WARM_UP + LIVE):
            alert_id = uuid.uuid4()
            futures = {kind: loop.create_future() for kind in waiting}
            for kind, future in futures.items():
                waiting[kind][alert_id] = future
            await conn.execute(INSERT_ONE, alert_id, *ids)  # autocommit
            committed = time.perf_counter()
            done, _ = await asyncio.wait(futures.values(), timeout=HANG)
            if len(done) < len(futures):
                if task.done():
                    task.result()
                raise RuntimeError(f"alert {alert_id}: no event within {HANG:g} s")
            if number >= WARM_UP:
                for kind, future in futures.items():
                    latencies[kind].append(future.result() - committed)
    finally:
        ready.cancel()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await listener.aclose()
        await raw.close()
    return latencies


async def fill(conn: asyncpg.Connection, ids: tuple[object, ...]) -> datetime:
    """CHANGES changes in an emptied log; returns a time before them (the server's)."""
    await conn.execute("TRUNCATE alerts; TRUNCATE alert_changes")
    since: datetime = await conn.fetchval("SELECT now()")
    for number in range(CHANGES // PER_INSERT):
        await conn.execute(INSERT_MANY, *ids, number)  # one transaction each
    await conn.execute("VACUUM ANALYZE alert_changes")
    count = await conn.fetchval("SELECT count(*) FROM alert_changes")
    assert count == CHANGES, count
    return since


async def catch_up(dsn: str, since: datetime) -> dict[str, list[float]]:
    """Seconds to read the whole log: the listener from ``since``, plain SELECTs."""

    async def listener() -> None:
        stream = listen_alerts(dsn, since=since)
        count = 0
        try:
            async for _ in stream:
                count += 1
                if count == CHANGES:
                    break
        finally:
            await stream.aclose()

    async def select_all() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(SELECT_ALL)
        finally:
            await conn.close()
        assert len(rows) == CHANGES, len(rows)

    async def select_batches() -> None:
        conn = await asyncpg.connect(dsn)
        count, xid, seq = 0, 0, 0
        try:
            while True:
                rows = await conn.fetch(SELECT_AFTER, xid, seq)
                count += len(rows)
                if len(rows) < BATCH:
                    break
                xid, seq = rows[-1]["xid"], rows[-1]["seq"]
        finally:
            await conn.close()
        assert count == CHANGES, count

    return await alternate_samples(
        ROUNDS, listener=listener, select_all=select_all, select_batches=select_batches
    )


async def main(admin: str) -> None:
    dsn = await create_database(admin)
    try:
        await apply_prerequisites(dsn)
        await run_migrations(dsn)
        conn = await asyncpg.connect(dsn)
        try:
            server = await describe_server(conn, admin)
            ids = await seed(conn)
            latencies = await live(dsn, conn, ids)
            since = await fill(conn, ids)
        finally:
            await conn.close()
        samples = await catch_up(dsn, since)
    finally:
        await drop_database(admin, dsn)

    lat = {kind: percentiles(values) for kind, values in latencies.items()}
    med = {name: statistics.median(values) for name, values in samples.items()}
    # events/s of the listener over the SELECT's: the SELECT's time over the listener's
    to_all = paired_ratio(samples, "select_all", "listener")
    to_batches = paired_ratio(samples, "select_batches", "listener")

    def ms(kind: str) -> str:
        cells = [f"{lat[kind][q] * 1000:.1f} ms" for q in ("p50", "p95", "p99", "max")]
        early = sum(latency < 0 for latency in latencies[kind])
        return " | ".join([*cells, str(early)])

    def rate(name: str) -> str:
        return f"{CHANGES / med[name]:,.0f}/s ({med[name] * 1000:.0f} ms)"

    def rounds(baseline: str) -> str:
        pairs = zip(samples[baseline], samples["listener"], strict=True)
        return ", ".join(f"{b / a:.2f}" for b, a in pairs)

    write_section(
        "listener",
        f"""## Alert listener: live latency and catch-up

One freshly migrated database, the listener connected as the superuser; {server};
{machine()}. Reproduce: `python bench/bench_listener.py`.

**Live**: {LIVE} alerts inserted one at a time, each in its own transaction, the next
once the last one's events arrived ({WARM_UP} more before them as a warm-up); from the
INSERT's autocommit returning to the consuming task receiving that alert. The raw
NOTIFY: a bare asyncpg connection LISTENing through the same inserts. The server
signals the listeners at commit, before the inserting session's reply: an arrival
before the INSERT returned counts as a negative latency (last column: how many).

| from COMMIT to | p50 | p95 | p99 | max | before the INSERT returned |
|---|---|---|---|---|---|
| raw NOTIFY (asyncpg LISTEN, baseline) | {ms("notify")} |
| `listen_alerts` event (target p99 <= 50 ms) | {ms("listener")} |

**Catch-up**: {CHANGES:,} changes in the log ({CHANGES // PER_INSERT} INSERTs of
{PER_INSERT:,} alerts), read {ROUNDS} times in alternation, each from a new connection;
medians (ratios: of the rounds' own). The listener is timed from its creation (with
`since` before the inserts) to its last event.

| reads the {CHANGES:,} changes | events/s (time) | listener / this (each round) |
|---|---|---|
| plain SELECT, fetched at once | {rate("select_all")} | **{to_all:.2f}** ({rounds("select_all")}; target >= 0.5) |
| plain SELECT in keyset batches of {BATCH:,} | {rate("select_batches")} | {to_batches:.2f} ({rounds("select_batches")}) |
| `listen_alerts(since=...)` | {rate("listener")} | 1.00 |
""",
    )


if __name__ == "__main__":
    with server_dsn() as admin_dsn:
        run(main(admin_dsn))

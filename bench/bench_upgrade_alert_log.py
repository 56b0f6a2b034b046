"""Upgrading a populated database to 000022 (the alert change log) while the application
writes and reads: what the writers and readers feel, against the moments before.

A database at 000021 with 200,000 alerts over 6 monthly partitions (this month and the
3 ahead, which the migrations create, and 2 more created later by the monthly job, as
a live database has them) is cloned for each run. 4 writers (each: INSERT an alert,
then change another alert's status, every third time naming its partition) and 2
readers (counts and a latest-20 list of a tenant's alerts) run in loops, each on its
own connection, every operation timed. After BEFORE seconds of load run_migrations
applies 000022. Each operation is counted in the migration's window if it overlapped
[start, return] of run_migrations, in the baseline window if it ran entirely within
the same length of time right before the start; ratios: during / baseline.

Variants, one run each:
- a long transaction: an UPDATE of one row of a partition, committed HOLD seconds
  later, is open when the migration starts (its CREATE TRIGGER on that partition
  waits, is rolled back after 3 s and retried);
- a back-filled month: the month before this one created after the others (its OID
  last, its bound first), as `silentpulse-db partitions` creates a month that has
  stray rows: counts the application's operations that fail.
"""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from bench_notify import seed

from silentpulse_db import run_migrations
from silentpulse_db.migrate import apply_prerequisites
from silentpulse_db.postgres import databases

from common import machine, run, server_dsn, write_section

TENANTS = 4
ALERTS = 200_000
WRITERS = 4
READERS = 2
ROUNDS = 3  # of the plain upgrade
BEFORE = 8.0  # seconds of load before the migration: the baseline window is its end
AFTER = 1.0  # seconds of load after it returned
HOLD = 5.0  # how long the long transaction stays open after the migration starts
NEXT_STATUS = {"open": "acknowledged", "acknowledged": "resolved", "resolved": "open"}
KINDS = ("INSERT", "UPDATE", "read")

INSERT = """
    INSERT INTO alerts (tenant_id, flow_pulse_id, asset_id, alert_type, severity, started_at)
    VALUES ($1, $2, $3, 'silence', 'low', $4)
"""
UPDATE = "UPDATE {table} SET status = $2 WHERE id = $1"
READS = (
    "SELECT count(*) FROM alerts WHERE tenant_id = $1 AND status = 'open'",
    "SELECT count(*) FROM alerts WHERE tenant_id = $1 AND started_at >= now() + interval '40 days'",
    "SELECT id, status FROM alerts WHERE tenant_id = $1 ORDER BY started_at DESC LIMIT 20",
)
PARTITIONS = r"""
    SELECT c.oid::regclass::text AS name,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']+)''\)'))[1]::timestamptz AS lo,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz AS hi
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'alerts'::regclass AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
    ORDER BY i.inhrelid
"""
CREATE_MONTH = """
    SELECT silentpulse_create_monthly_partition('alerts',
        (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => $1))::date)
"""


@dataclass(frozen=True)
class Op:
    kind: str
    started: float
    finished: float
    error: str | None = None

    @property
    def seconds(self) -> float:
        return self.finished - self.started


@dataclass
class Tenant:
    id: uuid.UUID
    pulse: uuid.UUID
    asset: uuid.UUID


@dataclass
class Run:
    """One migration under load: its timings and every operation of the loops."""

    started: float = 0.0
    returned: float = 0.0
    file_seconds: float = 0.0
    retries: list[str] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.returned - self.started

    def during(self, kind: str) -> list[Op]:
        return [
            o
            for o in self.ops
            if o.kind == kind and o.started <= self.returned and o.finished >= self.started
        ]

    def baseline(self, kind: str) -> list[Op]:
        lo = self.started - self.duration
        return [
            o for o in self.ops if o.kind == kind and o.started >= lo and o.finished < self.started
        ]

    def failed(self) -> list[Op]:
        return [o for o in self.ops if o.error is not None]


class Retries(logging.Handler):
    """Collects the runner's retry warnings (a migration rolled back and tried again)."""

    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "rolled back" in message:
            self.into.append("deadlock" if "deadlock" in message else "lock timeout")


async def seed_tenant(conn: asyncpg.Connection, n: int) -> Tenant:
    tenant, pulse, asset = await seed(conn, f"bench{n}")
    return Tenant(tenant, pulse, asset)


async def build_template(admin: str) -> str:
    """The populated database at 000021; returns its name."""
    name = databases.unique_name("bench_upgrade_tpl")
    dsn = await databases.create_database(admin, name)
    await apply_prerequisites(dsn)
    await run_migrations(dsn, target=21)
    conn = await asyncpg.connect(dsn)
    try:
        for ahead in (4, 5):  # the monthly job's, after the default partition
            await conn.execute(CREATE_MONTH, ahead)
        months = [(r["lo"], r["hi"]) for r in await conn.fetch(PARTITIONS)]
        assert len(months) == 6, months
        per = ALERTS // (TENANTS * len(months))
        for n in range(TENANTS):
            t = await seed_tenant(conn, n)
            for lo, hi in months:
                await conn.execute(
                    """
                    INSERT INTO alerts (tenant_id, flow_pulse_id, asset_id, alert_type,
                                        severity, status, started_at)
                    SELECT $1, $2, $3, 'silence', 'high',
                           (ARRAY['open', 'acknowledged', 'resolved'])[1 + g % 3],
                           $4::timestamptz + ($5::timestamptz - $4::timestamptz) * (g::float8 / $6)
                    FROM generate_series(0, $6 - 1) g
                    """,
                    t.id,
                    t.pulse,
                    t.asset,
                    lo,
                    hi - timedelta(seconds=1),
                    per,
                )
        await conn.execute("VACUUM ANALYZE alerts")
    finally:
        await conn.close()
    return name


class Loops:
    """The writers and readers, until stop is set."""

    def __init__(self, dsn: str, tenants: list[Tenant], months: list[tuple[datetime, datetime]]):
        self.dsn = dsn
        self.tenants = tenants
        self.months = months
        self.ops: list[Op] = []
        self.stop = asyncio.Event()

    async def timed(self, kind: str, call: Any) -> None:
        started = time.perf_counter()
        try:
            await call
        except Exception as exc:
            self.ops.append(Op(kind, started, time.perf_counter(), repr(exc)))
        else:
            self.ops.append(Op(kind, started, time.perf_counter()))

    async def writer(self, number: int, pool: list[asyncpg.Record]) -> None:
        t = self.tenants[number % len(self.tenants)]
        statuses = {r["id"]: r["status"] for r in pool}
        conn = await asyncpg.connect(self.dsn)
        try:
            n = 0
            while not self.stop.is_set():
                lo, hi = self.months[n % len(self.months)]
                started_at = lo + (hi - lo) * ((n * 7919) % 1000) / 1000
                await self.timed("INSERT", conn.execute(INSERT, t.id, t.pulse, t.asset, started_at))
                target = pool[n % len(pool)]
                table = target["partition"] if n % 3 == 2 else "alerts"
                status = NEXT_STATUS[statuses[target["id"]]]
                before = len(self.ops)
                await self.timed(
                    "UPDATE", conn.execute(UPDATE.format(table=table), target["id"], status)
                )
                if self.ops[before].error is None:
                    statuses[target["id"]] = status
                n += 1
        finally:
            await conn.close()

    async def reader(self, number: int) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            n = number
            while not self.stop.is_set():
                t = self.tenants[n % len(self.tenants)]
                await self.timed("read", conn.fetch(READS[n % len(READS)], t.id))
                n += 1
        finally:
            await conn.close()


async def upgrade_under_load(admin: str, template: str, variant: str) -> Run:
    """Clones the template, runs the loops, applies 000022 after BEFORE seconds."""
    name = databases.unique_name("bench_upgrade")
    dsn = await databases.create_database(admin, name, template=template)
    result = Run()
    handler = Retries(result.retries)
    logging.getLogger("silentpulse_db.migrate").addHandler(handler)
    try:
        conn = await asyncpg.connect(dsn)
        holder = await asyncpg.connect(dsn)
        try:
            if variant == "backfilled":
                await conn.execute(CREATE_MONTH, -1)
            partitions = await conn.fetch(PARTITIONS)
            months = [(r["lo"], r["hi"]) for r in partitions]
            rows = await conn.fetch("SELECT id FROM tenants ORDER BY handle")
            tenants = []
            for r in rows:
                pulse = await conn.fetchval(
                    "SELECT id FROM flow_pulses WHERE tenant_id = $1", r["id"]
                )
                asset = await conn.fetchval("SELECT id FROM assets WHERE tenant_id = $1", r["id"])
                tenants.append(Tenant(r["id"], pulse, asset))
            # The long transaction's partition: the third the migration reaches (OID order).
            held = partitions[2]["name"]
            held_row = await conn.fetchval(f"SELECT id FROM {held} LIMIT 1")
            seeded = await conn.fetch(
                "SELECT id, status, tableoid::regclass::text AS partition FROM alerts "
                "WHERE id <> $1 ORDER BY random() LIMIT $2",
                held_row,
                WRITERS * 500,
            )
            loops = Loops(dsn, tenants, months)
            tasks = [
                asyncio.create_task(loops.writer(w, list(seeded[w::WRITERS])))
                for w in range(WRITERS)
            ]
            tasks += [asyncio.create_task(loops.reader(r)) for r in range(READERS)]
            commit: asyncio.Task[Any] | None = None
            try:
                await asyncio.sleep(BEFORE)
                if variant == "long transaction":
                    await holder.execute("BEGIN")
                    await holder.execute(
                        f"UPDATE {held} SET severity = severity WHERE id = $1", held_row
                    )

                    async def commit_later() -> None:
                        await asyncio.sleep(HOLD)
                        await holder.execute("COMMIT")

                    commit = asyncio.create_task(commit_later())
                result.started = time.perf_counter()
                # 000022 alone: the packaged set goes on past it (the tenant-first keys
                # rebuild every table's keys), which is not what this bench measures.
                migrated = await run_migrations(dsn, target=22)
                result.returned = time.perf_counter()
                result.file_seconds = migrated.applied[0].duration
                await asyncio.sleep(AFTER)
            finally:
                loops.stop.set()
                await asyncio.gather(*tasks)
                if commit is not None:
                    await commit
            result.ops = loops.ops
        finally:
            await holder.close()
            await conn.close()
    finally:
        logging.getLogger("silentpulse_db.migrate").removeHandler(handler)
        await databases.drop_database(admin, name)
    return result


def p99(ops: list[Op]) -> float:
    values = sorted(o.seconds for o in ops)
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def worst(ops: list[Op]) -> float:
    return max((o.seconds for o in ops), default=float("nan"))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms" if seconds < 1 else f"{seconds:,.2f} s"


def latency_rows(runs: list[Run]) -> str:
    """One row per kind of operation, the runs' windows pooled."""
    lines = []
    for kind in KINDS:
        during = [o for r in runs for o in r.during(kind)]
        base = [o for r in runs for o in r.baseline(kind)]
        lines.append(
            f"| {kind} | {len(base):,} | {len(during):,} "
            f"| {ms(p99(base))} | {ms(p99(during))} | **{p99(during) / p99(base):.1f}** "
            f"| {ms(worst(base))} | {ms(worst(during))} | **{worst(during) / worst(base):.1f}** |"
        )
    return "\n".join(lines)


HEADER = (
    "| operation | ops in baseline | ops during | p99 baseline | p99 during | ratio "
    "| worst baseline | worst during | ratio |\n|---|---|---|---|---|---|---|---|---|"
)


async def describe_server(admin: str) -> str:
    conn = await asyncpg.connect(admin)
    try:
        version = await conn.fetchval("SHOW server_version")
        fsync = await conn.fetchval("SHOW fsync")
        deadlock = await conn.fetchval("SHOW deadlock_timeout")
    finally:
        await conn.close()
    where = "the server at $BENCH_DSN" if os.environ.get("BENCH_DSN") else "a throwaway server"
    return f"PostgreSQL {version.split()[0]} ({where}, fsync {fsync}, deadlock_timeout {deadlock})"


def failures(run_: Run) -> str:
    kinds: dict[str, int] = {}
    for o in run_.failed():
        key = f"{o.kind} ({(o.error or '').split('(')[0]})"
        kinds[key] = kinds.get(key, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "none"


def retries(run_: Run) -> str:
    return ", ".join(run_.retries) or "none"


async def main(admin: str) -> None:
    server = await describe_server(admin)
    template = await build_template(admin)
    try:
        plain = [await upgrade_under_load(admin, template, "plain") for _ in range(ROUNDS)]
        held = await upgrade_under_load(admin, template, "long transaction")
        backfilled = await upgrade_under_load(admin, template, "backfilled")
    finally:
        await databases.drop_database(admin, template)

    durations = sorted(r.duration for r in plain)
    median = durations[len(durations) // 2]
    spread = f"{ms(durations[0])} to {ms(durations[-1])}"
    file_median = statistics.median(r.file_seconds for r in plain)
    per_run = statistics.median(sum(len(r.during(k)) for k in KINDS) for r in plain)
    plain_failed = sum(len(r.failed()) for r in plain)
    plain_retries = [x for r in plain for x in r.retries]
    held_writes = held.during("INSERT") + held.during("UPDATE")
    stalled = sum(o.seconds >= 1.0 for o in held_writes)
    write_section(
        "upgrade_alert_log",
        f"""## Upgrading to the alert change log (000022) under load

A database at 000021 with {ALERTS:,} alerts over 6 monthly partitions ({TENANTS} tenants);
{WRITERS} writers (INSERT an alert, then change another one's status; every third UPDATE
names the partition) and {READERS} readers (a tenant's counts, its latest 20 alerts), each
on its own connection, in loops; after {BEFORE:.0f} s of load `run_migrations` applies
000022. An operation counts *during* the migration if it overlapped the call to
`run_migrations`, in the *baseline* if it ran entirely within the same length of time
right before it; ratios: during / baseline. {server}; {machine()}.
Reproduce: `python bench/bench_upgrade_alert_log.py`.

**Plain upgrade** ({ROUNDS} runs, each on a fresh copy of the database, windows pooled):

- `run_migrations`: {ms(median)} (median; {spread}), of which the 000022 file {ms(file_median)}
- operations during it: {per_run:.0f} a run (median); failed: {plain_failed};
  retries of the migration: {len(plain_retries)}

{HEADER}
{latency_rows(plain)}

**A long transaction open on one partition** (an UPDATE of one row of the third
partition the migration reaches, committed {HOLD:.0f} s after the migration started):

- `run_migrations`: {ms(held.duration)}; the 000022 file, its {len(held.retries) + 1} attempts
  and the pause between them: {ms(held.file_seconds)}; retries: {retries(held)}
- writes during it: {len(held_writes):,}, of which {stalled} waited 1 s or more; the
  writers' worst wait {ms(worst(held_writes))} (INSERT {ms(worst(held.during("INSERT")))},
  UPDATE {ms(worst(held.during("UPDATE")))}); the readers' worst {ms(worst(held.during("read")))};
  failed operations: {failures(held)}

While 000022 waits for the held partition it already holds SHARE ROW EXCLUSIVE on the
parent (taken first) and the partitions before it: every write through alerts queues
at the parent, up to the 3 s lock timeout of each attempt; readers are not held up.

{HEADER}
{latency_rows([held])}

**A back-filled month** (last month's partition created after the others: first by
bound, last by OID):

- `run_migrations`: {ms(backfilled.duration)}; retries: {retries(backfilled)}
- failed operations of the application: {failures(backfilled)}

000022 gives the partitions their triggers in OID order, an UPDATE through alerts locks
them in bound order. Before 000022 locked the parent first, the two deadlocked and the
server cancelled the application's UPDATE (3 failed in this run); now writes wait at the
parent holding no partition (tests/schema/test_alert_log_upgrade.py,
`test_000022_and_an_update_through_alerts_do_not_deadlock`).
""",
    )


if __name__ == "__main__":
    with server_dsn() as admin_dsn:
        run(main(admin_dsn))

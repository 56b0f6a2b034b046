"""Keys that lead with tenant_id (000024-000058, issue 31) applied to a loaded database
while the application writes: how long it takes, and what the writers feel.

A database at 000023 with 4 tenants: 40,000 rows in each of alerts, audit_logs and
asset_observations over five months (this month, the next two, and two in the default
partition), 100,000 more alerts in this month's partition, and 20,000 in each of
asset_observation_hourly and anomaly_events: 260,000 rows. 2 writers loop, each on its
own connection, every statement timed: INSERT an alert, an audit entry and an
observation (this month's partitions, which 000045-000047 index concurrently, partition
by partition, and 000048 re-keys), UPDATE a flow pulse (a table 000044 re-keys). After
BEFORE seconds of load `up` applies 000024-000058. A statement counts *during* the
migration if it overlapped the call, in the *baseline* if it ran entirely within the
same length of time right before it.

A variant, one run after the plain rounds: a long transaction, a REPEATABLE READ
snapshot open for HOLD seconds when the migration starts (each concurrent build waits
for it; the writers should not).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
from bench_notify import seed
from bench_upgrade_alert_log import Op, describe_server, ms, p99, worst

from silentpulse_db.migrate import apply_prerequisites, up
from silentpulse_db.postgres import databases

from common import machine, run, server_dsn, write_section

TENANTS = 4
PER_TABLE = 40_000  # rows of each partitioned table
PLAIN = 20_000  # rows of asset_observation_hourly and of anomaly_events
HOT = 100_000  # more alerts in this month's partition, the one the writers write to
OFFSETS = (-400, -40, 0, 33, 64)  # days from now: default partition (2), this month, ahead
WRITERS = 2
ROUNDS = 2
BEFORE = 5.0
AFTER = 1.0
HOLD = 5.0
KINDS = ("alerts", "audit_logs", "asset_observations", "flow_pulses")
STATEMENTS = {
    "alerts": "INSERT INTO alerts (tenant_id, flow_pulse_id, asset_id, alert_type, severity, "
    "started_at) VALUES ($1, $2, $3, 'silence', 'low', now())",
    "audit_logs": "INSERT INTO audit_logs (tenant_id, action, entity_type) "
    "VALUES ($1, 'update', 'flow')",
    "asset_observations": "INSERT INTO asset_observations (tenant_id, asset_id, flow_pulse_id, "
    "observed_at) VALUES ($1, $3, $2, now())",
    "flow_pulses": "UPDATE flow_pulses SET time_window = time_window WHERE tenant_id = $1 AND id = $2",
}


@dataclass
class Tenant:
    id: uuid.UUID
    pulse: uuid.UUID
    asset: uuid.UUID


@dataclass
class Run:
    started: float = 0.0
    returned: float = 0.0
    files: dict[int, float] = field(default_factory=dict)
    ops: list[Op] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.returned - self.started

    def during(self, kind: str | None = None) -> list[Op]:
        return [
            o
            for o in self.ops
            if (kind is None or o.kind == kind)
            and o.started <= self.returned
            and o.finished >= self.started
        ]

    def baseline(self, kind: str | None = None) -> list[Op]:
        lo = self.started - self.duration
        return [
            o
            for o in self.ops
            if (kind is None or o.kind == kind) and o.started >= lo and o.finished < self.started
        ]


async def build_template(admin: str) -> str:
    name = databases.unique_name("bench_keys_tpl")
    dsn = await databases.create_database(admin, name)
    await apply_prerequisites(dsn)
    await up(dsn, target=23)
    conn = await asyncpg.connect(dsn)
    now = datetime.now(timezone.utc)
    try:
        for n in range(TENANTS):
            tenant, pulse, asset = await seed(conn, f"bench{n}")
            per = PER_TABLE // (TENANTS * len(OFFSETS))
            for days in OFFSETS:
                at = now + timedelta(days=days)
                spread = "$2::timestamptz + g * interval '1 second'"
                await conn.execute(
                    "INSERT INTO alerts (tenant_id, flow_pulse_id, asset_id, alert_type, severity, "
                    f"status, started_at) SELECT $1, $3, $4, 'silence', 'low', 'resolved', {spread} "
                    "FROM generate_series(1, $5) g",
                    tenant,
                    at,
                    pulse,
                    asset,
                    per,
                )
                await conn.execute(
                    "INSERT INTO audit_logs (tenant_id, action, entity_type, created_at) "
                    f"SELECT $1, 'create', 'asset', {spread} FROM generate_series(1, $3) g",
                    tenant,
                    at,
                    per,
                )
                await conn.execute(
                    "INSERT INTO asset_observations (tenant_id, asset_id, flow_pulse_id, observed_at) "
                    f"SELECT $1, $3, $4, {spread} FROM generate_series(1, $5) g",
                    tenant,
                    at,
                    asset,
                    pulse,
                    per,
                )
            await conn.execute(
                "INSERT INTO alerts (tenant_id, flow_pulse_id, asset_id, alert_type, severity, "
                "status, started_at) SELECT $1, $2, $3, 'silence', 'low', 'resolved', "
                "date_trunc('month', now()) + (g % 1000) * interval '1 minute' "
                "FROM generate_series(1, $4) g",
                tenant,
                pulse,
                asset,
                HOT // TENANTS,
            )
            await conn.execute(
                "INSERT INTO asset_observation_hourly (tenant_id, asset_id, flow_pulse_id, hour) "
                "SELECT $1, $2, $3, date_trunc('hour', now()) - g * interval '1 hour' "
                "FROM generate_series(1, $4) g",
                tenant,
                asset,
                pulse,
                PLAIN // TENANTS,
            )
            await conn.execute(
                "INSERT INTO anomaly_events (tenant_id, flow_pulse_id, asset_id, anomaly_type, severity) "
                "SELECT $1, $2, $3, 'burst', 'info' FROM generate_series(1, $4)",
                tenant,
                pulse,
                asset,
                PLAIN // TENANTS,
            )
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return name


def arguments(kind: str, t: Tenant) -> tuple[Any, ...]:
    return {
        "alerts": (t.id, t.pulse, t.asset),
        "audit_logs": (t.id,),
        "asset_observations": (t.id, t.pulse, t.asset),
        "flow_pulses": (t.id, t.pulse),
    }[kind]


async def writer(dsn: str, t: Tenant, ops: list[Op], stop: asyncio.Event) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        while not stop.is_set():
            for kind in KINDS:
                started = time.perf_counter()
                try:
                    await conn.execute(STATEMENTS[kind], *arguments(kind, t))
                except Exception as exc:
                    ops.append(Op(kind, started, time.perf_counter(), repr(exc)))
                else:
                    ops.append(Op(kind, started, time.perf_counter()))
    finally:
        await conn.close()


async def upgrade_under_load(admin: str, template: str, variant: str) -> Run:
    name = databases.unique_name("bench_keys")
    dsn = await databases.create_database(admin, name, template=template)
    result = Run()
    try:
        conn = await asyncpg.connect(dsn)
        holder = await asyncpg.connect(dsn)
        try:
            tenants = [
                Tenant(r["tenant_id"], r["id"], r["asset"])
                for r in await conn.fetch(
                    "SELECT p.tenant_id, p.id, (SELECT a.id FROM assets a WHERE a.tenant_id = p.tenant_id) "
                    "AS asset FROM flow_pulses p ORDER BY p.tenant_id"
                )
            ]
            stop = asyncio.Event()
            ops: list[Op] = []
            tasks = [
                asyncio.create_task(writer(dsn, tenants[w % len(tenants)], ops, stop))
                for w in range(WRITERS)
            ]
            try:
                await asyncio.sleep(BEFORE)
                commit = None
                if variant == "long transaction":
                    await holder.execute(
                        "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM tenants"
                    )

                    async def commit_later() -> None:
                        await asyncio.sleep(HOLD)
                        await holder.execute("COMMIT")

                    commit = asyncio.create_task(commit_later())
                result.started = time.perf_counter()
                migrated = await up(dsn)
                result.returned = time.perf_counter()
                result.files = {a.version: a.duration for a in migrated.applied}
                await asyncio.sleep(AFTER)
                if commit is not None:
                    await commit
            finally:
                stop.set()
                await asyncio.gather(*tasks)
            result.ops = ops
        finally:
            await holder.close()
            await conn.close()
    finally:
        await databases.drop_database(admin, name)
    return result


def table(run_: Run) -> str:
    lines = [
        "| statement | in baseline | during | p99 baseline | p99 during | worst baseline | worst during |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in KINDS:
        base, during = run_.baseline(kind), run_.during(kind)
        lines.append(
            f"| {STATEMENTS[kind].split(' (')[0].split(' SET')[0]} | {len(base):,} | {len(during):,} "
            f"| {ms(p99(base))} | {ms(p99(during))} | {ms(worst(base))} | **{ms(worst(during))}** |"
        )
    return "\n".join(lines)


def files(run_: Run) -> str:
    cic = sum(d for v, d in run_.files.items() if v <= 43)
    parts = [
        f"000024-000043 (20 concurrent builds) {ms(cic)}",
        f"000044 (plain keys) {ms(run_.files.get(44, float('nan')))}",
        f"000045-000047 (each partition's index, concurrently) {ms(partition_builds(run_))}",
    ]
    named = {
        48: "000048 (partitioned keys)",
        49: "000049 (references)",
        50: "000050 (validate)",
        51: "000051 (alert log trigger)",
    }
    parts += [f"{label} {ms(run_.files.get(v, float('nan')))}" for v, label in named.items()]
    dropped = sum(run_.files.get(v, float("nan")) for v in range(52, 59))
    parts.append(f"000052-000058 (7 indexes dropped concurrently) {ms(dropped)}")
    return ", ".join(parts)


def partition_builds(run_: Run) -> float:
    return sum(run_.files.get(v, float("nan")) for v in (45, 46, 47))


def summary(run_: Run) -> str:
    failed = [o for o in run_.ops if o.error is not None]
    during = run_.during()
    waited = sum(o.seconds >= 0.1 for o in during)
    return (
        f"`up` {ms(run_.duration)}: {files(run_)}; writes during it: {len(during):,}, "
        f"{waited} took 100 ms or more, the worst {ms(worst(during))} (baseline worst "
        f"{ms(worst(run_.baseline()))}); failed: {len(failed)}"
    )


async def main(admin: str) -> None:
    server = await describe_server(admin)
    template = await build_template(admin)
    try:
        plain = [await upgrade_under_load(admin, template, "plain") for _ in range(ROUNDS)]
        held = await upgrade_under_load(admin, template, "long transaction")
    finally:
        await databases.drop_database(admin, template)
    median = statistics.median(r.duration for r in plain)
    partition_rows = 3 * PER_TABLE + HOT
    build = statistics.median(partition_builds(r) for r in plain)
    write_section(
        "tenant_keys",
        f"""## Keys that lead with tenant_id (000024-000058) under load

A database at 000023 with {TENANTS} tenants: {PER_TABLE:,} rows in each of alerts,
audit_logs and asset_observations over five months (this month's partition, two ahead,
two months' worth in the default partition), {HOT:,} more alerts in this month's
partition (the one the writers write to) and {PLAIN:,} in each of
asset_observation_hourly and anomaly_events ({3 * PER_TABLE + HOT + 2 * PLAIN:,} rows).
{WRITERS} writers loop, each on its own connection, every statement timed (INSERT an
alert, an audit entry, an observation: this month's partitions; UPDATE a flow pulse);
after {BEFORE:.0f} s of load `up` applies 000024-000058. A statement counts *during* the
migration if it overlapped the call, in the *baseline* if it ran entirely within the
same length of time right before it. {server}; {machine()}.
Reproduce: `python bench/bench_tenant_keys.py`.

**Plain** ({ROUNDS} runs, each on a fresh copy): `up` {ms(median)} (median). 000045-000047
built the {partition_rows:,} partition rows' indexes in {ms(build)} (median; about
{ms(build / partition_rows * 100_000)} per 100,000 rows), each partition's CONCURRENTLY:
writes to it go on.

"""
        + "\n\n".join(f"- run {n + 1}: {summary(r)}" for n, r in enumerate(plain))
        + f"""

{table(plain[-1])}

**A long transaction** (a REPEATABLE READ snapshot open {HOLD:.0f} s from the start of
`up`: every concurrent build waits for it): {summary(held)}.

{table(held)}
""",
    )


if __name__ == "__main__":
    with server_dsn() as dsn:
        run(main(dsn))

"""A 20,000-row INSERT into alerts: 000022's change log + NOTIFY (the shipped trigger)
against no trigger, 000019's NOTIFY alone, and 000003's per-row triggers for the
before/after, in one run on one database.

000019's function is recreated here as ``bench_notify_only`` (its body as shipped,
attached the way 000019 attached it) beside the shipped ``alerts_notify_insert``,
whose function 000022 replaced; each variant enables its own triggers only. Each
round commits (the NOTIFY work happens at commit) with a listener connected, counts
the rows the round wrote to alert_changes, then empties alerts and alert_changes
outside the timing. Target: the log + NOTIFY <= 1.15 x no trigger, one notification
per statement.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from silentpulse_db import run_migrations
from silentpulse_db.migrate import apply_prerequisites

from common import (
    create_database,
    drop_database,
    machine,
    paired_ratio,
    write_section,
)

ROWS = 20_000
ROUNDS = 21  # the machine is shared: more rounds, a steadier median
MIGRATIONS = Path(__file__).resolve().parents[1] / "silentpulse_db" / "migrations"
INSERT = f"""
    INSERT INTO alerts (tenant_id, flow_pulse_id, asset_id, alert_type, severity, started_at)
    SELECT $1, $2, $3, 'silence', 'high', now() - g * interval '1 second'
    FROM generate_series(1, {ROWS}) g
"""
# 000019's function as it shipped (000022 replaced it with the log-writing one), read
# from its file under a bench name, attached as 000019 attached alerts_notify_insert.
_FILE_19 = (MIGRATIONS / "000019_alter_alert_notify_per_statement.up.sql").read_text()
_FUNCTION_19 = _FILE_19[
    _FILE_19.index("CREATE FUNCTION silentpulse_alert_notify_statement()") : _FILE_19.index(
        "COMMENT ON FUNCTION silentpulse_alert_notify_statement()"
    )
]
NOTIFY_ONLY = (
    _FUNCTION_19.replace("silentpulse_alert_notify_statement", "bench_notify_only")
    + """
    DO $$
    BEGIN
        EXECUTE format('ALTER FUNCTION bench_notify_only() SET search_path = %I, pg_temp',
                       current_schema());
    END
    $$;
    CREATE TRIGGER bench_notify_only
        AFTER INSERT ON alerts REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION bench_notify_only();
"""
)
# 000003's per-row triggers, recreated beside them for the before/after.
PER_ROW = """
    CREATE FUNCTION bench_notify_row() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('silentpulse_alerts', json_build_object(
            'alert_id', NEW.id, 'tenant_id', NEW.tenant_id, 'status', NEW.status, 'op', TG_OP,
            'started_at', NEW.started_at, 'changed_at', NEW.status_changed_at)::text);
        RETURN NULL;
    END $$;
    CREATE TRIGGER bench_stamp_row BEFORE INSERT ON alerts
        FOR EACH ROW EXECUTE FUNCTION silentpulse_alert_stamp();
    CREATE TRIGGER bench_notify_row AFTER INSERT ON alerts
        FOR EACH ROW EXECUTE FUNCTION bench_notify_row();
"""
# Each variant's triggers on alerts; every other one is disabled.
VARIANTS = {
    "none": (),
    "notify": ("bench_notify_only",),
    "log": ("alerts_notify_insert",),
    "row": ("bench_stamp_row", "bench_notify_row"),
}
TRIGGERS = [t for triggers in VARIANTS.values() for t in triggers]


async def seed(conn: asyncpg.Connection, handle: str = "b") -> tuple[Any, Any, Any]:
    """A tenant with what an alert references: (tenant, flow pulse, asset)."""
    tenant = await conn.fetchval(
        "INSERT INTO tenants (name, handle) VALUES ($1, $1) RETURNING id", handle
    )
    group = await conn.fetchval(
        "INSERT INTO asset_groups (tenant_id, name) VALUES ($1, 'g') RETURNING id", tenant
    )
    asset = await conn.fetchval(
        "INSERT INTO assets (tenant_id, external_id) VALUES ($1, 'a') RETURNING id", tenant
    )
    point = await conn.fetchval(
        "INSERT INTO integration_points (tenant_id, name, type, connection_config) "
        "VALUES ($1, 'p', 'http', '\\x00') RETURNING id",
        tenant,
    )
    flow = await conn.fetchval(
        "INSERT INTO flows (tenant_id, name, asset_group_id) VALUES ($1, 'f', $2) RETURNING id",
        tenant,
        group,
    )
    pulse = await conn.fetchval(
        "INSERT INTO flow_pulses (tenant_id, flow_id, integration_point_id, position, "
        "scheduler_interval, time_window) VALUES ($1, $2, $3, 0, '1 min', '5 min') RETURNING id",
        tenant,
        flow,
        point,
    )
    return tenant, pulse, asset


async def describe_server(conn: asyncpg.Connection, admin: str) -> str:
    """Which server the figures come from: the header's throwaway one or $BENCH_DSN's."""
    version = await conn.fetchval("SHOW server_version")
    fsync = await conn.fetchval("SHOW fsync")
    where = (
        "the server at $BENCH_DSN" if admin == os.environ.get("BENCH_DSN") else "a throwaway server"
    )
    return f"PostgreSQL {version.split()[0]} ({where}, fsync {fsync})"


async def choose(conn: asyncpg.Connection, variant: str) -> None:
    await conn.execute(
        "".join(
            f"ALTER TABLE alerts {'ENABLE' if t in VARIANTS[variant] else 'DISABLE'} TRIGGER {t};"
            for t in TRIGGERS
        )
    )


@dataclass(frozen=True)
class Measured:
    server: str
    med: dict[str, float]
    ratio: dict[str, float]
    notified: dict[str, set[int]]
    logged: dict[str, set[int]]


async def measure(admin: str) -> Measured:
    dsn = await create_database(admin)
    try:
        await apply_prerequisites(dsn)
        await run_migrations(dsn)
        conn = await asyncpg.connect(dsn)
        listener = await asyncpg.connect(dsn)
        received = [0]
        await listener.add_listener(
            "silentpulse_alerts", lambda *_: received.__setitem__(0, received[0] + 1)
        )
        try:
            server = await describe_server(conn, admin)
            await conn.execute(NOTIFY_ONLY + PER_ROW)
            ids = await seed(conn)
            samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
            notified: dict[str, set[int]] = {v: set() for v in VARIANTS}
            logged: dict[str, set[int]] = {v: set() for v in VARIANTS}
            for round_ in range(ROUNDS + 1):
                for variant in VARIANTS:
                    await choose(conn, variant)
                    received[0] = 0
                    started = time.perf_counter()
                    await conn.execute(INSERT, *ids)  # autocommit: the commit is timed
                    elapsed = time.perf_counter() - started
                    if round_:  # the first round warms up
                        samples[variant].append(elapsed)
                    logged[variant].add(await conn.fetchval("SELECT count(*) FROM alert_changes"))
                    await conn.execute("TRUNCATE alerts; TRUNCATE alert_changes")
                    await conn.execute("SELECT pg_sleep(0.2)")  # let the listener drain
                    notified[variant].add(received[0])
        finally:
            await listener.close()
            await conn.close()
    finally:
        await drop_database(admin, dsn)
    return Measured(
        server,
        {v: statistics.median(s) for v, s in samples.items()},
        {v: paired_ratio(samples, v, "none") for v in samples},
        notified,
        logged,
    )


def report(results: list[Measured]) -> None:
    def counts(values: set[int]) -> str:  # every round's, one figure when all agree
        return " / ".join(f"{n:,}" for n in sorted(values))

    def row(m: Measured, label: str, v: str, target: str = "") -> str:
        shown = f"**{m.ratio[v]:.3f}** ({target})" if target else f"{m.ratio[v]:.3f}"
        return (
            f"| {label} | {m.med[v] * 1000:.0f} ms | {shown} | {counts(m.notified[v])} "
            f"| {counts(m.logged[v])} |"
        )

    tables = "\n\n".join(
        f"""On {m.server}:

| alert triggers | INSERT + COMMIT | ratio to none | notifications sent (each round) | alert_changes rows written (each round) |
|---|---|---|---|---|
{row(m, "none (baseline)", "none")}
{row(m, "NOTIFY only (000019)", "notify")}
{row(m, "log + NOTIFY (000022, shipped)", "log", "target <= 1.15")}
{row(m, "per row (000003, before)", "row")}"""
        for m in results
    )
    write_section(
        "notify",
        f"""## Alert notifications: a {ROWS:,}-row INSERT

One committed INSERT of {ROWS:,} alerts (with a NOTIFY listener connected), {ROUNDS}
alternating rounds, medians (ratios: of the rounds' own); {machine()}.
Reproduce: `python bench/bench_notify.py` (the throwaway server; with `BENCH_DSN`, that
server as well).

The shipped trigger (000022) writes one alert_changes row per alert, then sends one
NOTIFY; 000019's function, which only notifies, is recreated beside it for the
comparison, and 000003's per-row triggers for the before/after. The log's rows are
CPU work the INSERT does again (its heap and its (xid, seq) index, about half each);
with fsync off the baseline's commit costs less, so the same work weighs more.

{tables}
""",
    )


if __name__ == "__main__":
    from silentpulse_db.testing.server import PostgresServer

    with PostgresServer() as throwaway:
        measured = [asyncio.run(measure(throwaway.dsn))]
    if os.environ.get("BENCH_DSN"):
        measured.append(asyncio.run(measure(os.environ["BENCH_DSN"])))
    report(measured)

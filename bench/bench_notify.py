"""A 20,000-row INSERT into alerts: the per-statement NOTIFY (000019) against no trigger,
and 000003's per-row triggers for the before/after, in one run on one database.

Each round commits (the NOTIFY work happens at commit) with a listener connected,
then empties the table outside the timing. Target: per statement <= 1.05 x no trigger.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import asyncpg

from silentpulse_db import apply_prerequisites, run_migrations

from common import (
    create_database,
    drop_database,
    machine,
    paired_ratio,
    run,
    server_dsn,
    write_section,
)

ROWS = 20_000
ROUNDS = 9
MIGRATIONS = Path(__file__).resolve().parents[1] / "silentpulse_db" / "migrations"
INSERT = f"""
    INSERT INTO alerts (tenant_id, flow_pulse_id, asset_id, alert_type, severity, started_at)
    SELECT $1, $2, $3, 'silence', 'high', now() - g * interval '1 second'
    FROM generate_series(1, {ROWS}) g
"""
# 000003's per-row triggers, recreated beside 000019's for the comparison.
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
VARIANTS = {
    "none": ("DISABLE", "DISABLE"),
    "statement": ("ENABLE", "DISABLE"),
    "row": ("DISABLE", "ENABLE"),
}


async def seed(conn: asyncpg.Connection) -> tuple[object, object, object]:
    tenant = await conn.fetchval(
        "INSERT INTO tenants (name, handle) VALUES ('b', 'b') RETURNING id"
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


async def choose(conn: asyncpg.Connection, variant: str) -> None:
    statement, row = VARIANTS[variant]
    await conn.execute(
        f"ALTER TABLE alerts {statement} TRIGGER alerts_notify_insert;"
        f"ALTER TABLE alerts {row} TRIGGER bench_stamp_row;"
        f"ALTER TABLE alerts {row} TRIGGER bench_notify_row;"
    )


async def main(admin: str) -> None:
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
            await conn.execute(PER_ROW)
            ids = await seed(conn)
            samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
            notified: dict[str, int] = {}
            for round_ in range(ROUNDS + 1):
                for variant in VARIANTS:
                    await choose(conn, variant)
                    received[0] = 0
                    started = time.perf_counter()
                    await conn.execute(INSERT, *ids)  # autocommit: the commit is timed
                    elapsed = time.perf_counter() - started
                    if round_:  # the first round warms up
                        samples[variant].append(elapsed)
                    await conn.execute("TRUNCATE alerts")
                    await conn.execute("SELECT pg_sleep(0.2)")  # let the listener drain
                    notified[variant] = received[0]
        finally:
            await listener.close()
            await conn.close()
    finally:
        await drop_database(admin, dsn)
    med = {v: statistics.median(s) for v, s in samples.items()}
    ratio = {v: paired_ratio(samples, v, "none") for v in samples}
    write_section(
        "notify",
        f"""## Alert notifications: a {ROWS:,}-row INSERT

One committed INSERT of {ROWS:,} alerts (with a listener connected), {ROUNDS} alternating
rounds, medians (ratios: of the rounds' own); {machine()}. Reproduce: `python bench/bench_notify.py`.

| alert triggers | INSERT + COMMIT | ratio to none | notifications sent |
|---|---|---|---|
| none (baseline) | {med["none"] * 1000:.0f} ms | 1.00 | {notified["none"]} |
| per statement (000019) | {med["statement"] * 1000:.0f} ms | **{ratio["statement"]:.3f}** (target <= 1.05) | {notified["statement"]} |
| per row (000003, before) | {med["row"] * 1000:.0f} ms | {ratio["row"]:.3f} | {notified["row"]} |
""",
    )


if __name__ == "__main__":
    with server_dsn() as admin_dsn:
        run(main(admin_dsn))

"""The test harness: server start-up, the migrated template, and a clone per test.

The clone is what every `silentpulse_migrated_database` test pays; its baselines
are creating an empty database on the same server (CREATE DATABASE from template0
vs from the migrated template) and on the machine's own server ($BENCH_SYSTEM_DSN,
default postgres@127.0.0.1:5432, when it answers). The clone with STRATEGY
FILE_COPY (PostgreSQL 15's other way to copy a database) is measured beside the
default (WAL_LOG).
"""

from __future__ import annotations

import os
import statistics
import time

import asyncpg

from silentpulse_db.testing.plugin import TEMPLATE_PREFIX
from silentpulse_db.testing.server import (
    PostgresServer,
    create_database,
    drop_database,
    run_sync,
)

from common import machine, write_section

CLONES = 10
SYSTEM_DSN = os.environ.get("BENCH_SYSTEM_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def _timed_sql(dsn: str, sql: str) -> float:
    async def run() -> float:
        conn = await asyncpg.connect(dsn)
        try:
            started = time.perf_counter()
            await conn.execute(sql)
            return time.perf_counter() - started
        finally:
            await conn.close()

    return run_sync(run())


def _system_bare() -> float | None:
    """Median seconds of an empty CREATE DATABASE on the system server, if it answers."""
    try:
        _timed_sql(SYSTEM_DSN, "SELECT 1")
    except Exception:
        return None
    times = []
    for i in range(CLONES):
        times.append(_timed_sql(SYSTEM_DSN, f"CREATE DATABASE bench_bare_{i}"))
        _timed_sql(SYSTEM_DSN, f"DROP DATABASE bench_bare_{i}")
    return statistics.median(times)


def main() -> None:
    started = time.perf_counter()
    with PostgresServer() as server:
        start = time.perf_counter() - started
        from silentpulse_db import apply_prerequisites, run_migrations

        started = time.perf_counter()
        template = f"{TEMPLATE_PREFIX}_bench"
        dsn = create_database(server.dsn, template)
        run_sync(apply_prerequisites(dsn))
        run_sync(run_migrations(dsn))
        build = time.perf_counter() - started
        empty: list[float] = []
        clone: list[float] = []
        file_copy: list[float] = []
        # The statements alone are timed (connecting is the same for all of them).
        for i in range(CLONES):
            for bucket, clause in (
                (empty, ""),
                (clone, f' TEMPLATE "{template}"'),
                (file_copy, f' TEMPLATE "{template}" STRATEGY FILE_COPY'),
            ):
                bucket.append(_timed_sql(server.dsn, f"CREATE DATABASE bench_clone_{i}{clause}"))
                drop_database(server.dsn, f"bench_clone_{i}")
        drop_database(server.dsn, template)
    e, c, f = statistics.median(empty), statistics.median(clone), statistics.median(file_copy)
    system = _system_bare()
    against = (
        f"| empty database on the system server (`{SYSTEM_DSN.split('@')[-1]}`) | "
        f"{system * 1000:.0f} ms | clone / this: {c / system:.2f} |"
        if system
        else "| empty database on the system server | not reachable | |"
    )
    write_section(
        "harness",
        f"""## Test harness

| step | time | ratio |
|---|---|---|
| throwaway server start (initdb + pg_ctl) | {start:.2f} s | |
| migrated template (prerequisites + every migration) | {build:.2f} s | |
| empty database (baseline) | {e * 1000:.0f} ms | 1.00 |
| clone of the migrated template (one per test) | {c * 1000:.0f} ms | {c / e:.2f} |
| the same clone, `STRATEGY FILE_COPY` | {f * 1000:.0f} ms | {f / e:.2f} |
{against}

Medians of {CLONES} alternating creations, the CREATE DATABASE statement alone timed; {machine()}. Reproduce: `python bench/bench_harness.py`.
""",
    )


if __name__ == "__main__":
    main()

"""The test harness: server start-up, the migrated template, and a clone per test.

The clone is what every `silentpulse_migrated_database` test pays; its baselines
are creating an empty database on the same server (CREATE DATABASE from template0
vs from the migrated template) and on the machine's own server ($BENCH_SYSTEM_DSN,
default postgres@127.0.0.1:5432, when it answers). The clone with STRATEGY
FILE_COPY (PostgreSQL 15's other way to copy a database) is measured beside the
default (WAL_LOG). All of it twice in one run: the server's folder in memory
(/dev/shm, where the harness puts it when it can) and on disk (the temporary
directory, where it went before): ratios are memory / disk.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import asyncpg

from silentpulse_db.testing.plugin import TEMPLATE_PREFIX
from silentpulse_db.testing.server import (
    ENV_DIR,
    MEMORY_DIR,
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


def _measure(parent: Path) -> dict[str, float]:
    """Seconds of each step on a throwaway server whose folder is in ``parent``."""
    os.environ[ENV_DIR] = str(parent)
    started = time.perf_counter()
    with PostgresServer() as server:
        times = {"start": time.perf_counter() - started}
        from silentpulse_db import run_migrations
        from silentpulse_db.migrate import apply_prerequisites

        started = time.perf_counter()
        template = f"{TEMPLATE_PREFIX}_bench"
        dsn = create_database(server.dsn, template)
        run_sync(apply_prerequisites(dsn))
        run_sync(run_migrations(dsn))
        times["build"] = time.perf_counter() - started
        samples: dict[str, list[float]] = {"empty": [], "clone": [], "file_copy": []}
        # The statements alone are timed (connecting is the same for all of them).
        for i in range(CLONES):
            for name, clause in (
                ("empty", ""),
                ("clone", f' TEMPLATE "{template}"'),
                ("file_copy", f' TEMPLATE "{template}" STRATEGY FILE_COPY'),
            ):
                sql = f"CREATE DATABASE bench_clone_{i}{clause}"
                samples[name].append(_timed_sql(server.dsn, sql))
                drop_database(server.dsn, f"bench_clone_{i}")
        drop_database(server.dsn, template)
    del os.environ[ENV_DIR]
    return times | {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    if not MEMORY_DIR.is_dir():
        raise SystemExit(f"{MEMORY_DIR} is not here: nothing to compare")
    disk = _measure(Path(tempfile.gettempdir()))
    memory = _measure(MEMORY_DIR)
    system = _system_bare()
    against = (
        f"| empty database on the system server (`{SYSTEM_DSN.split('@')[-1]}`) | "
        f"{system * 1000:.0f} ms | | |"
        if system
        else "| empty database on the system server | not reachable | | |"
    )

    def row(label: str, key: str, unit: str = "ms") -> str:
        scale, fmt = (1000, ".0f") if unit == "ms" else (1, ".2f")
        d, m = disk[key] * scale, memory[key] * scale
        return f"| {label} | {d:{fmt}} {unit} | {m:{fmt}} {unit} | {m / d:.2f} |"

    write_section(
        "harness",
        f"""## Test harness

| step | on disk ({tempfile.gettempdir()}) | in memory ({MEMORY_DIR}) | memory / disk |
|---|---|---|---|
{row("throwaway server start (initdb + pg_ctl)", "start", "s")}
{row("migrated template (prerequisites + every migration)", "build", "s")}
{row("empty database", "empty")}
{row("clone of the migrated template (one per test)", "clone")}
{row("the same clone, `STRATEGY FILE_COPY`", "file_copy")}
{against}

Medians of {CLONES} alternating creations, the CREATE DATABASE statement alone timed; both
servers in one run, the disk's first; {machine()}. Reproduce: `python bench/bench_harness.py`.
""",
    )


if __name__ == "__main__":
    main()

"""The test harness: server start-up, the migrated template, and a clone per test.

The clone is what every `silentpulse_migrated_database` test pays; its baseline
is creating an empty database on the same server (CREATE DATABASE from template0
vs from the migrated template).
"""

from __future__ import annotations

import statistics
import time

from silentpulse_db.testing.plugin import TEMPLATE_PREFIX
from silentpulse_db.testing.server import (
    PostgresServer,
    create_database,
    drop_database,
    run_sync,
)

from common import machine, write_section

CLONES = 10


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
        for i in range(CLONES):
            for bucket, source in ((empty, None), (clone, template)):
                started = time.perf_counter()
                create_database(server.dsn, f"bench_clone_{i}", template=source)
                bucket.append(time.perf_counter() - started)
                drop_database(server.dsn, f"bench_clone_{i}")
        drop_database(server.dsn, template)
    e, c = statistics.median(empty), statistics.median(clone)
    write_section(
        "harness",
        f"""## Test harness

| step | time | ratio |
|---|---|---|
| throwaway server start (initdb + pg_ctl) | {start:.2f} s | |
| migrated template (prerequisites + every migration) | {build:.2f} s | |
| empty database (baseline) | {e * 1000:.0f} ms | 1.00 |
| clone of the migrated template (one per test) | {c * 1000:.0f} ms | {c / e:.2f} |

Medians of {CLONES} alternating creations; {machine()}. Reproduce: `python bench/bench_harness.py`.
""",
    )


if __name__ == "__main__":
    main()

"""20 replicas starting together vs one alone, on a fresh database each.

Each replica is a separate connection calling `run_migrations` on the packaged
migrations; we time until all have returned. The ratio shows what the queue on
the migration lock costs the last replica to start.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from silentpulse_db import apply_prerequisites, run_migrations

from common import create_database, drop_database, machine, run, server_dsn, write_section

REPLICAS = 20
ROUNDS = 5


async def start(dsn: str, replicas: int) -> float:
    started = time.perf_counter()
    results = await asyncio.gather(*(run_migrations(dsn) for _ in range(replicas)))
    elapsed = time.perf_counter() - started
    assert sum(bool(r.applied) for r in results) == 1
    return elapsed


async def main(admin: str) -> None:
    times: dict[int, list[float]] = {1: [], REPLICAS: []}
    for _ in range(ROUNDS):
        for replicas in times:
            dsn = await create_database(admin)
            try:
                await apply_prerequisites(dsn)
                times[replicas].append(await start(dsn, replicas))
            finally:
                await drop_database(admin, dsn)
    one, many = statistics.median(times[1]), statistics.median(times[REPLICAS])
    write_section(
        "replicas",
        f"""## {REPLICAS} replicas starting together

Fresh database, packaged migrations, {ROUNDS} rounds, medians; {machine()}.

| | until all returned |
|---|---|
| one replica alone | {one * 1000:.1f} ms |
| {REPLICAS} replicas at once | {many * 1000:.1f} ms |
| **ratio** (target <= 1.3) | **{many / one:.2f}** |
""",
    )


if __name__ == "__main__":
    with server_dsn() as admin:
        run(main(admin))

"""20 replicas starting together vs one alone, on a fresh database each.

Each replica is a separate connection calling `run_migrations` on the packaged
migrations; we time until all have returned. The ratio shows what the queue on
the migration lock costs the last replica to start.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import asyncpg

from silentpulse_db import run_migrations
from silentpulse_db.migrate import apply_prerequisites

from common import create_database, drop_database, machine, run, server_dsn, write_section

REPLICAS = 20
ROUNDS = 9


async def start(dsn: str, replicas: int) -> float:
    started = time.perf_counter()
    results = await asyncio.gather(*(run_migrations(dsn) for _ in range(replicas)))
    elapsed = time.perf_counter() - started
    assert sum(bool(r.applied) for r in results) == 1
    return elapsed


async def floor(dsn: str, replicas: int) -> float:
    """One replica migrating while the others only connect, wait for it and read the
    history once: what sharing this machine with replicas-1 connections costs at least
    (their SCRAM handshakes and backend start-ups run on the same 2 cores)."""
    done = asyncio.Event()

    async def migrate() -> None:
        await run_migrations(dsn)
        done.set()

    async def bystander() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("SELECT 1")
            await done.wait()
            await conn.fetch("SELECT * FROM schema_migrations_history")
        finally:
            await conn.close()

    started = time.perf_counter()
    await asyncio.gather(migrate(), *(bystander() for _ in range(replicas - 1)))
    return time.perf_counter() - started


async def main(admin: str) -> None:
    times: dict[str, list[float]] = {"one": [], "many": [], "floor": []}
    for _ in range(ROUNDS):
        for name in times:
            dsn = await create_database(admin)
            try:
                await apply_prerequisites(dsn)
                if name == "floor":
                    times[name].append(await floor(dsn, REPLICAS))
                else:
                    times[name].append(await start(dsn, REPLICAS if name == "many" else 1))
            finally:
                await drop_database(admin, dsn)
    one, many, least = (statistics.median(times[k]) for k in ("one", "many", "floor"))
    # Each round's own ratio, then their median: a slow moment of the machine hits
    # both sides of a round alike.
    ratio = statistics.median(m / o for m, o in zip(times["many"], times["one"], strict=True))
    floor_ratio = statistics.median(
        f / o for f, o in zip(times["floor"], times["one"], strict=True)
    )
    write_section(
        "replicas",
        f"""## {REPLICAS} replicas starting together

Fresh database, packaged migrations, {ROUNDS} rounds (one, many and floor in turn), medians;
{machine()}.
Reproduce: `.venv/bin/python bench/bench_replicas.py`.

| | until all returned |
|---|---|
| one replica alone | {one * 1000:.1f} ms |
| {REPLICAS} replicas at once | {many * 1000:.1f} ms |
| **ratio** (target <= 1.3; median of the rounds' ratios) | **{ratio:.2f}** |
| floor: one replica and {REPLICAS - 1} bare connections that wait for it | {least * 1000:.1f} ms ({floor_ratio:.2f}) |

The floor is what {REPLICAS} clients in this one process cost on 2 cores even if the
{REPLICAS - 1} waiting ones did nothing but connect and read the history once.
""",
    )


if __name__ == "__main__":
    with server_dsn() as admin:
        run(main(admin))

"""No-op run_migrations on an up-to-date database vs bare connect + SELECT 1 + close.

Target: ratio <= 1.3. Runs on the packaged migrations, on the server's own auth
(the throwaway server uses scram-sha-256, as production does).
"""

from __future__ import annotations

import statistics

import asyncpg

from silentpulse_db import run_migrations
from silentpulse_db.migrate import apply_prerequisites

from common import (
    alternate,
    alternate_samples,
    create_database,
    drop_database,
    machine,
    paired_ratio,
    run,
    server_dsn,
    write_section,
)

ROUNDS = 200


async def main(admin: str) -> None:
    dsn = await create_database(admin)
    try:
        await apply_prerequisites(dsn)
        await run_migrations(dsn)

        async def bare() -> None:
            conn = await asyncpg.connect(dsn)
            await conn.fetchval("SELECT 1")
            await conn.close()

        async def noop() -> None:
            result = await run_migrations(dsn)
            assert not result.applied

        await alternate(10, bare=bare, noop=noop)  # warm up
        samples = await alternate_samples(ROUNDS, bare=bare, noop=noop)
    finally:
        await drop_database(admin, dsn)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    ratio = paired_ratio(samples, "noop", "bare")
    write_section(
        "noop",
        f"""## No-op start-up

`run_migrations` on an up-to-date database (packaged migrations) against a bare
asyncpg connect + `SELECT 1` + close; {ROUNDS} alternating rounds, medians (the ratio: of the
rounds' own); {machine()}.
Reproduce: `.venv/bin/python bench/bench_noop.py`.

| | median |
|---|---|
| bare connect + SELECT 1 + close | {medians["bare"] * 1000:.2f} ms |
| no-op `run_migrations` | {medians["noop"] * 1000:.2f} ms |
| **ratio** (target <= 1.3) | **{ratio:.2f}** |
""",
    )


if __name__ == "__main__":
    with server_dsn() as admin:
        run(main(admin))

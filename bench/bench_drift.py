"""drift on the full packaged schema against check on the same database: is it fast
enough for a deployment pipeline? Both build the files' schema on a scratch database
(check: up, down and up again for each migration; drift: up once, and read both
catalogs). Target: drift no slower than check (ratio <= 1.0).
"""

from __future__ import annotations

import statistics

from silentpulse_db import apply_prerequisites, check, drift, run_migrations

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

ROUNDS = 7


async def main(admin: str) -> None:
    dsn = await create_database(admin)
    try:
        await apply_prerequisites(dsn)
        await run_migrations(dsn)

        async def checking() -> None:
            await check(dsn)

        async def drifting() -> None:
            report = await drift(dsn, attempts=1)
            assert report.matches, [str(d) for d in report.differences]

        await alternate(1, check=checking, drift=drifting)  # warm up
        samples = await alternate_samples(ROUNDS, check=checking, drift=drifting)
    finally:
        await drop_database(admin, dsn)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    ratio = paired_ratio(samples, "drift", "check")
    write_section(
        "drift",
        f"""## Drift against check

`drift` on a database migrated to the latest packaged version (no drift) against
`check` on the same database; both build the files' schema on a scratch database
they create and drop. {ROUNDS} alternating rounds, medians (the ratio: of the rounds'
own); {machine()}. Reproduce: `.venv/bin/python bench/bench_drift.py`.

| | median |
|---|---|
| `check` | {medians["check"] * 1000:.0f} ms |
| `drift` | {medians["drift"] * 1000:.0f} ms |
| **ratio** drift / check (target <= 1.0) | **{ratio:.2f}** |
""",
    )


if __name__ == "__main__":
    with server_dsn() as admin:
        run(main(admin))

"""drift on the full packaged schema against check, and against a `pg_dump
--schema-only` diff with its reference build, on the same database: is it fast enough
for a deployment pipeline? All build the files' schema on a scratch database (check:
up, down and up again for each migration; drift: up once, and read both catalogs; the
pg_dump diff: up once, dump both databases, diff the dumps: the same work drift does,
without its fixes, excuses or object-by-object report). Targets: drift no slower than
check, nor than the pg_dump diff (ratios <= 1.0).
"""

from __future__ import annotations

import asyncio
import difflib
import os
import statistics

from silentpulse_db import run_migrations
from silentpulse_db.migrate import apply_prerequisites, check, commands, drift
from silentpulse_db.settings import ConnectRetry

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


async def _schema_dump(dsn: str) -> list[str]:
    """`pg_dump --schema-only`, without the random `\\restrict` key lines of pg_dump
    15.14+ (a diff of two dumps would always differ on them)."""
    dump = await asyncio.create_subprocess_exec(
        "pg_dump", "--schema-only", dsn, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await dump.communicate()
    assert dump.returncode == 0, f"pg_dump exited {dump.returncode}"
    return [
        line
        for line in out.decode().splitlines()
        if not line.startswith(("\\restrict", "\\unrestrict"))
    ]


async def dump_diff(admin: str, dsn: str) -> list[str]:
    """The reference build (a scratch database: prerequisites, then the files up to the
    live version, as drift builds it), both dumped at once, diffed, the scratch dropped."""
    version = (await commands.version(dsn, connect=ConnectRetry(attempts=1))).version
    reference = await create_database(admin, "reference")
    try:
        await apply_prerequisites(reference)
        await run_migrations(reference, target=version)
        live, built = await asyncio.gather(_schema_dump(dsn), _schema_dump(reference))
    finally:
        await drop_database(admin, reference)
    return list(difflib.unified_diff(built, live, lineterm=""))


async def main(admin: str) -> None:
    dsn = await create_database(admin)
    try:
        await apply_prerequisites(dsn)
        await run_migrations(dsn)

        async def checking() -> None:
            await check(dsn)

        async def drifting() -> None:
            report = await drift(dsn, connect=ConnectRetry(attempts=1))
            assert report.matches, [str(d) for d in report.differences]

        async def dumping() -> None:
            differences = await dump_diff(admin, dsn)
            assert not differences, "\n".join(differences[:40])

        candidates = {"check": checking, "drift": drifting, "pg_dump diff": dumping}
        await alternate(1, **candidates)  # warm up
        samples = await alternate_samples(ROUNDS, **candidates)
    finally:
        await drop_database(admin, dsn)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    ratio = paired_ratio(samples, "drift", "check")
    against_dump = paired_ratio(samples, "drift", "pg_dump diff")
    load = os.getloadavg()[0]  # whether the machine was idle while it ran
    write_section(
        "drift",
        f"""## Drift against check and a pg_dump diff

`drift` on a database migrated to the latest packaged version (no drift) against
`check` on the same database, and against a `pg_dump --schema-only` diff with its
reference build (a scratch database created, the files applied up to the live
version, both databases dumped at once, the dumps diffed, the scratch dropped: the
work drift does, without its excuses, fixes and report). All build the files' schema
on a scratch database they create and drop. {ROUNDS} alternating rounds, medians (the
ratios: of the rounds' own); {machine()}, 1-minute load average {load:.1f} at the end
(on a shared machine the ratios carry over, the times less so). Reproduce:
`.venv/bin/python bench/bench_drift.py`.

| | median |
|---|---|
| `check` | {medians["check"] * 1000:.0f} ms |
| `pg_dump --schema-only` diff, its reference build included | {medians["pg_dump diff"] * 1000:.0f} ms |
| `drift` | {medians["drift"] * 1000:.0f} ms |
| **ratio** drift / check (target <= 1.0) | **{ratio:.2f}** |
| **ratio** drift / pg_dump diff (target <= 1.0) | **{against_dump:.2f}** |
""",
    )


if __name__ == "__main__":
    with server_dsn() as admin:
        run(main(admin))

"""CLI start-up: `silentpulse-db up` (and `version`) on an up-to-date database, as processes.

Baseline: a process that imports asyncpg, connects, runs `SELECT 1` and closes,
the least a Python command touching the database can do. Both sides get the
DSN from DATABASE_URL (``--database`` with a password warns) and run on the
packaged migrations.

Target: `silentpulse-db up` / baseline <= 1.3 (relaxed from 1.2 to buy clarity: issue 19).
"""

from __future__ import annotations

import asyncio
import compileall
import os
import statistics
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from silentpulse_db import apply_prerequisites, run_migrations

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

ROUNDS = 25
WARMUP = 3
# The console script installed beside the interpreter running the bench.
CLI = Path(sys.executable).parent / "silentpulse-db"

BARE = """\
import asyncio, os, asyncpg
async def main():
    conn = await asyncpg.connect(os.environ["DATABASE_URL"])
    await conn.fetchval("SELECT 1")
    await conn.close()
asyncio.run(main())
"""


async def process(argv: list[str], env: dict[str, str]) -> None:
    """Run ``argv`` to the end; a failure or any stderr output spoils the figure."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    if proc.returncode != 0 or err:
        raise RuntimeError(f"{argv[0]} {argv[1:]} exited {proc.returncode}: {err.decode()}")


def command(argv: list[str], env: dict[str, str]) -> Callable[[], Awaitable[None]]:
    return lambda: process(argv, env)


async def main(admin: str) -> None:
    if not CLI.exists():
        raise SystemExit(f"{CLI} not found: run with the project's venv (make venv)")
    # As installed from a wheel: compiled bytecode (an editable checkout run with
    # PYTHONDONTWRITEBYTECODE would compile every module on every start).
    import silentpulse_db

    compileall.compile_dir(Path(silentpulse_db.__file__).parent, quiet=1)
    dsn = await create_database(admin)
    try:
        await apply_prerequisites(dsn)
        await run_migrations(dsn)
        env = {**os.environ, "DATABASE_URL": dsn}
        env.pop("POSTGRES_DSN", None)
        candidates = {
            "bare": command([sys.executable, "-c", BARE], env),
            "up": command([str(CLI), "up"], env),
            "version": command([str(CLI), "version"], env),
        }
        await alternate(WARMUP, **candidates)
        samples = await alternate_samples(ROUNDS, **candidates)
    finally:
        await drop_database(admin, dsn)
    med = {name: statistics.median(values) for name, values in samples.items()}
    up, version = paired_ratio(samples, "up", "bare"), paired_ratio(samples, "version", "bare")
    write_section(
        "cli",
        f"""## CLI start-up

Whole processes on an up-to-date database (packaged migrations), DSN in
`DATABASE_URL`; {ROUNDS} alternating rounds after {WARMUP} warm-up rounds, wall-time
medians, ratios the median of the rounds' own; {machine()}. Reproduce: `.venv/bin/python bench/bench_cli.py`.

| process | median | ratio |
|---|---|---|
| baseline: `python -c` import asyncpg, connect, `SELECT 1`, close | {med["bare"] * 1000:.1f} ms | 1.00 |
| `silentpulse-db up` (nothing to do) | {med["up"] * 1000:.1f} ms | **{up:.2f}** (target <= 1.3) |
| `silentpulse-db version` | {med["version"] * 1000:.1f} ms | {version:.2f} |
""",
    )


if __name__ == "__main__":
    with server_dsn() as admin:
        run(main(admin))

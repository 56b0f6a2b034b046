"""CLI start-up: `silentpulse-db up` (and `version`) on an up-to-date database, as processes.

Baseline: a process that imports asyncpg, connects, runs `SELECT 1` and closes,
the least a Python command touching the database can do. Both sides get the
DSN from DATABASE_URL (``--database`` with a password warns) and run on the
packaged migrations.

Target: `silentpulse-db up` / baseline <= 1.3 (relaxed from 1.2 to buy clarity: issue 19).

Where the time goes (issue 28): processes that stop at each stage (the interpreter,
asyncpg imported, the CLI imported), and the no-op's round trips counted in-process.
"""

from __future__ import annotations

import asyncio
import compileall
import os
import statistics
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

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


# What `silentpulse-db up` imports: the CLI's words and the module that runs up.
CLI_UP = "silentpulse_db.migrate.cli.migrating"

ROUND_TRIPS = """\
import asyncpg
from silentpulse_db.migrate import cli
count = 0
connect = asyncpg.connect
def count_one(record):
    global count
    count += 1
async def counting(*args, **kwargs):
    conn = await connect(*args, **kwargs)
    conn.add_query_logger(count_one)
    return conn
asyncpg.connect = counting
try:
    cli.main(["up"])
except SystemExit:
    pass
print(count)
"""


async def round_trips(env: dict[str, str]) -> int:
    """Statements a no-op `up` sends after connecting, counted in a process of its own."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        ROUND_TRIPS,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    return int(out.decode().split()[-1])


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
            "python": command([sys.executable, "-c", "pass"], env),
            "asyncpg": command([sys.executable, "-c", "import asyncpg"], env),
            "cli_import": command([sys.executable, "-c", f"import {CLI_UP}"], env),
            "up": command([str(CLI), "up"], env),
            "version": command([str(CLI), "version"], env),
        }
        await alternate(WARMUP, **candidates)
        samples = await alternate_samples(ROUNDS, **candidates)
        trips = await round_trips(env)
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

Where `up`'s time goes, from processes that stop earlier (medians of the same rounds):

| stage | process | median | the stage's share of `up` |
|---|---|---|---|
| the interpreter | `python -c pass` | {med["python"] * 1000:.1f} ms | {med["python"] * 1000:.1f} ms |
| asyncpg's import (the baseline pays it too) | `python -c "import asyncpg"` | {med["asyncpg"] * 1000:.1f} ms | {(med["asyncpg"] - med["python"]) * 1000:.1f} ms |
| the CLI's own modules | `python -c "import {CLI_UP}"` | {med["cli_import"] * 1000:.1f} ms | {(med["cli_import"] - med["asyncpg"]) * 1000:.1f} ms |
| connecting, the work, closing | `silentpulse-db up` | {med["up"] * 1000:.1f} ms | {(med["up"] - med["cli_import"]) * 1000:.1f} ms |

After connecting, the no-op `up` sends {trips} statement(s) (counted with asyncpg's
query logger). What is left to cut is import time: the CLI's own modules cost about
as much as the interpreter's start, and less than half of asyncpg's import, which any
Python process that talks to PostgreSQL pays. golang-migrate's no-op (bench_golang_migrate.py)
is a Go binary's start: a Python CLI cannot reach it, so the target stays the ratio to
a bare Python process.
""",
    )


if __name__ == "__main__":
    with server_dsn() as admin:
        run(main(admin))

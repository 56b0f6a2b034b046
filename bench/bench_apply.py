"""Applying 500 generated one-statement migrations.

- ours: `run_migrations` from the folder (one transaction per migration with
  its version change and history row, sent as one message);
- the same without `SET LOCAL lock_timeout`
  (`DDLLimits(table_lock_timeout=None)`): what the
  3 s table-lock limit costs;
- baseline: the same 500 statements executed on one connection, each its own
  (autocommit) transaction: what PostgreSQL itself costs;
- yoyo-migrations 9 (a real peer from PyPI) applying the same SQL files.

Targets: ours / baseline <= 1.25; the lock_timeout costs nothing measurable; ours
faster than yoyo.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from silentpulse_db import run_migrations
from silentpulse_db.migrate.files.statements import _PARSED
from silentpulse_db.settings import DDLLimits

from common import create_database, drop_database, machine, run, server_dsn, write_section

COUNT = 500
ROUNDS = 7


def generate(directory: Path) -> list[str]:
    statements = []
    for v in range(1, COUNT + 1):
        up = f"CREATE TABLE bench_{v:04d} (id int);\n"
        (directory / f"{v:06d}_add_bench_{v:04d}.up.sql").write_text(up)
        (directory / f"{v:06d}_add_bench_{v:04d}.down.sql").write_text(
            f"DROP TABLE bench_{v:04d};\n"
        )
        statements.append(up)
    return statements


def yoyo_layout(source: Path, target: Path) -> None:
    """yoyo reads NAME.sql and NAME.rollback.sql: the same files under its names."""
    for up in sorted(source.glob("*.up.sql")):
        stem = up.name.removesuffix(".up.sql")
        shutil.copy(up, target / f"{stem}.sql")
        shutil.copy(up.with_name(f"{stem}.down.sql"), target / f"{stem}.rollback.sql")


async def ours(dsn: str, source: Path, *, ddl_lock_timeout: float | None = 3.0) -> float:
    # A service applies the files once per process: parse them afresh each round, as
    # its first call would (the cache is for replicas started in one process).
    _PARSED.clear()
    started = time.perf_counter()
    result = await run_migrations(
        dsn, source=source, ddl=DDLLimits(table_lock_timeout=ddl_lock_timeout)
    )
    elapsed = time.perf_counter() - started
    assert len(result.applied) == COUNT
    return elapsed


async def baseline(dsn: str, statements: list[str]) -> float:
    started = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    for sql in statements:
        await conn.execute(sql)
    await conn.close()
    return time.perf_counter() - started


def yoyo(dsn: str, directory: Path) -> float:
    from yoyo import get_backend, read_migrations

    parts = urlsplit(dsn)
    url = parts.geturl()
    started = time.perf_counter()
    backend = get_backend(url)
    migrations = read_migrations(str(directory))
    with backend.lock():
        backend.apply_migrations(backend.to_apply(migrations))
    elapsed = time.perf_counter() - started
    assert len(migrations) == COUNT
    return elapsed


async def main(admin: str) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-apply-"))
    source, yoyo_dir = work / "ours", work / "yoyo"
    source.mkdir()
    yoyo_dir.mkdir()
    statements = generate(source)
    yoyo_layout(source, yoyo_dir)
    times: dict[str, list[float]] = {"baseline": [], "ours": [], "no_limit": [], "yoyo": []}
    try:
        for _ in range(ROUNDS):
            for name in times:
                dsn = await create_database(admin)
                try:
                    if name == "baseline":
                        times[name].append(await baseline(dsn, statements))
                    elif name == "ours":
                        times[name].append(await ours(dsn, source))
                    elif name == "no_limit":  # the same, without SET LOCAL lock_timeout
                        times[name].append(await ours(dsn, source, ddl_lock_timeout=None))
                    else:
                        times[name].append(yoyo(dsn, yoyo_dir))
                finally:
                    await drop_database(admin, dsn)
    finally:
        shutil.rmtree(work)
    med = {k: statistics.median(v) for k, v in times.items()}
    # Ratios of the same round, then their median: the machine's drift between rounds
    # cancels out (each round runs every candidate once, back to back).
    limit_rounds = [o / n for o, n in zip(times["ours"], times["no_limit"], strict=True)]
    paired = {
        "ours": statistics.median(
            o / b for o, b in zip(times["ours"], times["baseline"], strict=True)
        ),
        "limit": statistics.median(limit_rounds),
    }
    overhead_ms = (med["ours"] - med["baseline"]) / COUNT * 1000
    write_section(
        "apply",
        f"""## Applying {COUNT} one-statement migrations

Fresh database each time, {ROUNDS} rounds in alternation, medians; {machine()}.
Reproduce: `.venv/bin/python bench/bench_apply.py`.

| | total | per migration |
|---|---|---|
| baseline: the {COUNT} statements on one connection, autocommit | {med["baseline"]:.3f} s | {med["baseline"] / COUNT * 1000:.3f} ms |
| `run_migrations` | {med["ours"]:.3f} s | {med["ours"] / COUNT * 1000:.3f} ms |
| `run_migrations(ddl=DDLLimits(table_lock_timeout=None))` (no `SET LOCAL lock_timeout`) | {med["no_limit"]:.3f} s | {med["no_limit"] / COUNT * 1000:.3f} ms |
| yoyo-migrations 9.0 (psycopg2), same files | {med["yoyo"]:.3f} s | {med["yoyo"] / COUNT * 1000:.3f} ms |

- `run_migrations` / baseline: **{paired["ours"]:.2f}x** (median of the rounds' ratios; target <= 1.25x)
- **overhead per migration** over the baseline: **{overhead_ms:.3f} ms**
- the 3 s `lock_timeout` per migration, against none: **{paired["limit"]:.3f}x** (median of the rounds' ratios; rounds: {", ".join(f"{r:.3f}" for r in limit_rounds)})
- yoyo / ours: **{med["yoyo"] / med["ours"]:.2f}x** (target > 1: ours faster)
""",
    )


if __name__ == "__main__":
    with server_dsn() as admin:
        run(main(admin))

"""Many replicas start at once: exactly one applies each version, the rest find nothing."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path

import pytest

from silentpulse_db import run_migrations

from helpers import fetch, version_rows, write_migrations

RUNNER = Path(__file__).with_name("runner_process.py")


def slow_set(count: int) -> dict[int, tuple[str, str, str]]:
    """Migrations that take a moment, so that replicas really overlap."""
    return {
        v: (
            f"add_t{v}",
            f"CREATE TABLE t{v} (id int);\nSELECT pg_sleep(0.05);\nINSERT INTO t{v} VALUES ({v});\n",
            f"DROP TABLE t{v};\n",
        )
        for v in range(1, count + 1)
    }


async def assert_each_applied_once(dsn: str, count: int) -> None:
    rows = await fetch(
        dsn,
        "SELECT version, count(*) AS n FROM schema_migrations_history WHERE direction = 'up' "
        "GROUP BY version ORDER BY version",
    )
    assert [(r["version"], r["n"]) for r in rows] == [(v, 1) for v in range(1, count + 1)]
    # Each migration's INSERT ran once: one row per table.
    for v in range(1, count + 1):
        assert [tuple(r) for r in await fetch(dsn, f"SELECT id FROM t{v}")] == [(v,)]
    assert await version_rows(dsn) == [(count, False)]


async def test_twenty_concurrent_calls(
    silentpulse_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = write_migrations(tmp_path, slow_set(5))
    with caplog.at_level(logging.INFO, logger="silentpulse_db.migrate"):
        results = await asyncio.gather(
            *(run_migrations(silentpulse_database, source=source) for _ in range(20))
        )
    # Woken by the holder's release, each waiter asks before trying again: none takes
    # the lock only to find nothing to do (they used to, one after another).
    logged = [r.getMessage() for r in caplog.records]
    assert logged.count("migration lock acquired") == 0
    assert logged.count("stopped waiting for the migration lock: nothing left") == 19
    applied = sorted(a.version for r in results for a in r.applied)
    assert applied == [1, 2, 3, 4, 5]
    assert all(r.version_after == 5 for r in results)
    # Exactly one replica did the work; the other 19 found nothing to do.
    assert sorted(len(r.applied) for r in results) == [0] * 19 + [5]
    await assert_each_applied_once(silentpulse_database, 5)


@pytest.mark.slow
async def test_four_processes(silentpulse_database: str, tmp_path: Path) -> None:
    source = write_migrations(tmp_path, slow_set(5))
    env = {**os.environ, "DATABASE_URL": silentpulse_database}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(RUNNER),
            str(source),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(4)
    ]
    outputs = await asyncio.gather(*(p.communicate() for p in procs))
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
    applied = sorted(v for out, _ in outputs for v in json.loads(out))
    assert applied == [1, 2, 3, 4, 5]
    await assert_each_applied_once(silentpulse_database, 5)

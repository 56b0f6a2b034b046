"""The engine's hook after applying (engine.AfterApply): when it runs, and with what."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from silentpulse_db.migrate.engine import Job, run_request
from silentpulse_db.migrate.files.source import load_source
from silentpulse_db.migrate.plan import Up
from silentpulse_db.settings import ConnectRetry, DDLLimits, Settings

from helpers import simple_set, write_migrations


class Counting:
    """An AfterApply that records each call's ``due`` (its probe: ``probe``'s SQL)."""

    def __init__(self, probe: str) -> None:
        self.probe = probe
        self.calls: list[bool | None] = []

    async def __call__(self, conn: Any, dsn: str, *, due: bool | None) -> None:
        self.calls.append(due)


async def _run(dsn: str, source: Path, after: Counting) -> int:
    given = Settings(ConnectRetry(attempts=1), migration_lock_timeout=5, ddl=DDLLimits())
    job = Job(Up(), load_source(source), "schema_migrations", given, after=after)
    result = await run_request(dsn, job)
    return len(result.applied)


@pytest.mark.parametrize("probe", ["true", "false"])
async def test_the_hook_runs_once_under_the_lock_after_applying_and_when_due_alone(
    silentpulse_database: str, tmp_path: Path, probe: str
) -> None:
    source = write_migrations(tmp_path, simple_set(1))
    applied = Counting(probe)
    assert await _run(silentpulse_database, source, applied) == 1
    assert applied.calls == [None]  # under the lock, asked there: the waiters find it done
    nothing_to_do = Counting(probe)
    assert await _run(silentpulse_database, source, nothing_to_do) == 0
    # As the session's probe read it: due, once; not due, not at all.
    assert nothing_to_do.calls == ([True] if probe == "true" else [])

"""A runner killed, or its connection terminated, in the middle of a slow migration."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from silentpulse_db import MigrationInterruptedError, run_migrations

from helpers import (
    fetch,
    fetchval,
    simple_set,
    sleeping_backend,
    user_tables,
    version_rows,
    wait_for,
    write_migrations,
)

RUNNER = Path(__file__).with_name("runner_process.py")


def with_slow_second(seconds: float) -> dict[int, tuple[str, str, str]]:
    migrations = simple_set(1)
    migrations[2] = (
        "add_slow",
        f"CREATE TABLE slow (id int);\nINSERT INTO slow VALUES (1);\nSELECT pg_sleep({seconds});\n",
        "DROP TABLE slow;\n",
    )
    return migrations


async def start_runner(dsn: str, source: Path, output: int | None) -> asyncio.subprocess.Process:
    """run_migrations in another process (runner_process.py), the DSN in its environment."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(RUNNER),
        str(source),
        env={**os.environ, "DATABASE_URL": dsn},
        stdout=output,
        stderr=output,
    )


@pytest.mark.slow
async def test_sigkill_mid_migration_leaves_previous_version_clean(
    silentpulse_database: str, tmp_path: Path
) -> None:
    source = write_migrations(tmp_path, with_slow_second(60))
    proc = await start_runner(silentpulse_database, source, asyncio.subprocess.PIPE)
    try:
        await wait_for(lambda: _is_not_none(sleeping_backend(silentpulse_database)), timeout=30)
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.returncode is None:
            proc.kill()
    # The server notices the dead client (client_connection_check_interval),
    # rolls back and frees the lock long before the 60 s sleep would end.
    await wait_for(lambda: _is_none(sleeping_backend(silentpulse_database)), timeout=20)
    assert await version_rows(silentpulse_database) == [(1, False)]
    assert await user_tables(silentpulse_database) == {"t1"}

    # The next run applies it (fast this time).
    write_migrations(tmp_path, with_slow_second(0))
    result = await run_migrations(silentpulse_database, source=source, migration_lock_timeout=30)
    assert [a.version for a in result.applied] == [2]
    assert await version_rows(silentpulse_database) == [(2, False)]
    assert [tuple(r) for r in await fetch(silentpulse_database, "SELECT id FROM slow")] == [(1,)]


async def test_terminated_connection_mid_migration(
    silentpulse_database: str, tmp_path: Path
) -> None:
    source = write_migrations(tmp_path, with_slow_second(60))
    runner = asyncio.create_task(run_migrations(silentpulse_database, source=source))
    await wait_for(lambda: _is_not_none(sleeping_backend(silentpulse_database)), timeout=30)
    pid = await sleeping_backend(silentpulse_database)
    assert await fetchval(silentpulse_database, "SELECT pg_terminate_backend($1)", pid)
    with pytest.raises(MigrationInterruptedError) as info:
        await asyncio.wait_for(runner, timeout=30)
    text = str(info.value)
    assert "000002_add_slow.up.sql" in text and "rolled back" in text
    assert await version_rows(silentpulse_database) == [(1, False)]
    assert await user_tables(silentpulse_database) == {"t1"}

    write_migrations(tmp_path, with_slow_second(0))
    result = await run_migrations(silentpulse_database, source=source)
    assert [a.version for a in result.applied] == [2]
    assert await version_rows(silentpulse_database) == [(2, False)]


async def _is_not_none(awaitable: object) -> bool:
    return (await awaitable) is not None  # type: ignore[misc]


async def _is_none(awaitable: object) -> bool:
    return (await awaitable) is None  # type: ignore[misc]


async def test_the_cli_reports_a_lost_connection_in_one_clear_message(
    silentpulse_database: str, tmp_path: Path
) -> None:
    source = write_migrations(tmp_path, with_slow_second(60))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "silentpulse_db",
        "up",
        "--path",
        str(source),
        env={**os.environ, "DATABASE_URL": silentpulse_database},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await wait_for(lambda: _is_not_none(sleeping_backend(silentpulse_database)), timeout=30)
    pid = await sleeping_backend(silentpulse_database)
    assert await fetchval(silentpulse_database, "SELECT pg_terminate_backend($1)", pid)
    _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    stderr = err.decode()
    assert proc.returncode == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    (line,) = lines
    assert line.startswith("silentpulse-db up: error: connection lost while applying ")
    assert "000002_add_slow.up.sql" in line
    assert "rolled back" in line and "stays at version 1, clean" in line
    assert "Run again" in line
    for noise in ("Traceback", "__aexit__", "During handling"):
        assert noise not in stderr
    assert await version_rows(silentpulse_database) == [(1, False)]


async def test_status_and_version_answer_at_once_while_a_migration_runs(
    silentpulse_database: str, tmp_path: Path
) -> None:
    source = write_migrations(tmp_path, with_slow_second(60))
    proc = await start_runner(silentpulse_database, source, asyncio.subprocess.DEVNULL)
    try:
        await wait_for(lambda: _is_not_none(sleeping_backend(silentpulse_database)), timeout=30)
        runner_pid = await sleeping_backend(silentpulse_database)
        for command in ("status", "version"):
            # --lock-timeout 600 (global, before the command: after it, a command that takes
            # no lock refuses it): had they waited for the lock, they would still be waiting.
            done = await asyncio.wait_for(
                asyncio.to_thread(
                    subprocess.run,
                    [
                        sys.executable,
                        "-m",
                        "silentpulse_db",
                        "--lock-timeout",
                        "600",
                        command,
                        "--path",
                        str(source),
                    ],
                    capture_output=True,
                    text=True,
                    env={**os.environ, "DATABASE_URL": silentpulse_database},
                ),
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
            running = [
                line
                for line in (done.stdout + done.stderr).splitlines()
                if "a migration is running" in line
            ]
            assert len(running) == 1, done  # the holder once, though it holds two keys
            assert f"pid {runner_pid}" in running[0]
    finally:
        proc.kill()
        await proc.wait()


async def test_status_on_a_database_never_migrated_creates_nothing(
    silentpulse_database: str, tmp_path: Path
) -> None:
    source = write_migrations(tmp_path, simple_set(1))
    for command in ("status", "version"):
        done = subprocess.run(
            [sys.executable, "-m", "silentpulse_db", command, "--path", str(source)],
            capture_output=True,
            text=True,
            env={**os.environ, "DATABASE_URL": silentpulse_database},
            check=False,
        )
        assert done.returncode == 0 and "no version table" in done.stdout + done.stderr
    assert await user_tables(silentpulse_database) == set()
    assert await fetchval(
        silentpulse_database,
        "SELECT to_regclass('schema_migrations') IS NULL "
        "AND to_regclass('schema_migrations_history') IS NULL",
    )

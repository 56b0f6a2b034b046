"""The shipped test harness: a throwaway server, fresh and migrated databases."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import tempfile
from pathlib import Path

import asyncpg
import pytest

from silentpulse_db import run_migrations
from silentpulse_db.settings import ConnectRetry
from silentpulse_db.testing import PostgresServer

from helpers import fetch, fetchval, simple_set, write_migrations


async def test_server_runs_as_postgres_when_root(silentpulse_postgres: PostgresServer) -> None:
    if silentpulse_postgres.external:
        pytest.skip("external server")
    pid = int((silentpulse_postgres.datadir / "postmaster.pid").read_text().split()[0])
    owner = pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name
    if os.geteuid() == 0:
        assert owner == "postgres"  # PostgreSQL refuses root
    else:
        assert owner == pwd.getpwuid(os.geteuid()).pw_name


async def test_password_authentication(silentpulse_postgres: PostgresServer) -> None:
    if silentpulse_postgres.external:
        pytest.skip("external server")
    assert silentpulse_postgres.password
    assert await fetchval(silentpulse_postgres.dsn, "SELECT 1") == 1
    bad = silentpulse_postgres.dsn.replace(silentpulse_postgres.password, "nope")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(bad)


@pytest.mark.parametrize("round_", [1, 2])
async def test_fresh_database_is_empty_and_new(silentpulse_database: str, round_: int) -> None:
    # Each round creates a table: the other round finding none proves it got a new database.
    tables = await fetch(
        silentpulse_database, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    )
    assert tables == []
    await fetch(silentpulse_database, "CREATE TABLE mine (id int)")


async def test_migrated_database_is_a_copy_per_test(silentpulse_migrated_database: str) -> None:
    version = await fetchval(silentpulse_migrated_database, "SELECT version FROM schema_migrations")
    from silentpulse_db.migrate import load_source

    assert version == load_source().latest
    await fetch(silentpulse_migrated_database, "CREATE TABLE only_here (id int)")


@pytest.mark.slow
async def test_restart_on_the_same_port_while_a_runner_waits(tmp_path: Path) -> None:
    """A server that is down, then starting up, then ready: run_migrations waits it out."""
    if os.environ.get("SILENTPULSE_TEST_DSN"):
        pytest.skip("needs its own server")
    with PostgresServer() as server:
        dsn = server.dsn
        port = server.port
        server.pause()
        runner = asyncio.create_task(
            run_migrations(
                dsn,
                source=write_migrations(tmp_path, simple_set(1)),
                connect=ConnectRetry(attempts=60, wait=0.25),
            )
        )
        await asyncio.sleep(1.5)
        assert not runner.done()
        await asyncio.to_thread(server.start)
        assert server.port == port
        result = await asyncio.wait_for(runner, timeout=60)
        assert result.version_after == 1


@pytest.mark.slow
def test_a_server_left_by_a_killed_session_is_removed_by_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A session killed outright (SIGKILL: no atexit) leaves its server running and its
    files behind; the next throwaway server started stops and deletes them (issue 20, 4)."""
    import signal
    import socket
    import subprocess
    import sys

    monkeypatch.delenv("SILENTPULSE_TEST_DSN", raising=False)  # throwaway servers, both
    code = (
        "import time\n"
        "from silentpulse_db.testing import PostgresServer\n"
        "server = PostgresServer()\n"
        "server.start()\n"
        "print(server.datadir.parent, server.port, flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SILENTPULSE_TEST_DSN"}
    session = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env
    )
    assert session.stdout is not None
    folder, port = session.stdout.readline().split()
    os.kill(session.pid, signal.SIGKILL)
    session.wait()
    left = Path(folder)

    def accepts() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", int(port))) == 0

    assert accepts() and left.exists()  # still running, and nobody left to stop it
    with PostgresServer():
        assert not left.exists()
        assert not accepts()


def test_the_server_lives_in_memory_where_it_can(
    silentpulse_postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Its folder goes to /dev/shm where that has 1 GiB free (a database created there
    costs a tenth of one on ext4), else to the temporary directory;
    SILENTPULSE_TEST_DIR chooses, and the reaper looks in all three."""
    from silentpulse_db.testing import server

    if silentpulse_postgres.external:
        pytest.skip("external server")
    chosen = os.environ.get(server.ENV_DIR)
    monkeypatch.delenv(server.ENV_DIR, raising=False)
    roomy = server.MEMORY_DIR.is_dir() and (
        os.access(server.MEMORY_DIR, os.W_OK)
        and shutil.disk_usage(server.MEMORY_DIR).free >= server.MEMORY_FREE
    )
    expected = server.MEMORY_DIR if roomy else Path(tempfile.gettempdir())
    assert server.server_parent() == expected
    assert silentpulse_postgres.datadir.parent.parent == Path(chosen or expected)
    monkeypatch.setattr(server, "MEMORY_FREE", 1 << 60)  # a container's small /dev/shm
    assert server.server_parent() == Path(tempfile.gettempdir())
    monkeypatch.setenv(server.ENV_DIR, str(tmp_path))
    assert server.server_parent() == tmp_path
    assert tmp_path in server._server_parents()

"""Concurrent index builds and drops interrupted (issue 28, items 8-10): a client killed
while the server goes on building, a connection terminated mid-build or mid-drop, a
backend still building when the rerun starts. A plain rerun finishes each, and what
every message advises works.

The server notices a killed client within client_connection_check_interval (2 s) and
ends its statement; a build shorter than that finishes first, and the version stays
dirty with a VALID index. To make that deterministic the killed client talks to the
server through :class:`OrphanKeeper`, a proxy that keeps the server's side of the
connection open after the client is gone (as a client lost behind NAT, or a build that
ends before the server looks): the orphaned backend goes on, holding the migration lock,
until the test lets it go.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from silentpulse_db import ForceRefusedError, MigrationInterruptedError, run_migrations
from silentpulse_db.migrate import down, force, status

from helpers import execute, fetch, fetchval, version_rows, wait_for, write_migrations

RUNNER = Path(__file__).parent.parent / "runner_process.py"
TABLE = ("add_t1", "CREATE TABLE t1 (id int, v int);\n", "DROP TABLE t1;\n")
INDEX = (
    "create_index_t1_v",
    "CREATE UNIQUE INDEX CONCURRENTLY t1_v_key ON t1 (v);\n",
    "DROP INDEX CONCURRENTLY IF EXISTS t1_v_key;\n",
)
AFTER = ("add_t3", "CREATE TABLE t3 (id int);\n", "DROP TABLE t3;\n")
FILES = {1: TABLE, 2: INDEX, 3: AFTER}
VALID = "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('t1_v_key')"
INDEX_OID = "SELECT to_regclass('t1_v_key')::oid"


class OrphanKeeper:
    """A TCP proxy to the database server that keeps the server's side of a connection
    open after its client is gone, until :meth:`release`."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        parts = urlsplit(dsn)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 5432
        self.upstreams: list[asyncio.StreamWriter] = []
        self.pipes: list[asyncio.Task[None]] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        """Listen; the DSN that goes through the proxy."""
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        parts = urlsplit(self.dsn)
        netloc = parts.netloc.rsplit("@", 1)
        user = netloc[0] + "@" if len(netloc) == 2 else ""
        return parts._replace(netloc=f"{user}127.0.0.1:{port}").geturl()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection(self.host, self.port)
        self.upstreams.append(up_w)
        # The client's end: the server's side stays open (no EOF passed on).
        self.pipes.append(asyncio.ensure_future(_pipe(client_r, up_w, close=False)))
        self.pipes.append(asyncio.ensure_future(_pipe(up_r, client_w, close=True)))

    async def release(self) -> None:
        """Close the server's side of every connection: its backend ends, as when the
        server finally notices its client is gone."""
        for writer in self.upstreams:
            writer.close()
        self.upstreams.clear()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        await self.release()
        for pipe in self.pipes:
            pipe.cancel()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, close: bool) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        if close:
            writer.close()


@asynccontextmanager
async def orphan_keeper(dsn: str) -> AsyncIterator[tuple[OrphanKeeper, str]]:
    keeper = OrphanKeeper(dsn)
    proxied = await keeper.start()
    try:
        yield keeper, proxied
    finally:
        await keeper.close()


async def holding_writes(dsn: str, table: str = "t1") -> asyncpg.Connection:
    """A transaction that may write ``table`` (ROW EXCLUSIVE held): a concurrent build of
    an index on it waits for it to end, its index already there, INVALID."""
    conn = await asyncpg.connect(dsn)
    await conn.execute(f"BEGIN; LOCK TABLE {table} IN ROW EXCLUSIVE MODE")
    return conn


async def reading(dsn: str, table: str = "t1") -> asyncpg.Connection:
    """A transaction that has read ``table``: a concurrent drop of its index marks it
    INVALID, then waits for it to end."""
    conn = await asyncpg.connect(dsn)
    await conn.execute(f"BEGIN; SELECT count(*) FROM {table}")
    return conn


async def building(dsn: str, index: str = "t1_v_key") -> int | None:
    """The pid of the backend whose concurrent build of ``index`` is waiting (for the
    transactions before it), if there is one."""
    pid: int | None = await fetchval(
        dsn,
        "SELECT pid FROM pg_stat_progress_create_index "
        "WHERE index_relid = to_regclass($1) AND phase LIKE 'waiting%' "
        "AND datname = current_database()",
        index,
    )
    return pid


async def dropping(dsn: str) -> int | None:
    """The pid of the runner's DROP INDEX CONCURRENTLY, once it waits for a lock."""
    pid: int | None = await fetchval(
        dsn,
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'silentpulse-db' "
        "AND query LIKE 'DROP INDEX CONCURRENTLY%' AND wait_event_type = 'Lock' "
        "AND datname = current_database()",
    )
    return pid


async def backend_state(dsn: str, pid: int) -> str | None:
    state: str | None = await fetchval(
        dsn, "SELECT state FROM pg_stat_activity WHERE pid = $1", pid
    )
    return state


async def until(check: Any) -> Any:
    """Wait until ``check()`` returns something truthy; return it."""
    found: list[Any] = []

    async def ready() -> bool:
        found[:] = [await check()]
        return bool(found[0])

    await wait_for(ready, timeout=60)
    return found[0]


async def cli(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The operator's CLI in a process of its own (off the event loop: a proxy in this
    test may be serving it)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "POSTGRES_DSN")}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "silentpulse_db", *args],
        capture_output=True,
        text=True,
        env={**env, "DATABASE_URL": dsn},
        timeout=180,
        check=False,
    )


async def history(dsn: str) -> list[tuple[int, str]]:
    rows = await fetch(dsn, "SELECT version, direction FROM schema_migrations_history ORDER BY id")
    return [(r["version"], r["direction"]) for r in rows]


async def with_rows(dsn: str, tmp_path: Path) -> Path:
    source = write_migrations(tmp_path, FILES)
    await run_migrations(dsn, source=source, target=1, partitions_ahead=None)
    await execute(dsn, "INSERT INTO t1 SELECT g, g FROM generate_series(1, 200) AS g")
    return source


# --- item 8: the client killed, the server finishing the build --------------------------


@pytest.mark.slow
async def test_a_killed_clis_build_the_server_finished_is_recorded_by_a_plain_rerun(
    silentpulse_database: str, tmp_path: Path
) -> None:
    dsn = silentpulse_database
    source = await with_rows(dsn, tmp_path)
    writer = await holding_writes(dsn)
    async with orphan_keeper(dsn) as (keeper, proxied):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "silentpulse_db",
            "up",
            "--path",
            str(source),
            env={**os.environ, "DATABASE_URL": proxied},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            orphan = await until(lambda: building(dsn))  # provably building, blocked
            os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await writer.execute("COMMIT")
        await writer.close()
        # The orphaned backend finishes the index without its client, and stays.
        await until(lambda: fetchval(dsn, VALID))
        await until(lambda: _is(backend_state(dsn, orphan), "idle"))
        assert await version_rows(dsn) == [(2, True)]
        await keeper.release()
        await until(lambda: _is(backend_state(dsn, orphan), None))  # its lock gone with it

    rerun = await cli(dsn, "up", "--path", str(source))
    assert rerun.returncode == 0, rerun.stderr
    assert "already built, valid and as this file defines it" in rerun.stderr
    assert await version_rows(dsn) == [(3, False)]
    assert await fetchval(dsn, VALID) is True
    assert (await history(dsn))[-2:] == [(2, "up"), (3, "up")]
    # status shows nothing INVALID, and a `force` the old message advised is not needed.
    status = await cli(dsn, "status", "--path", str(source))
    assert "INVALID" not in status.stdout + status.stderr


@pytest.mark.slow
async def test_replicas_finish_the_version_their_killed_lock_holder_left_dirty(
    silentpulse_database: str, tmp_path: Path
) -> None:
    """Three replicas start together; the one holding the lock is killed mid-build, the
    server finishes the index. The other two had been waiting for the lock: one records
    the version and goes on, the other finds nothing left."""
    dsn = silentpulse_database
    source = await with_rows(dsn, tmp_path)
    writer = await holding_writes(dsn)
    replicas: list[asyncio.subprocess.Process] = []

    async def replica(database_url: str) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(RUNNER),
            str(source),
            env={**os.environ, "DATABASE_URL": database_url},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        replicas.append(proc)
        return proc

    try:
        async with orphan_keeper(dsn) as (keeper, proxied):
            holder = await replica(proxied)
            orphan = await until(lambda: building(dsn))
            others = [await replica(dsn), await replica(dsn)]
            # Both wait for the lock (the holder's backend has it) before it is killed.
            await until(lambda: _waiting_for_the_lock(dsn, 2))
            os.kill(holder.pid, signal.SIGKILL)
            await holder.wait()
            await writer.execute("COMMIT")
            await until(lambda: fetchval(dsn, VALID))
            await until(lambda: _is(backend_state(dsn, orphan), "idle"))
            assert await version_rows(dsn) == [(2, True)]
            await keeper.release()
        outputs = [await asyncio.wait_for(p.communicate(), timeout=120) for p in others]
    finally:
        await writer.close()
        for proc in replicas:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    for proc, (_out, err) in zip(others, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
    applied = sorted(json.loads(out.decode().strip().splitlines()[-1]) for out, _ in outputs)
    assert applied == [[], [2, 3]]
    assert await version_rows(dsn) == [(3, False)]
    assert await fetchval(dsn, VALID) is True


async def _waiting_for_the_lock(dsn: str, count: int) -> bool:
    waiting = await fetchval(
        dsn,
        "SELECT count(DISTINCT pid) FROM pg_stat_activity WHERE application_name = "
        "'silentpulse-db' AND datname = current_database() AND state = 'idle' "
        "AND pid NOT IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory')",
    )
    return bool(waiting >= count)


async def test_a_rerun_waits_for_a_backend_still_building_the_index(
    silentpulse_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The version dirty, and the index still being built by a backend that does not
    hold the migration lock (a build by hand, another tool): the rerun waits for it,
    saying so, instead of dropping the index under it; then records the version."""
    dsn = silentpulse_database
    source = await with_rows(dsn, tmp_path)
    await execute(dsn, "UPDATE schema_migrations SET version = 2, dirty = true")
    writer = await holding_writes(dsn)
    builder = await asyncpg.connect(dsn, server_settings={"application_name": "by-hand"})
    build = asyncio.ensure_future(builder.execute(INDEX[1]))
    try:
        await until(lambda: building(dsn))
        oid = await fetchval(dsn, INDEX_OID)
        with caplog.at_level(logging.WARNING, logger="silentpulse_db"):
            rerun = asyncio.ensure_future(
                run_migrations(dsn, source=source, partitions_ahead=None, migration_lock_timeout=60)
            )
            await until(lambda: _logged(caplog, "is being built or dropped by another backend"))
            assert "'by-hand'" in caplog.text
            assert not rerun.done() and await fetchval(dsn, INDEX_OID) == oid
            await writer.execute("COMMIT")
            await asyncio.wait_for(build, timeout=60)
            result = await asyncio.wait_for(rerun, timeout=60)
    finally:
        await writer.close()
        build.cancel()
        await builder.close()
    assert [a.version for a in result.applied] == [2, 3]
    assert await fetchval(dsn, INDEX_OID) == oid  # the builder's index, not dropped
    assert await fetchval(dsn, VALID) is True
    assert await version_rows(dsn) == [(3, False)]


async def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return text in caplog.text


async def _is(awaitable: Any, expected: Any) -> bool:
    return bool((await awaitable) == expected)


async def test_the_advice_force_below_then_up_works_on_a_complete_index(
    silentpulse_database: str, tmp_path: Path
) -> None:
    """What the old message advised first (`force 1`, then `up`) failed with "already
    exists" on a complete index: `up` now records it."""
    dsn = silentpulse_database
    source = await with_rows(dsn, tmp_path)
    await execute(dsn, INDEX[1])  # built, valid: as an orphaned build leaves it
    await execute(dsn, "UPDATE schema_migrations SET version = 2, dirty = true")
    forced = await cli(dsn, "force", "1", "--path", str(source))
    assert forced.returncode == 0, forced.stderr
    again = await cli(dsn, "up", "--path", str(source))
    assert again.returncode == 0, again.stderr
    assert await version_rows(dsn) == [(3, False)]


async def test_an_index_of_that_name_that_is_not_the_files_is_left_to_the_operator(
    silentpulse_database: str, tmp_path: Path
) -> None:
    """Valid, but on another column: not the file's index, so not recorded as its build.
    The message shows what is there; the `force` it advises works."""
    dsn = silentpulse_database
    source = await with_rows(dsn, tmp_path)
    await execute(dsn, "CREATE UNIQUE INDEX t1_v_key ON t1 (id)")
    first = await cli(dsn, "up", "--path", str(source))
    assert first.returncode == 1 and "(SQLSTATE 42P07)" in first.stderr
    assert "is not the index this file builds" in first.stderr
    assert "INVALID" not in first.stderr  # it is valid: the old message said otherwise
    assert await version_rows(dsn) == [(2, True)]
    refused = await cli(dsn, "up", "--path", str(source))
    assert refused.returncode == 1
    assert "is not the one the file builds (found: CREATE UNIQUE INDEX t1_v_key" in refused.stderr
    assert await version_rows(dsn) == [(2, True)]
    forced = await cli(dsn, "force", "2", "--path", str(source))
    assert forced.returncode == 0, forced.stderr


# --- item 9: the build's connection terminated -------------------------------------------


async def test_a_terminated_build_says_run_again_and_force_onto_it_is_refused(
    silentpulse_database: str, tmp_path: Path
) -> None:
    dsn = silentpulse_database
    source = await with_rows(dsn, tmp_path)
    writer = await holding_writes(dsn)
    try:
        runner = asyncio.ensure_future(run_migrations(dsn, source=source, partitions_ahead=None))
        pid = await until(lambda: building(dsn))
        assert await fetchval(dsn, "SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(MigrationInterruptedError) as info:
            await asyncio.wait_for(runner, timeout=60)
    finally:
        await writer.close()
    text = str(info.value)
    assert "000002_create_index_t1_v.up.sql" in text and "dirty at version 2" in text
    assert "`silentpulse-db up` again" in text
    assert "force the version" not in text and "Do not `force`" in text
    assert await version_rows(dsn) == [(2, True)]
    assert await fetchval(dsn, VALID) is False

    # force onto the version whose index is INVALID: refused, by name, nothing written.
    with pytest.raises(ForceRefusedError, match=r"index t1_v_key .* is INVALID") as refused:
        await force(dsn, 2, source=source)
    assert "`silentpulse-db up`" in str(refused.value)
    shown = await cli(dsn, "force", "2", "--path", str(source))
    assert shown.returncode == 1 and "t1_v_key" in shown.stderr
    assert await version_rows(dsn) == [(2, True)]

    # The advice works: a plain rerun rebuilds it and goes on.
    result = await run_migrations(dsn, source=source, partitions_ahead=None)
    assert [a.version for a in result.applied] == [2, 3]
    assert await fetchval(dsn, VALID) is True
    assert await version_rows(dsn) == [(3, False)]


# --- item 10: an interrupted down gets its own message --------------------------------


async def test_an_interrupted_concurrent_drop_names_the_down_and_its_rerun_finishes_it(
    silentpulse_database: str, tmp_path: Path
) -> None:
    dsn = silentpulse_database
    source = await with_rows(dsn, tmp_path)
    await run_migrations(dsn, source=source, partitions_ahead=None)
    reader = await reading(dsn)
    try:
        task = asyncio.ensure_future(down(dsn, 2, source=source))
        pid = await until(lambda: dropping(dsn))
        assert await fetchval(dsn, "SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(MigrationInterruptedError) as info:
            await asyncio.wait_for(task, timeout=60)
    finally:
        await reader.close()
    text = str(info.value)
    assert "000002_create_index_t1_v.down.sql" in text
    assert "dirty at version 1, on its way down from version 2" in text
    assert "`silentpulse-db down 1`" in text and "goto 1" in text
    assert ".up.sql" not in text and "force the version" not in text
    assert await version_rows(dsn) == [(1, True)]
    assert await fetchval(dsn, VALID) is False  # half dropped

    # The same down again finishes it: version 1, clean, the index gone, t1 kept.
    again = await cli(dsn, "down", "1", "--path", str(source))
    assert again.returncode == 0, again.stderr
    assert await version_rows(dsn) == [(1, False)]
    assert await fetchval(dsn, INDEX_OID) is None
    assert await fetchval(dsn, "SELECT to_regclass('t1') IS NOT NULL")
    assert (await history(dsn))[-1] == (2, "down")


async def test_after_an_interrupted_drop_up_builds_the_index_anew(
    silentpulse_database: str, tmp_path: Path
) -> None:
    dsn = silentpulse_database
    source = await with_rows(dsn, tmp_path)
    await run_migrations(dsn, source=source, partitions_ahead=None)
    reader = await reading(dsn)
    try:
        task = asyncio.ensure_future(down(dsn, 2, source=source))
        pid = await until(lambda: dropping(dsn))
        assert await fetchval(dsn, "SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(MigrationInterruptedError):
            await asyncio.wait_for(task, timeout=60)
    finally:
        await reader.close()
    assert await version_rows(dsn) == [(1, True)]
    result = await run_migrations(dsn, source=source, partitions_ahead=None)
    assert [a.version for a in result.applied] == [2, 3]
    assert await fetchval(dsn, VALID) is True
    assert await version_rows(dsn) == [(3, False)]


async def test_an_interrupted_transactional_down_stays_at_its_version_clean(
    silentpulse_database: str, tmp_path: Path
) -> None:
    dsn = silentpulse_database
    slow_down = ("add_t2", "CREATE TABLE t2 (id int);\n", "DROP TABLE t2;\nSELECT pg_sleep(60);\n")
    source = write_migrations(tmp_path, {1: TABLE, 2: slow_down})
    await run_migrations(dsn, source=source, partitions_ahead=None)
    task = asyncio.ensure_future(down(dsn, 1, source=source))
    pid = await until(
        lambda: fetchval(
            dsn,
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'silentpulse-db' "
            "AND query LIKE '%pg_sleep%' AND state = 'active' AND datname = current_database()",
        )
    )
    assert await fetchval(dsn, "SELECT pg_terminate_backend($1)", pid)
    with pytest.raises(MigrationInterruptedError) as info:
        await asyncio.wait_for(task, timeout=60)
    text = str(info.value)
    assert "000002_add_t2.down.sql" in text and "stays at version 2, clean" in text
    assert "Run again" in text and "dirty" not in text
    assert await version_rows(dsn) == [(2, False)]
    assert await fetchval(dsn, "SELECT to_regclass('t2') IS NOT NULL")


# --- a redundant index dropped concurrently (its down builds it again) ------------------

DROPPED = (
    "drop_index_t1_v",
    "DROP INDEX CONCURRENTLY IF EXISTS t1_v_key;\n",
    "CREATE UNIQUE INDEX CONCURRENTLY t1_v_key ON t1 (v);\n",
)


async def test_an_interrupted_drop_up_or_build_down_is_finished_by_the_same_command(
    silentpulse_database: str, tmp_path: Path
) -> None:
    """A migration whose up drops an index concurrently (000052-000058), whose down builds
    it again: stopped partway either way, the same command run again finishes it."""
    dsn = silentpulse_database
    source = write_migrations(tmp_path, {1: TABLE, 2: INDEX, 3: DROPPED})
    await run_migrations(dsn, source=source, target=2, partitions_ahead=None)
    await execute(dsn, "INSERT INTO t1 SELECT g, g FROM generate_series(1, 200) AS g")

    reader = await reading(dsn)
    try:
        task = asyncio.ensure_future(run_migrations(dsn, source=source, partitions_ahead=None))
        pid = await until(lambda: dropping(dsn))
        assert await fetchval(dsn, "SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(MigrationInterruptedError) as info:
            await asyncio.wait_for(task, timeout=60)
    finally:
        await reader.close()
    assert "the concurrent drop of index t1_v_key may not have completed" in str(info.value)
    assert "run `silentpulse-db up` again" in str(info.value)
    assert await version_rows(dsn) == [(3, True)]
    again = await cli(dsn, "up", "--path", str(source))
    assert again.returncode == 0, again.stderr
    assert "version 3's concurrent drop of index t1_v_key stopped partway" in again.stderr
    assert await version_rows(dsn) == [(3, False)]
    assert await fetchval(dsn, INDEX_OID) is None

    writer = await holding_writes(dsn)
    try:
        task = asyncio.ensure_future(down(dsn, 1, source=source))
        pid = await until(lambda: building(dsn))
        assert await fetchval(dsn, "SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(MigrationInterruptedError) as info:
            await asyncio.wait_for(task, timeout=60)
    finally:
        await writer.close()
    assert "run the same down again, `silentpulse-db down 1`" in str(info.value)
    assert await version_rows(dsn) == [(2, True)]
    assert await fetchval(dsn, VALID) is False
    # status's advice for the INVALID index names the down, not an `up` that would undo it.
    (advice,) = (await status(dsn, source=source)).invalid_indexes
    assert "t1_v_key on t1 is INVALID" in advice and "the `down` or `goto`" in advice
    again = await cli(dsn, "down", "1", "--path", str(source))
    assert again.returncode == 0, again.stderr
    assert await version_rows(dsn) == [(2, False)]
    assert await fetchval(dsn, VALID) is True
    assert (await history(dsn))[-1] == (3, "down")

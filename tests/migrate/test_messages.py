"""A migration as a few messages (issue 13): the same errors, lines and guarantees as one
statement at a time, and a lock release that wakes the waiting replicas."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from silentpulse_db import MigrationFailedError, run_migrations
from silentpulse_db.settings import DDLLimits

from helpers import (
    fetchval,
    hold_migration_lock,
    lock_keys,
    user_tables,
    version_rows,
    wait_for,
    write_migrations,
)


def _many(count: int, bad_at: int | None = None, bad: str = "") -> str:
    lines = [f"INSERT INTO t VALUES ({i});" for i in range(count)]
    if bad_at is not None:
        lines[bad_at - 2] = bad  # line 1 is CREATE TABLE
    return "CREATE TABLE t (id int PRIMARY KEY);\n" + "\n".join(lines) + "\n"


ONE_TABLE = {1: ("t", "CREATE TABLE t (id int);\n", "DROP TABLE t;\n")}


def _polls(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Set the waiters' fallback poll (120 s: only a NOTIFY or a try can wake them)."""
    from silentpulse_db.migrate import session as waiting

    monkeypatch.setattr(waiting, "LOCK_POLL_FIRST", seconds)
    monkeypatch.setattr(waiting, "LOCK_POLL_MAX", seconds)


def _release_before_listen(
    monkeypatch: pytest.MonkeyPatch,
    holder: asyncpg.Connection,
    then: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """The waiter's LISTEN on the lock channel first closes ``holder`` (its keys are
    free from then on, and no NOTIFY says so), then awaits ``then``."""
    listen = asyncpg.Connection.add_listener

    async def late_listen(conn: asyncpg.Connection, channel: str, callback: Any) -> None:
        if channel.startswith("silentpulse_migration_lock_") and not holder.is_closed():
            await holder.close()
            if then is not None:
                await then()
        await listen(conn, channel, callback)

    monkeypatch.setattr(asyncpg.Connection, "add_listener", late_listen)


@pytest.mark.parametrize(
    ("bad", "line", "column"),
    [
        ("INSERT INTO t VALUES (1);", 251, None),  # no position: located by replay
        ("INSERT INTO t VALUES (nope);", 251, 23),  # positioned, in the third message
        ("INSERT INTO nowhere VALUES (1);", 3, 13),  # first message
    ],
)
async def test_errors_name_the_line_in_any_message(
    silentpulse_database: str, tmp_path: Path, bad: str, line: int, column: int | None
) -> None:
    body = _many(300, bad_at=line, bad=bad)
    source = write_migrations(tmp_path, {1: ("many", body, "DROP TABLE t;\n")})
    with pytest.raises(MigrationFailedError) as info:
        await run_migrations(silentpulse_database, source=source)
    assert (info.value.line, info.value.column) == (line, column), str(info.value)
    assert not info.value.dirty and f"{line:>6} | {bad}" in str(info.value)
    assert await version_rows(silentpulse_database) == []
    assert "t" not in await user_tables(silentpulse_database)  # all rolled back


async def test_an_error_at_commit_is_named_and_rolled_back(
    silentpulse_database: str, tmp_path: Path
) -> None:
    body = (
        "CREATE TABLE p (id int PRIMARY KEY);\n"
        "CREATE TABLE c (p int REFERENCES p DEFERRABLE INITIALLY DEFERRED);\n"
        "INSERT INTO c VALUES (42);\n"
    )
    source = write_migrations(tmp_path, {1: ("deferred", body, "DROP TABLE c, p;\n")})
    with pytest.raises(MigrationFailedError) as info:
        await run_migrations(silentpulse_database, source=source)
    assert "at COMMIT (a deferred constraint or trigger)" in str(info.value)
    assert info.value.sqlstate == "23503" and not info.value.dirty
    assert await version_rows(silentpulse_database) == []
    assert not {"p", "c"} & await user_tables(silentpulse_database)


async def test_the_history_records_the_whole_transaction(
    silentpulse_database: str, tmp_path: Path
) -> None:
    body = "CREATE TABLE slow AS SELECT 1 AS s FROM pg_sleep(0.3);\n"
    source = write_migrations(tmp_path, {1: ("slow", body, "DROP TABLE slow;\n")})
    await run_migrations(silentpulse_database, source=source)
    duration = await fetchval(
        silentpulse_database, "SELECT duration_ms FROM schema_migrations_history"
    )
    assert duration >= 300  # measured by the server, from BEGIN to the history row


async def test_a_waiting_replica_wakes_when_the_holder_releases(
    silentpulse_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Polls far apart: only the holder's NOTIFY can wake the waiter in time.
    _polls(monkeypatch, 120.0)
    dsn = silentpulse_database
    source = write_migrations(tmp_path, ONE_TABLE)
    holder = await hold_migration_lock(dsn)
    listener = await asyncpg.connect(dsn)
    heard: list[str] = []
    keys = await lock_keys(listener)
    await listener.add_listener(
        f"silentpulse_migration_lock_{keys.url_path}", lambda *args: heard.append(args[2])
    )
    try:
        waiter = asyncio.create_task(run_migrations(dsn, source=source, migration_lock_timeout=600))
        await asyncio.sleep(1.0)  # it is waiting, with its first poll two minutes away
        assert not waiter.done()
        await holder.close()  # a golang-migrate holder: no NOTIFY; the waiter keeps waiting
        await asyncio.sleep(0.5)
        first = await run_migrations(dsn, source=source)  # takes and releases the lock
        assert [a.version for a in first.applied] == [1]
        result = await asyncio.wait_for(waiter, 30)  # woken by the release, not the poll
        assert result.applied == () and result.version_after == 1
        assert heard  # the release was announced
    finally:
        await listener.close()
        if not holder.is_closed():
            await holder.close()


async def test_a_release_just_before_the_waiter_listens_is_not_missed(
    silentpulse_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The holder lets go after the waiter's failed try but before its LISTEN: no NOTIFY
    reaches the waiter, which must not sleep a whole poll for it."""
    _polls(monkeypatch, 120.0)
    dsn = silentpulse_database
    source = write_migrations(tmp_path, ONE_TABLE)
    holder = await hold_migration_lock(dsn)
    _release_before_listen(monkeypatch, holder)
    try:
        result = await asyncio.wait_for(
            run_migrations(dsn, source=source, migration_lock_timeout=600), 30
        )
        assert [a.version for a in result.applied] == [1]
        assert holder.is_closed()  # the race really happened
    finally:
        if not holder.is_closed():
            await holder.close()


async def test_a_release_just_before_the_waiter_listens_does_not_make_it_take_the_lock(
    silentpulse_database: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Another replica does all the work and releases between this waiter's failed try
    and its LISTEN: the waiter finds nothing left and returns without taking the lock
    (a review found the try after the LISTEN took it for nothing)."""
    _polls(monkeypatch, 120.0)
    dsn = silentpulse_database
    source = write_migrations(tmp_path, ONE_TABLE)
    holder = await hold_migration_lock(dsn)
    # Another replica applies and releases in that moment: no one hears it.
    _release_before_listen(monkeypatch, holder, then=lambda: run_migrations(dsn, source=source))
    with caplog.at_level(logging.INFO, logger="silentpulse_db.migrate"):
        result = await asyncio.wait_for(
            run_migrations(dsn, source=source, migration_lock_timeout=600), 30
        )
    logged = [r.getMessage() for r in caplog.records]
    assert result.applied == () and result.version_after == 1
    assert "migration lock acquired" not in logged
    assert "stopped waiting for the migration lock: nothing left" in logged


async def test_a_waiter_polls_a_database_without_tables_until_the_holder_lets_go(
    silentpulse_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A golang-migrate holder that has made no tables: each poll asks whether they
    exist ("not done" while they do not), then tries again; the waiter migrates once
    the holder lets go."""
    _polls(monkeypatch, 0.05)
    dsn = silentpulse_database
    source = write_migrations(tmp_path, ONE_TABLE)
    holder = await hold_migration_lock(dsn)  # no tables, no NOTIFY: only the polls
    try:
        waiter = asyncio.create_task(run_migrations(dsn, source=source, migration_lock_timeout=600))
        await asyncio.sleep(0.5)  # several polls, each finding no tables
        assert not waiter.done()
        await holder.close()
        result = await asyncio.wait_for(waiter, 30)
        assert [a.version for a in result.applied] == [1]
    finally:
        if not holder.is_closed():
            await holder.close()


async def test_an_error_in_prerequisites_names_its_line(
    silentpulse_database: str, tmp_path: Path
) -> None:
    from silentpulse_db.migrate import apply_prerequisites

    source = write_migrations(tmp_path, {1: ("t", "CREATE TABLE t (id int);\n", "DROP TABLE t;\n")})
    (tmp_path / "prerequisites.sql").write_text("-- extensions\nSELECT 1;\nSELECT nope;\n")
    with pytest.raises(MigrationFailedError) as info:
        await apply_prerequisites(silentpulse_database, source=source)
    assert (info.value.line, info.value.column) == (3, 8)
    assert "prerequisites.sql line 3, column 8" in str(info.value)


async def test_a_long_failed_migration_is_not_replayed(
    silentpulse_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from silentpulse_db.migrate.run import locate

    monkeypatch.setattr(locate, "REPLAY_LIMIT", 0.0)  # every attempt is "long"
    body = "CREATE TABLE t (id int PRIMARY KEY);\nINSERT INTO t VALUES (1);\nINSERT INTO t VALUES (1);\n"
    source = write_migrations(tmp_path, {1: ("dup", body, "DROP TABLE t;\n")})
    with pytest.raises(MigrationFailedError) as info:
        await run_migrations(silentpulse_database, source=source)
    assert "in one of the statements of lines 1-3, or at COMMIT" in str(info.value)
    assert info.value.sqlstate == "23505" and info.value.line is None
    assert await version_rows(silentpulse_database) == []


async def test_a_file_that_moves_search_path_keeps_the_version_where_it_was(
    silentpulse_database: str, tmp_path: Path
) -> None:
    dsn = silentpulse_database
    moves = (
        "CREATE SCHEMA app2;\n"
        "CREATE TABLE app2.schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL);\n"
        "SET search_path = app2;\n"
        "CREATE TABLE x (id int);\n"
    )
    files = {
        1: ("base", "CREATE TABLE base (id int);\n", "DROP TABLE base;\n"),
        2: ("moves", moves, "DROP SCHEMA app2 CASCADE;\n"),
        3: ("y", "CREATE TABLE y (id int);\n", "DROP TABLE y;\n"),
    }
    source = write_migrations(tmp_path, files)
    result = await run_migrations(dsn, source=source)
    assert result.version_after == 3
    assert await version_rows(dsn) == [(3, False)]  # public.schema_migrations
    assert await fetchval(dsn, "SELECT count(*) FROM app2.schema_migrations") == 0
    assert (await run_migrations(dsn, source=source)).applied == ()


async def test_a_deadlock_with_the_application_is_retried(
    silentpulse_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    dsn = silentpulse_database
    base = ("ab", "CREATE TABLE a (id int);\nCREATE TABLE b (id int);\n", "DROP TABLE a, b;\n")
    crosses = (
        "cross",
        "LOCK TABLE a IN ACCESS EXCLUSIVE MODE;\nSELECT pg_sleep(0.5);\n"
        "ALTER TABLE b ADD COLUMN y int;\n",
        "ALTER TABLE b DROP COLUMN y;\n",
    )
    source = write_migrations(tmp_path, {1: base})
    await run_migrations(dsn, source=source)
    write_migrations(tmp_path, {2: crosses})
    app = await asyncpg.connect(dsn, server_settings={"deadlock_timeout": "20s"})
    try:
        await app.execute("BEGIN; LOCK TABLE b IN ACCESS SHARE MODE;")
        with caplog.at_level(logging.WARNING, logger="silentpulse_db"):
            migrating = asyncio.create_task(
                run_migrations(
                    dsn, source=source, ddl=DDLLimits(table_lock_timeout=30, retry_for=60)
                )
            )
            await asyncio.sleep(0.2)  # the migration holds a, sleeps, then waits for b
            # The application now wants a: a deadlock, which the migration's backend
            # (deadlock_timeout 1 s, against 20 s here) detects and loses.
            await app.fetchval("SELECT count(*) FROM a")
            await app.execute("COMMIT")
            result = await asyncio.wait_for(migrating, 60)
    finally:
        await app.close()
    assert [a.version for a in result.applied] == [2]
    assert "a deadlock with another session" in caplog.text
    assert await version_rows(dsn) == [(2, False)]


async def test_a_waiter_that_gives_up_holding_the_first_key_tells_the_others(
    silentpulse_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An embedded golang-migrate runner holds only the second key: our waiter takes the
    first and waits for the second. When it stops waiting (nothing left to do), its
    release of the first key NOTIFYs, or replicas queued on that key sleep a poll."""
    from silentpulse_db.migrate import session as waiting
    from silentpulse_db.migrate.engine import lock_unless_no_change

    _polls(monkeypatch, 0.05)
    dsn = silentpulse_database
    embedded, waiter, listener = [await asyncpg.connect(dsn) for _ in range(3)]
    try:
        keys = await lock_keys(embedded)
        await embedded.execute("SELECT pg_advisory_lock($1)", keys.current_database)
        heard: list[str] = []
        channel = f"silentpulse_migration_lock_{keys.url_path}"
        await listener.add_listener(channel, lambda *args: heard.append(args[2]))
        asked = 0

        class Check:  # the engine's NoChangeCheck: answers at its third asking
            async def settled(self) -> str | None:
                nonlocal asked
                asked += 1
                return "nothing left" if asked == 3 else None

        lock = waiting.MigrationLock(waiter, keys, timeout=600)
        answer: object = await lock_unless_no_change(lock, Check())  # type: ignore[arg-type]
        assert answer == "nothing left"

        async def told() -> bool:
            return heard == [channel]

        await wait_for(told)  # the NOTIFY travels to the listener
        # The first key is free again; the second is still the embedded runner's.
        assert await listener.fetchval("SELECT pg_try_advisory_lock($1)", keys.url_path)
    finally:
        for conn in (embedded, waiter, listener):
            await conn.close()

"""Connecting while the server starts, and failing fast (and quietly) when it never will."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from silentpulse_db import DatabaseConnectionError, SilentPulseDBError, run_migrations
from silentpulse_db.postgres.connect import is_transient
from silentpulse_db.settings import ConnectRetry

from helpers import free_port, simple_set, write_migrations


async def start_proxy(listen_port: int, target_port: int) -> asyncio.Server:
    """A TCP forwarder: the 'server' that starts accepting late."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))

    return await asyncio.start_server(handle, "127.0.0.1", listen_port)


def with_port(dsn: str, port: int) -> str:
    parts = urlsplit(dsn)
    return parts._replace(netloc=parts.netloc.replace(f":{parts.port}", f":{port}")).geturl()


async def test_server_accepting_late_is_waited_for(
    silentpulse_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    late_dsn = with_port(silentpulse_database, port)
    target = urlsplit(silentpulse_database).port
    assert target is not None
    source = write_migrations(tmp_path, simple_set(1))
    with caplog.at_level(logging.INFO, logger="silentpulse_db"):
        runner = asyncio.create_task(
            run_migrations(late_dsn, source=source, connect=ConnectRetry(attempts=30, wait=0.5))
        )
        await asyncio.sleep(2.5)
        assert not runner.done()
        proxy = await start_proxy(port, target)
        try:
            result = await asyncio.wait_for(runner, timeout=30)
        finally:
            proxy.close()
    assert result.version_after == 1
    retries = [r for r in caplog.records if "attempt" in r.getMessage()]
    assert len(retries) >= 3
    assert "attempt 1 of 30" in retries[0].getMessage()
    assert (
        "ConnectionRefusedError" in retries[0].getMessage()
        or "refused" in retries[0].getMessage().lower()
    )
    # The migration's own time and the wait for the database, apart (issue 20, 6).
    (migrated,) = [r.getMessage() for r in caplog.records if "migrated from" in r.getMessage()]
    match = re.search(r" in (\d+\.\d\d) s \(1 applied\), after (\d+\.\d\d) s waiting", migrated)
    assert match, migrated
    assert float(match[1]) < 2.0 <= float(match[2]), migrated


async def test_gives_up_after_the_attempts(
    tmp_path: Path, silentpulse_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    dsn = with_port(silentpulse_database, free_port())
    with (
        caplog.at_level(logging.WARNING, logger="silentpulse_db"),
        pytest.raises(DatabaseConnectionError, match="after 3 attempts") as info,
    ):
        await run_migrations(
            dsn,
            source=write_migrations(tmp_path, simple_set(1)),
            connect=ConnectRetry(attempts=3, wait=0.2),
        )
    assert info.value.transient
    retries = [r for r in caplog.records if "not reachable yet" in r.getMessage()]
    assert [r.getMessage().split("(")[1].split(")")[0] for r in retries] == [
        "attempt 1 of 3",
        "attempt 2 of 3",
    ]


async def test_wrong_password_fails_at_once_and_never_shows_it(
    silentpulse_postgres: object,
    silentpulse_database: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    parts = urlsplit(silentpulse_database)
    if not parts.password:
        pytest.skip("the test server has no password authentication")
    wrong = "Wr0ng-Secret-Value"
    bad = parts._replace(netloc=f"{parts.username}:{wrong}@{parts.hostname}:{parts.port}").geturl()
    with (
        caplog.at_level(logging.DEBUG, logger="silentpulse_db"),
        pytest.raises(DatabaseConnectionError) as info,
    ):
        await run_migrations(
            bad,
            source=write_migrations(tmp_path, simple_set(1)),
            connect=ConnectRetry(attempts=30, wait=2.0),
        )
    # Not retried: no "not reachable yet" line, and the error is not the transient kind.
    assert "not reachable yet" not in caplog.text
    assert not info.value.transient
    assert "password authentication failed" in str(info.value)
    assert wrong not in str(info.value) and wrong not in caplog.text
    assert wrong not in repr(info.value) and info.value.__cause__ is None


async def test_retry_logs_never_show_the_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "S3cret-In-Dsn"
    dsn = f"postgresql://app:{secret}@127.0.0.1:{free_port()}/db"
    with (
        caplog.at_level(logging.DEBUG, logger="silentpulse_db"),
        pytest.raises(DatabaseConnectionError) as info,
    ):
        await run_migrations(
            dsn,
            source=write_migrations(tmp_path, simple_set(1)),
            connect=ConnectRetry(attempts=2, wait=0.1),
        )
    assert secret not in caplog.text and secret not in str(info.value)
    assert "***" in str(info.value)


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (ConnectionRefusedError(), True),
        (ConnectionResetError(), True),
        (socket.gaierror(-3, "Temporary failure in name resolution"), True),
        (asyncio.TimeoutError(), True),
        (ValueError("bad"), False),
    ],
)
def test_transient_classification(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


@pytest.mark.parametrize(
    ("query", "path", "reason"),
    [
        ("sslmode=require", None, "rejected SSL upgrade"),
        ("sslmode=verify-full&sslrootcert=/nonexistent/root.crt", None, "root.crt"),
        ("no_such_option=1", None, "no_such_option"),
        ("options=-c%20no_such.setting", None, "no_such.setting"),
        (None, "no_such_database", "no_such_database"),
    ],
)
async def test_settings_that_cannot_work_fail_at_once(
    silentpulse_database: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    query: str | None,
    path: str | None,
    reason: str,
) -> None:
    parts = urlsplit(silentpulse_database)
    dsn = parts._replace(query=query or "", path=f"/{path}" if path else parts.path).geturl()
    if query == "sslmode=require":
        probe = await asyncpg.connect(silentpulse_database)
        try:
            if await probe.fetchval("SHOW ssl") == "on":
                pytest.skip("this server accepts SSL")
        finally:
            await probe.close()
    with (
        caplog.at_level(logging.DEBUG, logger="silentpulse_db"),
        pytest.raises(SilentPulseDBError) as info,
    ):
        await run_migrations(
            dsn, source=write_migrations(tmp_path, simple_set(1)), connect=ConnectRetry(attempts=30)
        )
    assert "not reachable yet" not in caplog.text  # tried once, not 30 times
    assert not getattr(info.value, "transient", False)
    assert reason in str(info.value)
    assert parts.password is None or parts.password not in str(info.value)


async def test_a_missing_role_fails_at_once(
    silentpulse_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    parts = urlsplit(silentpulse_database)
    dsn = parts._replace(netloc=f"no_such_role:x@{parts.hostname}:{parts.port}").geturl()
    with (
        caplog.at_level(logging.DEBUG, logger="silentpulse_db"),
        pytest.raises(DatabaseConnectionError) as info,
    ):
        await run_migrations(
            dsn, source=write_migrations(tmp_path, simple_set(1)), connect=ConnectRetry(attempts=30)
        )
    assert "not reachable yet" not in caplog.text and not info.value.transient
    assert "no_such_role" in str(info.value)

"""Small helpers shared by the tests: writing migration folders, querying a database."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import asyncpg

from silentpulse_db.migrate.session import LockKeys, lock_keys_for

# The shard count of what the Citus tests distribute, but for the test of Citus's default
# (32): two a worker. What they prove holds for any count, and each shard is a table (each
# month of a partitioned table's too) to create, fill, index and alter on a worker:
# distributing the packaged schema took 15 s with 32 shards, 4 s with 4.
CITUS_SHARDS = 4


def write_migrations(directory: Path, migrations: Mapping[int, tuple[str, str, str]]) -> Path:
    """Write {version: (name, up_sql, down_sql)} as NNNNNN_name.up.sql / .down.sql files."""
    directory.mkdir(parents=True, exist_ok=True)
    for version, (name, up, down) in migrations.items():
        (directory / f"{version:06d}_{name}.up.sql").write_text(up)
        (directory / f"{version:06d}_{name}.down.sql").write_text(down)
    return directory


def simple_set(count: int, *, prefix: str = "t") -> dict[int, tuple[str, str, str]]:
    """``count`` migrations, each creating one table."""
    return {
        v: (
            f"add_{prefix}{v}",
            f"CREATE TABLE {prefix}{v} (id int);\n",
            f"DROP TABLE {prefix}{v};\n",
        )
        for v in range(1, count + 1)
    }


async def fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def execute(dsn: str, sql: str) -> None:
    """Run a script (several statements, simple protocol)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def fetchval(dsn: str, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def version_rows(dsn: str) -> list[tuple[int, bool]]:
    """Every row of schema_migrations (golang-migrate keeps at most one)."""
    exists = await fetchval(dsn, "SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return []
    return [
        (r["version"], r["dirty"])
        for r in await fetch(dsn, "SELECT version, dirty FROM schema_migrations")
    ]


async def user_tables(dsn: str) -> set[str]:
    """Tables in public other than the two bookkeeping tables."""
    rows = await fetch(
        dsn,
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
        "AND tablename NOT IN ('schema_migrations', 'schema_migrations_history')",
    )
    return {r["tablename"] for r in rows}


async def wait_for(predicate: Any, *, timeout: float = 30.0, interval: float = 0.05) -> None:
    """Poll an async predicate until it is true (fails the test after ``timeout``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


async def lock_keys(conn: asyncpg.Connection) -> LockKeys:
    """Both golang-migrate lock keys of the database ``conn`` is connected to."""
    row = await conn.fetchrow("SELECT current_schema() AS schema, current_database() AS db")
    assert row is not None
    return lock_keys_for(row["db"], row["schema"])


@contextlib.asynccontextmanager
async def login_role(
    dsn: str, setup: str = "", *, prefix: str = "role"
) -> AsyncIterator[tuple[str, str]]:
    """A fresh LOGIN role (no superuser, no BYPASSRLS) and its DSN; ``setup`` runs as ``dsn``'s
    user with ``{role}`` replaced by the role's name. Dropped, with what it owns, afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    await execute(
        dsn, f"CREATE ROLE {name} LOGIN PASSWORD '{password}'; " + setup.format(role=name)
    )
    parts = urlsplit(dsn)
    role_dsn = parts._replace(netloc=f"{name}:{quote(password)}@{parts.hostname}:{parts.port}")
    try:
        yield name, role_dsn.geturl()
    finally:
        await execute(dsn, f"DROP OWNED BY {name}; DROP ROLE {name};")


async def hold_migration_lock(dsn: str) -> asyncpg.Connection:
    """A connection holding both golang-migrate lock keys, as another runner would."""
    holder = await asyncpg.connect(dsn)
    keys = await lock_keys(holder)
    await holder.execute(
        "SELECT pg_advisory_lock($1), pg_advisory_lock($2)", keys.url_path, keys.current_database
    )
    return holder


async def reading(dsn: str, table: str) -> asyncpg.Connection:
    """A session in a transaction that has read ``table``: it holds ACCESS SHARE on it
    until it commits, so any ALTER TABLE of it waits."""
    conn = await asyncpg.connect(dsn)
    await conn.execute(f"BEGIN; SELECT count(*) FROM {table};")
    return conn


async def pending_after_t1(
    dsn: str, directory: Path, count: int, replaced: Mapping[int, tuple[str, str, str]]
) -> Path:
    """A folder whose first migration (table t1) is applied, then simple migrations
    2..``count`` written beside it, but for ``replaced``: what the next run applies."""
    from silentpulse_db import run_migrations

    source = write_migrations(directory, simple_set(1))
    await run_migrations(dsn, source=source, partitions_ahead=None)
    return write_migrations(directory, {**simple_set(count), **replaced})


def cli(
    *args: str, dsn: str | None = None, env_var: str = "DATABASE_URL"
) -> subprocess.CompletedProcess[str]:
    """``silentpulse-db *args`` as a real process, the DSN in ``env_var`` (none given: none
    of the DSN variables set)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "POSTGRES_DSN")}
    if dsn is not None:
        env[env_var] = dsn
    return subprocess.run(
        [sys.executable, "-m", "silentpulse_db", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def free_port() -> int:
    """A TCP port nobody listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def sleeping_backend(dsn: str) -> int | None:
    """The pid of the library's backend running a pg_sleep in ``dsn``'s database, if any."""
    pid: int | None = await fetchval(
        dsn,
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'silentpulse-db' "
        "AND query LIKE '%pg_sleep%' AND state = 'active' AND datname = current_database()",
    )
    return pid

"""The tenant scope's start, before and after it became `SET LOCAL` (issue 31).

`tenant_transaction` used to set the tenant with `SELECT set_config('app.current_tenant',
$1, true)`, which Citus never forwards to its workers; it now sends one simple-query
message, `SET LOCAL citus.propagate_set_commands = 'local'; SET LOCAL app.current_tenant
= '<uuid>'`. On plain PostgreSQL the start must stay one round trip after `BEGIN`.

"before" is the library as of commit BEFORE (its tenants.py and sqlalchemy.py, read
with `git show`, loaded beside today's package), "after" the working tree's. Both run
the same transaction as an app role on one connection: the tenant's scope and one
`SELECT count(*)` under row-level security, committed; asyncpg's form and SQLAlchemy's.

Counted: the round trips of one transaction, from the messages the client sends
(through a proxy that reads the protocol: a simple `Query` or a `Sync` each ends one).
Timed: TRANSACTIONS transactions per run, the runs alternated over ROUNDS rounds, the
ratio the median of the rounds' own. Needs a git checkout (for BEFORE).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import statistics
import struct
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from silentpulse_db import run_migrations
from silentpulse_db import sqlalchemy as scoped_after
from silentpulse_db import tenants as tenants_after
from silentpulse_db.migrate import apply_prerequisites
from silentpulse_db.testing.plugin import APP_GRANTS

from common import (
    ROOT,
    alternate_samples,
    create_database,
    drop_database,
    machine,
    paired_ratio,
    run,
    server_dsn,
    write_section,
)

# The last commit whose tenant scope was set_config() (main before issue 31's change).
BEFORE = "149499a"
TRANSACTIONS = 200
ROUNDS = 15
ROLE = "bench_tenant_app"
SELECT = "SELECT count(*) FROM tenants"
TENANT = "app.current_tenant"


def load_before(name: str) -> ModuleType:
    """silentpulse_db/<name>.py as of BEFORE, as ``silentpulse_db._before_<name>`` (its
    relative imports resolve to today's package, whose names it uses are unchanged)."""
    source = subprocess.run(
        ["git", "show", f"{BEFORE}:silentpulse_db/{name}.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    folder = Path(tempfile.mkdtemp(prefix="bench-tenant-"))
    path = folder / f"{name}.py"
    path.write_text(source)
    module_name = f"silentpulse_db._before_{name}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


class Counter:
    """A TCP proxy in front of the server that counts, per connection, the client's
    messages that end a round trip: ``Query`` ('Q', simple) and ``Sync`` ('S', extended)."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.round_trips = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self.upstream)
        back = asyncio.create_task(_pipe(server_r, client_w))
        try:
            # The startup packet has no type byte (ssl=False: no SSLRequest before it).
            length = struct.unpack("!i", await client_r.readexactly(4))[0]
            server_w.write(struct.pack("!i", length) + await client_r.readexactly(length - 4))
            while True:
                head = await client_r.readexactly(5)
                kind, length = head[:1], struct.unpack("!i", head[1:])[0]
                server_w.write(head + await client_r.readexactly(length - 4))
                await server_w.drain()
                if kind in (b"Q", b"S"):
                    self.round_trips += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            server_w.close()
            back.cancel()
            with contextlib.suppress(BaseException):
                await back


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def counted(dsn: str) -> AsyncIterator[tuple[Counter, str]]:
    parts = urlsplit(dsn)
    counter = Counter(parts.hostname or "127.0.0.1", parts.port or 5432)
    await counter.start()
    try:
        netloc = parts.netloc.rsplit(":", 1)[0] + f":{counter.port}"
        yield counter, parts._replace(netloc=netloc).geturl()
    finally:
        await counter.stop()


def asyncpg_transaction(module: ModuleType, conn: Any, tenant: uuid.UUID) -> Callable[[], Any]:
    async def one() -> None:
        async with module.tenant_transaction(conn, tenant):
            await conn.fetchval(SELECT)

    return one


def sqlalchemy_transaction(
    module: ModuleType, session: AsyncSession, tenant: uuid.UUID
) -> Callable[[], Any]:
    async def one() -> None:
        async with module.tenant_transaction(session, tenant):
            await session.scalar(text(SELECT))

    return one


def repeated(one: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    async def many() -> None:
        for _ in range(TRANSACTIONS):
            await one()

    return many


async def round_trips(counter: Counter, one: Callable[[], Awaitable[None]]) -> int:
    await one()  # warm: prepared statements, the type cache
    before = counter.round_trips
    await one()
    return counter.round_trips - before


async def prepare(admin: str) -> tuple[str, str, uuid.UUID]:
    """A migrated database, an app role with the runbook's grants, a tenant: (its admin
    DSN, the app role's DSN, the tenant)."""
    dsn = await create_database(admin, "bench_tenant")
    await apply_prerequisites(dsn)
    await run_migrations(dsn)
    password = uuid.uuid4().hex
    conn = await asyncpg.connect(dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", ROLE):
            await conn.execute(f"CREATE ROLE {ROLE} LOGIN")
        await conn.execute(f"ALTER ROLE {ROLE} PASSWORD '{password}'")
        await conn.execute(APP_GRANTS.format(role=ROLE))
        tenant = uuid.uuid4()
        await conn.execute(
            "INSERT INTO tenants (id, name, handle) VALUES ($1, 'alpha', 'alpha')", tenant
        )
    finally:
        await conn.close()
    parts = urlsplit(dsn)
    app = parts._replace(netloc=f"{ROLE}:{password}@{parts.hostname}:{parts.port}")
    return dsn, app.geturl(), tenant


async def measure(app: str, tenant: uuid.UUID) -> dict[str, Any]:
    versions = {
        "before": (load_before("tenants"), load_before("sqlalchemy")),
        "after": (tenants_after, scoped_after),
    }
    results: dict[str, Any] = {}
    async with counted(app) as (counter, through):
        conn = await asyncpg.connect(through, ssl=False)
        engine = create_async_engine(
            through.replace("postgresql://", "postgresql+asyncpg://", 1),
            pool_size=1,
            max_overflow=0,
            connect_args={"ssl": False},
        )
        try:
            async with AsyncSession(engine) as session:
                for name, (plain, orm) in versions.items():
                    ones = {
                        "asyncpg": asyncpg_transaction(plain, conn, tenant),
                        "sqlalchemy": sqlalchemy_transaction(orm, session, tenant),
                    }
                    for form, one in ones.items():
                        results[f"{form} {name} round trips"] = await round_trips(counter, one)
                        # Committed: the connection carries no tenant on.
                        assert not await conn.fetchval(f"SELECT current_setting('{TENANT}', true)")
        finally:
            await engine.dispose()
            await conn.close()
    # Timed without the proxy: directly on the server's port.
    conn = await asyncpg.connect(app)
    engine = create_async_engine(
        app.replace("postgresql://", "postgresql+asyncpg://", 1), pool_size=1, max_overflow=0
    )
    try:
        async with AsyncSession(engine) as session:
            candidates = {}
            for name, (plain, orm) in versions.items():
                candidates[f"asyncpg_{name}"] = repeated(asyncpg_transaction(plain, conn, tenant))
                candidates[f"sqlalchemy_{name}"] = repeated(
                    sqlalchemy_transaction(orm, session, tenant)
                )
            await alternate_samples(2, **candidates)  # warm up
            results["samples"] = await alternate_samples(ROUNDS, **candidates)
    finally:
        await engine.dispose()
        await conn.close()
    return results


async def main() -> None:
    with server_dsn() as admin:
        dsn, app, tenant = await prepare(admin)
        try:
            results = await measure(app, tenant)
        finally:
            await drop_database(admin, dsn)
    samples = results["samples"]
    rows = []
    for form in ("asyncpg", "sqlalchemy"):
        per = {
            name: statistics.median(samples[f"{form}_{name}"]) / TRANSACTIONS * 1e6
            for name in ("before", "after")
        }
        ratio = paired_ratio(samples, f"{form}_after", f"{form}_before")
        rows.append(
            f"| {form} | {results[f'{form} before round trips']} | "
            f"{results[f'{form} after round trips']} | {per['before']:.0f} µs | "
            f"{per['after']:.0f} µs | **{ratio:.3f}** |"
        )
    write_section(
        "tenant-scope",
        f"""## The tenant scope's start: set_config() and SET LOCAL (issue 31)

One transaction as an app role on one connection: `tenant_transaction` and a `SELECT
count(*)` under row-level security, committed. "before": the library at {BEFORE}
(`BEGIN`, then `SELECT set_config('app.current_tenant', $1, true)` as a prepared
statement); "after": `BEGIN`, then one simple-query message of two `SET LOCAL` (the
tenant's and `citus.propagate_set_commands`), which Citus forwards to its workers.
Round trips counted by a proxy reading the protocol (each `Query` or `Sync` the client
sends ends one), for the whole transaction (`BEGIN`, the scope, the `SELECT`, `COMMIT`).
Time: {TRANSACTIONS} transactions per run, {ROUNDS} alternating rounds, medians per
transaction, the ratio the median of the rounds' own; a throwaway server on this
machine's loopback, where a round trip is cheap (across a network each is worth more).
{machine()}. Reproduce: `.venv/bin/python bench/bench_tenant_scope.py`.

| form | round trips before | round trips after | before | after | after / before |
|---|---|---|---|---|---|
{chr(10).join(rows)}
""",
    )


if __name__ == "__main__":
    run(main())

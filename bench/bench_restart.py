"""A `pg_ctl restart -m fast` under steady traffic (issue 27, 1): 4 tasks run
tenant_transaction through create_pool as an app role, as fast as they go (a failed one
is followed at once by the next); the server restarts; each round ends once they have
committed 200 more after it. Counted: the failed transactions by type and where they
failed, any that is no SilentPulseDBError (untyped), the seconds from the first failure
to the last, and the longest time without a commit (the outage as the tasks saw it).

Directly, then through PgBouncer in transaction pooling (if installed) with its default
server_login_retry (15 s) and with a lower one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import asyncpg

from silentpulse_db import SilentPulseDBError, create_pool, run_migrations, tenant_transaction
from silentpulse_db.migrate import apply_prerequisites
from silentpulse_db.testing.plugin import APP_GRANTS
from silentpulse_db.testing.server import PostgresServer, free_port

from common import machine, write_section

TASKS = 4
WARM, AFTER = 200, 200  # commits before the restart, and after it, in each round
ROUNDS = {"direct": 5, "pgbouncer": 3}
PATIENCE = 120.0  # a round that does not come back within this is reported as stuck
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
PHASES = (
    "get a connection from the pool",
    "begin the tenant's transaction",
    "run the tenant's transaction",
    "COMMIT was in flight",
    "commit the tenant's transaction",
)


@dataclass
class Round:
    attempts: int = 0
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    untyped: int = 0
    not_retryable: int = 0
    first: float | None = None
    last: float | None = None
    longest_gap: float = 0.0  # seconds between two commits, the longest
    restart: float = 0.0  # what pg_ctl restart took

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def span(self) -> float:
        return 0.0 if self.first is None or self.last is None else self.last - self.first


def kind(exc: BaseException) -> str:
    where = next((p for p in PHASES if p in str(exc)), "")
    name = type(exc).__name__
    if not isinstance(exc, SilentPulseDBError):
        return f"untyped {type(exc).__module__}.{name}"
    return f"{name} ({where})" if where else name


async def one_round(dsn: str, server: PostgresServer, tenants: list[uuid.UUID]) -> Round:
    result = Round()
    pool = await create_pool(dsn, min_size=TASKS, max_size=TASKS)
    committed = [0, 0]  # in all, after the restart returned
    restarted = False
    last_commit = time.perf_counter()
    stop = asyncio.Event()

    async def traffic(tenant: uuid.UUID) -> None:
        nonlocal last_commit
        while not stop.is_set():
            result.attempts += 1
            try:
                async with tenant_transaction(pool, tenant) as conn:
                    await conn.fetchval("SELECT count(*) FROM alerts")
            except Exception as exc:
                now = time.perf_counter()
                result.first = result.first or now
                result.last = now
                result.failures[kind(exc)] += 1
                result.untyped += not isinstance(exc, SilentPulseDBError)
                result.not_retryable += not getattr(exc, "retryable", False)
            else:
                now = time.perf_counter()
                result.longest_gap = max(result.longest_gap, now - last_commit)
                last_commit = now
                committed[0] += 1
                committed[1] += restarted
            await asyncio.sleep(0)

    async def until(index: int, count: int) -> None:
        deadline = time.perf_counter() + PATIENCE
        while committed[index] < count and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)

    tasks = [asyncio.create_task(traffic(tenants[i % len(tenants)])) for i in range(TASKS)]
    try:
        await until(0, WARM)
        started = time.perf_counter()
        await asyncio.to_thread(pg_ctl, server, "restart", "-m", "fast")
        result.restart = time.perf_counter() - started
        restarted = True
        await until(1, AFTER)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await pool.close()
    return result


def pg_ctl(server: PostgresServer, *args: str) -> None:
    server._pg_ctl(*args, "-w", "-t", "60", "-l", str(server.datadir.parent / "server.log"))


@contextlib.contextmanager
def bouncer(
    server: PostgresServer, role: str, password: str, login_retry: str | None
) -> Iterator[str]:
    """PgBouncer in transaction pooling in front of ``server``'s postgres database, with
    ``server_login_retry`` (None: its default); yields the DSN through it."""
    folder = Path(tempfile.mkdtemp(prefix="silentpulse-bench-pgbouncer-"))
    port = free_port()
    retry = "" if login_retry is None else f"server_login_retry = {login_retry}\n"
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host=127.0.0.1 port={server.port} user={role} password={password}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = any\npool_mode = transaction\ndefault_pool_size = {TASKS}\n"
        f"{retry}logfile = {folder}/pgbouncer.log\npidfile = {folder}/pgbouncer.pid\n"
    )
    argv = [PGBOUNCER, "-d", str(folder / "pgbouncer.ini")]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        for item in (folder, *folder.iterdir()):
            shutil.chown(item, "postgres")
        argv = ["runuser", "-u", "postgres", "--", *argv]
    subprocess.run(argv, check=True)
    try:
        deadline = time.monotonic() + 10
        while not (folder / "pgbouncer.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        yield f"postgresql://{quote(role)}@127.0.0.1:{port}/postgres"
    finally:
        os.kill(int((folder / "pgbouncer.pid").read_text()), 15)
        shutil.rmtree(folder, ignore_errors=True)


async def prepare(server: PostgresServer, password: str) -> tuple[str, list[uuid.UUID], str]:
    """The schema, an app role, two tenants with an alert each; (app DSN, tenants, version)."""
    await apply_prerequisites(server.dsn)
    await run_migrations(server.dsn)
    admin = await asyncpg.connect(server.dsn)
    try:
        await admin.execute(f"CREATE ROLE bench_app LOGIN PASSWORD '{password}'")
        await admin.execute(APP_GRANTS.format(role="bench_app"))
        tenants = []
        for handle in ("alpha", "bravo"):
            tenant = uuid.uuid4()
            await admin.execute(
                "INSERT INTO tenants (id, name, handle) VALUES ($1, $2, $2)", tenant, handle
            )
            tenants.append(tenant)
        version = str(await admin.fetchval("SHOW server_version")).split()[0]
    finally:
        await admin.close()
    parts = urlsplit(server.dsn)
    app = parts._replace(netloc=f"bench_app:{password}@{parts.hostname}:{parts.port}")
    return app.geturl(), tenants, version


def row(path: str, rounds: list[Round]) -> str:
    failed = [r.failed for r in rounds]
    spans = [r.span for r in rounds]
    gaps = [r.longest_gap for r in rounds]
    kinds: collections.Counter[str] = collections.Counter()
    for r in rounds:
        kinds.update(r.failures)
    shown = "; ".join(f"{k}: {n}" for k, n in kinds.most_common())
    return (
        f"| {path} | {len(rounds)} | {statistics.median(failed):.0f} ({min(failed)}-{max(failed)})"
        f" of {statistics.median(r.attempts for r in rounds):.0f} | "
        f"{statistics.median(spans):.2f} s (max {max(spans):.2f}) | "
        f"{statistics.median(gaps):.2f} s (max {max(gaps):.2f}) | "
        f"**{sum(r.untyped for r in rounds)}** | {sum(r.not_retryable for r in rounds)} | "
        f"{shown or 'none'} |"
    )


async def main() -> None:
    # asyncpg's pool logs each failed attempt to restore min_size while the server is
    # down (with a traceback): the benchmark's output is its table.
    logging.getLogger("asyncpg.pool").setLevel(logging.CRITICAL)
    password = uuid.uuid4().hex
    rows = []
    with PostgresServer() as server:
        dsn, tenants, version = await prepare(server, password)
        rounds = [await one_round(dsn, server, tenants) for _ in range(ROUNDS["direct"])]
        rows.append(row("directly", rounds))
        restart = statistics.median(r.restart for r in rounds)
        has_bouncer = Path(PGBOUNCER).exists()
        for retry in (None, "1", "0.25") if has_bouncer else ():
            with bouncer(server, "bench_app", password, retry) as through:
                rounds = [
                    await one_round(through, server, tenants) for _ in range(ROUNDS["pgbouncer"])
                ]
            setting = "default (15 s)" if retry is None else f"{retry} s"
            rows.append(row(f"PgBouncer, `server_login_retry` {setting}", rounds))
    bouncer_note = (
        f"PgBouncer {pgbouncer_version()} in transaction pooling, `default_pool_size` {TASKS}."
        if has_bouncer
        else "PgBouncer is not installed here: its rows are missing."
    )
    write_section(
        "restart",
        f"""
## A restart under traffic

`pg_ctl restart -m fast` of PostgreSQL {version} (a throwaway server, fsync off; the
restart command took {restart:.2f} s, median) while {TASKS} tasks run
`tenant_transaction(pool, tenant)` with one `SELECT` through `create_pool` (min and max
size {TASKS}) as an app role, as fast as they go: a failed transaction is followed at
once by the next, so the count of failures is that of a client that does not wait, and
the seconds are what to compare. Each round ends once {AFTER} transactions committed
after the restart returned. {bouncer_note} {machine()}. Reproduce:
`python bench/bench_restart.py`.

| path | restarts | failed transactions per restart: median (range) of attempts | first to last failure: median | longest without a commit: median | untyped (target 0) | not retryable | failures by type (where), all rounds |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Every failure was a `DatabaseUnavailableError` (`retryable`: an endpoint's 503, a
handler's retry), or a `CommitOutcomeUnknownError` where COMMIT was in flight (the
"not retryable" column: it may have committed). Behind PgBouncer a restart shorter than
`server_login_retry` costs `server_login_retry`: having failed once to log in to the
restarting server, PgBouncer turns every client away ("server login has been failing,
try again later (server_login_retry)", and closes their connection) until that many
seconds have passed, or keeps them waiting if its next attempt is under way (the
rounds with few failures). docs/operations.md, 'Connection poolers', says which
setting to choose.
""",
    )


def pgbouncer_version() -> str:
    out = subprocess.run([PGBOUNCER, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.split()[1] if out.stdout.split()[1:] else "?"


if __name__ == "__main__":
    asyncio.run(main())

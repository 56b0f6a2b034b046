"""No-op run_migrations on an up-to-date database vs bare connect + SELECT 1 + close.

Target: ratio <= 1.3. Runs on the packaged migrations, on the server's own auth
(the throwaway server uses scram-sha-256, as production does).

A third candidate shows where the no-op's time goes: a bare connect that sends the
no-op's own one query (captured from a run) and closes. What it costs over the bare
connect is the server's (a fresh backend reading the version table, the history and
the catalog for the first time); what the no-op costs over it is the library's. A
fourth is the floor of any runner that reads the version at all: a bare connect that
sends golang-migrate's Version() query (the version table alone) and closes.
"""

from __future__ import annotations

import re
import statistics
from typing import Any

import asyncpg

from silentpulse_db import run_migrations
from silentpulse_db.migrate import apply_prerequisites

from common import (
    alternate,
    alternate_samples,
    create_database,
    drop_database,
    machine,
    paired_ratio,
    run,
    server_dsn,
    write_section,
)

ROUNDS = 200


async def the_one_query(dsn: str) -> str:
    """The query a no-op run_migrations sends after connecting (it sends one)."""
    sent: list[str] = []
    fetch = asyncpg.Connection.fetch

    async def recorded(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        sent.append(query)
        return await fetch(self, query, *args, **kwargs)

    asyncpg.Connection.fetch = recorded
    try:
        assert not (await run_migrations(dsn)).applied
    finally:
        asyncpg.Connection.fetch = fetch
    (query,) = sent
    return query


async def main(admin: str) -> None:
    dsn = await create_database(admin)
    try:
        await apply_prerequisites(dsn)
        await run_migrations(dsn)

        async def bare() -> None:
            conn = await asyncpg.connect(dsn)
            await conn.fetchval("SELECT 1")
            await conn.close()

        query = await the_one_query(dsn)

        async def probe() -> None:
            conn = await asyncpg.connect(dsn, server_settings={"application_name": "probe"})
            # Its session settings are set on the backend the connection started with.
            own = f"pg_backend_pid() = {conn.get_server_pid()}"
            await conn.fetch(re.sub(r"pg_backend_pid\(\) = \d+", own, query))
            await conn.close()

        async def version_only() -> None:
            conn = await asyncpg.connect(dsn)
            await conn.fetch("SELECT version, dirty FROM schema_migrations LIMIT 1")
            await conn.close()

        async def noop() -> None:
            result = await run_migrations(dsn)
            assert not result.applied

        candidates = dict(bare=bare, version_only=version_only, probe=probe, noop=noop)
        await alternate(10, **candidates)  # warm up
        samples = await alternate_samples(ROUNDS, **candidates)
    finally:
        await drop_database(admin, dsn)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    ratio = paired_ratio(samples, "noop", "bare")
    server_part = paired_ratio(samples, "probe", "bare")
    version_part = paired_ratio(samples, "version_only", "bare")
    library_part = paired_ratio(samples, "noop", "probe")
    write_section(
        "noop",
        f"""## No-op start-up

`run_migrations` on an up-to-date database (packaged migrations) against a bare
asyncpg connect + `SELECT 1` + close; {ROUNDS} alternating rounds, medians (the ratio: of the
rounds' own); {machine()}.
Reproduce: `.venv/bin/python bench/bench_noop.py`.

| | median |
|---|---|
| bare connect + SELECT 1 + close | {medians["bare"] * 1000:.2f} ms |
| golang-migrate's read alone: bare connect + `SELECT version, dirty ...` + close | {medians["version_only"] * 1000:.2f} ms |
| the no-op's one query alone: bare connect + that query + close | {medians["probe"] * 1000:.2f} ms |
| no-op `run_migrations` | {medians["noop"] * 1000:.2f} ms |
| **ratio** (target <= 1.3) | **{ratio:.2f}** |

Where it goes: the query alone / bare connect {server_part:.2f} (the server's: a fresh
backend's first reads of the version table, the history and the catalog); the no-op /
the query alone {library_part:.2f} (the library's: its Python, the result's rows decoded
and read). Reading the version table alone, as golang-migrate does, costs
{version_part:.2f} of the bare connect: the rest of the server's part is the history
(every applied file's checksum, checked at each start) and the catalog.
""",
    )


if __name__ == "__main__":
    with server_dsn() as admin:
        run(main(admin))

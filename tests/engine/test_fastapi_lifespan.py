"""A FastAPI app whose lifespan migrates before building its pool finds its schema there."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
from fastapi import FastAPI

from silentpulse_db import run_migrations

from helpers import simple_set, write_migrations


def make_app(dsn: str, source: Path) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.migration = await run_migrations(dsn, source=source)
        app.state.pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        try:
            yield
        finally:
            await app.state.pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/tables")
    async def tables() -> list[str]:
        rows = await app.state.pool.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        )
        return [r["tablename"] for r in rows]

    return app


async def test_lifespan_migrates_before_the_pool(silentpulse_database: str, tmp_path: Path) -> None:
    app = make_app(silentpulse_database, write_migrations(tmp_path, simple_set(2)))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            response = await client.get("/tables")
        assert response.status_code == 200
        assert {"t1", "t2", "schema_migrations"} <= set(response.json())
        assert app.state.migration.version_after == 2


async def test_the_readme_app_under_uvicorn_shows_the_migration_lines(
    silentpulse_database: str, tmp_path: Path
) -> None:
    """What a service owner sees: the README's app, uvicorn's default logging (issue 10, 9)."""
    import asyncio
    import os
    import re
    import socket
    import sys

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    code = readme.split("<!-- fastapi-example -->\n```python\n")[1].split("```")[0]
    (tmp_path / "app.py").write_text(code)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "uvicorn",
        "app:app",
        "--port",
        str(port),
        cwd=tmp_path,
        env={**os.environ, "DATABASE_URL": silentpulse_database},
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    seen: list[str] = []
    try:
        while True:
            line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
            assert line, "uvicorn exited: " + "".join(seen)
            seen.append(line)
            if "Application startup complete" in line:
                break
    finally:
        proc.terminate()
        await proc.wait()
    migrated = [s for s in seen if "migrated from version none to" in s]
    assert len(migrated) == 1, seen
    # a time, a level, the logger
    assert re.match(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO silentpulse_db\.migrate: ", migrated[0]
    )
    assert re.search(r"in \d+\.\d\d s \(\d+ applied\)", migrated[0])

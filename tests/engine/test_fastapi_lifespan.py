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

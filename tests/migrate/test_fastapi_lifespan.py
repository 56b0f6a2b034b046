"""A FastAPI app whose lifespan migrates before building its pool finds its schema there."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
from fastapi import FastAPI
from schema.seed import seed_tenant

from silentpulse_db import run_migrations
from silentpulse_db.migrate import apply_prerequisites

from helpers import execute, simple_set, write_migrations


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


ROLES = ("silentpulse_owner", "silentpulse_app", "silentpulse_jobs")


def _first_deploy_sql(suffix: str, password: str) -> str:
    """docs/operations.md's SQL for a first deploy, as written, with this test's role
    names (roles are the cluster's: a unique suffix) and a real password."""
    ops = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    sql = (
        ops.split("The order that works on the first start")[1].split("```sql\n")[1].split("```")[0]
    )
    for role in ROLES:
        sql = sql.replace(role, f"{role}_{suffix}")
    return sql.replace("'...'", f"'{password}'")


def _as(dsn: str, role: str, password: str) -> str:
    parts = urlsplit(dsn)
    return parts._replace(netloc=f"{role}:{password}@{parts.hostname}:{parts.port}").geturl()


async def _start_readme_app(
    tmp_path: Path, env: dict[str, str]
) -> tuple[asyncio.subprocess.Process, int, list[str]]:
    """The README's app under uvicorn, started as its comment says; returns when uvicorn
    reports the start-up complete, or when it exits."""
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
        env={**os.environ, **env},
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    seen: list[str] = []
    while True:
        line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
        if not line or "Application startup complete" in line:
            return proc, port, seen
        seen.append(line)


async def test_the_readme_service_keeps_tenants_apart_with_the_owner_and_app_roles(
    silentpulse_database: str, tmp_path: Path
) -> None:
    """What a service owner does: docs/operations.md's first-deploy SQL, prerequisites,
    then the README's app as written (owner for migrations, app role for the pool)."""
    suffix, password = uuid.uuid4().hex[:8], uuid.uuid4().hex
    owner, app_role, jobs = (f"{r}_{suffix}" for r in ROLES)
    await execute(silentpulse_database, _first_deploy_sql(suffix, password))
    try:
        await apply_prerequisites(silentpulse_database)
        proc, port, seen = await _start_readme_app(
            tmp_path,
            {
                "MIGRATIONS_DATABASE_URL": _as(silentpulse_database, owner, password),
                "DATABASE_URL": _as(silentpulse_database, app_role, password),
            },
        )
        try:
            assert proc.returncode is None, "".join(seen)
            migrated = [s for s in seen if "migrated from version none to" in s]
            assert len(migrated) == 1, seen
            # a time, a level, the logger
            assert re.match(
                r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO silentpulse_db\.migrate: ", migrated[0]
            )
            assert re.search(r"in \d+\.\d\d s \(\d+ applied\)", migrated[0])
            admin = await asyncpg.connect(silentpulse_database)
            try:
                a, b = [await seed_tenant(admin, h) for h in ("alpha", "bravo")]
            finally:
                await admin.close()
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base) as client:
                for tenant in (a, b):
                    response = await client.get(f"/tenants/{tenant['tenants']}/alerts")
                    assert response.status_code == 200, response.text
                    assert [r["id"] for r in response.json()] == [str(tenant["alerts"])]
                assert (await client.get("/tenants/alpha/alerts")).status_code == 422
        finally:
            proc.terminate()
            await proc.wait()
        # The same app given the jobs role (BYPASSRLS) for its pool does not start.
        proc, _, seen = await _start_readme_app(
            tmp_path,
            {
                "MIGRATIONS_DATABASE_URL": _as(silentpulse_database, owner, password),
                "DATABASE_URL": _as(silentpulse_database, jobs, password),
            },
        )
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except asyncio.TimeoutError:  # it started: the pool took the BYPASSRLS role
            proc.terminate()
            await proc.wait()
        output = "".join(seen)
        assert proc.returncode not in (0, -15), output
        assert f"RowSecurityError: role '{jobs}' has BYPASSRLS" in output, output
        assert password not in output
    finally:
        await execute(
            silentpulse_database,
            "".join(f"DROP OWNED BY {r}; DROP ROLE {r}; " for r in (jobs, app_role, owner)),
        )

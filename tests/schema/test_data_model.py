"""docs/data-model.md is what tools/data_model.py makes of the migrated catalog: CI
fails when a migration changes the schema and the page was not regenerated."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import asyncpg

ROOT = Path(__file__).resolve().parents[2]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("data_model", ROOT / "tools" / "data_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_data_model_page_is_current(silentpulse_migrated_database: str) -> None:
    generator = _generator()
    conn = await asyncpg.connect(silentpulse_migrated_database)
    try:
        page = await generator.render(conn)
    finally:
        await conn.close()
    committed = (ROOT / "docs" / "data-model.md").read_text()
    assert page == committed, "docs/data-model.md is stale: run `make data-model`"
    # What a service developer looks for is there: a CHECK's values, a key, the diagram.
    assert "'open'::text, 'acknowledged'::text, 'resolved'::text" in page
    assert "FOREIGN KEY (tenant_id, asset_id) REFERENCES assets(tenant_id, id)" in page
    assert "```mermaid\nerDiagram\n" in page


async def test_a_table_nobody_said_who_writes_stops_the_generator(
    silentpulse_migrated_database: str,
) -> None:
    generator = _generator()
    conn = await asyncpg.connect(silentpulse_migrated_database)
    try:
        await conn.execute("CREATE TABLE worker_jobs (id int)")
        try:
            await generator.render(conn)
        except SystemExit as exc:
            assert "WRITERS has no line for worker_jobs" in str(exc)
        else:
            raise AssertionError("render() accepted a table without a writer")
    finally:
        await conn.close()

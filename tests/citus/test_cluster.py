"""The harness's Citus cluster: a coordinator and two workers that log in to one another,
a fresh database across it per test (a copy, on every node, of a template made once per
run), and a clear reason to skip where Citus is missing."""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from silentpulse_db import InvalidArgumentError
from silentpulse_db.testing import PostgresServer
from silentpulse_db.testing.citus import CitusCluster, citus_missing

from helpers import execute, fetch, fetchval


async def test_a_fresh_database_spans_the_coordinator_and_two_workers(
    silentpulse_citus: CitusCluster, silentpulse_citus_database: str
) -> None:
    nodes = await fetch(
        silentpulse_citus_database,
        "SELECT groupid, nodeport, noderole, hasmetadata, metadatasynced FROM pg_dist_node "
        "ORDER BY groupid",
    )
    coordinator = silentpulse_citus.coordinator
    assert coordinator is not None
    assert [(n["groupid"], n["nodeport"]) for n in nodes] == [
        (0, coordinator.port),
        *((i + 1, w.port) for i, w in enumerate(silentpulse_citus.workers)),
    ]
    assert all(n["noderole"] == "primary" and n["metadatasynced"] for n in nodes)
    assert len(silentpulse_citus.workers) == 2


async def test_every_node_logs_in_to_every_other(
    silentpulse_citus: CitusCluster, silentpulse_citus_database: str
) -> None:
    """The coordinator to the workers (shards), and a worker to the coordinator and to the
    other worker (a query from a worker): scram everywhere, the cluster's password file."""
    await execute(
        silentpulse_citus_database,
        "CREATE TABLE things (tenant_id int, n int); "
        "SELECT create_distributed_table('things', 'tenant_id'); "
        "INSERT INTO things SELECT g, g FROM generate_series(1, 100) g",
    )
    name = urlsplit(silentpulse_citus_database).path.lstrip("/")
    worker = silentpulse_citus.workers[0].admin_dsn(name)
    assert await fetchval(worker, "SELECT count(*) FROM things") == 100
    everywhere = await fetch(
        worker,
        "SELECT n.nodeport, r.success, r.result FROM run_command_on_all_nodes('SELECT 1') r "
        "JOIN pg_dist_node n USING (nodeid)",
    )
    assert sorted(r["nodeport"] for r in everywhere) == sorted(
        n.port for n in silentpulse_citus.nodes
    )
    assert all(r["success"] and r["result"] == "1" for r in everywhere), everywhere


@pytest.mark.parametrize("round_", [1, 2])
async def test_each_test_gets_a_database_of_its_own(
    silentpulse_citus_database: str, round_: int
) -> None:
    # Each round distributes a table: the other round finding none proves it got a new one.
    assert await fetchval(silentpulse_citus_database, "SELECT count(*) FROM pg_dist_partition") == 0
    await execute(
        silentpulse_citus_database,
        "CREATE TABLE mine (tenant_id int); SELECT create_distributed_table('mine', 'tenant_id')",
    )


async def test_a_copy_is_a_database_of_its_own_to_citus_on_every_node(
    silentpulse_citus: CitusCluster, silentpulse_citus_database: str
) -> None:
    """Citus lists the database it was created in among its distributed objects, by oid:
    in a copy, the copy's own, so that what Citus sends the workers for a database made
    afresh (ALTER DATABASE) it sends for a copy too."""
    name = urlsplit(silentpulse_citus_database).path.lstrip("/")
    own = (
        "SELECT count(*) FROM pg_dist_object WHERE classid = 'pg_database'::regclass "
        "AND objid = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    for node in silentpulse_citus.nodes:
        assert await fetchval(node.admin_dsn(name), own) == 1, node.port
    await execute(silentpulse_citus_database, f'ALTER DATABASE "{name}" CONNECTION LIMIT 77')
    for node in silentpulse_citus.nodes:
        limit = "SELECT datconnlimit FROM pg_database WHERE datname = $1"
        assert await fetchval(node.dsn, limit, name) == 77, node.port


@pytest.mark.parametrize("round_", [1, 2])
async def test_the_distributed_database_is_a_copy_per_test(
    silentpulse_citus: CitusCluster, silentpulse_citus_distributed_database: str, round_: int
) -> None:
    """The migrated schema distributed, its shards on both workers; what one test writes,
    on the coordinator's metadata and the workers' shards alike, the next does not see."""
    dsn = silentpulse_citus_distributed_database
    # Each round writes both: the other round finding neither proves it got a new copy.
    assert await fetchval(dsn, "SELECT count(*) FROM tenants") == 0
    assert await fetchval(dsn, "SELECT to_regclass('mine') IS NULL")
    placed = await fetch(
        dsn,
        "SELECT DISTINCT nodeport FROM citus_shards WHERE citus_table_type = 'distributed'",
    )
    assert sorted(r["nodeport"] for r in placed) == sorted(
        w.port for w in silentpulse_citus.workers
    )
    await execute(
        dsn,
        "INSERT INTO tenants (id, name, handle) VALUES (gen_random_uuid(), 'mine', 'mine'); "
        "CREATE TABLE mine (tenant_id uuid); SELECT create_distributed_table('mine', 'tenant_id')",
    )


async def test_the_nodes_run_as_postgres_when_root(silentpulse_citus: CitusCluster) -> None:
    expected = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    for node in silentpulse_citus.nodes:
        pid = int((node.datadir / "postmaster.pid").read_text().split()[0])
        assert pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name == expected


def test_without_citus_the_reason_says_what_is_missing_and_how_to_build_it(
    tmp_path: Path,
) -> None:
    bindir = tmp_path / "bin"  # no pg_config: the lib folder beside it, which has no citus.so
    bindir.mkdir()
    reason = citus_missing(bindir)
    assert reason is not None
    assert f"no citus.so in {tmp_path / 'lib'}" in reason
    assert "build.sh" in reason


def test_a_server_with_settings_is_always_a_throwaway_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SILENTPULSE_TEST_DSN names a server the harness does not configure: a node that needs
    settings (shared_preload_libraries) is never it."""
    monkeypatch.setenv("SILENTPULSE_TEST_DSN", "postgresql://someone@127.0.0.1:1/x")
    assert PostgresServer().external
    assert not PostgresServer(settings={"work_mem": "8MB"}).external
    assert not PostgresServer(environ={"PGPASSFILE": "/nowhere"}).external
    with pytest.raises(InvalidArgumentError):
        PostgresServer(dsn="postgresql://someone@127.0.0.1:1/x", settings={"work_mem": "8MB"})

"""One Citus cluster for a whole run: a pytest run of its own with two xdist workers, each
asking for the cluster, a migrated template and a database, finds the same cluster and
template (started once, owned by the run's main process), and the run leaves nothing
running behind it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from silentpulse_db.testing.citus import citus_missing

RECORDS = """
import json
import os
from pathlib import Path


def test_record(silentpulse_citus, silentpulse_citus_migrated_template, silentpulse_citus_database):
    nodes = silentpulse_citus.nodes
    Path(os.environ["RECORDS"], os.environ["PYTEST_XDIST_WORKER"]).write_text(json.dumps({
        "ports": [n.port for n in nodes],
        "folders": [str(n.datadir.parent) for n in nodes],
        "owner": [(n.datadir.parent / "owner.pid").read_text().strip() for n in nodes],
        "template": silentpulse_citus_migrated_template,
        "database": silentpulse_citus_database,
    }))
"""


def accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_the_workers_of_a_run_share_one_cluster_that_the_run_stops(tmp_path: Path) -> None:
    reason = citus_missing()
    if reason:
        pytest.skip(reason)
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts =\n")
    (tmp_path / "test_records.py").write_text(RECORDS)
    records = tmp_path / "records"
    records.mkdir()
    # This run's own xdist variables would tell the inner one it is a worker of ours.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    env["RECORDS"] = str(records)
    # --dist each: the test runs on both workers, whichever starts first.
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "each", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output, _ = run.communicate(timeout=600)
    assert run.returncode == 0, output

    seen = {p.name: json.loads(p.read_text()) for p in records.iterdir()}
    assert set(seen) == {"gw0", "gw1"}, output
    first, second = seen["gw0"], seen["gw1"]
    assert first["ports"] == second["ports"] and len(first["ports"]) == 3
    assert first["template"] == second["template"]
    assert first["database"] != second["database"]  # a copy each
    assert set(first["owner"]) == {str(run.pid)}  # the main process, not a worker
    # Stopped and deleted when the run ended.
    assert not any(accepts(port) for port in first["ports"])
    assert not any(Path(folder).exists() for folder in first["folders"])

"""docs/testing.md, followed as written by a service team: a project of its own, with
pytest-asyncio and the plugin's fixtures (the app-role one included), run by pytest in
a process of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "testing.md"


def _block(name: str) -> str:
    text = DOCS.read_text()
    body = text.split(f"<!-- {name} -->\n")[1].split(f"<!-- /{name} -->")[0]
    return body.split("\n", 1)[1].rsplit("```", 1)[0]  # inside the fence


@pytest.mark.slow
def test_the_testing_guide_runs_as_a_downstream_project(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(_block("testing-ini"))
    readme = (ROOT / "README.md").read_text().split("## Fixtures for the services' tests")[1]
    example = readme.split("```python\n")[1].split("```")[0]
    assert example == _block("testing-readme")  # the guide repeats the README's example
    (tmp_path / "test_readme.py").write_text(example)
    (tmp_path / "app.py").write_text(_block("testing-app"))
    (tmp_path / "test_app.py").write_text(_block("testing-test"))
    (tmp_path / "test_notifications.py").write_text(_block("testing-alerts"))
    # A service set of its own, in the template (the ini line under the table above).
    ini = _block("testing-ini") + _block("testing-ini-service")
    (tmp_path / "pyproject.toml").write_text(ini)
    (tmp_path / "test_worker_tables.py").write_text(_block("testing-service-test"))
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "000001_create_worker_jobs.up.sql").write_text(
        "-- silentpulse: requires schema_migrations >= 1\n"
        "CREATE TABLE worker_jobs (id uuid PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES tenants (id));\n"
    )
    (migrations / "000001_create_worker_jobs.down.sql").write_text("DROP TABLE worker_jobs;\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "error::pytest.PytestUnraisableExceptionWarning",
            # A service team that turns warnings into errors: the library's own calls
            # (its fixtures') use no deprecated name.
            "-W",
            "error::DeprecationWarning",
        ],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 passed" in done.stdout, done.stdout

"""`make bench`: every benchmark, results into docs/benchmarks.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [
    "bench_import.py",
    "bench_noop.py",
    "bench_cli.py",
    "bench_apply.py",
    "bench_golang_migrate.py",
    "bench_replicas.py",
    "bench_rotation.py",
    "bench_harness.py",
    "bench_notify.py",
    "bench_listener.py",
    "bench_big_file.py",
    "bench_startup_tricks.py",
    "bench_drift.py",
    "bench_upgrade_alert_log.py",
    "bench_tenant_keys.py",
    "bench_restart.py",
    "bench_tenant_scope.py",
    "bench_citus_routing.py",
]

if __name__ == "__main__":
    only = sys.argv[1:]
    for script in SCRIPTS:
        if only and not any(o in script for o in only):
            continue
        print(f"== {script}", flush=True)
        subprocess.run([sys.executable, str(HERE / script)], check=True, cwd=HERE)

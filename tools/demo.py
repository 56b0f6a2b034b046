"""`make demo` and `make roundtrip`: the packaged migrations on a throwaway PostgreSQL.

- ``python tools/demo.py``: prerequisites, migrations, ``status``, stop.
- ``python tools/demo.py --roundtrip``: prerequisites, ``up``,
  ``down --all``, ``up``, ``check`` (every down undoes its up), ``status`` —
  each through the real CLI; exits non-zero on the first failure.

Works on a fresh machine with no server running, as root or not.
"""

from __future__ import annotations

import os
import sys

from silentpulse_db.migrate.cli import main as cli
from silentpulse_db.testing.server import PostgresServer

DEMO = [["prerequisites"], ["up"], ["status"]]
ROUNDTRIP = [["prerequisites"], ["up"], ["down", "--all"], ["up"], ["check"], ["status"]]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    steps = ROUNDTRIP if "--roundtrip" in args else DEMO
    with PostgresServer() as server:
        # The DSN travels in the environment, as the runbook recommends (not argv).
        os.environ["DATABASE_URL"] = server.dsn
        print(f"throwaway PostgreSQL {server.bindir.parent.name} on port {server.port}", flush=True)
        for step in steps:
            print(f"\n$ silentpulse-db {' '.join(step)}", flush=True)
            status = cli(step)
            sys.stdout.flush()
            if status != 0:
                print(f"step `{' '.join(step)}` failed (exit {status})", file=sys.stderr)
                return status
    print("\nserver stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

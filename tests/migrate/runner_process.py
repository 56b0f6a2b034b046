"""Run run_migrations in a separate process: `python runner_process.py SOURCE_DIR`.

The DSN comes from $DATABASE_URL (not argv, where `ps` would show its password).
Prints the applied versions as JSON on success.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from silentpulse_db import run_migrations


async def main() -> None:
    result = await run_migrations(
        os.environ["DATABASE_URL"], source=Path(sys.argv[1]), migration_lock_timeout=120
    )
    print(json.dumps([a.version for a in result.applied]), flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    asyncio.run(main())

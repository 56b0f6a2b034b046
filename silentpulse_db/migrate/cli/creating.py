"""create: the next NNNNNN_name.up.sql / .down.sql pair, written into a folder.

No database: this module imports neither the driver nor the engine."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from ... import console
from ..files.scaffold import create_migration, naming_problem
from ..files.source import load_source
from ..version_table import VERSION_TABLE

# `create` writes into the project's migrations folder (never into site-packages).
DEFAULT_CREATE_PATH = Path("silentpulse_db/migrations")


async def _create(args: argparse.Namespace, out: TextIO) -> int:
    directory = Path(args.path) if args.path else DEFAULT_CREATE_PATH
    if not directory.is_dir():
        where = (
            "check --path, or create the folder first"
            if args.path
            else "run from the project root or pass --path"
        )
        raise console.UsageError(f"{directory} is not a directory: {where}")
    if problem := naming_problem(args.name):
        raise console.UsageError(f"bad migration name: {problem}")
    if load_source(directory).latest is None and args.table in (None, VERSION_TABLE):
        print(_SECOND_SET_WARNING.format(directory=directory), file=sys.stderr)
    for path in create_migration(directory, args.name):
        print(path, file=out)
    return console.EXIT_OK


# `create` in an empty folder starts a set at 000001; on schema_migrations it would
# collide with the packaged set's 000001 (issue 20: a service's own migrations).
_SECOND_SET_WARNING = (
    "warning: {directory} has no migration yet: this starts a set of migrations at "
    "000001. If it is a service's own set, give it a version table of its own "
    "(run_migrations(..., table='worker_schema_migrations'), --table, or the DSN's "
    "?x-migrations-table=): on schema_migrations it collides with the packaged set "
    '(docs/migrations.md, "A service\'s own migrations").'
)


HANDLERS = {"create": _create}

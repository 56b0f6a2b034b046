"""The migration engine, golang-migrate compatible, and its operator verbs.

Every verb of the ``silentpulse-db`` command is an async function here, as alembic
keeps its commands in ``alembic.command``::

    from silentpulse_db import migrate

    await migrate.up(dsn)
    report = await migrate.drift(dsn)

A service's start-up needs only :func:`silentpulse_db.run_migrations` (also here).

Data flows one way: ``files/`` (the migrations, read and validated) ->
``plan.py`` (pure policy: what to run, or why not) -> ``run/`` (runs a plan on a
locked connection) -> :mod:`silentpulse_db.results`. ``commands.py`` holds the
public verbs, each a short wrapper, with the engine one call down in ``engine.py``;
``cli/`` is a thin shell over them. Beside them: ``session.py`` (one connection:
probe, state, golang-migrate's advisory lock), ``version_table.py`` (golang-migrate's
table and our history), ``dryrun/`` (the dry run) and ``proofs/`` (``check``'s and
``baseline``'s proofs on a scratch database).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .commands import (
        apply_prerequisites,
        baseline,
        check,
        distribute,
        down,
        drift,
        force,
        goto,
        run_migrations,
        status,
        up,
        version,
    )
    from .dryrun.preview import (
        MigrationPlan,
        PlannedMigration,
        PlannedStatement,
        plan_down,
        plan_goto,
        plan_up,
    )
    from .files.lock_levels import LockTaken
    from .files.source import Migration, MigrationFile, MigrationSource, load_source

# Each name loads its module on first use: a part of the engine imported alone (plan.py,
# pure and tested so; files/ for a linter) does not load the driver, and the CLI does
# not load the dry run's SQL parser (pglast, ~25 ms: docs/benchmarks.md) for `up`.
_COMMANDS = ".commands"
_PREVIEW = ".dryrun.preview"
_SOURCE = ".files.source"
_LAZY = {
    **dict.fromkeys(
        (
            "apply_prerequisites",
            "baseline",
            "check",
            "distribute",
            "down",
            "drift",
            "force",
            "goto",
            "run_migrations",
            "status",
            "up",
            "version",
        ),
        _COMMANDS,
    ),
    **dict.fromkeys(
        (
            "MigrationPlan",
            "PlannedMigration",
            "PlannedStatement",
            "plan_down",
            "plan_goto",
            "plan_up",
        ),
        _PREVIEW,
    ),
    **dict.fromkeys(("Migration", "MigrationFile", "MigrationSource", "load_source"), _SOURCE),
    "LockTaken": ".files.lock_levels",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "LockTaken",
    "Migration",
    "MigrationFile",
    "MigrationPlan",
    "MigrationSource",
    "PlannedMigration",
    "PlannedStatement",
    "apply_prerequisites",
    "baseline",
    "check",
    "distribute",
    "down",
    "drift",
    "force",
    "goto",
    "load_source",
    "plan_down",
    "plan_goto",
    "plan_up",
    "run_migrations",
    "status",
    "up",
    "version",
]

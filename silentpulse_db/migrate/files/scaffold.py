"""Creating the next migration pair, and the naming rules it enforces.

A name is snake_case and starts with a verb prefix that says what the
migration does. Versions up to LEGACY_MAX_VERSION predate the rule (their names
are part of the golang-migrate history operators already have) and are exempt.
"""

from __future__ import annotations

import re
from pathlib import Path

from ...errors import MigrationSourceError
from .source import load_source

VERB_PREFIXES = (
    "add_",  # new table, column, constraint, trigger, function, ...
    "alter_",  # change a column type, default, constraint
    "drop_",  # remove an object
    "create_index_",  # an index (use CONCURRENTLY in a migration of its own)
    "drop_index_",
    "create_",  # other new objects: types, views, schemas
    "rename_",
    "backfill_",  # data changes
    "validate_",  # validate constraints an earlier migration added NOT VALID
    "enable_",  # turn on a feature: RLS, an extension
    "disable_",
)
LEGACY_MAX_VERSION = 3
_SNAKE_CASE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")

UP_TEMPLATE = """\
-- {stem}: <one line: what this migration does and why>
-- Runs in ONE transaction with its version change. Use IF NOT EXISTS where it applies.
-- CREATE INDEX CONCURRENTLY and the like go in a migration of their own.

"""
DOWN_TEMPLATE = """\
-- {stem}: reverses {stem}.up.sql exactly, in reverse order. Use IF EXISTS.

"""


def unfilled_template(filename: str, sql: str) -> bool:
    """Whether a file is still what `create` wrote: the one comment-only file that is
    refused rather than run as a no-op (it was meant to hold SQL)."""
    stem, _, rest = filename.partition(".")
    template = {"up.sql": UP_TEMPLATE, "down.sql": DOWN_TEMPLATE}.get(rest)
    return template is not None and sql.strip() == template.format(stem=stem).strip()


def naming_problem(name: str) -> str | None:
    """Why ``name`` breaks the naming rules, or None."""
    if not _SNAKE_CASE.match(name):
        return f"{name!r} is not snake_case (lowercase letters, digits and single underscores)"
    if not name.startswith(VERB_PREFIXES):
        return f"{name!r} does not start with a verb prefix ({', '.join(VERB_PREFIXES)})"
    for prefix in VERB_PREFIXES:
        if name == prefix.rstrip("_"):
            return f"{name!r} says what it does but not to what: add the object, e.g. {prefix}tags"
    return None


def create_migration(directory: Path, name: str) -> tuple[Path, Path]:
    """Write the next NNNNNN_name.up.sql / .down.sql pair in ``directory`` and return them."""
    problem = naming_problem(name)
    if problem:
        raise MigrationSourceError(f"bad migration name: {problem}", file=name)
    source = load_source(directory)
    for migration in source.migrations:
        if migration.name == name:
            raise MigrationSourceError(
                f"name {name!r} is already used by {migration.location}",
                file=migration.location,
            )
    version = (source.latest or 0) + 1
    stem = f"{version:06d}_{name}"
    up, down = directory / f"{stem}.up.sql", directory / f"{stem}.down.sql"
    for path in (up, down):
        if path.exists():
            raise MigrationSourceError(f"{path} already exists", file=str(path))
    up.write_text(UP_TEMPLATE.format(stem=stem))
    down.write_text(DOWN_TEMPLATE.format(stem=stem))
    return up, down

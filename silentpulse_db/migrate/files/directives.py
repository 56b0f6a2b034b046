"""The ``-- silentpulse:`` directives a migration file's header may carry.

``-- silentpulse: breaking`` (older code cannot run on the schema once applied),
``-- silentpulse: lock_timeout=10s`` (how long each statement may wait for a
table lock), ``-- silentpulse: statement_timeout=30min`` (how long each statement
may run: the library runs its own with no limit, whatever the role sets) and
``-- silentpulse: requires schema_migrations >= 19`` (a service's own set waits
for the core schema), ``-- silentpulse: requires extension pgcrypto`` (refused before
anything runs where it is not installed), ``-- silentpulse: partitions only`` (a
concurrent index on a partitioned table built on its partitions alone, none attached:
run/partitioned_index.py). A directive after the first
statement, or one not known, is a MigrationSourceError naming the file and line.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from ...errors import MigrationSourceError
from ...settings import milliseconds


class Directives(NamedTuple):
    """What a file's header says about how to run it.

    ``breaking``: older code cannot run against the schema once it is applied
    (a dropped or renamed column): older replicas refuse to start.
    ``lock_timeout``: seconds each statement may wait for a table lock (0: no
    limit); None: the run's setting.
    ``requires``: (version table, version) pairs: the file runs only once another
    set of migrations (the core schema, for a service's own set) has reached them.
    ``statement_timeout``: seconds each statement may run (0: no limit); None: no
    limit (defaults.ENGINE_SESSION_SETTINGS).
    ``extensions``: the extensions the file uses (``requires extension <name>``): a run
    that would apply it where one is not installed is refused before anything runs.
    ``partitions_only``: the file's CREATE INDEX CONCURRENTLY on a partitioned table builds
    an index on each leaf partition and none on the parent, none attached (for a later
    migration's keys: run/partitioned_index.py).
    """

    breaking: bool = False
    lock_timeout: float | None = None
    requires: tuple[tuple[str, int], ...] = ()
    statement_timeout: float | None = None
    extensions: tuple[str, ...] = ()
    partitions_only: bool = False


_NO_DIRECTIVES = Directives()
_DIRECTIVE = re.compile(r"^--\s*silentpulse:\s*(.*?)\s*$", re.IGNORECASE)
_MAYBE_DIRECTIVE = re.compile(r"--\s*silentpulse:", re.IGNORECASE)  # anywhere: a superset
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|min)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "min": 60.0, None: 1.0}
_MAX_TIMEOUT = 86400.0
_TIMEOUTS = ("lock_timeout", "statement_timeout")
_REQUIRES = re.compile(r"^requires\s+([A-Za-z_][A-Za-z0-9_]{0,62})\s*>=\s*(\d{1,18})$", re.I)
_REQUIRES_EXTENSION = re.compile(r"^requires\s+extension\s+([A-Za-z_][A-Za-z0-9_-]{0,62})$", re.I)
_EXPECTED = (
    "expected '-- silentpulse: breaking', '-- silentpulse: lock_timeout=<N>s|ms|min', "
    "'-- silentpulse: statement_timeout=<N>s|ms|min' or "
    "'-- silentpulse: requires <version table> >= <version>' or "
    "'-- silentpulse: requires extension <name>' or '-- silentpulse: partitions only'"
)


def parse_directives(sql: str, location: str) -> Directives:
    """Read ``-- silentpulse: breaking`` / ``-- silentpulse: lock_timeout=10s`` from the
    file's header (the comment and blank lines before its first statement). One after
    the first statement would be silently ignored: it is refused, as is anything else."""
    if not _MAYBE_DIRECTIVE.search(sql):
        # The usual file, even one that names silentpulse_* functions: one scan in C
        # instead of a match per line (~1 ms for the packaged files at each start).
        return _NO_DIRECTIVES
    breaking, partitions_only, requires, extensions = False, False, [], []
    timeouts: dict[str, float] = {}
    in_header = True
    for number, raw in enumerate(sql.splitlines(), start=1):
        line = raw.strip().lstrip("\ufeff")
        if line and not line.startswith("--"):
            in_header = False
        match = _DIRECTIVE.match(line)
        if not match:
            continue
        if not in_header:
            raise MigrationSourceError(
                f"{location}:{number}: '-- silentpulse:' directives belong in the file's "
                f"header, before its first statement",
                file=location,
            )
        name, _, value = (part.strip() for part in match.group(1).partition("="))
        if required := _REQUIRES.match(match.group(1)):
            requires.append((required.group(1), int(required.group(2))))
        elif extension := _REQUIRES_EXTENSION.match(match.group(1)):
            extensions.append(extension.group(1).lower())
        elif name.lower() == "breaking" and not value:
            breaking = True
        elif " ".join(name.lower().split()) == "partitions only" and not value:
            partitions_only = True
        elif name.lower() in _TIMEOUTS and (duration := _DURATION.match(value.lower())):
            timeout = float(duration.group(1)) * _UNITS[duration.group(2)]
            if timeout > _MAX_TIMEOUT:
                raise MigrationSourceError(
                    f"{location}:{number}: {name}={value} is more than a day; use 0 for no limit",
                    file=location,
                )
            timeouts[name.lower()] = timeout
        else:
            raise MigrationSourceError(
                f"{location}:{number}: unknown directive {match.group(1)!r}: {_EXPECTED}",
                file=location,
            )
    return Directives(
        breaking,
        timeouts.get("lock_timeout"),
        tuple(requires),
        timeouts.get("statement_timeout"),
        tuple(extensions),
        partitions_only,
    )


def statement_limit(directives: Directives, *, local: bool, default: float | None = None) -> str:
    """The SET of the file's ``statement_timeout`` directive, else of ``default`` (the
    run's: the DSN's x-statement-timeout), "" without either: ``local`` for the file's
    transaction, else for the session (reset after the file)."""
    timeout = default if directives.statement_timeout is None else directives.statement_timeout
    if timeout is None:
        return ""
    scope = " LOCAL" if local else ""
    return f" SET{scope} statement_timeout = {milliseconds(timeout)};"


def duration_text(seconds: float) -> str:
    """A directive's duration as PostgreSQL and the file would write it: 500ms, 30s."""
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"

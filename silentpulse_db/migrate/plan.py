"""Deciding what to run: pure policy, no I/O.

From what the version table says (:class:`VersionState`, the history's
checksums), the migration files (:class:`MigrationSource`) and a request
(:class:`Up`, :class:`Down`, :class:`Goto`, :class:`Force`), :func:`make_plan`
returns the :class:`Plan` to apply, or raises the typed error that says why
not: a dirty database, a database ahead of the files, a version without a
file, a changed checksum (strict). The same reading turned into the table
``status`` prints is status_reading.py's.

Nothing here touches a database: the rules are unit-tested in milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import NamedTuple

from ..errors import (
    ChecksumMismatchError,
    ConfigurationError,
    DatabaseAheadError,
    DirtyDatabaseError,
    MigrationSetMismatchError,
    MissingMigrationFileError,
    VersionNotFoundError,
)
from ..results.migrations import VersionState
from .files.source import Direction, Migration, MigrationFile, MigrationSource

CLI = "silentpulse-db"
NIL_VERSION = -1  # golang-migrate's NilVersion: "no version", written only as (-1, dirty)


# The plan's records and the requests are NamedTuples rather than dataclasses: every
# start-up creates their classes at import, ~0.13 ms each against ~0.7 ms for a frozen
# dataclass (bench/bench_startup_tricks.py; a plain one costs about half that). Slotted
# classes cost less still, but would need a hand-written __repr__ and __eq__. A request
# is told apart by its class, never by == (as tuples, Down(1) == Goto(1)).


class HistoryEntry(NamedTuple):
    """The latest 'up' (or 'baseline') record of one version in schema_migrations_history."""

    version: int
    name: str
    direction: str
    checksum: str | None
    applied_at: datetime
    duration: float | None  # seconds
    applied_by: str
    breaking: bool = False  # its up file carries `-- silentpulse: breaking`


# --- requests -------------------------------------------------------------------


class Up(NamedTuple):
    """Apply pending migrations: all, the next ``limit``, or up to ``target``.

    ``allow_ahead``: a database newer than every file (an older replica in a
    rolling deploy) is a warning and nothing to do, instead of an error.
    """

    limit: int | None = None  # ``count`` in the verbs (a tuple's count is a method)
    target: int | None = None
    allow_ahead: bool = False


class Down(NamedTuple):
    """Revert the last ``limit`` applied migrations, or all of them (None)."""

    limit: int | None


class Goto(NamedTuple):
    """Migrate up or down to ``version`` (which must have a file)."""

    version: int


class Force(NamedTuple):
    """Record ``version`` as clean without running anything (-1: no version).

    A version no file has is refused unless ``allow_missing_file``: recording
    it makes every later command believe the database is ahead of the files.
    """

    version: int
    allow_missing_file: bool = False


Request = Up | Down | Goto | Force


# --- the plan -----------------------------------------------------------------------


class Step(NamedTuple):
    """One file to run, and the version recorded once it has run (None: no version)."""

    migration: Migration
    direction: Direction
    version_after: int | None

    @property
    def file(self) -> MigrationFile:
        file = self.migration.file(self.direction)
        if file is None:  # make_plan refuses such a step before anything runs
            raise MissingMigrationFileError(
                f"version {self.migration.version} has no {self.direction} file "
                f"({self.migration.missing_filename(self.direction)})",
                file=self.migration.location,
                version=self.migration.version,
                direction=self.direction,
            )
        return file


class Plan(NamedTuple):
    """What applying a request does, decided before anything runs: the engine's own.
    The dry run shows it to users as a :class:`~silentpulse_db.migrate.MigrationPlan`
    (each file's statements and the table locks they take, built from this)."""

    state: VersionState
    steps: tuple[Step, ...] = ()
    # Force: the version to record, NIL_VERSION for none; None when not forcing.
    force: int | None = None
    database_ahead: bool = False
    warnings: tuple[str, ...] = ()

    @property
    def version_after(self) -> int | None:
        if self.force is not None:
            return None if self.force == NIL_VERSION else self.force
        return self.steps[-1].version_after if self.steps else self.state.version

    @property
    def empty(self) -> bool:
        return not self.steps and self.force is None


class Unfinished(NamedTuple):
    """A dirty version as run/unfinished.py reads it from the catalog (and the history)
    under the lock: the migration whose up or down file stopped partway, between the
    version below it and its own, and which of its files, run again, finishes the move."""

    migration: Migration
    # The file that stopped, where known: "up" (the version row says the migration's
    # version) or "down" (the row says the version below it); None: either.
    direction: Direction | None
    # Its up file run again brings the schema to its version (a concurrent index build:
    # waited for, recorded once complete, or rebuilt); its down file, to the version
    # below (a concurrent drop). Neither: the operator decides (`force`).
    reruns_up: bool = False
    reruns_down: bool = False
    # What the catalog showed, for the run's warning or the refusal.
    seen: str = ""


def make_plan(
    source: MigrationSource,
    state: VersionState,
    request: Request,
    *,
    history: Mapping[int, HistoryEntry] | None = None,
    strict: bool = False,
    unfinished: Unfinished | None = None,
) -> Plan:
    """The plan for ``request``, or the error that refuses it (nothing has run yet).

    ``history`` (for Up) lets changed checksums of applied files be reported:
    warnings, or ChecksumMismatchError when ``strict``; and says which versions
    beyond the files are breaking (an older replica refuses to start on those).
    ``unfinished``: what a dirty version stands for, as read from the catalog under
    the lock (run/unfinished.py): a concurrent index build or drop that did not
    complete is run again by a run that goes its way (see :func:`_rerun`).
    A plan that needs a file the set lacks (a version without its down file) is
    refused: MissingMigrationFileError.
    """
    plan = _make_plan(source, state, request, history, strict=strict, unfinished=unfinished)
    for step in plan.steps:
        if step.migration.file(step.direction) is None:
            raise missing_file(source, plan, step, request)
    return plan


def _make_plan(
    source: MigrationSource,
    state: VersionState,
    request: Request,
    history: Mapping[int, HistoryEntry] | None,
    *,
    strict: bool,
    unfinished: Unfinished | None,
) -> Plan:
    if not source.migrations:
        raise ConfigurationError(
            f"no migration files in {source.description}: check the folder (--path) or package"
        )
    if isinstance(request, Force):
        if request.version < NIL_VERSION:
            raise VersionNotFoundError(f"force takes a version >= -1, got {request.version}")
        if (
            request.version != NIL_VERSION
            and source.get(request.version) is None
            and not request.allow_missing_file
        ):
            raise VersionNotFoundError(
                f"no migration file for version {request.version} in {source.description} "
                f"(files: {', '.join(map(str, source.versions))}); to record it anyway, "
                f"confirm with --allow-missing-file (allow_missing_file=True)"
            )
        return Plan(state, force=request.version)
    if isinstance(request, Goto) and source.get(request.version) is None:
        raise VersionNotFoundError(
            f"no migration file for version {request.version} in {source.description} "
            f"(files: {', '.join(map(str, source.versions)) or 'none'})"
        )
    if state.dirty and unfinished is not None:
        rerun = _rerun(source, state, request, unfinished)
        if rerun is not None:
            return rerun
    if state.dirty:
        raise DirtyDatabaseError(
            dirty_message(source, state, unfinished),
            version=NIL_VERSION if state.version is None else state.version,
        )
    if ahead_of_files(source, state):
        error = ahead_error(source, state)
        if isinstance(request, Up) and request.allow_ahead and _past_latest_file(source, state):
            breaking = _breaking_beyond(source, state, history or {})
            if breaking:
                raise DatabaseAheadError(
                    f"{error}, and {breaking} is marked breaking (`-- silentpulse: breaking`): "
                    f"this code cannot run against that schema. Deploy the newer code",
                    database_version=error.database_version,
                    latest_file_version=error.latest_file_version,
                )
            return Plan(
                state,
                database_ahead=True,
                warnings=(f"{error}; the newer migrations are not breaking: starting",),
            )
        raise error
    if isinstance(request, Up):
        warnings = checksum_problems(source, state, history or {})
        if warnings and strict:
            raise ChecksumMismatchError("; ".join(warnings))
        steps = _pending(source, state, target=request.target)
        return Plan(state, steps=_first(steps, request.limit), warnings=tuple(warnings))
    if isinstance(request, Down):
        applied = _applied(source, state)
        if request.limit is not None and request.limit > len(applied):
            if not applied:
                raise ConfigurationError(f"down {request.limit}: nothing is applied to revert")
            applied_now = _count(len(applied), "migration is", "migrations are")
            raise ConfigurationError(
                f"down {request.limit}: only {applied_now} applied; "
                f"use --all (count='all') to revert every one"
            )
        return Plan(state, steps=_first(applied, request.limit))
    current = NIL_VERSION if state.version is None else state.version
    if request.version >= current:
        return Plan(state, steps=_pending(source, state, target=request.version))
    return Plan(state, steps=_applied(source, state, target=request.version))


def _rerun(
    source: MigrationSource, state: VersionState, request: Request, unfinished: Unfinished
) -> Plan | None:
    """The plan that runs the unfinished migration's file again on the way to what
    ``request`` asks, or None when no file of it can run again (the operator decides).

    Up, and goto its version or above, run its up file again (or, when only its down file
    can run again, that, then its up file as pending); down, and goto below, run its down
    file again, counted as the first migration reverted: an interrupted `down 1` run
    again ends where it was going."""
    migration = unfinished.migration
    below = source.previous_version(migration.version)
    if isinstance(request, Up) or (
        isinstance(request, Goto) and request.version >= migration.version
    ):
        target = request.target if isinstance(request, Up) else request.version
        at: int | None = migration.version
        if unfinished.reruns_up:
            first = Step(migration, "up", migration.version)
        elif unfinished.reruns_down:
            first, at = Step(migration, "down", below), below
        else:
            return None
        steps = (first, *_pending(source, VersionState(at, False), target=target))
        if isinstance(request, Up):
            steps = _first(steps, request.limit)
    elif isinstance(request, (Down, Goto)) and unfinished.reruns_down:
        first = Step(migration, "down", below)
        target = request.version if isinstance(request, Goto) else None
        steps = (first, *_applied(source, VersionState(below, False), target=target))
        if isinstance(request, Down):
            steps = _first(steps, request.limit)
    else:
        return None
    what = unfinished.seen or "a migration stopped partway"
    note = (
        f"version {version_label(state.version)} is dirty: {what}; running "
        f"{first.file.location} again"
    )
    return Plan(state, steps=steps, warnings=(note,))


def require_same_set(
    source: MigrationSource, history: Mapping[int, HistoryEntry], table: str
) -> None:
    """MigrationSetMismatchError if ``table``'s history shows versions applied from other
    files than ``source``'s (other names): two sets of migrations share one table."""
    foreign = []
    for version, entry in history.items():
        migration = source.get(version)
        if migration is not None and entry.name != migration.name:
            foreign.append(
                f"version {version} was applied as {version:06d}_{entry.name}, these files "
                f"have {migration.stem}"
            )
    if foreign:
        shown = "; ".join(foreign[:5]) + ("; ..." if len(foreign) > 5 else "")
        raise MigrationSetMismatchError(
            f"{table} records migrations from other files than {source.description}: {shown}. "
            f"Either these are not {table}'s files (give the set's own folder: source=, "
            f"--path), or two sets of migrations share one version table: give this set one "
            f"of its own (table=, --table, the DSN's ?x-migrations-table=, or PATH:TABLE in "
            f"the test plugin's silentpulse_migrations; docs/migrations.md, "
            f'"A service\'s own migrations").',
            table=table,
        )


def is_settled(source: MigrationSource, state: VersionState, *, target: int | None) -> bool:
    """Nothing to do for start-up: clean, nothing pending up to ``target``, not broken.

    A committed clean version is final, so this answer needs no lock.
    """
    if state.dirty or _pending(source, state, target=target):
        return False
    return not ahead_of_files(source, state) or _past_latest_file(source, state)


# --- the rules ---------------------------------------------------------------------


def _pending(
    source: MigrationSource, state: VersionState, *, target: int | None
) -> tuple[Step, ...]:
    current = NIL_VERSION if state.version is None else state.version
    return tuple(
        Step(m, "up", m.version)
        for m in source.migrations
        if m.version > current and (target is None or m.version <= target)
    )


def _applied(
    source: MigrationSource, state: VersionState, *, target: int | None = None
) -> tuple[Step, ...]:
    """Applied migrations to revert, newest first, down to (not including) ``target``."""
    if state.version is None:
        return ()
    return tuple(
        Step(m, "down", source.previous_version(m.version))
        for m in reversed(source.migrations)
        if m.version <= state.version and (target is None or m.version > target)
    )


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _first(steps: tuple[Step, ...], count: int | None) -> tuple[Step, ...]:
    return steps if count is None else steps[:count]


def ahead_of_files(source: MigrationSource, state: VersionState) -> bool:
    return state.version is not None and source.get(state.version) is None


def _breaking_beyond(
    source: MigrationSource, state: VersionState, history: Mapping[int, HistoryEntry]
) -> str:
    """The applied migrations newer than every file that are marked breaking, named."""
    latest = NIL_VERSION if source.latest is None else source.latest
    current = NIL_VERSION if state.version is None else state.version
    marked = [
        f"{entry.version}_{entry.name}"
        for version, entry in sorted(history.items())
        if latest < version <= current and entry.breaking
    ]
    return ", ".join(marked)


def _past_latest_file(source: MigrationSource, state: VersionState) -> bool:
    """The database is newer than every file (an older replica during a deploy)."""
    latest = source.latest
    return state.version is not None and (latest is None or state.version > latest)


def ahead_error(source: MigrationSource, state: VersionState) -> DatabaseAheadError:
    """The error for a database at a version without a file."""
    version = NIL_VERSION if state.version is None else state.version
    latest = source.latest
    if _past_latest_file(source, state):
        message = (
            f"database is at version {version}, ahead of the newest migration file "
            f"({version_label(latest)}) in {source.description}: this code is older "
            f"than the schema (rolling deploy?)"
        )
    else:
        message = (
            f"database is at version {version}, which has no migration file in "
            f"{source.description} (files: {', '.join(map(str, source.versions))})"
        )
    return DatabaseAheadError(message, database_version=version, latest_file_version=latest)


def dirty_message(
    source: MigrationSource, state: VersionState, unfinished: Unfinished | None = None
) -> str:
    """What a dirty version means and the commands that recover from it.

    Dirty V is golang-migrate's "the move to version V stopped partway": V's up file, or
    the down file of the version above V (a down writes the version below it dirty).
    ``unfinished`` (run/unfinished.py) says which, where the catalog or the history
    tells, and what the catalog showed; without it both are named."""
    version = state.version
    label = NIL_VERSION if version is None else version
    seen = f" ({unfinished.seen})" if unfinished is not None and unfinished.seen else ""
    direction = None if unfinished is None else unfinished.direction
    own = None if version is None else source.get(version)
    above = _above(source, version)
    if direction == "down" and unfinished is not None:
        above = unfinished.migration
    below = None if version is None else source.previous_version(version)
    force_below = f"`{CLI} force {NIL_VERSION if below is None else below}`"
    if above is not None and above.down is not None and (direction == "down" or version is None):
        return (
            f"Dirty database version {label}: the down migration of version {above.version} "
            f"({above.down.location}) stopped partway on its way to version {label}, and "
            f"the schema may be half-changed{seen}. Inspect the schema, then record the "
            f"version it matches: `{CLI} force {above.version}` if none of that down took "
            f"effect (then revert it again: `{CLI} down 1`), or `{CLI} force {label}` if "
            f"all of it did."
        )
    file = f" ({own.location})" if own is not None else ""
    if direction == "up" or above is None or above.down is None:
        return (
            f"Dirty database version {label}{file}: a migration stopped partway and the "
            f"schema may be half-changed{seen}. Inspect the schema, then record the version "
            f"it matches: {force_below} if none of version {label} took effect, or "
            f"`{CLI} force {label}` if all of it did; then run `{CLI} up`."
        )
    return (
        f"Dirty database version {label}{file}: a migration stopped partway and the schema "
        f"may be half-changed{seen}: version {label}'s up, or the down of version "
        f"{above.version} ({above.down.location}) on its way to {label}. Inspect the "
        f"schema, then record the version it matches: {force_below} if none of version "
        f"{label}'s up took effect, `{CLI} force {label}` if the schema is version "
        f"{label}'s, or `{CLI} force {above.version}` if none of that down took effect; "
        f"then run `{CLI} up` (or the down again)."
    )


def _above(source: MigrationSource, version: int | None) -> Migration | None:
    """The migration after ``version`` (the first one for no version)."""
    for migration in source.migrations:
        if version is None or migration.version > version:
            return migration
    return None


def checksum_problems(
    source: MigrationSource, state: VersionState, history: Mapping[int, HistoryEntry]
) -> list[str]:
    """Applied versions whose file changed since it was applied."""
    if state.version is None:
        return []
    problems = []
    for migration in source.migrations:
        if migration.version > state.version:
            break
        entry = history.get(migration.version)
        if migration.up is None:
            continue
        if entry and entry.checksum and entry.checksum != migration.up.checksum:
            problems.append(
                f"{migration.up.location} changed after it was applied on "
                f"{entry.applied_at:%Y-%m-%d %H:%M:%S%z} (recorded sha256 "
                f"{entry.checksum[:12]}..., file {migration.up.checksum[:12]}...)"
            )
    return problems


def missing_file(
    source: MigrationSource, plan: Plan, step: Step, request: Request
) -> MissingMigrationFileError:
    """The refusal of a plan whose ``step`` needs a file the set lacks; golang-migrate
    would run it as an empty file, recording a version whose schema is not there."""
    migration, direction = step.migration, step.direction
    version, needed = migration.version, migration.missing_filename(direction)
    others = [s.migration.version for s in plan.steps if s.migration.file(s.direction) is None]
    also = f" (and {', '.join(map(str, others[1:]))} likewise)" if len(others) > 1 else ""
    if direction == "down":
        below = version_label(step.version_after)
        what = (
            f"to revert version {version}, and {source.description} has no down file for it "
            f"(only {migration.location}){also}. golang-migrate runs a missing down file as "
            f"an empty one: it would record version {below} and leave version {version}'s "
            f"objects in place. Nothing was run. Write the down file; or revert version "
            f"{version} by hand, then `{CLI} force "
            f"{NIL_VERSION if step.version_after is None else step.version_after}`"
        )
    else:
        what = (
            f"to apply version {version}, and {source.description} has no up file for it "
            f"(only {migration.location}){also}. golang-migrate runs a missing up file as "
            f"an empty one: it would record version {version} as applied with nothing of "
            f"it created. Nothing was run. Write the up file, or remove the down file"
        )
    return MissingMigrationFileError(
        f"{_doing(request)} needs {needed} {what}",
        file=migration.location,
        version=version,
        direction=direction,
    )


def _doing(request: Request) -> str:
    if isinstance(request, Up):
        if request.target is not None:
            return f"up to version {request.target}"
        return "up" if request.limit is None else f"up {request.limit}"
    if isinstance(request, Down):
        return "down --all" if request.limit is None else f"down {request.limit}"
    if isinstance(request, Goto):
        return f"goto {request.version}"
    return "force"


def version_label(version: int | None) -> str:
    return "none" if version is None else str(version)

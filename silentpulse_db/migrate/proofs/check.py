"""Proofs on a scratch database: every down undoes its up (`check`), and a database
matches what the first migration creates (`baseline`).

For each migration in order, `check` snapshots the catalog, applies up,
snapshots, applies down, requires the snapshot from before up; applies up
again, requires the first after-up snapshot. Naming rules are checked too. A
mismatch names the migration and each object that differs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from ...errors import MigrationFailedError, MissingMigrationFileError, ReversibilityError
from ...postgres.connect import close_quietly, connect
from ...postgres.databases import provided_scratch, scratch_database
from ...results.migrations import VersionState
from ...results.proofs import CheckReport
from ...settings import DEFAULT_CONNECT, ConnectRetry
from ..files.scaffold import LEGACY_MAX_VERSION, naming_problem
from ..files.source import Direction, Migration, MigrationSource, load_source
from ..plan import Plan, Step, Up, make_plan
from ..prerequisites import run_prerequisites
from ..run.applier import Applier
from ..version_table import CORE, VersionStore, VersionTable
from .snapshot import Snapshot, snapshot

logger = logging.getLogger("silentpulse_db.migrate")


def naming_problems(source: MigrationSource) -> list[str]:
    problems = []
    for migration in source.migrations:
        if migration.version <= LEGACY_MAX_VERSION:
            continue  # predates the naming rule
        problem = naming_problem(migration.name)
        if problem:
            problems.append(f"{migration.location}: {problem}")
    return problems


def require_pairs(source: MigrationSource) -> None:
    """MissingMigrationFileError, before anything runs, if a version lacks its up or down
    file: the round trip needs both (golang-migrate would run a missing one as empty)."""
    directions: tuple[Direction, ...] = ("up", "down")
    missing = [
        (migration, direction)
        for migration in source.migrations
        for direction in directions
        if migration.file(direction) is None
    ]
    if not missing:
        return
    first, direction = missing[0]
    named = ", ".join(f"{m.missing_filename(d)} (version {m.version})" for m, d in missing[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    raise MissingMigrationFileError(
        f"check proves that every down file undoes its up file, and {source.description} "
        f"lacks {len(missing)} file(s): {named}{more}. golang-migrate would run a missing "
        f"file as an empty one (a missing down leaves its version's objects in place). "
        f"Nothing was run. Write them, or leave check out for this set",
        file=first.location,
        version=first.version,
        direction=direction,
    )


Audit = Callable[[Any], Awaitable[list[str]]]

# What a role without CREATEDB is offered besides the administrator's ALTER ROLE.
_INSTEAD = {
    "check": "or give check an empty database of its own, which an administrator creates "
    "once for this role (with the extensions prerequisites.sql names, if the role may not "
    "create them): silentpulse-db check --scratch-dsn DSN (Python: check(..., scratch_dsn=...)).",
    "drift": "or give drift an empty database of its own to build the files' schema in: "
    "silentpulse-db drift --scratch-dsn DSN (Python: drift(..., scratch_dsn=...)).",
    "baseline": "or give baseline an empty database of its own for the comparison: "
    "silentpulse-db baseline --scratch-dsn DSN (Python: baseline(..., scratch_dsn=...)), "
    "or skip the comparison: --no-verify (Python: verify=False).",
}


@contextlib.asynccontextmanager
async def proof_database(dsn: str, scratch_dsn: str | None, verb: str) -> AsyncIterator[Any]:
    """A connection to an empty database for ``verb``'s proof: the operator's
    ``scratch_dsn`` (emptied again afterwards), or one created beside ``dsn``'s and dropped."""
    if scratch_dsn is not None:
        async with provided_scratch(dsn, scratch_dsn, doing=verb) as conn:
            yield conn
    else:
        async with scratch_database(
            dsn, prefix=f"silentpulse_{verb}", instead=_INSTEAD[verb]
        ) as conn:
            yield conn


async def prerequisites_in(conn: Any, source: MigrationSource, verb: str) -> None:
    if source.prerequisites is not None:
        for note in await run_prerequisites(
            conn, source, source.prerequisites, then=f"Then run {verb} again."
        ):
            logger.info("scratch database: %s", note)


async def prove_reversible(
    dsn: str,
    source: MigrationSource,
    *,
    audits: Sequence[Audit] = (),
    found: Sequence[str] = (),
    table: VersionTable = CORE,
    scratch_dsn: str | None = None,
) -> CheckReport:
    """Run the up/down/up proof on a scratch database created on ``dsn``'s server
    (or in ``scratch_dsn``, an empty database the operator provides).

    Each of ``audits`` then looks at the fully migrated scratch database and
    returns its problems (the row-level security audit, for one). ``found``:
    problems already found in the database itself (INVALID indexes). ``table``: the
    set's version table; a set that requires the packaged set's version (``--
    silentpulse: requires schema_migrations >= N``) gets it on the scratch database
    first. Raises ReversibilityError listing every problem; returns the report when
    clean.
    """
    require_pairs(source)
    problems = [*naming_problems(source), *found]
    checked: list[int] = []
    async with proof_database(dsn, scratch_dsn, "check") as conn:
        await _required_core(conn, source, table)
        await _prove(conn, source, checked, problems, table)
        if len(checked) == len(source.migrations):
            for audit in audits:
                problems += await audit(conn)
    if problems:
        raise ReversibilityError(
            f"{len(problems)} problem(s) in {source.description}:\n"
            + "\n".join(f"- {p}" for p in problems)
        )
    return CheckReport(checked=tuple(checked))


async def _required_core(conn: Any, source: MigrationSource, table: VersionTable) -> None:
    """The packaged set, up to the highest version ``source``'s files require of it."""
    needed = [
        version
        for migration in source.migrations
        for required, version in (migration.up.directives.requires if migration.up else ())
        if required == CORE.name
    ]
    if not needed or table.name == CORE.name:
        return
    core = load_source()
    applier = Applier(conn, core)
    await prerequisites_in(conn, core, "check")
    await VersionStore(conn).ensure()
    await applier.apply(make_plan(core, VersionState(None, False), Up(target=max(needed))))


async def _prove(
    conn: Any,
    source: MigrationSource,
    checked: list[int],
    problems: list[str],
    table: VersionTable = CORE,
) -> None:
    applier = Applier(conn, source, table=table)
    await prerequisites_in(conn, source, "check")
    await VersionStore(conn, table).ensure()
    for migration in source.migrations:
        stem = f"{migration.version:06d}_{migration.name}"
        before = await snapshot(conn)
        step = "up"
        try:
            await _one(applier, migration, "up")
            after_up = await snapshot(conn)
            step = "down"
            await _one(applier, migration, "down")
            after_down = await snapshot(conn)
            problems += _compare(
                stem, "down does not restore the schema before up", before, after_down
            )
            step = "up again after down"
            await _one(applier, migration, "up")
        except MigrationFailedError as exc:
            # Later migrations would run on an unknown schema: stop here.
            problems.append(f"{stem}: {step} failed: {exc}")
            return
        again = await snapshot(conn)
        problems += _compare(stem, "up after down differs from the first up", after_up, again)
        checked.append(migration.version)
        logger.info("%s: up, down, up: ok", migration.location)


async def _one(applier: Applier, migration: Migration, direction: Direction) -> None:
    if direction == "up":
        after: int | None = migration.version
    else:
        after = applier.source.previous_version(migration.version)
    step = Step(migration, direction, after)
    await applier.apply(Plan(VersionState(None, False), steps=(step,)))


def _compare(stem: str, what: str, expected: Snapshot, actual: Snapshot) -> list[str]:
    differences = expected.diff(actual)
    if not differences:
        return []
    return [f"{stem}: {what}:\n" + "\n".join(f"    {d}" for d in differences)]


async def baseline_differences(
    dsn: str,
    source: MigrationSource,
    retry: ConnectRetry = DEFAULT_CONNECT,
    *,
    scratch_dsn: str | None = None,
) -> list[str]:
    """How ``dsn``'s schema differs from prerequisites + the first migration on a scratch DB
    (created beside it, or ``scratch_dsn``: an empty one the operator provides)."""
    first = source.migrations[0]
    async with proof_database(dsn, scratch_dsn, "baseline") as scratch:
        applier = Applier(scratch, source)
        await prerequisites_in(scratch, source, "baseline")
        await VersionStore(scratch).ensure()
        await _one(applier, first, "up")
        expected = await snapshot(scratch)
    conn = await connect(dsn, retry)
    try:
        actual = await snapshot(conn)
    finally:
        await close_quietly(conn)
    return expected.without_partitions().diff(actual.without_partitions())

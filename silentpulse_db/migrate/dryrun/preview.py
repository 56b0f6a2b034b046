"""A dry-run plan: what ``up``/``down``/``goto`` would run, and the locks it would take.

Nothing is changed in the database: the version tables are read only if they
exist (never created), the migration lock is not taken (the plan answers even
while another runner migrates), and every query runs in a READ ONLY
transaction. Which files run is decided by the same pure :func:`make_plan` the
real commands use; the locks each statement takes come from ``files/lock_levels.py``
(beside the statement splitter, since the runner reads them too), and the row
estimates (``pg_class.reltuples``) of the relations they name decide which ACCESS
EXCLUSIVE locks deserve a warning.

The plan is the database's state at the time of asking: another runner may
change it before the real command runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pglast import parser

from ...defaults import LARGE_TABLE_ROWS, MIGRATION_LOCK_TIMEOUT
from ...errors import RequiredVersionError
from ...postgres.connect import close_quietly
from ...postgres.connect import connect as connected
from ...postgres.translate import typed_errors
from ...results.migrations import VersionState
from ...settings import CONNECTING, DEFAULT_CONNECT, ConnectRetry, settings
from ..engine import require_versions
from ..files.lock_levels import ACCESS_EXCLUSIVE, LockTaken, blocks_writes, statement_locks
from ..files.source import Direction, MigrationFile, SourceLike, load_source
from ..files.statements import analyze_cached
from ..plan import (
    Down,
    Goto,
    Plan,
    Request,
    Step,
    Up,
    make_plan,
    require_same_set,
    version_label,
)
from ..run.partitioned_index import PlannedBuild, plan_build
from ..run.unfinished import read_unfinished
from ..version_table import VersionStore, VersionTable, resolve_table

SQL_HEAD = 60  # characters of a statement shown on its line


@dataclass(frozen=True)
class PlannedStatement:
    """One statement of a file that would run: where it is, what it starts with, its locks."""

    line: int  # 1-based line of the file where the statement starts
    sql_head: str  # its first ~60 characters, whitespace folded onto one line
    locks: tuple[LockTaken, ...]
    warnings: tuple[str, ...] = ()
    # What the engine runs in its place, in order (a CREATE INDEX CONCURRENTLY on a
    # partitioned table: run/partitioned_index.py); empty when it runs as written.
    steps: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlannedMigration:
    """One file that would run, in order."""

    version: int
    name: str
    direction: Direction
    location: str
    # False when a statement (CREATE INDEX CONCURRENTLY, ...) cannot run in a
    # transaction: the file then runs statement by statement.
    transactional: bool
    statements: tuple[PlannedStatement, ...]
    non_transactional: tuple[str, ...] = ()  # why not, e.g. "CREATE INDEX CONCURRENTLY at line 3"
    breaking: bool = False  # an up file marked `-- silentpulse: breaking`


@dataclass(frozen=True)
class MigrationPlan:
    """What a command would do, computed without changing anything: the engine's
    ``plan.Plan`` for it, each file read statement by statement with its table locks."""

    current: VersionState
    migrations: tuple[PlannedMigration, ...]
    warnings: tuple[str, ...] = ()  # about the whole plan (changed checksums, ...)
    version_after: int | None = None  # the version once every file has run

    @property
    def statement_warnings(self) -> tuple[str, ...]:
        return tuple(w for m in self.migrations for s in m.statements for w in s.warnings)


async def plan_up(
    dsn: str,
    count: int | None = None,
    *,
    target: int | None = None,
    source: SourceLike = None,
    table: str | None = None,
    connect: ConnectRetry = DEFAULT_CONNECT,
    **deprecated: Any,
) -> MigrationPlan:
    """What ``up`` would apply (all pending, the next ``count``, or up to ``target``)."""
    retry = settings("plan_up", deprecated, CONNECTING, connect=connect).connect
    return await _preview(dsn, Up(count, target), source, retry, table)


async def plan_down(
    dsn: str,
    count: int | Literal["all"],
    *,
    source: SourceLike = None,
    table: str | None = None,
    connect: ConnectRetry = DEFAULT_CONNECT,
    **deprecated: Any,
) -> MigrationPlan:
    """What ``down`` would revert: the last ``count`` migrations, or every one with ``"all"``."""
    request = Down(None if count == "all" else count)
    retry = settings("plan_down", deprecated, CONNECTING, connect=connect).connect
    return await _preview(dsn, request, source, retry, table)


async def plan_goto(
    dsn: str,
    version: int,
    *,
    source: SourceLike = None,
    table: str | None = None,
    connect: ConnectRetry = DEFAULT_CONNECT,
    **deprecated: Any,
) -> MigrationPlan:
    """What ``goto version`` would run, up or down."""
    retry = settings("plan_goto", deprecated, CONNECTING, connect=connect).connect
    return await _preview(dsn, Goto(version), source, retry, table)


# --- reading the database -----------------------------------------------------------


async def _preview(
    dsn: str,
    request: Request,
    source: SourceLike,
    retry: ConnectRetry,
    table_name: str | None,
) -> MigrationPlan:
    dsn, name = resolve_table(dsn, table_name)
    table = VersionTable(name)
    with typed_errors(dsn, "plan the migrations (dry run)"):
        migrations = load_source(source)
        conn = await connected(dsn, retry)
        try:
            # READ ONLY: a dry run cannot change anything, whatever a bug would try.
            async with conn.transaction(readonly=True):
                # Whatever of the version tables is there, as it is: nothing is created.
                store = VersionStore(conn, table)
                await store.look()
                state, history = await store.state()
                require_same_set(migrations, history, table.name)
                # As the run decides it: a dirty, unfinished concurrent index build or
                # drop runs again (read as it is now: a dry run waits for nobody).
                unfinished = await read_unfinished(conn, migrations, state, store, wait=0)
                plan = make_plan(migrations, state, request, history=history, unfinished=unfinished)
                unmet = await _unmet_requirements(conn, plan)
                files = [_parse(step.file) for step in plan.steps]
                builds = await _partitioned_builds(conn, plan.steps)
                locked = {lock.relation for parsed in files for lock in parsed.all_locks}
                locked |= {lock.relation for b in builds.values() for lock in b.locks}
                relations = await _relations(conn, locked)
        finally:
            await close_quietly(conn)
        planned = tuple(
            _planned_migration(step, parsed, relations, builds.get(step.file.location))
            for step, parsed in zip(plan.steps, files, strict=True)
        )
        return MigrationPlan(
            current=state,
            migrations=planned,
            warnings=(*plan.warnings, *unmet),
            version_after=plan.version_after,
        )


async def _partitioned_builds(conn: Any, steps: Iterable[Step]) -> dict[str, PlannedBuild]:
    """The files that build an index concurrently on a partitioned table, by location:
    what the engine runs in their place, read from the database as it is now (a table an
    earlier file of the plan creates is not there yet: its file shows as written)."""
    builds = {}
    for step in steps:
        parsed = analyze_cached(step.file)
        if parsed.concurrent_index is None:
            continue
        build = await plan_build(conn, step.file, parsed)
        if build is not None:
            builds[step.file.location] = build
    return builds


async def _unmet_requirements(conn: Any, plan: Plan) -> tuple[str, ...]:
    """What the real command would refuse for: another set's version not reached."""
    try:
        await require_versions(conn, plan, MIGRATION_LOCK_TIMEOUT)
    except RequiredVersionError as exc:
        return (f"the real command would stop here: {exc}",)
    return ()


def _quoted(relation: str) -> str:
    """``schema.table`` as written (already case-folded by the parser) -> a quoted name."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in relation.split("."))


@dataclass(frozen=True)
class _Relations:
    """What the database knows of the relations a plan locks, read before anything runs."""

    looked_up: frozenset[str]
    estimates: Mapping[str, float | None]  # those that exist; None: never analyzed

    def is_new(self, relation: str) -> bool:
        """Not there yet: an earlier file of the plan creates it, so nothing uses it."""
        return relation in self.looked_up and relation not in self.estimates


async def _relations(conn: Any, relations: Iterable[str]) -> _Relations:
    """pg_class.reltuples for the relations that exist (a partitioned table: its leaves'),
    in one query; a relation not there yet (created by an earlier step) is simply absent."""
    # A three-part name (database.schema.table) is not looked up: to_regclass refuses it.
    names = sorted(r for r in relations if r.count(".") <= 1)
    if not names:
        return _Relations(frozenset(), {})
    rows = await conn.fetch(
        """
        SELECT n.name,
               CASE WHEN c.relkind = 'p' THEN
                   (SELECT sum(greatest(leaf.reltuples, 0))
                    FROM pg_partition_tree(c.oid) AS t
                    JOIN pg_class AS leaf ON leaf.oid = t.relid
                    WHERE t.isleaf)
               ELSE c.reltuples END AS estimate
        FROM unnest($1::text[], $2::text[]) AS n(name, quoted)
        JOIN pg_class AS c ON c.oid = to_regclass(n.quoted)
        """,
        names,
        [_quoted(name) for name in names],
    )
    # reltuples is -1 for a table never vacuumed or analyzed (PostgreSQL 14+): unknown.
    estimates = {
        r["name"]: None if r["estimate"] is None or r["estimate"] < 0 else float(r["estimate"])
        for r in rows
    }
    return _Relations(frozenset(names), estimates)


# --- parsing the files --------------------------------------------------------------


@dataclass(frozen=True)
class _ParsedFile:
    file: MigrationFile
    non_transactional: tuple[str, ...]
    # (line, text, locks) per statement; locks None when the parser cannot read the file.
    statements: tuple[tuple[int, str, tuple[LockTaken, ...] | None], ...]

    @property
    def all_locks(self) -> tuple[LockTaken, ...]:
        return tuple(lock for _, _, locks in self.statements for lock in locks or ())


def _parse(file: MigrationFile) -> _ParsedFile:
    parsed = analyze_cached(file)  # the runner's own reading (and its refusals)
    try:
        nodes = {(item.stmt_location or 0): item.stmt for item in parser.parse_sql(file.sql)}
    except parser.ParseError:
        nodes = None
    statements = []
    for statement in parsed.statements:
        line = file.sql.count("\n", 0, statement.offset) + 1
        node = None if nodes is None else nodes.get(statement.offset)
        locks = None if node is None else statement_locks(node)
        statements.append((line, statement.sql, locks))
    return _ParsedFile(file, parsed.non_transactional, tuple(statements))


def _head(sql: str) -> str:
    text = " ".join(sql.split())
    return text if len(text) <= SQL_HEAD else text[: SQL_HEAD - 3].rstrip() + "..."


def _rows(estimate: float) -> str:
    return f"~{estimate:,.0f} rows"


def _warnings(line: int, locks: tuple[LockTaken, ...], relations: _Relations) -> tuple[str, ...]:
    found: list[str] = []
    for lock in locks:
        if relations.is_new(lock.relation):
            continue
        estimate = relations.estimates.get(lock.relation)
        size = f" ({_rows(estimate)})" if estimate is not None else ""
        if lock.rewrites:
            found.append(
                f"line {line}: rewrites {lock.relation}{size} and its indexes under "
                f"{lock.mode}: "
                + ("reads and writes wait" if lock.mode == ACCESS_EXCLUSIVE else "writes wait")
                + " until it finishes"
            )
        elif lock.scans and blocks_writes(lock.mode):
            found.append(
                f"line {line}: reads all of {lock.relation}{size} under {lock.mode}: "
                + ("reads and writes wait" if lock.mode == ACCESS_EXCLUSIVE else "writes wait")
                + " until it finishes"
            )
        if (
            lock.mode == ACCESS_EXCLUSIVE
            and estimate is not None
            and estimate >= LARGE_TABLE_ROWS
            and not lock.rewrites
        ):
            found.append(
                f"line {line}: ACCESS EXCLUSIVE on {lock.relation}, a large table "
                f"({_rows(estimate)}): every query on it waits for this statement, "
                f"and the statement waits for every open transaction that touched it"
            )
    return tuple(found)


def _planned_migration(
    step: Step, parsed: _ParsedFile, relations: _Relations, build: PlannedBuild | None = None
) -> PlannedMigration:
    statements = []
    for line, sql, locks in parsed.statements:
        if build is not None:  # the file's one statement, run in steps
            statements.append(
                PlannedStatement(
                    line,
                    _head(sql),
                    build.locks,
                    _warnings(line, build.locks, relations),
                    build.steps,
                )
            )
            continue
        if locks is None:
            statements.append(
                PlannedStatement(
                    line,
                    _head(sql),
                    (),
                    (
                        f"line {line}: the parser cannot read this file; the server will "
                        f"report the syntax error when it runs",
                    ),
                )
            )
            continue
        statements.append(
            PlannedStatement(line, _head(sql), locks, _warnings(line, locks, relations))
        )
    return PlannedMigration(
        version=step.migration.version,
        name=step.migration.name,
        direction=step.direction,
        location=parsed.file.location,
        transactional=not parsed.non_transactional,
        statements=tuple(statements),
        non_transactional=parsed.non_transactional,
        breaking=step.direction == "up" and step.file.directives.breaking,
    )


# --- printing -----------------------------------------------------------------------


def format_plan(plan: MigrationPlan) -> str:
    """The plan as ``silentpulse-db up --dry-run`` prints it."""
    lines = [f"current version: {plan.current}"]
    lines += [f"warning: {w}" for w in plan.warnings]
    if not plan.migrations:
        lines.append("dry run: no change to make")
        return "\n".join(lines)
    count = len(plan.migrations)
    lines.append(
        f"dry run: would run {count} migration file{'s' if count != 1 else ''} "
        f"(nothing changed, no lock taken):"
    )
    for migration in plan.migrations:
        if migration.transactional:
            how = "in one transaction"
        else:
            how = "NO transaction (" + "; ".join(migration.non_transactional) + ")"
        lines.append("")
        mark = "  [BREAKING: older replicas will refuse to start]" if migration.breaking else ""
        lines.append(f"{migration.version}/{migration.direction} {migration.name}  [{how}]{mark}")
        lines.append(f"  {migration.location}")
        for statement in migration.statements:
            lines.append(f"  line {statement.line}: {statement.sql_head}")
            for lock in statement.locks:
                flags = [f for f, on in (("rewrite", lock.rewrites), ("scan", lock.scans)) if on]
                extra = [*flags, lock.note] if lock.note else flags
                lines.append(
                    f"      {lock.mode} on {lock.relation}"
                    + (f" ({'; '.join(extra)})" if extra else "")
                )
            lines += [f"      WARNING: {w}" for w in statement.warnings]
            if statement.steps:
                lines.append(f"      runs as: {statement.steps[0]}")
                lines += [f"        {s}" for s in statement.steps[1:]]
    lines.append("")
    lines.append(f"version after: {version_label(plan.version_after)}")
    warned = len(plan.statement_warnings)
    if warned:
        lines.append(f"warnings: {warned} (read the WARNING lines above)")
    return "\n".join(lines)

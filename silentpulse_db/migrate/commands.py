"""The public verbs: every operation the CLI offers, as an async function.

Each verb takes a DSN and reads the migrations from ``source``: None for the
set packaged in silentpulse_db, a ``pathlib.Path`` for a folder, a ``str`` for
a package name, or a :class:`MigrationSource`. Connecting retries as ``connect``
(a :class:`~silentpulse_db.settings.ConnectRetry`) says while the server starts;
verbs that change the version wait at most ``migration_lock_timeout`` seconds for
the migration lock, and their statements wait for table locks as ``ddl`` (a
:class:`~silentpulse_db.settings.DDLLimits`) says. Every duration is in seconds.
Every error is a :class:`SilentPulseDBError`.

The flow is one way: source -> plan (pure) -> apply -> result.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from ..defaults import MIGRATION_LOCK_TIMEOUT, PARTITIONS_AHEAD
from ..errors import (
    ConfigurationError,
    MigrationSourceError,
)
from ..postgres.dsn import redact, validate_dsn
from ..postgres.translate import typed_errors
from ..results.migrations import MigrationResult, PrerequisitesResult, VersionState
from ..settings import (
    CONNECTING,
    DEFAULT_CONNECT,
    DEFAULT_DDL,
    LOCKING,
    MIGRATING,
    ConnectRetry,
    DDLLimits,
    Settings,
    checked_connect,
    settings,
)
from .engine import Job, run_request
from .files.source import SourceLike, load_source
from .plan import (
    Down,
    Force,
    Goto,
    Request,
    Up,
)
from .session import locked_session, open_session, read_only_state
from .version_table import (
    HISTORY_TABLE,
    VERSION_TABLE,
    VersionTable,
    recorded_sets,
    resolve,
    resolve_table,
)

if TYPE_CHECKING:
    from ..results.placement import DistributionReport
    from ..results.proofs import CheckReport, DriftReport
    from ..results.status import StatusReport

logger = logging.getLogger("silentpulse_db.migrate")

# Each verb spells out its own keywords (source, target, table, ...): the signature is
# the documentation users read in help() and their editor. What every verb shares comes
# as the settings objects (settings.py), their defaults from defaults.py, once;
# ``**deprecated`` takes the keywords they replaced, for one release.


async def run_migrations(
    dsn: str,
    *,
    source: SourceLike = None,
    target: int | None = None,
    strict: bool = False,
    partitions_ahead: int | None = PARTITIONS_AHEAD,
    table: str | None = None,
    connect: ConnectRetry = DEFAULT_CONNECT,
    migration_lock_timeout: float = MIGRATION_LOCK_TIMEOUT,
    ddl: DDLLimits = DEFAULT_DDL,
    **deprecated: Any,
) -> MigrationResult:
    """Apply every pending migration (up to ``target``); call it before building the pool.

    Replicas starting together queue on the migration lock; the first applies,
    the rest see that nothing is left and return without taking it. An
    up-to-date database is answered without the lock.

    A database ahead of the files (an older replica during a rolling deploy)
    logs a warning and returns, unless a migration it lacks is marked breaking
    (``-- silentpulse: breaking``): then, and always with ``strict=True``, it
    raises DatabaseAheadError. With ``strict`` a changed checksum of an applied
    file raises ChecksumMismatchError instead of a warning.

    Connecting waits for a database still starting as ``connect`` says (30 attempts 2 s
    apart by default); the migration lock is waited for ``migration_lock_timeout``
    seconds at most. Each migration statement waits for a table lock as ``ddl`` says:
    ``table_lock_timeout`` seconds (a file's ``-- silentpulse: lock_timeout=...``
    overrides it; 0: no limit; None: the session's own setting); a migration that
    times out is rolled back and retried with backoff for ``retry_for`` seconds, then
    TableLockTimeoutError names who held the lock.

    Then, unless ``partitions_ahead`` is None, the monthly partitions for this
    month and that many ahead are made sure of (cheap when they exist; a busy
    table or a missing privilege is a warning, never a failed start-up).

    ``table``: the version table of this set of migrations (a service's own set: see
    docs/migrations.md), or the DSN's ``?x-migrations-table=``; default
    schema_migrations. A file that requires another set's version (``-- silentpulse:
    requires schema_migrations >= 19``) waits for it as for a database not up yet:
    ``connect``'s attempts, as far apart, then RequiredVersionError.

    golang-migrate's other URL options in ``dsn`` (docs/reference.md, ``dsn``): its
    ``?x-statement-timeout=`` (milliseconds) limits each migration statement whose file
    sets no ``-- silentpulse: statement_timeout``; the rest are taken out.
    """
    # Loaded on first use: spares the CLI, which imports this module, ~6 ms (bench_startup_tricks).
    from ..schema.partitions import partitions_at_startup

    after = None if partitions_ahead is None else partitions_at_startup(partitions_ahead)
    given = settings(
        "run_migrations",
        deprecated,
        MIGRATING,
        connect=connect,
        ddl=ddl,
        migration_lock_timeout=migration_lock_timeout,
    )
    request = Up(target=target, allow_ahead=not strict)
    dsn, table, statement_timeout = resolve(dsn, table)
    with typed_errors(dsn, "apply migrations"):
        migrations = load_source(source)
        job = Job(
            request,
            migrations,
            table,
            given,
            statement_timeout,
            strict,
            after,
            wait_for_required=True,
        )
        return await run_request(dsn, job)


async def up(
    dsn: str,
    count: int | None = None,
    *,
    target: int | None = None,
    strict: bool = False,
    source: SourceLike = None,
    table: str | None = None,
    connect: ConnectRetry = DEFAULT_CONNECT,
    migration_lock_timeout: float = MIGRATION_LOCK_TIMEOUT,
    ddl: DDLLimits = DEFAULT_DDL,
    **deprecated: Any,
) -> MigrationResult:
    """Apply the pending migrations: all, the next ``count``, or up to ``target``.

    Unlike run_migrations, a database ahead of the files is an error (an
    operator running older files). Changed checksums of applied files are
    warnings, or ChecksumMismatchError with ``strict``.
    """
    given = settings(
        "up",
        deprecated,
        MIGRATING,
        connect=connect,
        ddl=ddl,
        migration_lock_timeout=migration_lock_timeout,
    )
    return await _run(dsn, Up(count, target), source, given, strict=strict, table=table)


async def down(
    dsn: str,
    count: int | Literal["all"],
    *,
    source: SourceLike = None,
    table: str | None = None,
    connect: ConnectRetry = DEFAULT_CONNECT,
    migration_lock_timeout: float = MIGRATION_LOCK_TIMEOUT,
    ddl: DDLLimits = DEFAULT_DDL,
    **deprecated: Any,
) -> MigrationResult:
    """Revert the last ``count`` applied migrations, or every one with ``"all"``."""
    given = settings(
        "down",
        deprecated,
        MIGRATING,
        connect=connect,
        ddl=ddl,
        migration_lock_timeout=migration_lock_timeout,
    )
    request = Down(None if count == "all" else count)
    return await _run(dsn, request, source, given, table=table)


async def goto(
    dsn: str,
    version: int,
    *,
    source: SourceLike = None,
    table: str | None = None,
    connect: ConnectRetry = DEFAULT_CONNECT,
    migration_lock_timeout: float = MIGRATION_LOCK_TIMEOUT,
    ddl: DDLLimits = DEFAULT_DDL,
    **deprecated: Any,
) -> MigrationResult:
    """Migrate up or down to ``version``, which must have a migration file."""
    given = settings(
        "goto",
        deprecated,
        MIGRATING,
        connect=connect,
        ddl=ddl,
        migration_lock_timeout=migration_lock_timeout,
    )
    return await _run(dsn, Goto(version), source, given, table=table)


async def force(
    dsn: str,
    version: int,
    *,
    allow_missing_file: bool = False,
    source: SourceLike = None,
    table: str | None = None,
    connect: ConnectRetry = DEFAULT_CONNECT,
    migration_lock_timeout: float = MIGRATION_LOCK_TIMEOUT,
    **deprecated: Any,
) -> MigrationResult:
    """Record ``version`` as clean without running anything (-1: no version).

    The recovery after a failed non-transactional migration left the version dirty.
    A version no file has is refused unless ``allow_missing_file``.
    """
    given = settings(
        "force", deprecated, LOCKING, connect=connect, migration_lock_timeout=migration_lock_timeout
    )
    request = Force(version, allow_missing_file=allow_missing_file)
    return await _run(dsn, request, source, given, table=table)


async def version(
    dsn: str,
    *,
    table: str | None = None,
    connect: ConnectRetry = DEFAULT_CONNECT,
    **deprecated: Any,
) -> VersionState:
    """The current version, read without the lock and without creating anything (from
    golang-migrate's table alone, where it has run without this engine)."""
    connect = settings("version", deprecated, CONNECTING, connect=connect).connect
    dsn, table = resolve_table(dsn, table)
    with typed_errors(dsn, "read the migration version"):
        async with open_session(dsn, connect, table=table) as session:
            return (await read_only_state(session))[0]


async def status(
    dsn: str,
    *,
    source: SourceLike = None,
    files: bool = True,
    table: str | None = None,
    connect: ConnectRetry = DEFAULT_CONNECT,
    **deprecated: Any,
) -> StatusReport:
    """The current version and one row a migration file, without the lock or side effects.

    ``files=False``: only the version and who runs a migration now (what the CLI's
    `version` prints): no file is read and no audit runs, so a broken file or a slow
    catalog does not stand in the way of reading the version.
    """
    connect = settings("status", deprecated, CONNECTING, connect=connect).connect
    dsn, table = resolve_table(dsn, table)
    # Loaded when asked: status's records are no start-up's (1-4 ms, bench_startup_tricks).
    from .status_reading import read_status

    with typed_errors(dsn, "read the migration status"):
        migrations = load_source(source) if files else None
        async with open_session(dsn, connect, table=table) as session:
            return await read_status(session, migrations)


async def apply_prerequisites(
    dsn: str,
    *,
    source: SourceLike = None,
    connect: ConnectRetry = DEFAULT_CONNECT,
    migration_lock_timeout: float = MIGRATION_LOCK_TIMEOUT,
    **deprecated: Any,
) -> PrerequisitesResult:
    """Run prerequisites.sql (the extensions) once, under the migration lock.

    A role that is no superuser may create trusted extensions (PostgreSQL 13+:
    pgcrypto, uuid-ossp) with CREATE on the database. When it may not create one
    that is missing, nothing runs and AdministratorRequiredError carries the
    ``CREATE EXTENSION`` statements an administrator must run (the CLI exits 3);
    extensions already there need nothing. Optional extensions the server does not
    have (Apache AGE), or that only an administrator may create, are reported in the
    result, not raised.
    """
    given = settings(
        "apply_prerequisites",
        deprecated,
        LOCKING,
        connect=connect,
        migration_lock_timeout=migration_lock_timeout,
    )
    dsn = _core_set(dsn, "prerequisites")
    # Loaded when asked, as by a run with work: 0.6-5.6 ms by machine (bench_startup_tricks).
    from .prerequisites import create_extensions

    with typed_errors(dsn, "run prerequisites.sql"):
        migrations = load_source(source)
        if migrations.prerequisites is None:
            raise MigrationSourceError(
                f"{migrations.description} has no prerequisites.sql", file=migrations.description
            )
        async with locked_session(
            dsn, given.connect, migration_lock_timeout=given.migration_lock_timeout, ensure=False
        ) as session:
            return await create_extensions(session.conn, migrations, migrations.prerequisites)


async def baseline(
    dsn: str,
    *,
    source: SourceLike = None,
    verify: bool = True,
    scratch_dsn: str | None = None,
    connect: ConnectRetry = DEFAULT_CONNECT,
    migration_lock_timeout: float = MIGRATION_LOCK_TIMEOUT,
    **deprecated: Any,
) -> MigrationResult:
    """Adopt a database created before migrations: run baseline.sql (version 1, clean).

    With ``verify`` (the default) the database's schema is first compared with
    what the first migration creates on a scratch database (partitions aside),
    and a mismatch is refused with the differences listed. The scratch database
    is created beside ``dsn``'s (CREATEDB), or is ``scratch_dsn``: an empty database
    the operator provides, as for :func:`check`.
    """
    given = settings(
        "baseline",
        deprecated,
        LOCKING,
        connect=connect,
        migration_lock_timeout=migration_lock_timeout,
    )
    dsn = _core_set(dsn, "baseline")
    from .baselining import adopt  # loaded when asked, as status's reading

    with typed_errors(dsn, "baseline the database"):
        return await adopt(dsn, load_source(source), given, verify=verify, scratch_dsn=scratch_dsn)


async def check(
    dsn: str,
    *,
    source: SourceLike = None,
    table: str | None = None,
    scratch_dsn: str | None = None,
    connect: ConnectRetry = DEFAULT_CONNECT,
) -> CheckReport:
    """Prove on a scratch database beside ``dsn``'s that every down undoes its up.

    The scratch database is created (and dropped) on ``dsn``'s server, which needs
    CREATEDB; a role without it gets AdministratorRequiredError naming both ways out.
    ``scratch_dsn``: an empty database the operator provides instead (extensions
    allowed, so an administrator can create them there); refused with
    ScratchDatabaseError when it holds anything else or is ``dsn``'s own database,
    and left empty again afterwards. Raises ReversibilityError listing every problem
    (naming rules included); returns the versions checked when all is well. ``table``:
    the set's version table (a service's own set gets the packaged set it requires first).
    ``connect``: how the first connection waits for a database still starting.
    """
    connect = checked_connect(connect)
    dsn, table = resolve_table(dsn, table)
    with typed_errors(dsn, "check the migrations on a scratch database"):
        validate_dsn(dsn)
        if scratch_dsn is not None:
            validate_dsn(scratch_dsn, setting="the scratch DSN")
        # The catalog proofs load on first use: they would cost every CLI start ~60 ms.
        from ..schema.tenancy import rls_gaps
        from .proofs.check import prove_reversible

        migrations = load_source(source)
        async with open_session(dsn, connect) as session:
            from ..postgres.indexes import invalid_indexes

            invalid = await invalid_indexes(session.conn)  # in the database itself
        return await prove_reversible(
            dsn,
            migrations,
            audits=(rls_gaps,),
            found=invalid,
            table=VersionTable(table),
            scratch_dsn=scratch_dsn,
        )


async def drift(
    dsn: str,
    *,
    source: SourceLike = None,
    scratch_dsn: str | None = None,
    app_roles: Sequence[str] = ("silentpulse_app",),
    sets: Sequence[tuple[SourceLike, str]] = (),
    connect: ConnectRetry = DEFAULT_CONNECT,
    **deprecated: Any,
) -> DriftReport:
    """Compare the live schema with what the migration files build at its version.

    Reads the live database (its catalog only: a read-only role is enough, and it
    takes no lock the application waits for) while prerequisites.sql and the files
    up to the live version are applied on a scratch database: one created beside
    ``dsn``'s and dropped (CREATEDB), or ``scratch_dsn``, an empty database the
    operator provides (refused if it holds anything or is the live database, left
    empty afterwards). Object by object: tables, columns, constraints (NOT VALID
    included), indexes (INVALID included), row-level security and every policy,
    triggers, functions, sequences, owners, grants; each monthly partition against
    a month the files build. Differences the lifecycle jobs and the runbook make
    (months ahead, detached months, default privileges) are excused, each with its
    rule; a blanket grant on every table only to ``app_roles`` (the runbook's
    application role) or a role the database's default privileges name. A dirty
    database raises DirtyDatabaseError: it is between two versions. Every service set
    the database records is built after the packaged set, in their ``requires``
    order: from ``sets`` (its files, its version table) where given, else from the up
    files the runner stored when it applied them (stored_files.py); one neither given
    nor buildable from what is stored is a ConfigurationError naming it and --set
    (its tables would read as drift).
    """
    connect = settings("drift", deprecated, CONNECTING, connect=connect).connect
    dsn = _core_set(dsn, "drift")
    with typed_errors(dsn, "compare the live schema with the migration files"):
        if scratch_dsn is not None:
            validate_dsn(scratch_dsn, setting="the scratch DSN")
        from .schema_diff.report import drift_report  # the catalog wing: on first use
        from .version_table import check_table_name

        migrations = load_source(source)
        given = [
            (load_source(files), check_table_name(table, setting="a service set's version table"))
            for files, table in sets
        ]
        return await drift_report(
            dsn, migrations, given, connect=connect, scratch_dsn=scratch_dsn, app_roles=app_roles
        )


async def distribute(
    dsn: str,
    *,
    dry_run: bool = False,
    shard_count: int | None = None,
    connect: ConnectRetry = DEFAULT_CONNECT,
    migration_lock_timeout: float = MIGRATION_LOCK_TIMEOUT,
    ddl: DDLLimits = DEFAULT_DDL,
) -> DistributionReport:
    """Distribute the migrated schema by tenant on a Citus coordinator (docs/scaling.md).

    Reference tables first (``tenants``, the lookups without tenant_id, and ``users``
    and ``api_keys`` while their unique keys are platform-wide), then every other tenant
    table distributed by tenant_id, colocated, each after the tables it references;
    then the coordinator's copy of the rows moved to the shards is freed. The version
    tables and the alert listener's bookkeeping stay on the coordinator. Each step is a
    transaction of its own, under the migration lock; a second run finds nothing to do,
    and a run cut short is finished by the next. ``shard_count``: the distributed
    tables' shards (default: the server's ``citus.shard_count``), fixed by the first.

    ``dry_run``: the plan, with each step's statements and settings; nothing changed,
    no lock taken. Refused before any change: a database that is not a Citus
    coordinator (CitusRequiredError), one not migrated to the tenant-first keys
    (SchemaVersionError, DirtyDatabaseError), a role that does not own the tables
    (PermissionDeniedError). A step waits for a table lock as ``ddl`` says (then
    retried); Citus refusing a step is a DistributionError naming it.
    """
    given = settings(
        "distribute",
        {},
        (),
        connect=connect,
        ddl=ddl,
        migration_lock_timeout=migration_lock_timeout,
    )
    dsn = _core_set(dsn, "distribute")
    # On first use, as drift's: the CLI's other commands do not load them.
    from ..schema.distribution import distribute_on
    from .stored_files import FILES_TABLE

    with typed_errors(dsn, "distribute the schema on Citus"):
        session_of = (
            open_session(dsn, given.connect)
            if dry_run
            else locked_session(
                dsn,
                given.connect,
                migration_lock_timeout=given.migration_lock_timeout,
                ensure=False,
            )
        )
        async with session_of as session:
            store = session.store
            state = await store.version() if session.versioned else None
            keep = {name: VERSION_KEPT for name in await recorded_sets(store)}
            keep |= {name: VERSION_KEPT for name in (VERSION_TABLE, HISTORY_TABLE, FILES_TABLE)}
            return await distribute_on(
                session.conn,
                state,
                schema=session.table.schema or "public",
                keep=keep,
                where=redact(dsn, dsn),
                dry_run=dry_run,
                shard_count=shard_count,
                limits=given.ddl,
            )


VERSION_KEPT = (
    "the migration runner's bookkeeping (version, history, stored files), read and "
    "written under the migration lock on the coordinator alone"
)


# --- shared by the verbs ------------------------------------------------------------


def _core_set(dsn: str, verb: str) -> str:
    """``dsn`` for a verb of the packaged set only (its x-migrations-table removed)."""
    dsn, table = resolve_table(dsn, None)
    if table != VERSION_TABLE:
        raise ConfigurationError(
            f"{verb} belongs to the packaged set (schema_migrations), not to the DSN's "
            f"?x-migrations-table={table}"
        )
    return dsn


async def _run(
    dsn: str,
    request: Request,
    source: SourceLike,
    given: Settings,
    *,
    strict: bool = False,
    table: str | None = None,
) -> MigrationResult:
    """An operator's verb through the engine: a required version not there is an error
    at once (the operator runs the other set first), and no partition work after."""
    dsn, table, statement_timeout = resolve(dsn, table)
    with typed_errors(dsn, "change the migration version"):
        job = Job(request, load_source(source), table, given, statement_timeout, strict)
        return await run_request(dsn, job)

"""The engine: one run of a request, top to bottom (:func:`run_request`), and its steps.

golang-migrate's ``migrate.go`` reads: lock, read the version, plan, run, unlock.
Ours adds what lets many replicas start at once cheaply: a committed clean
version is final (transactional migrations commit with it), so "nothing left to
do" is answered without the lock (:class:`NoChangeCheck`); a replica that has to
wait asks that again each time it wakes, and leaves as soon as the answer is
yes. The files likely to run are read before the lock (:func:`parse_ahead`); the
plan that runs is made again under it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from ..errors import MissingMigrationFileError, RequiredVersionError, SilentPulseDBError
from ..postgres.translate import typed_errors
from ..results.migrations import AppliedMigration, MigrationResult, VersionState
from ..settings import Settings
from .files.source import MigrationSource
from .plan import (
    Force,
    Plan,
    Request,
    Up,
    is_settled,
    make_plan,
    require_same_set,
    version_label,
)
from .session import MigrationLock, Session, create_tables, open_session, read_only_state
from .version_table import VERSION_TABLE, State, VersionTable, version_if_there

if TYPE_CHECKING:
    from .files.statements import ParsedSQL

logger = logging.getLogger("silentpulse_db.migrate")

# A connect that took longer than this (the server starting, retries) is worth a word
# in the "migrated ..." line; a usual connect takes milliseconds.
WAIT_WORTH_SAYING = 0.5


class Outcome(NamedTuple):
    """What a run did: the plan it followed, the migrations it applied, and whether the
    work after applying is due (None: not known, ask; False: not due as last read, or
    done under the lock)."""

    plan: Plan
    applied: Sequence[AppliedMigration] = ()
    due: bool | None = None


class AfterApply(Protocol):
    """Work a run does after applying: under the lock when it applied (the waiters find
    it done), else when ``probe`` (a boolean SQL expression asked in the session's
    first query and again by each waiter) says it is due. Start-up's: the partitions."""

    @property
    def probe(self) -> str: ...

    async def __call__(self, conn: Any, dsn: str, *, due: bool | None) -> None: ...


class NoChangeCheck:
    """Is there no change to make for ``request`` (golang-migrate's ErrNoChange)?
    :meth:`settled` answers with the plan of a settled database (no step: what the run
    returns) when there is none, None when there is work. The first answer uses the state
    the session's probe read; later ones (a waiter woken by the lock's holder) read it
    again, with the ``probe`` expression (the run's AfterApply) in the same query."""

    def __init__(
        self,
        session: Session,
        migrations: MigrationSource,
        request: Up,
        strict: bool,
        probe: str | None = None,
    ) -> None:
        self.session = session
        self.migrations = migrations
        self.request = request
        self.strict = strict
        self.probe = probe
        # Whether the work after applying is due, as read with the last state.
        self.due = session.after_due
        # The state the probe read, until the first answer uses it.
        self._unread = session.state
        # The version tables, read as the probe found them (and as each look finds them).
        self._store = session.store

    async def settled(self) -> Plan | None:
        read = await self._read_state()
        if read is None:
            return None
        state, history = read
        require_same_set(self.migrations, history, self.session.table.name)
        if not is_settled(self.migrations, state, target=self.request.target):
            return None
        return warned(
            make_plan(self.migrations, state, self.request, history=history, strict=self.strict)
        )

    async def _read_state(self) -> State | None:
        """The version and history; None when the version tables do not exist yet."""
        if self._unread is not None:
            read, self._unread = self._unread, None
            return read
        store = self._store
        if not store.found.migrated and not (await store.look()).migrated:
            # Asked rather than read: a read that fails would log an ERROR in the
            # server's log at every poll of every waiter.
            return None
        if self.probe is None:
            self.due = None
            return await store.state()
        # Asked again in the same query (the holder may have done that work).
        state, row = await store.state_beside(f"SELECT {self.probe} AS due")
        self.due = row["due"]
        return state


class Job(NamedTuple):
    """One run for the engine: the request, the set's files and version table, and the
    verb's settings (connecting, the migration lock's wait, the DDL limits).

    ``statement_timeout``: each migration statement's limit in seconds (the DSN's
    x-statement-timeout; None: none; a file's ``-- silentpulse: statement_timeout`` wins
    for its file). ``after``: the work after applying (start-up's partitions).
    ``wait_for_required``: a file that requires another set's version not there yet waits
    for it as connecting waits for the server (a service started before the API); else
    RequiredVersionError at once (an operator runs the other set first).
    """

    request: Request
    migrations: MigrationSource
    table: str
    settings: Settings
    statement_timeout: float | None = None
    strict: bool = False
    after: AfterApply | None = None
    wait_for_required: bool = False


async def run_request(dsn: str, job: Job) -> MigrationResult:
    """Run ``job`` as golang-migrate's Migrate.Up runs one:

    1. connect (as ``job.settings.connect`` says) and probe the database, its version and
       history in one query;
    2. an ``Up`` with nothing left to do is answered there, without the lock;
    3. else read the files likely to run, wait for the lock (leaving as soon as another
       replica has done the work), plan again under it, apply, and ``job.after``;
    4. a file that requires another set's version not there yet: with
       ``job.wait_for_required``, step 3 again, as many times and as far apart as the
       connect attempts; else RequiredVersionError at once.
    """
    connect, after = job.settings.connect, job.after
    probe = after.probe if after is not None else None
    quick = isinstance(job.request, Up)  # nothing left is final without the lock
    async with open_session(
        dsn,
        connect,
        after_probe=probe,
        with_state=quick,
        table=job.table,
        lock_wait=job.settings.migration_lock_timeout,
    ) as session:
        check = (
            NoChangeCheck(session, job.migrations, job.request, job.strict, probe)
            if isinstance(job.request, Up)
            else None
        )
        plan = await check.settled() if check is not None and session.tables_exist else None
        if plan is not None:
            assert check is not None
            outcome = Outcome(plan, due=check.due)
        else:
            tries = connect.attempts if job.wait_for_required else 1
            for number in range(1, tries + 1):
                try:
                    outcome = await _locked(dsn, session, job, check)
                    break
                except RequiredVersionError as exc:
                    if number >= tries:
                        if tries > 1:
                            logger.error(
                                "gave up after %d attempts %.1fs apart: %s",
                                tries,
                                connect.wait,
                                exc,
                            )
                        raise
                    logger.warning(
                        "%s; trying again in %.1fs (attempt %d of %d)",
                        exc,
                        connect.wait,
                        number,
                        tries,
                    )
                    await asyncio.sleep(connect.wait)
        result = migration_result(outcome, session)
        # Not when done under the lock or read as not due (False); never fatal.
        if after is not None and outcome.due is not False:
            await after(session.conn, dsn, due=outcome.due)
        return result


async def _locked(dsn: str, session: Session, job: Job, check: NoChangeCheck | None) -> Outcome:
    """Step 3 of :func:`run_request`: read ahead, lock (or leave: no change), plan, apply."""
    from .run.applier import Applier  # loaded when there is work, as in parse_ahead

    migrations, request, strict = job.migrations, job.request, job.strict
    lock_wait, ddl = job.settings.migration_lock_timeout, job.settings.ddl
    parsed = await parse_ahead(session, migrations, request, strict)
    lock = session.lock(lock_wait)
    plan = await lock_unless_no_change(lock, check)
    if plan is not None:
        assert check is not None
        return Outcome(plan, due=check.due)
    conn = session.conn
    try:
        store = session.store
        with typed_errors(dsn, create_tables(session.table)):  # or adds newer columns
            await store.ensure()
        state, history = await store.state(several=isinstance(request, Force))
        require_same_set(migrations, history, session.table.name)
        # A dirty version is read against the catalog; a backend still building or
        # dropping its index is waited for, at most the migration lock's wait. Force
        # records what it is told (index_healing.refuse_force guards it).
        unfinished = None
        if state.dirty and not isinstance(request, Force):
            from .run.unfinished import read_unfinished  # a dirty version is rare

            unfinished = await read_unfinished(conn, migrations, state, store, wait=lock_wait)
        plan = warned(
            make_plan(
                migrations, state, request, history=history, strict=strict, unfinished=unfinished
            )
        )
        await require_versions(conn, plan, session.wait)
        if plan.steps:
            await before_the_steps(conn, session, migrations, plan)
        applier = Applier(
            conn,
            migrations,
            ddl=ddl,
            statement_timeout=job.statement_timeout,
            table=session.table,
            build_wait=lock_wait,
            one_by_one=session.citus,  # Citus refuses a statement sent with others
        )
        applied = await applier.apply(plan, parsed)
        if job.after is None:
            return Outcome(plan, applied)
        await job.after(conn, dsn, due=None)  # before the release: the waiters find it done
        return Outcome(plan, applied, due=False)
    finally:
        await lock.release()


async def lock_unless_no_change(lock: MigrationLock, check: NoChangeCheck | None) -> Plan | None:
    """Take the migration lock and return None; or, while waiting, return the plan
    ``check`` answers once there is no change left to make (another replica has made
    it). It is asked before each try after the first, or the first waiter to try would
    take the lock only to find nothing to do, and the others would queue behind it."""
    try:
        while not await lock.try_take():
            await lock.pause()
            if check is not None and (plan := await check.settled()) is not None:
                logger.info("stopped waiting for the migration lock: nothing left")
                # A first key ours is released with a NOTIFY; still LISTENing: the session
                # ends now (UNLISTEN would cost each of many replicas a round trip).
                await lock.release()
                return plan
    except BaseException:
        await lock.stop_waiting()
        raise
    await lock.stop_waiting()
    return None


async def before_the_steps(
    conn: Any, session: Session, migrations: MigrationSource, plan: Plan
) -> None:
    """What a plan with steps checks and keeps first: the extensions its up files need,
    and a service set's up files, stored for drift before they run (stored_files.py)."""
    ups = [step.file for step in plan.steps if step.direction == "up"]
    if migrations.prerequisites or any(file.directives.extensions for file in ups):
        # Loaded when there are extensions to check (a service set seldom has any):
        # 0.6-5.6 ms of a start by machine (bench_startup_tricks).
        from .prerequisites import check_extensions

        await check_extensions(conn, migrations, ups)
    if session.table.name == VERSION_TABLE:
        return  # the packaged set's files are in the package drift runs from
    from .stored_files import store_files  # a service set's, when there is work

    await store_files(
        conn,
        session.table.name,
        migrations,
        [(s.migration.version, s.file) for s in plan.steps if s.direction == "up"],
    )


async def parse_ahead(
    session: Session, migrations: MigrationSource, request: Request, strict: bool
) -> dict[str, ParsedSQL]:
    """Read the files that will likely run before taking the lock (a large file must not
    hold other runners up); the plan made under the lock decides what actually runs."""
    if isinstance(request, Force):
        return {}  # runs no file (and may be what puts an ambiguous version right)
    if session.state is not None:
        state, history = session.state  # as the probe read it: a guess is all this needs
    else:  # golang-migrate's version alone, if it has run here: the files after it
        state, history = await read_only_state(session)
    try:
        candidate = make_plan(migrations, state, request, history=history, strict=strict)
    except MissingMigrationFileError:
        raise  # refused before the lock and the version tables; a rerun reads again
    except SilentPulseDBError:
        return {}  # decided again, under the lock
    # Loaded when there is work: spares a no-op start-up ~45 ms of runner (tenacity, pglast).
    from .run.applier import parse_steps

    return parse_steps(candidate.steps)


async def require_versions(conn: Any, plan: Plan, wait: float) -> None:
    """RequiredVersionError unless every other set's version the plan's files require
    (``-- silentpulse: requires <table> >= <version>``) is there, clean. ``wait``: for a
    lock another session holds on their version tables (VersionStore's)."""
    found: dict[str, VersionState | None] = {}
    for step in plan.steps:
        if step.direction != "up":
            continue
        for table, version in step.file.directives.requires:
            if table not in found:
                found[table] = await version_if_there(conn, VersionTable(table), wait)
            state = found[table]
            if state is not None and not state.dirty and (state.version or 0) >= version:
                continue
            words = "no such table" if state is None else str(state)
            raise RequiredVersionError(
                f"{step.file.location} requires {table} >= {version}, and the database has "
                f"{words}: it runs once that set of migrations has been applied (the core "
                f"schema: the API's run_migrations, or `silentpulse-db up`)",
                file=step.file.location,
                table=table,
                version=version,
                found=words,
            )


def warned(plan: Plan) -> Plan:
    """Log the plan's warnings (database ahead, changed files, a rerun) before it runs."""
    for warning in plan.warnings:
        logger.warning("%s", warning)
    return plan


def migration_result(outcome: Outcome, session: Session) -> MigrationResult:
    """The result of a run on ``session``, logged if it applied anything: how long since
    it connected, and how long connecting took when the database kept it waiting. Each
    step either ran or raised: the plan's last version is the database's."""
    plan, applied = outcome.plan, outcome.applied
    if applied:
        took = time.perf_counter() - session.connected
        waited = (
            f", after {session.connecting:.2f} s waiting for the database"
            if session.connecting >= WAIT_WORTH_SAYING
            else ""
        )
        logger.info(
            "migrated %sfrom version %s to %s in %.2f s (%d applied)%s",
            "" if session.table.name == VERSION_TABLE else f"{session.table.name} ",
            version_label(plan.state.version),
            version_label(plan.version_after),
            took,
            len(applied),
            waited,
        )
    return MigrationResult(
        version_before=plan.state.version,
        version_after=plan.version_after,
        applied=tuple(applied),
        database_ahead=plan.database_ahead,
        warnings=plan.warnings,
    )

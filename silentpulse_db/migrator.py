"""Planning and applying migrations on a connection that holds the migration lock.

A file that can run in a transaction runs in ONE transaction together with its
version change and history row: if it fails, the database keeps its previous
version, clean (golang-migrate would leave it dirty). A file holding
statements PostgreSQL refuses in a transaction (CREATE INDEX CONCURRENTLY,
VACUUM, ALTER SYSTEM, ...) follows golang-migrate's protocol: version marked
dirty, statements run one by one, version marked clean.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import asyncpg

from .errors import (
    ChecksumMismatchError,
    DatabaseAheadError,
    DirtyDatabaseError,
    MigrationFailedError,
    MigrationInterruptedError,
    VersionNotFoundError,
)
from .results import AppliedMigration, StatusRow
from .source import Migration, MigrationFile, MigrationSource
from .statements import ParsedSQL, Statement, analyze, line_and_column, line_text
from .version_table import (
    NIL_VERSION,
    HistoryEntry,
    HistoryRecord,
    VersionState,
    latest_history,
    read_version,
    set_version,
    write_version,
)

logger = logging.getLogger("silentpulse_db.migrator")

Direction = Literal["up", "down"]
CLI = "silentpulse-db"

# Errors that mean the connection, not the SQL, failed.
_CONNECTION_LOST = (
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.InterfaceError,
    ConnectionError,
    OSError,
)


def version_label(version: int | None) -> str:
    return "none" if version is None else str(version)


class Migrator:
    """Up, down, goto, force and status over one locked connection and one source."""

    def __init__(self, conn: Any, source: MigrationSource) -> None:
        self.conn = conn
        self.source = source

    # --- reading state -------------------------------------------------------

    async def state(self) -> VersionState:
        return await read_version(self.conn)

    async def require_clean(self, state: VersionState | None = None) -> VersionState:
        """The current version; DirtyDatabaseError with the recovery commands if dirty."""
        if state is None:
            state = await self.state()
        if state.dirty:
            raise DirtyDatabaseError(
                self.dirty_message(state), version=state.version or NIL_VERSION
            )
        return state

    def dirty_message(self, state: VersionState) -> str:
        version = state.version
        migration = self.source.get(version) if version is not None else None
        file = f" ({migration.up.location})" if migration else ""
        below = self.source.previous_version(version) if version is not None else None
        below_cmd = f"{CLI} force {NIL_VERSION if below is None else below}"
        if version is None:
            return (
                f"Dirty database version {NIL_VERSION}: a down migration of the first version "
                f"stopped partway. Inspect the schema, then run `{CLI} force {NIL_VERSION}` "
                f"if nothing is left of it, and `{CLI} up`."
            )
        return (
            f"Dirty database version {version}{file}: a migration stopped partway and the "
            f"schema may be half-changed. Inspect the schema, then record the version it "
            f"matches: `{below_cmd}` if none of version {version} took effect, or "
            f"`{CLI} force {version}` if all of it did; then run `{CLI} up`."
        )

    def ahead_of_files(self, state: VersionState) -> bool:
        return state.version is not None and self.source.get(state.version) is None

    def past_latest_file(self, state: VersionState) -> bool:
        """The database is newer than every file (an older replica during a deploy)."""
        latest = self.source.latest
        return state.version is not None and (latest is None or state.version > latest)

    def nothing_to_do(self, state: VersionState, *, target: int | None = None) -> bool:
        """Clean, nothing pending up to ``target``, and not at an unknown version in the middle."""
        if state.dirty or self.pending_up(state, target=target):
            return False
        return not self.ahead_of_files(state) or self.past_latest_file(state)

    def ahead_error(self, state: VersionState) -> DatabaseAheadError:
        assert state.version is not None
        latest = self.source.latest
        if self.past_latest_file(state):
            message = (
                f"database is at version {state.version}, ahead of the newest migration file "
                f"({version_label(latest)}) in {self.source.description}: this code is older "
                f"than the schema (rolling deploy?)"
            )
        else:
            message = (
                f"database is at version {state.version}, which has no migration file in "
                f"{self.source.description} (files: {', '.join(map(str, self.source.versions))})"
            )
        return DatabaseAheadError(
            message, database_version=state.version, latest_file_version=latest
        )

    def checksum_problems(
        self, state: VersionState, history: Mapping[int, HistoryEntry]
    ) -> list[str]:
        """Applied versions whose file changed since it was applied."""
        if state.version is None:
            return []
        problems = []
        for migration in self.source.migrations:
            if migration.version > state.version:
                break
            entry = history.get(migration.version)
            if entry and entry.checksum and entry.checksum != migration.up.checksum:
                problems.append(
                    f"{migration.up.location} changed after it was applied on "
                    f"{entry.applied_at:%Y-%m-%d %H:%M:%S%z} (recorded sha256 "
                    f"{entry.checksum[:12]}..., file {migration.up.checksum[:12]}...)"
                )
        return problems

    def verify_checksums(
        self, state: VersionState, history: Mapping[int, HistoryEntry], *, strict: bool
    ) -> list[str]:
        problems = self.checksum_problems(state, history)
        if problems and strict:
            raise ChecksumMismatchError("; ".join(problems))
        for problem in problems:
            logger.warning("%s", problem)
        return problems

    async def status(self) -> list[StatusRow]:
        state = await self.state()
        history = await latest_history(self.conn)
        rows: list[StatusRow] = []
        current = NIL_VERSION if state.version is None else state.version
        for migration in self.source.migrations:
            applied = migration.version <= current
            entry = history.get(migration.version) if applied else None
            if not applied:
                checksum: Literal["ok", "changed", "unknown", "-"] = "-"
            elif entry is None or entry.checksum is None:
                checksum = "unknown"
            else:
                checksum = "ok" if entry.checksum == migration.up.checksum else "changed"
            stateword: Literal["applied", "pending", "dirty"] = (
                "dirty"
                if state.dirty and migration.version == current
                else "applied"
                if applied
                else "pending"
            )
            rows.append(
                StatusRow(
                    version=migration.version,
                    name=migration.name,
                    state=stateword,
                    applied_at=entry.applied_at if entry else None,
                    duration_ms=entry.duration_ms if entry else None,
                    checksum=checksum,
                )
            )
        if self.ahead_of_files(state):
            assert state.version is not None
            rows.append(StatusRow(version=state.version, name="?", state="applied (no file)"))
            rows.sort(key=lambda r: r.version)
        return rows

    # --- planning ----------------------------------------------------------------

    def pending_up(
        self, state: VersionState, *, count: int | None = None, target: int | None = None
    ) -> list[Migration]:
        current = NIL_VERSION if state.version is None else state.version
        plan = [
            m
            for m in self.source.migrations
            if m.version > current and (target is None or m.version <= target)
        ]
        return plan if count is None else plan[:count]

    def applied_down(
        self, state: VersionState, *, count: int | None = None, target: int | None = None
    ) -> list[Migration]:
        """Applied migrations to revert, newest first, down to (not including) ``target``."""
        if state.version is None:
            return []
        if self.ahead_of_files(state):
            raise self.ahead_error(state)
        plan = [
            m
            for m in reversed(self.source.migrations)
            if m.version <= state.version and (target is None or m.version > target)
        ]
        return plan if count is None else plan[:count]

    # --- operations -----------------------------------------------------------------

    async def up(
        self, *, count: int | None = None, target: int | None = None
    ) -> list[AppliedMigration]:
        state = await self.require_clean()
        if self.ahead_of_files(state):
            raise self.ahead_error(state)
        return await self.apply(self.pending_up(state, count=count, target=target), "up")

    async def down(self, *, count: int | None = None) -> list[AppliedMigration]:
        state = await self.require_clean()
        return await self.apply(self.applied_down(state, count=count), "down")

    async def goto(self, version: int) -> list[AppliedMigration]:
        if self.source.get(version) is None:
            raise VersionNotFoundError(
                f"no migration file for version {version} in {self.source.description} "
                f"(files: {', '.join(map(str, self.source.versions)) or 'none'})"
            )
        state = await self.require_clean()
        if self.ahead_of_files(state):
            raise self.ahead_error(state)
        current = NIL_VERSION if state.version is None else state.version
        if version >= current:
            return await self.apply(self.pending_up(state, target=version), "up")
        return await self.apply(self.applied_down(state, target=version), "down")

    async def force(self, version: int) -> None:
        """Record ``version`` clean without running anything (-1: no version)."""
        if version < NIL_VERSION:
            raise VersionNotFoundError(f"force takes a version >= -1, got {version}")
        target = None if version == NIL_VERSION else version
        async with self.conn.transaction():
            migration = self.source.get(version)
            await write_version(
                self.conn,
                target,
                False,
                HistoryRecord(version, migration.name if migration else "-", "force"),
            )
        logger.info("forced version %s", version_label(target))

    async def run_file(self, file: MigrationFile) -> None:
        """Run a whole file as one simple query (one implicit transaction)."""
        await self._execute(file, Statement(file.sql, 0, "file"), dirty=False)

    async def apply(
        self, plan: Sequence[Migration], direction: Direction
    ) -> list[AppliedMigration]:
        # Read every file of the plan before running any: a file that cannot
        # run (no statement, explicit COMMIT) stops the plan with nothing applied.
        parsed = [analyze(m.file(direction).sql, m.file(direction).location) for m in plan]
        # What a migration says with RAISE WARNING (rows it could not fix, a
        # constraint left NOT VALID) reaches the operator's log, naming the file.
        running: list[str] = []

        def on_message(_conn: Any, message: Any) -> None:
            where = running[-1] if running else "migration"
            if getattr(message, "severity", "") == "WARNING":
                logger.warning("%s: %s", where, message.message)
            else:
                logger.info("%s: %s", where, getattr(message, "message", message))

        self.conn.add_log_listener(on_message)
        try:
            applied = []
            for migration, sql in zip(plan, parsed, strict=True):
                running.append(migration.file(direction).location)
                applied.append(await self._apply_one(migration, direction, sql))
            return applied
        finally:
            self.conn.remove_log_listener(on_message)

    async def _apply_one(
        self, migration: Migration, direction: Direction, parsed: ParsedSQL
    ) -> AppliedMigration:
        file = migration.file(direction)
        target = (
            migration.version
            if direction == "up"
            else self.source.previous_version(migration.version)
        )
        if parsed.non_transactional:
            logger.info(
                "%s runs outside a transaction (%s): golang-migrate's dirty protocol applies",
                file.location,
                "; ".join(parsed.non_transactional),
            )
            duration = await self._run_dirty_protocol(migration, file, parsed, target, direction)
        else:
            duration = await self._run_in_transaction(migration, file, parsed, target, direction)
        result = AppliedMigration(
            version=migration.version,
            name=migration.name,
            direction=direction,
            duration=duration,
            transactional=not parsed.non_transactional,
        )
        logger.info("applied %s", result)
        return result

    async def _run_in_transaction(
        self,
        migration: Migration,
        file: MigrationFile,
        parsed: ParsedSQL,
        target: int | None,
        direction: Direction,
    ) -> float:
        started = time.perf_counter()
        try:
            async with self.conn.transaction():
                for statement in parsed.statements:
                    await self._execute(file, statement, dirty=False)
                duration = time.perf_counter() - started
                record = HistoryRecord(
                    migration.version, migration.name, direction, file.checksum, duration * 1000
                )
                await write_version(self.conn, target, False, record)
        except _CONNECTION_LOST as exc:  # lost while writing the version or committing
            raise self._interrupted(file, exc, dirty=False) from None
        return duration

    async def _run_dirty_protocol(
        self,
        migration: Migration,
        file: MigrationFile,
        parsed: ParsedSQL,
        target: int | None,
        direction: Direction,
    ) -> float:
        await set_version(self.conn, NIL_VERSION if target is None else target, True)
        started = time.perf_counter()
        for statement in parsed.statements:
            await self._execute(file, statement, dirty=True)
        duration = time.perf_counter() - started
        async with self.conn.transaction():
            record = HistoryRecord(
                migration.version, migration.name, direction, file.checksum, duration * 1000
            )
            await write_version(self.conn, target, False, record)
        return duration

    async def _execute(self, file: MigrationFile, statement: Statement, *, dirty: bool) -> None:
        """Run one statement (simple protocol); turn a failure into an error naming its line."""
        try:
            await self.conn.execute(statement.sql)
        except _CONNECTION_LOST as exc:
            raise self._interrupted(file, exc, dirty=dirty) from None
        except asyncpg.PostgresError as exc:
            raise self._failed(file, exc, statement=statement, dirty=dirty) from None

    def _failed(
        self,
        file: MigrationFile,
        exc: asyncpg.PostgresError,
        *,
        statement: Statement,
        dirty: bool,
    ) -> MigrationFailedError:
        sqlstate = getattr(exc, "sqlstate", None)
        message = getattr(exc, "message", None) or str(exc)
        position = getattr(exc, "position", None)
        if position:
            # The server counts characters from 1 within the statement it was sent.
            line, column = line_and_column(file.sql, statement.offset + int(position))
            where = f" line {line}, column {column}"
        else:
            # No position (many DDL errors): name the statement that failed.
            line, column = line_and_column(file.sql, statement.offset + 1)
            where = f" line {line} (the statement starting there)"
        text = line_text(file.sql, line)
        excerpt = f"\n{line:>6} | {text}"
        if position:
            excerpt += f"\n       | {' ' * (column - 1)}^"
        details = []
        for attr in ("detail", "hint", "context"):
            value = getattr(exc, attr, None)
            if value:
                details.append(f"{attr}: {value}")
        outcome = (
            "The database is left dirty: "
            + self.dirty_message(VersionState(self._dirty_version(file), True))
            if dirty
            else "Its transaction was rolled back: nothing of it was applied and the version "
            "is unchanged, clean."
        )
        text = (
            f"migration failed: {file.location}{where}: {message} (SQLSTATE {sqlstate})"
            f"{excerpt}" + "".join(f"\n  {d}" for d in details) + f"\n{outcome}"
        )
        return MigrationFailedError(
            text,
            file=file.location,
            line=line,
            column=column if position else None,
            sqlstate=sqlstate,
            server_message=message,
            dirty=dirty,
        )

    def _dirty_version(self, file: MigrationFile) -> int | None:
        for migration in self.source.migrations:
            if migration.up is file:
                return migration.version
            if migration.down is file:
                return self.source.previous_version(migration.version)
        return None

    def _interrupted(
        self, file: MigrationFile, exc: BaseException, *, dirty: bool
    ) -> MigrationInterruptedError:
        reason = f"{type(exc).__name__}: {exc}"
        outcome = (
            "The database is left dirty (the statements ran one by one); see `"
            f"{CLI} version` and force the version the schema matches."
            if dirty
            else "The server rolled back the unfinished transaction: nothing of this migration "
            "was applied and the version is unchanged. Run again."
        )
        return MigrationInterruptedError(
            f"connection lost while applying {file.location}: {reason}\n{outcome}",
            file=file.location,
            dirty=dirty,
        )

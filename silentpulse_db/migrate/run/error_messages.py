"""What a failed migration means for the operator: the typed error and its message."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...errors import (
    MigrationFailedError,
    MigrationInterruptedError,
    TableLockHolder,
    TableLockTimeoutError,
)
from ...postgres.connect import describe
from ...results.migrations import VersionState
from ..files.directives import duration_text
from ..files.source import MigrationFile, MigrationSource
from ..files.statements import analyze_cached, caret, line_and_column, line_text
from ..plan import CLI, NIL_VERSION, Step, Unfinished, dirty_message, version_label
from .index_healing import dropped_index, regclass_text
from .locate import refused_together

# What a Citus refusal of a message of several statements means, and the way out.
CITUS_REFUSED_TOGETHER = (
    "Citus refused this statement for the message it travelled in, not for itself: it "
    "forwards a statement's whole message to its workers, which refuse a message of "
    "several statements (citusdata/citus#6608). A run that finds the citus extension "
    "installed when it starts sends each statement alone: run again."
)


def failed(
    source: MigrationSource,
    file: MigrationFile,
    exc: Any,
    *,
    offset: int | None,
    position: int | None,
    dirty_version: int | None,
    span: tuple[int, int, bool] | None = None,
    replayed: bool = False,
    stays_at: str | None = None,
    run_timeout: float | None = None,
    step: Step | None = None,
) -> MigrationFailedError:
    """``offset``: where the failing statement starts in the file (None: unknown, e.g. at
    COMMIT); ``position``: the 0-based file offset the server pointed at, if any;
    ``span``: the first and last statement it may be, when neither is known, and whether
    it may have been the COMMIT; ``replayed``: the span's statements all ran when
    replayed (the error depended on another session); ``stays_at``: the version the
    database keeps, in words, when the migration was rolled back; ``run_timeout``: the
    run's limit on each statement (the DSN's x-statement-timeout), if any; ``step``: the
    step that ran outside a transaction, for a message true to its direction."""
    sqlstate = getattr(exc, "sqlstate", None)
    message = getattr(exc, "message", None) or str(exc)
    citus = refused_together(exc)
    line: int | None = None
    column: int | None = None
    if position is not None:
        line, column = line_and_column(file.sql, position + 1)
        where = f" line {line}, column {column}"
    elif offset is not None:
        # No position (many DDL errors): name the statement that failed.
        line, _ = line_and_column(file.sql, _first_code(file.sql, offset) + 1)
        where = f" line {line} (the statement starting there)"
    elif span is not None:
        first, _ = line_and_column(file.sql, _first_code(file.sql, span[0]) + 1)
        last, _ = line_and_column(file.sql, _first_code(file.sql, span[1]) + 1)
        commit = ", or at COMMIT" if span[2] else ""
        if citus:
            why = "Citus refused their message; replayed, each ran"
        elif replayed:
            why = (
                "it did not recur when the statements were replayed one by one: it came "
                "from another session's work at the time"
            )
        else:
            why = "the error has no position, and the migration ran too long to replay it"
        where = f" in one of the statements of lines {first}-{last}{commit} ({why})"
    else:
        where = " at COMMIT (a deferred constraint or trigger)"
    excerpt = f"\n{line:>6} | {line_text(file.sql, line)}" if line else ""
    if column and line:
        excerpt += f"\n       | {caret(line_text(file.sql, line), column)}"
    details = [
        f"{attr}: {value}"
        for attr in ("detail", "hint", "context")
        if (value := getattr(exc, attr, None))
    ]
    if sqlstate == "57014" and "statement timeout" in message:
        details.append(_whose_limit(file, run_timeout))
    if citus:
        where += ", refused by Citus"
        details.append(CITUS_REFUSED_TOGETHER)
    if dirty_version is not None:
        outcome = left_dirty(source, file, dirty_version, step, sqlstate=sqlstate)
    else:
        stays = f"the database stays at {stays_at}" if stays_at else "the version is unchanged"
        outcome = f"Its transaction was rolled back: nothing of it was applied and {stays}, clean."
    text = (
        f"migration failed: {file.location}{where}: {message} (SQLSTATE {sqlstate})"
        f"{excerpt}" + "".join(f"\n  {d}" for d in details) + f"\n{outcome}"
    )
    return MigrationFailedError(
        text,
        file=file.location,
        line=line,
        column=column,
        sqlstate=sqlstate,
        server_message=message,
        dirty=dirty_version is not None,
    )


def _whose_limit(file: MigrationFile, run_timeout: float | None) -> str:
    """Where a statement_timeout that cancelled a migration statement came from: the
    library runs its sessions without one, whatever the role or database sets."""
    own = file.directives.statement_timeout
    if own is not None:
        return (
            f"limit: statement_timeout={duration_text(own)} (set by the file itself, "
            f"'-- silentpulse: statement_timeout'); raise it there"
        )
    if run_timeout is not None:
        return (
            f"limit: statement_timeout={duration_text(run_timeout)} on each migration "
            f"statement, from the DSN's ?x-statement-timeout={round(run_timeout * 1000)} "
            f"(milliseconds); raise it there, or give this file its own "
            f"'-- silentpulse: statement_timeout=...'"
        )
    return (
        "limit: the migration's own SQL set statement_timeout (the library runs "
        "migrations without one, whatever the role or database sets)"
    )


def _first_code(sql: str, offset: int) -> int:
    """Skip the blank lines and comments a statement's slice starts with."""
    i = offset
    while i < len(sql):
        if sql[i].isspace():
            i += 1
        elif sql.startswith("--", i):
            newline = sql.find("\n", i)
            i = len(sql) if newline < 0 else newline + 1
        elif sql.startswith("/*", i):
            close = sql.find("*/", i + 2)
            i = len(sql) if close < 0 else close + 2
        else:
            return i
    return offset


def interrupted(
    file: MigrationFile,
    exc: BaseException,
    *,
    dirty_version: int | None,
    stays_at: str | None = None,
    commit_unknown: str | None = None,
    step: Step | None = None,
    source: MigrationSource | None = None,
) -> MigrationInterruptedError:
    """``commit_unknown``: the version the migration records, when the connection was
    lost while its COMMIT may have been on the way; ``step``: the step that ran outside
    a transaction (``dirty_version`` set), and its ``source``, for a message true to its
    direction."""
    reason = describe(exc)
    if commit_unknown is not None:
        return MigrationInterruptedError(
            f"connection lost while applying {file.location} ({reason}), with its COMMIT "
            f"sent: whether it committed is unknown. Run `{CLI} version`: "
            f"{commit_unknown} means it did; then run again.",
            file=file.location,
        )
    if dirty_version is not None:
        outcome = left_dirty(source, file, dirty_version, step, lost=True)
    else:
        stays = f", and the database stays at {stays_at}, clean" if stays_at else ""
        outcome = (
            f"The server rolled back its transaction: nothing of it was applied{stays}. "
            "Run again: it continues from there."
        )
    return MigrationInterruptedError(
        f"connection lost while applying {file.location} ({reason}). {outcome}",
        file=file.location,
        dirty=dirty_version is not None,
    )


def left_dirty(
    source: MigrationSource | None,
    file: MigrationFile,
    dirty_version: int,
    step: Step | None,
    *,
    sqlstate: str | None = None,
    lost: bool = False,
) -> str:
    """What a file run outside a transaction left, dirty at ``dirty_version``, and the way
    out, true to its direction: a concurrent build or drop is finished by running again
    (never by `force`, which would record an INVALID index); anything else, by `force`
    to the version the schema matches. ``lost``: the connection went away mid-statement
    (the server may even finish it)."""
    at = version_label(dirty_version)
    direction = "up" if step is None else step.direction
    index = analyze_cached(file).concurrent_index if direction == "up" else None
    dropped = dropped_index(file) if direction == "down" else None
    if index is not None and sqlstate == "42P07":
        return (
            f"The database is left dirty at version {at}: a relation named {index} already "
            f"exists and is not the index this file builds (a valid index of that name is "
            f"kept only when it is defined as the file defines it). Rename it or drop it "
            f"(an index: DROP INDEX CONCURRENTLY {regclass_text(index)}), then run "
            f"`{CLI} up` again."
        )
    if index is not None:
        how = (
            "may not have completed (the server may still finish it, or leave it INVALID). Run"
            if lost
            else "did not complete (PostgreSQL leaves it INVALID). Fix the cause (for a "
            "unique index, the duplicate rows), then run"
        )
        return (
            f"The database is left dirty at version {at}: the concurrent build of index "
            f"{index} {how} `{CLI} up` again (or restart the service): a build still "
            f"running is waited for, a complete one is recorded as version {at}, an INVALID "
            f"one is dropped and built anew. Do not `force` this version: that would record "
            f"an index that is not there as applied."
        )
    if dropped is not None and step is not None:
        goto = "" if dirty_version == NIL_VERSION else f" (or `{CLI} goto {at}`)"
        how = "may not have completed" if lost else "did not complete; fix the cause, then"
        return (
            f"The database is left dirty at version {at}, on its way down from version "
            f"{step.migration.version}: the concurrent drop of index {dropped} {how}"
            f"{'; ' if lost else ' '}run the same down again, `{CLI} down 1`{goto}: the "
            f"drop runs again and version {at} is recorded. `{CLI} up` instead builds the "
            f"index anew and records version {step.migration.version}. Do not `force` "
            f"{at}: an INVALID index would stay behind."
        )
    turned = _turned_index(file, direction, dirty_version, step, lost=lost)
    if turned is not None:
        return turned
    state = VersionState(None if dirty_version == NIL_VERSION else dirty_version, True)
    unfinished = None if step is None else Unfinished(step.migration, step.direction)
    ran = " (the statements ran one by one)" if lost else ""
    if source is None:
        return f"The database is left dirty at version {at}{ran}: see `{CLI} status`."
    return f"The database is left dirty{ran}: " + dirty_message(source, state, unfinished)


def _turned_index(
    file: MigrationFile, direction: str, dirty_version: int, step: Step | None, *, lost: bool
) -> str | None:
    """The way out for a migration that drops an index concurrently and whose down builds
    it again (run/unfinished.py, 3b): the same file run again."""
    if step is None:
        return None
    at, version = version_label(dirty_version), step.migration.version
    how = "may not have completed;" if lost else "did not complete; fix the cause, then"
    if direction == "up" and (dropped := dropped_index(file)) is not None:
        return (
            f"The database is left dirty at version {at}: the concurrent drop of index "
            f"{dropped} {how} run `{CLI} up` again (or restart the service): the drop runs "
            f"again (nothing to do if the index is gone) and version {at} is recorded. Do "
            f"not `force` {at}: an INVALID index would stay behind."
        )
    built = analyze_cached(file).concurrent_index if direction == "down" else None
    if built is None:
        return None
    return (
        f"The database is left dirty at version {at}, on its way down from version "
        f"{version}: the concurrent build of index {built} {how} run the same down again, "
        f"`{CLI} down 1`: the build is waited for, kept once complete or built anew, and "
        f"version {at} is recorded. `{CLI} up` instead drops it again and records version "
        f"{version}. Do not `force` {at}: an INVALID index would stay behind."
    )


def interrupted_together(
    files: Sequence[MigrationFile], exc: BaseException, *, stays_at: str, reaches: str
) -> MigrationInterruptedError:
    """A connection lost while several migrations travelled in one message: each commits
    with its version or not at all, so the database is clean at one of their versions."""
    return MigrationInterruptedError(
        f"connection lost while applying {files[0].location} to {files[-1].location}, "
        f"sent together ({describe(exc)}). Each runs in its own transaction with its "
        f"version: the database is clean, at {stays_at} if none of them committed, "
        f"{reaches} if all did, or a version between. "
        f"Run again: it continues from there (`{CLI} version` shows where it is).",
        file=files[0].location,
    )


def locked_out(
    file: MigrationFile,
    *,
    attempts: int,
    waited: float,
    wait: str,
    blockers: Sequence[TableLockHolder],
    stays_at: str,
) -> TableLockTimeoutError:
    """``wait``: how long each attempt could wait for a lock, as words ("3s", ...)."""
    who = "; ".join(str(b) for b in blockers) or "no session holds it now (it was released)"
    each = (
        f"each waiting at most {wait} for a lock, so that queries on the table were "
        f"held up no longer"
    )
    return TableLockTimeoutError(
        f"migration failed: {file.location} could not get its table locks: {attempts} "
        f"attempt(s) over {waited:.0f}s, {each}. Held by: {who}. Nothing of it "
        f"was applied; the database stays at {stays_at}, clean. End or wait for that "
        f"transaction, then run again (or raise --ddl-retry-for).",
        file=file.location,
        blockers=blockers,
    )

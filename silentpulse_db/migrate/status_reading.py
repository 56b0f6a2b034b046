"""`status`'s reading: the version, one row a migration file, and the audits (partitions,
row-level security, INVALID indexes), without the lock and changing nothing. The records
it returns (StatusReport, StatusRow) are results/status.py's.

Imported by commands.status alone (the CLI's `version` calls it too, with files=False),
so that a start-up loads neither this nor those records.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from ..results.migrations import VersionState
from ..results.status import StatusReport, StatusRow
from .files.source import Migration, MigrationSource
from .plan import NIL_VERSION, HistoryEntry, ahead_of_files, require_same_set
from .session import Session, lock_holders, read_only_state


async def read_status(session: Session, migrations: MigrationSource | None) -> StatusReport:
    """What `status` shows on ``session``; without ``migrations``, only the version and
    who runs a migration now (what `version` prints)."""
    conn = session.conn
    running = tuple(await lock_holders(conn, session.keys))
    if migrations is None:
        current = (await read_only_state(session))[0]
        return StatusReport(current=current, rows=(), running=running, versioned=session.versioned)
    # The audits load only for the full status: spares `version` ~9 ms.
    from ..postgres.indexes import invalid_indexes
    from ..schema.partitions import partition_coverage
    from ..schema.tenancy import rls_gaps

    state, history = await read_only_state(session)
    # Another set's files read against this table would show nonsense rows.
    require_same_set(migrations, history, session.table.name)
    return StatusReport(
        current=state,
        rows=status_rows(migrations, state, history),
        partitions=tuple(await partition_coverage(conn)),
        unguarded=tuple(await rls_gaps(conn)),
        running=running,
        versioned=session.versioned,
        invalid_indexes=tuple(await invalid_indexes(conn)),
    )


def status_rows(
    source: MigrationSource, state: VersionState, history: Mapping[int, HistoryEntry]
) -> tuple[StatusRow, ...]:
    """One row a version: applied, pending or dirty; when, how long, checksum state."""

    current = NIL_VERSION if state.version is None else state.version
    rows: list[StatusRow] = []
    for migration in source.migrations:
        applied = migration.version <= current
        entry = history.get(migration.version) if applied else None
        checksum: Literal["ok", "changed", "unknown", "-"]
        if not applied:
            checksum = "-"
        elif entry is None or entry.checksum is None or migration.up is None:
            checksum = "unknown"
        else:
            checksum = "ok" if entry.checksum == migration.up.checksum else "changed"
        word: Literal["applied", "pending", "dirty"]
        if state.dirty and migration.version == current:
            word = "dirty"
        else:
            word = "applied" if applied else "pending"
        rows.append(
            StatusRow(
                version=migration.version,
                name=migration.name,
                state=word,
                applied_at=entry.applied_at if entry else None,
                duration=entry.duration if entry else None,
                checksum=checksum,
                breaking=migration.up is not None and migration.up.directives.breaking,
                notes=file_notes(migration),
            )
        )
    if ahead_of_files(source, state):
        for version, entry in sorted(history.items()):
            if version > (source.latest or NIL_VERSION) and version <= current:
                rows.append(
                    StatusRow(
                        version=version,
                        name=entry.name,
                        state="applied (no file)",
                        applied_at=entry.applied_at,
                        duration=entry.duration,
                        breaking=entry.breaking,
                    )
                )
        if not any(r.version == current for r in rows):
            rows.append(StatusRow(version=current, name="?", state="applied (no file)"))
        rows.sort(key=lambda r: r.version)
    return tuple(rows)


def file_notes(migration: Migration) -> tuple[str, ...]:
    """What `status` says of a version's files: one missing, or holding no statement."""
    notes = []
    for direction in ("up", "down"):
        file = migration.file(direction)
        if file is None:
            notes.append(f"no {direction} file")
        elif file.empty:
            notes.append(f"empty {direction}")
    return tuple(notes)

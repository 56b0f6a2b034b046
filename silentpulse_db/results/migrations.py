"""What the migration verbs return: run_migrations, up, down, goto, force, baseline
(MigrationResult), version (VersionState), status (StatusReport, StatusRow) and
apply_prerequisites (PrerequisitesResult). Durations are seconds (float)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from ..errors import LockHolder

if TYPE_CHECKING:
    from .schema_jobs import PartitionCoverage


@dataclass(frozen=True)
class VersionState:
    """What schema_migrations says. ``version`` is None when there is no version."""

    version: int | None
    dirty: bool

    def __str__(self) -> str:
        shown = "none" if self.version is None else str(self.version)
        return f"{shown} (dirty)" if self.dirty else shown


@dataclass(frozen=True)
class AppliedMigration:
    """One migration file that ran."""

    version: int
    name: str
    direction: Literal["up", "down"]
    duration: float  # seconds
    transactional: bool = True

    def __str__(self) -> str:
        return f"{self.version:06d}_{self.name} ({self.direction}, {self.duration * 1000:.1f} ms)"


@dataclass(frozen=True)
class MigrationResult:
    """The outcome of run_migrations, up, down, goto, force or baseline."""

    version_before: int | None
    version_after: int | None
    applied: tuple[AppliedMigration, ...] = ()
    database_ahead: bool = False
    warnings: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class StatusReport:
    """What `status` shows: the current version, one row a migration file, the
    partitioned tables' coverage, and relations with tenant rows that row-level
    security does not guard (should be none)."""

    current: VersionState
    rows: tuple[StatusRow, ...]
    partitions: tuple[PartitionCoverage, ...] = ()
    unguarded: tuple[str, ...] = ()
    # Whoever holds the migration lock right now (a migration is running), each once.
    running: tuple[LockHolder, ...] = ()
    # False: the database has no version table (nothing was ever migrated here).
    versioned: bool = True
    # INVALID indexes (failed concurrent builds), each with what to do.
    invalid_indexes: tuple[str, ...] = ()


@dataclass(frozen=True)
class StatusRow:
    """One version in `status`: applied or pending, when, how long, checksum state."""

    version: int
    name: str
    state: Literal["applied", "pending", "dirty", "applied (no file)"]
    applied_at: datetime | None = None
    duration: float | None = None  # seconds
    checksum: Literal["ok", "changed", "unknown", "-"] = "-"
    breaking: bool = False  # its up file says `-- silentpulse: breaking`
    # What its files are: "no down file", "no up file", "empty up", "empty down" (a file
    # of comments only runs nothing, as in golang-migrate).
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class PrerequisitesResult:
    """What prerequisites.sql did: notices from the server and unavailable optional extensions."""

    installed: tuple[str, ...]
    unavailable_optional: tuple[str, ...]
    notices: tuple[str, ...]

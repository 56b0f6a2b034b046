"""What the public functions return. Durations are seconds (float) everywhere."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal

from .errors import LockHolder


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
class StatusRow:
    """One version in `status`: applied or pending, when, how long, checksum state."""

    version: int
    name: str
    state: Literal["applied", "pending", "dirty", "applied (no file)"]
    applied_at: datetime | None = None
    duration: float | None = None  # seconds
    checksum: Literal["ok", "changed", "unknown", "-"] = "-"
    breaking: bool = False  # its up file says `-- silentpulse: breaking`


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
class PrerequisitesResult:
    """What prerequisites.sql did: notices from the server and unavailable optional extensions."""

    installed: tuple[str, ...]
    unavailable_optional: tuple[str, ...]
    notices: tuple[str, ...]


@dataclass(frozen=True)
class CheckReport:
    """What `check` proved: the versions whose down undoes their up exactly."""

    checked: tuple[int, ...]


@dataclass(frozen=True)
class PartitionChange:
    table: str
    partition: str
    moved_rows: int

    def __str__(self) -> str:
        moved = (
            f", {self.moved_rows} row(s) moved from the default partition"
            if self.moved_rows
            else ""
        )
        return f"created {self.partition}{moved}"


@dataclass(frozen=True)
class PartitionReport:
    """What ensure_partitions did: partitions created, partitions secured, what it skipped."""

    created: tuple[PartitionChange, ...] = ()
    secured: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True)
class PartitionCoverage:
    """One partitioned table in `status`."""

    table: str
    covered_until: date | None  # first month (UTC) from now on with no partition
    months_ahead: int  # whole months covered after the current one
    default_rows: int | None  # None: row-level security hides them from this role

    def __str__(self) -> str:
        last = "-"
        if self.covered_until is not None:  # the first month without: name the last one with
            year, month = divmod(self.covered_until.year * 12 + self.covered_until.month - 2, 12)
            last = f"{year:04d}-{month + 1:02d}"
        rows = (
            "hidden by row-level security" if self.default_rows is None else str(self.default_rows)
        )
        ahead = f"{self.months_ahead} month(s) ahead (last month covered: {last})"
        return f"{self.table}: {ahead}, rows in default: {rows}"


@dataclass(frozen=True)
class RetentionAction:
    table: str
    partition: str
    dropped: bool
    reason: str

    def __str__(self) -> str:
        verb = "drop" if self.dropped else "keep"
        return f"{verb} {self.partition}: {self.reason}"


@dataclass(frozen=True)
class RetentionReport:
    dry_run: bool
    actions: tuple[RetentionAction, ...]

    @property
    def refused(self) -> tuple[RetentionAction, ...]:
        return tuple(a for a in self.actions if not a.dropped)

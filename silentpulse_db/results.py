"""What the public functions return. Durations are seconds (float) everywhere.

The reports of the operator jobs (prerequisites, check, partitions, retention)
and the status rows are defined in _reports.py and load on first use: their
dataclasses would cost every start-up ~4.5 ms (bench/bench_startup_tricks.py),
and starting up or migrating never returns one. Import them from here or from
silentpulse_db.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .errors import LockHolder

if TYPE_CHECKING:
    from ._reports import (
        CheckReport,
        DriftDifference,
        DriftExcuse,
        DriftReport,
        PartitionChange,
        PartitionCoverage,
        PartitionReport,
        PrerequisitesResult,
        RetentionAction,
        RetentionReport,
        StatusRow,
    )


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


# Defined in _reports.py, loaded on first use (silentpulse_db's face reuses this set).
REPORT_NAMES = frozenset(
    {
        "CheckReport",
        "DriftDifference",
        "DriftExcuse",
        "DriftReport",
        "PartitionChange",
        "PartitionCoverage",
        "PartitionReport",
        "PrerequisitesResult",
        "RetentionAction",
        "RetentionReport",
        "StatusRow",
    }
)


def __getattr__(name: str) -> Any:
    if name not in REPORT_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import _reports

    value = getattr(_reports, name)
    globals()[name] = value
    return value


__all__ = [
    "AppliedMigration",
    "CheckReport",
    "DriftDifference",
    "DriftExcuse",
    "DriftReport",
    "MigrationResult",
    "PartitionChange",
    "PartitionCoverage",
    "PartitionReport",
    "PrerequisitesResult",
    "RetentionAction",
    "RetentionReport",
    "StatusReport",
    "StatusRow",
    "VersionState",
]

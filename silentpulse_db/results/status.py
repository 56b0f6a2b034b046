"""What `status` reports (StatusReport, one StatusRow a version): loaded by status and
version alone, so that a start-up does not create these records (~4 ms with the reading,
bench/bench_startup_tricks.py). Durations are seconds (float)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from ..errors import LockHolder
from .migrations import VersionState

if TYPE_CHECKING:
    from .schema_jobs import PartitionCoverage


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

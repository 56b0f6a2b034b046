"""What the schema jobs return: maintain_partitions (PartitionReport, PartitionChange),
enforce_retention (RetentionReport, RetentionAction), and each partitioned table's
coverage that status shows (PartitionCoverage)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


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
